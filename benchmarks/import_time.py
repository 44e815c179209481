"""Import cost of the library's entry points against ``import torch``, measured in the same run.

Another project that calls ``xmed.explain`` or ``xmed.metrics`` on its own model should pay for
torch and little more: timm, captum, torchmetrics (whose package imports its audio and image
metrics, torchvision's model zoo and ``torch._dynamo``), Lightning and matplotlib load where they
are used. Each import runs in a fresh interpreter with ``python -X importtime``; its time is the
sum of the cumulative times of the top-level imports, so interpreter start-up is left out. Rounds
alternate between the modules so that a noisy machine affects all alike; the median is reported,
and each module's ratio to ``import torch``.

Run: ``python benchmarks/import_time.py [--repeats 5]``. Writes ``import_time.json`` and
``import_time.md``; the target is ``xmed.explain`` and ``xmed.metrics`` <= 1.25 x ``import torch``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from timing import device_name

MODULES = ("torch", "xmed", "xmed.data", "xmed.explain", "xmed.metrics", "xmed.models")
TARGET_RATIO = 1.25
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    times: dict[str, list[float]] = {m: [] for m in MODULES}
    loaded: dict[str, list[str]] = {}
    for r in range(args.repeats):
        for module in MODULES:
            seconds, loaded[module] = import_seconds(module)
            times[module].append(seconds)
            print(f"round {r + 1}/{args.repeats} import {module:<14} {seconds:6.3f} s", flush=True)
    torch_s = statistics.median(times["torch"])
    results = {m: {"seconds_median": round(statistics.median(t), 4), "seconds": [round(x, 4) for x in t],
                   "ratio_to_torch": round(statistics.median(t) / torch_s, 3), "heavy_packages_loaded": loaded[m]}
               for m, t in times.items()}
    meets = all(results[m]["ratio_to_torch"] <= TARGET_RATIO for m in ("xmed.explain", "xmed.metrics"))
    record = {"benchmark": "import_time", "cpu": device_name(__import__("torch").device("cpu")),
              "python": sys.version.split()[0], "repeats": args.repeats, "target_ratio": TARGET_RATIO,
              "meets_target": meets, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "import_time.json").write_text(json.dumps(record, indent=2) + "\n")
    table = ["| import | seconds (median) | × import torch | heavy packages loaded |", "|---|---|---|---|"]
    table += [f"| `{m}` | {r['seconds_median']:.3f} | {r['ratio_to_torch']:.2f} | "
              f"{', '.join(r['heavy_packages_loaded']) or 'none'} |" for m, r in results.items()]
    table.append(f"\n{record['cpu']}, Python {record['python']}, median of {args.repeats} fresh interpreters each. "
                 f"Target: `xmed.explain` and `xmed.metrics` <= {TARGET_RATIO} x `import torch` — "
                 f"{'met' if meets else 'NOT met'}.")
    (args.out / "import_time.md").write_text("# Import time\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))
    print(f"wrote {args.out / 'import_time.json'} and {args.out / 'import_time.md'}")


if __name__ == "__main__":
    main()
