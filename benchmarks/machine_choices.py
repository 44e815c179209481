"""What ``precision: auto`` and ``channels_last: auto`` choose, measured: the demo's training step in
fp32 and bf16 autocast, NCHW and NHWC (channels_last), on this CPU as it is and with the instruction
sets torch and oneDNN may use capped to AVX2 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``:
what a CPU without AVX-512, e.g. most laptops, runs).

Each instruction-set setting runs in a fresh process (torch reads the caps at start-up); there the
four variants alternate on one batch of ``torch.randn`` images (resnet10t, max pooling), one step =
forward + the three heads' losses + backward + AdamW. Ratios are against fp32 NCHW in the same
process; the variant ``xmed.runtime`` chooses is marked "auto".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.timing import Context, Part, alternate, median, paired_ratio, random_batch, training_step

CAPS = {"as is": {}, "capped to AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
VARIANTS = {"fp32 NCHW": ("32-true", False), "fp32 NHWC": ("32-true", True),
            "bf16 NCHW": ("bf16-mixed", False), "bf16 NHWC": ("bf16-mixed", True)}
ROOT = Path(__file__).resolve().parents[1]


def measure(size: int, batch: int, repeats: int, seed: int) -> dict:
    """Seconds per step of the four variants in this process, and what xmed.runtime chooses here."""
    from xmed.models import FundusClassifier
    from xmed.runtime import choose_channels_last, choose_precision

    device = torch.device("cpu")
    images, labels = random_batch(batch, size, device, seed)
    torch.manual_seed(seed)
    reference = FundusClassifier("resnet10t", input_size=size, global_pool="max")
    steps = {}
    for name, (precision, channels_last) in VARIANTS.items():
        model = FundusClassifier("resnet10t", input_size=size, global_pool="max").train()
        model.load_state_dict(reference.state_dict())
        x = images
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
        steps[name] = training_step(model, x, labels, device, bf16=precision == "bf16-mixed")
    times, _ = alternate(steps, repeats, device, "step")
    precision, channels_last = choose_precision("cpu"), choose_channels_last("cpu")
    return {"kernels": torch.backends.cpu.get_cpu_capability(), "times": times,
            "chosen": next(n for n, v in VARIANTS.items() if v == (precision.value, channels_last.value)),
            "precision_reason": precision.reason}


def run(part: Part, ctx: Context) -> None:
    size, batch, repeats = ctx.size(32, 128), ctx.size(2, 32), ctx.size(1, 3)
    part.settings.update({"model": f"resnet10t FundusClassifier (max pooling), {size} px", "batch": batch,
                          "rounds": repeats})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for label, caps in CAPS.items():
        done = subprocess.run([sys.executable, "-m", "benchmarks.machine_choices", str(size), str(batch),
                               str(repeats), str(ctx.seed)], env={**env, **caps}, cwd=ROOT, capture_output=True,
                              text=True, timeout=max(ctx.left(), 60))
        if done.returncode != 0:
            part.error(f"{label}: the measuring process failed", done.stderr[-3000:])
            continue
        result = json.loads(done.stdout.rsplit("RESULT ", 1)[1])
        base = result["times"]["fp32 NCHW"]
        for name, times in result["times"].items():
            if name != "fp32 NCHW":
                part.figure(f"{label} ({result['kernels']} kernels): {name}", median(times), "s/step",
                            "fp32 NCHW", median(base), paired=paired_ratio(times, base),
                            note="auto" if name == result["chosen"] else None)
        part.note(f"{label}: auto chooses {result['chosen']} — precision because {result['precision_reason']}")


if __name__ == "__main__":  # one instruction-set setting, measured in this fresh process
    print("RESULT " + json.dumps(measure(*map(int, sys.argv[1:5]))))
