"""Training-step cost of a dilated last stage: ``output_stride`` 16 and 8 against the plain 32.

The reference phantom model uses ``backbone_kwargs: {output_stride: 16}`` so that its CAMs live on a
16×16 grid at 256 px (``configs/experiment/phantom.yaml`` says why). The same ``FundusClassifier``
backbone is built with each ``output_stride`` (same weights: dilation changes no parameter); one
step = forward in the precision ``xmed.runtime`` chooses for the device + the three heads' losses +
backward + AdamW, on one batch of ``torch.randn`` images. The variants alternate round by round.
"""

from __future__ import annotations

import torch

from benchmarks.timing import Context, Part, alternate, median, paired_ratio, random_batch, training_step

STRIDES = (32, 16, 8)


def run(part: Part, ctx: Context) -> None:
    from xmed.models import FundusClassifier

    device = ctx.device
    size, batch, repeats = ctx.size(64, 256), ctx.size(4, 32), ctx.size(1, 3)
    part.settings.update({"model": f"resnet18 FundusClassifier (max pooling), {size} px", "batch": batch,
                          "precision": "bf16 autocast" if ctx.bf16 else "fp32", "rounds": repeats})
    images, labels = random_batch(batch, size, device, ctx.seed)
    torch.manual_seed(ctx.seed)
    plain = FundusClassifier("resnet18", input_size=size, global_pool="max").to(device)
    steps, grids = {}, {}
    for stride in STRIDES:
        model = FundusClassifier("resnet18", input_size=size, global_pool="max",
                                 backbone_kwargs={} if stride == 32 else {"output_stride": stride}).to(device)
        model.load_state_dict(plain.state_dict())
        with torch.no_grad():
            grids[stride] = "×".join(str(g) for g in model.backbone.forward_features(images[:1]).shape[-2:])
        steps[stride] = training_step(model.train(), images, labels, device, bf16=ctx.bf16)
    times, _ = alternate(steps, repeats, device, "stride")
    for stride in STRIDES[1:]:
        part.figure(f"output_stride {stride} ({grids[stride]} grid), training step", median(times[stride]), "s/step",
                    f"output_stride 32 ({grids[32]} grid)", median(times[32]),
                    paired=paired_ratio(times[stride], times[32]))
