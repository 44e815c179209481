"""Cost of the image-quality gate on the scoring path, against the model's own forward pass.

``xmed.inference.score_batch`` judges every prepared eye (``assess_prepared``) before the model
scores it. Timed here on a batch of rendered phantom eyes, normalised as the model expects:
the gate alone, a forward pass of the model alone, and the whole scoring step; rounds alternate
so a noisy machine affects all alike. The target: the gate adds at most 5 % to a resnet18 scoring
step at 256 px.

Run: ``python benchmarks/quality_gate.py [--batch 32] [--size 256] [--repeats 5]``. Writes
``quality_gate.json`` and ``quality_gate.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch

from timing import add_run_arguments, alternate, device_name, paired_ratios, prepare_device

TARGET = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    add_run_arguments(parser)
    args = parser.parse_args()
    device = prepare_device(parser, args)

    from xmed.data import render_phantom
    from xmed.data.quality import assess_prepared
    from xmed.inference import score_batch
    from xmed.models import FundusClassifier

    torch.manual_seed(args.seed)
    model = FundusClassifier(args.backbone, input_size=args.size).eval().to(device)
    dc = model.data_config
    photos = [render_phantom(args.seed + i, args.size).image for i in range(args.batch)]
    images = torch.stack([torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1).float() / 255 for p in photos])
    images = (images - torch.tensor(dc.mean).view(1, 3, 1, 1)) / torch.tensor(dc.std).view(1, 3, 1, 1)
    batch = {"image": images.to(device), "meta": {"id": [str(i) for i in range(args.batch)], "eye": [""] * args.batch}}

    def forward():
        with torch.inference_mode():
            return model(batch["image"])

    times, last = alternate({"gate": lambda: assess_prepared(images, dc), "forward": forward,
                             "scoring_step": lambda: score_batch(model, batch)}, args.repeats, device, "quality gate")
    assert not any(q.flags for q in last["gate"]), "phantom eyes must pass the gate"
    per_eye_ms = {name: 1000 * statistics.median(t) / args.batch for name, t in times.items()}
    share = paired_ratios(times["gate"], times["scoring_step"])
    result = {"device": device_name(device), "backbone": args.backbone, "batch": args.batch, "size": args.size,
              "threads": torch.get_num_threads(), "repeats": args.repeats, "per_eye_ms": per_eye_ms,
              "gate_share_of_scoring_step": share, "target": TARGET,
              "met": share["ratio_of_medians"] <= TARGET}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality_gate.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Image-quality gate cost ({result['device']}, {args.backbone}, {args.size} px, batch {args.batch})", "",
             "| part | ms per eye |", "|---|---|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in per_eye_ms.items()]
    lines += ["", f"Gate share of the scoring step: {share['ratio_of_medians']:.3f} (median of round ratios "
                  f"{share['median_of_round_ratios']:.3f}); target ≤ {TARGET}: {'met' if result['met'] else 'NOT met'}."]
    (args.out / "quality_gate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
