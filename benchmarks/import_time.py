"""Import cost of the library's entry points against ``import torch``, measured in the same run.

Another project that calls ``xmed.explain`` or ``xmed.metrics`` on its own model should pay for
torch and little more: timm, captum, torchmetrics (whose package imports its audio and image
metrics, torchvision's model zoo and ``torch._dynamo``), Lightning and matplotlib load where they
are used. Each import runs in a fresh interpreter with ``python -X importtime``; its time is the
sum of the cumulative times of the top-level imports, so interpreter start-up is left out. Rounds
alternate between the modules. The goal: ``xmed.explain`` and ``xmed.metrics`` <= 1.25 x
``import torch``.
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks.timing import Context, Goal, Part, median, paired_ratio

MODULES = ("torch", "xmed", "xmed.data", "xmed.explain", "xmed.metrics", "xmed.models")
QUICK_MODULES = ("torch", "xmed.explain", "xmed.metrics")
GOAL = Goal("ratio", "<=", 1.25)
HEAVY = ("timm", "captum", "torchmetrics", "torchvision", "torch._dynamo", "lightning", "matplotlib", "scipy")


def import_seconds(module: str) -> tuple[float, list[str]]:
    """Seconds ``import module`` takes in a fresh interpreter, and which heavy packages it loaded."""
    code = (f"import sys; import {module}; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          check=True)
    micros = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit() and not name.startswith("  "):  # top level: one space after the bar
            micros += int(cumulative)
    return micros / 1e6, [m for m in done.stdout.strip().split(",") if m]


def run(part: Part, ctx: Context) -> None:
    modules = ctx.size(QUICK_MODULES, MODULES)
    repeats = ctx.size(1, 5)
    part.settings.update({"rounds": repeats, "interpreter": "fresh for every import, -X importtime"})
    times: dict[str, list[float]] = {m: [] for m in modules}
    loaded: dict[str, list[str]] = {}
    for _ in range(repeats):
        for module in modules:
            seconds, loaded[module] = import_seconds(module)
            times[module].append(seconds)
    for module in modules[1:]:
        heavy = ", ".join(loaded[module]) or "none"
        part.figure(f"import {module}", median(times[module]), "s", "import torch", median(times["torch"]),
                    goal=GOAL if module in ("xmed.explain", "xmed.metrics") else None,
                    paired=paired_ratio(times[module], times["torch"]), note=f"heavy packages loaded: {heavy}")
