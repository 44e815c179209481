"""Cost of the image-quality gate on the scoring path, against the whole scoring step.

``xmed.inference.score_batch`` judges every prepared eye (``assess_prepared``) before the model
scores it. Timed on a batch of rendered phantom eyes, normalised as the model expects: the gate
alone, a forward pass alone, and the whole scoring step, alternating round by round. Goal: the
gate adds at most 5 % to a resnet18 scoring step at 256 px.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.timing import Context, Goal, Part, alternate, median, paired_ratio

GOAL = Goal("ratio", "<=", 0.05)


def run(part: Part, ctx: Context) -> None:
    from xmed.data import render_phantom
    from xmed.data.quality import assess_prepared
    from xmed.inference import score_batch
    from xmed.models import FundusClassifier

    device = ctx.device
    size, batch, repeats = ctx.size(64, 256), ctx.size(2, 32), ctx.size(1, 5)
    part.settings.update({"model": f"resnet18 FundusClassifier, random init, {size} px", "batch": batch,
                          "rounds": repeats})
    torch.manual_seed(ctx.seed)
    model = FundusClassifier("resnet18", input_size=size).eval().to(device)
    dc = model.data_config
    photos = [render_phantom(ctx.seed + i, size).image for i in range(batch)]
    images = torch.stack([torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1).float() / 255 for p in photos])
    images = (images - torch.tensor(dc.mean).view(1, 3, 1, 1)) / torch.tensor(dc.std).view(1, 3, 1, 1)
    scored = {"image": images.to(device), "meta": {"id": [str(i) for i in range(batch)], "eye": [""] * batch}}

    def forward():
        with torch.inference_mode():
            return model(scored["image"])

    times, last = alternate({"gate": lambda: assess_prepared(images, dc), "forward": forward,
                             "step": lambda: score_batch(model, scored)}, repeats, device, "quality gate")
    part.check("every phantom eye passes the gate", [q.flags for q in last["gate"]], "no flags",
               not any(q.flags for q in last["gate"]))
    per_eye = {name: 1000 * median(t) / batch for name, t in times.items()}
    part.figure("quality gate", per_eye["gate"], "ms/eye", "whole scoring step", per_eye["step"], goal=GOAL,
                paired=paired_ratio(times["gate"], times["step"]),
                note=f"forward alone {per_eye['forward']:.3g} ms/eye")
