"""Training-step cost of a dilated last stage: ``output_stride`` 32 (plain) vs 16 vs 8.

The reference phantom model uses ``backbone_kwargs: {output_stride: 16}`` so that its CAMs live on a
16×16 grid at 256 px (``configs/experiment/phantom.yaml`` says why). This measures what that costs
per training step, side by side in one process: the same ``FundusClassifier`` backbone built with
each ``output_stride`` (same weights — dilation changes no parameter), one batch of
``torch.randn`` images, and one step = forward (in the precision ``xmed.runtime`` chooses for the
device — bf16 autocast only where it is native — unless ``--fp32``) + the three
heads' losses + backward + AdamW step. The variants alternate (32, 16, 8, 32, ...), so a noisy,
shared machine slows all of them alike; ratios are against stride 32 (ratio of medians, and the
median of the per-round ratios as a check).

Run: ``python benchmarks/backbone_stride.py [--device cuda] [--backbone resnet18] [--input-size 256]
[--batch 32] [--repeats 3]``. Writes ``backbone_stride.json`` and ``backbone_stride.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys

import torch

from timing import add_run_arguments, alternate, device_name, paired_ratios, prepare_device, training_step

STRIDES = (32, 16, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    add_run_arguments(parser)
    args = parser.parse_args()
    device = prepare_device(parser, args)

    from xmed.findings import FINDINGS
    from xmed.models import FundusClassifier
    from xmed.runtime import choose_precision

    bf16 = not args.fp32 and choose_precision(device.type).value == "bf16-mixed"

    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.input_size, args.input_size, generator=generator).to(device)
    labels = {"glaucoma": torch.randint(0, 2, (args.batch,), generator=generator).float().to(device),
              "findings": torch.randint(0, 2, (args.batch, len(FINDINGS)), generator=generator).float().to(device),
              "vcdr": torch.rand(args.batch, generator=generator).to(device)}
    torch.manual_seed(args.seed)
    plain = FundusClassifier(args.backbone, input_size=args.input_size, global_pool="max").to(device)
    variants, grids = {}, {}
    for stride in STRIDES:
        kwargs = {} if stride == 32 else {"output_stride": stride}
        model = FundusClassifier(args.backbone, input_size=args.input_size, global_pool="max",
                                 backbone_kwargs=kwargs).to(device).train()
        model.load_state_dict(plain.state_dict())       # dilation changes no weight
        with torch.no_grad():
            grids[stride] = tuple(model.backbone.forward_features(images[:1]).shape[-2:])
        variants[f"stride_{stride}"] = training_step(model, images, labels, device, bf16=bf16)
    times, _ = alternate(variants, args.repeats, device, "step")

    base = times["stride_32"]
    median = {name: statistics.median(v) for name, v in times.items()}
    ratios = {name: paired_ratios(v, base) for name, v in times.items()}
    record = {
        "benchmark": "backbone_stride", "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "device": args.device, "device_name": device_name(device), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "settings": {"backbone": args.backbone, "input_size": args.input_size, "batch": args.batch,
                     "precision": "bf16 autocast" if bf16 else "fp32", "repeats": args.repeats,
                     "seed": args.seed},
        "feature_grid": {f"stride_{s}": list(g) for s, g in grids.items()},
        "seconds_per_step": {name: [round(t, 4) for t in v] for name, v in times.items()},
        "median_seconds_per_step": {name: round(v, 4) for name, v in median.items()},
        "over_stride_32": {name: {k: round(x, 4) for k, x in r.items()} for name, r in ratios.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backbone_stride.json").write_text(json.dumps(record, indent=2))
    lines = ["| variant | feature grid | s / step (median) | runs | × stride 32 | paired check |",
             "|---|---|---|---|---|---|"]
    for stride in STRIDES:
        name = f"stride_{stride}"
        grid = "×".join(str(g) for g in grids[stride])
        lines.append(f"| {name} | {grid} | {median[name]:.3f} | {', '.join(f'{t:.3f}' for t in times[name])} | "
                     f"{ratios[name]['ratio_of_medians']:.3f} | {ratios[name]['median_of_round_ratios']:.3f} |")
    lines += ["", f"{args.backbone} FundusClassifier (max pooling) at {args.input_size} px, batch {args.batch}, "
                  f"{record['settings']['precision']}, one AdamW step per call; on {args.device} "
                  f"({record['device_name']}, {torch.get_num_threads()} torch threads); {args.repeats} rounds "
                  f"alternating {'/'.join(variants)} after one warm-up step each.",
              f"Command: `{record['command']}`."]
    (args.out / "backbone_stride.md").write_text("# Training-step cost of output_stride\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
