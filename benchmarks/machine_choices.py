"""What ``precision: auto`` and ``channels_last: auto`` choose, measured: the demo's training step in
fp32 and bf16 autocast, NCHW and NHWC (channels_last), on this CPU as it is and with the instruction
sets torch and oneDNN may use capped to AVX2 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``:
what a CPU without AVX-512, e.g. most laptops, runs).

Each instruction-set setting runs in its own process (torch reads the caps at start-up). There, the
four variants alternate (fp32/NCHW, fp32/NHWC, bf16/NCHW, bf16/NHWC, ...) on one batch of
``torch.randn`` images, one step = forward + the three heads' losses + backward + AdamW; ratios are
against fp32/NCHW in the same process. The variant ``xmed.runtime`` chooses is marked.

Run: ``python benchmarks/machine_choices.py [--backbone resnet10t] [--input-size 128] [--batch 32]
[--repeats 3]``. Writes ``machine_choices.json`` and ``machine_choices.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from timing import add_run_arguments, alternate, device_name, paired_ratios, training_step

CAPS = {"as is": {}, "capped to AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
VARIANTS = {"fp32 NCHW": ("32-true", False), "fp32 NHWC": ("32-true", True),
            "bf16 NCHW": ("bf16-mixed", False), "bf16 NHWC": ("bf16-mixed", True)}


def measure(args) -> dict:
    """Time the four variants in this process; what xmed.runtime chooses here."""
    from xmed.findings import FINDINGS
    from xmed.models import FundusClassifier
    from xmed.runtime import choose_channels_last, choose_precision

    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.input_size, args.input_size, generator=generator)
    labels = {"glaucoma": torch.randint(0, 2, (args.batch,), generator=generator).float(),
              "findings": torch.randint(0, 2, (args.batch, len(FINDINGS)), generator=generator).float(),
              "vcdr": torch.rand(args.batch, generator=generator)}
    torch.manual_seed(args.seed)
    reference = FundusClassifier(args.backbone, input_size=args.input_size, global_pool="max")
    steps = {}
    for name, (precision, channels_last) in VARIANTS.items():
        model = FundusClassifier(args.backbone, input_size=args.input_size, global_pool="max").train()
        model.load_state_dict(reference.state_dict())
        x = images
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
        steps[name] = training_step(model, x, labels, device, bf16=precision == "bf16-mixed")
    times, _ = alternate(steps, args.repeats, device, "step")
    precision, channels_last = choose_precision("cpu"), choose_channels_last("cpu")
    chosen = next(n for n, v in VARIANTS.items() if v == (precision.value, channels_last.value))
    return {"cpu kernels": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "seconds_per_step": {n: [round(t, 4) for t in v] for n, v in times.items()},
            "median_seconds_per_step": {n: round(statistics.median(v), 4) for n, v in times.items()},
            "over_fp32_nchw": {n: {k: round(x, 4) for k, x in paired_ratios(v, times["fp32 NCHW"]).items()}
                               for n, v in times.items()},
            "chosen": chosen, "precision_reason": precision.reason, "channels_last_reason": channels_last.reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--measure-here", action="store_true", help=argparse.SUPPRESS)  # one setting, JSON out
    add_run_arguments(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_here:
        print("RESULT " + json.dumps(measure(args)))
        return

    settings = {}
    for label, caps in CAPS.items():
        print(f"--- {label}", flush=True)
        command = [sys.executable, __file__, "--measure-here", *sys.argv[1:]]
        done = subprocess.run(command, env={**os.environ, **caps}, capture_output=True, text=True, check=True)
        print(done.stdout.rsplit("RESULT ", 1)[0], end="")
        settings[label] = {"environment": caps, **json.loads(done.stdout.rsplit("RESULT ", 1)[1])}
    record = {
        "benchmark": "machine_choices", "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "cpu": device_name(torch.device("cpu")), "torch": torch.__version__,
        "settings": {"backbone": args.backbone, "input_size": args.input_size, "batch": args.batch,
                     "repeats": args.repeats, "seed": args.seed},
        "results": settings,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "machine_choices.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["| instruction sets | torch kernels | variant | s / step (median) | × fp32 NCHW | paired check | chosen |",
             "|---|---|---|---|---|---|---|"]
    for label, result in settings.items():
        for name in VARIANTS:
            ratio = result["over_fp32_nchw"][name]
            lines.append(f"| {label} | {result['cpu kernels']} | {name} | {result['median_seconds_per_step'][name]:.3f} | "
                         f"{ratio['ratio_of_medians']:.2f} | {ratio['median_of_round_ratios']:.2f} | "
                         f"{'**auto**' if name == result['chosen'] else ''} |")
    lines += [""] + [f"- {label}: precision {settings[label]['chosen'].split()[0]} because "
                     f"{settings[label]['precision_reason']}." for label in settings]
    lines += ["", f"{args.backbone} FundusClassifier (max pooling) at {args.input_size} px, batch {args.batch}, one "
                  f"AdamW step per call, {args.repeats} alternating rounds after a warm-up step each, on "
                  f"{record['cpu']} ({settings['as is']['torch_threads']} torch threads).",
              f"Command: `{record['command']}`."]
    (args.out / "machine_choices.md").write_text("# Precision and memory format per machine\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
