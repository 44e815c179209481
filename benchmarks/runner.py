"""``python -m benchmarks``: run a suite of benchmarks, each figure next to its baseline measured in
the same run, into one ``results.json`` and one ``results.md``.

Each benchmark is a module of this package with a ``run(part, ctx)`` function. It runs inside its
own time budget (it checks :meth:`~benchmarks.timing.Context.left` before optional rows) and
catches its own failure: the error is recorded and the next benchmark runs. The results files are
rewritten after every figure, so a killed run keeps what it measured.

Example::

    python -m benchmarks                          # the CPU suite, full sizes, into benchmarks/results/
    python -m benchmarks --quick --only phantom_speed,import_time --out /tmp/bench
    python -m benchmarks --suite gpu --device cuda   # into benchmarks/results/<gpu name>/
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks.timing import Context, Report, command_line, device_name, load_average, machine_header

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks-quick"
# name: (budget in seconds of a full run, of a quick run)
SUITES: dict[str, dict[str, tuple[float, float]]] = {
    "cpu": {"phantom_speed": (120, 20), "import_time": (180, 30), "explain_speed": (600, 30),
            "counterfactual_speed": (300, 20), "backbone_stride": (300, 20), "loader_cache": (300, 30),
            "machine_choices": (400, 60), "quality_gate": (180, 20), "train_throughput": (400, 30),
            "scale_out": (900, 120), "review_first_case": (120, 30), "loader_decode": (180, 30),
            "loader_handover": (180, 30), "reader_study": (300, 20)},
    # the device pipeline's goals first: a run stopped at BENCH_TIMEOUT keeps them
    "gpu": {"gpu_loader": (160, 90), "gpu_explain": (150, 120), "gpu_training": (100, 60)},
}


def slug(text: str) -> str:
    """A folder name for a device name.

    Example:
        >>> slug("NVIDIA H200 NVL")
        'nvidia-h200-nvl'
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that every benchmark runs")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results (cpu suite), benchmarks/results/<device name> (gpu "
                             "suite); outputs/benchmarks-quick/<suite> with --quick")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names of the suite")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    names = list(SUITES[args.suite])
    if args.only:
        unknown = [n for n in args.only.split(",") if n not in names]
        if unknown:
            parser.error(f"--only: unknown {', '.join(unknown)} in the {args.suite} suite; known: {', '.join(names)}")
        names = [n for n in names if n in args.only.split(",")]
    args.names = names
    if args.out is None and args.quick:
        args.out = QUICK_RESULTS / args.suite
    elif args.out is None:
        args.out = RESULTS if args.suite == "cpu" else RESULTS / slug(device_name(args.device))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; exit status 1 if any recorded an error."""
    args = parse_args(argv)
    if args.quick:  # a check that everything runs: one thread waits on no other on a busy machine
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    header = {"suite": args.suite, "quick": args.quick, "command": command_line(), **machine_header(args.device),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    report = Report(args.out, header)
    run_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xmed-bench-") as scratch:
        for name in args.names:
            module = importlib.import_module(f"benchmarks.{name}")
            part = report.part(name, (module.__doc__ or name).strip().split("\n\n")[0].replace("\n", " "))
            part.budget_s = SUITES[args.suite][name][1 if args.quick else 0]
            folder = Path(scratch) / name
            folder.mkdir()
            ctx = Context(args.device, args.quick, args.seed, folder, part.budget_s, time.perf_counter())
            print(f"=== {name} (budget {part.budget_s:.0f} s)", flush=True)
            try:
                module.run(part, ctx)
            except Exception as err:  # noqa: BLE001 - recorded; the next benchmark runs
                part.error(f"{type(err).__name__}: {err}", traceback.format_exc())
            part.seconds = time.perf_counter() - ctx.started
            if part.seconds > part.budget_s:
                part.note(f"took {part.seconds:.0f} s, over its {part.budget_s:.0f} s budget")
            report.save()
    report.header.update({"load average at end": load_average(),
                          "wall time": f"{time.perf_counter() - run_start:.0f} s"})
    report.save()
    print(report.markdown())
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 1 if any(p.errors for p in report.parts) else 0


if __name__ == "__main__":
    sys.exit(main())
