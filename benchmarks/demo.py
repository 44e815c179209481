"""``make demo`` end to end, timed, on this CPU as it is and capped to AVX2: the figures of
``benchmarks/results/demo`` (and of the README's results table), from one command.

Each run is ``make demo OUT=<work>/<run>`` (install excluded: the venv must be in place; ``--work``,
default ``outputs/demo_benchmark``), one after the other. Recorded per run: its wall time; its
training step's time, from the first to the last line of ``train/train.log``; the precision the
training chose (its log says it); and the test metrics of the model it trains (``eval/metrics.json``). Run it with nothing else on the machine:
the two runs share it, and their times are compared.

Example::

    python -m benchmarks.demo --out benchmarks/results/demo            # ~25 min on 2 cores
    python -m benchmarks.demo --out /tmp/demo --work /tmp/demo_runs --runs avx2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
#: run key -> the environment it adds
RUNS = {"native": {}, "avx2": AVX2}
DESCRIPTION = ("make demo end to end, install excluded (the venv in place): its wall time, the time of its "
               "training step (the feature check's pass included; first to last line of train/train.log) and "
               "the test metrics of the model it trains (xmed-eval on the exported model: the demo phantom's "
               "test split)")
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
PRECISION = re.compile(r"\]\[xmed\.pipeline\.instantiate\]\[INFO\] - precision (\S+)")


def log_span_minutes(log: Path) -> float:
    """Minutes from the first to the last timestamped line of a Hydra job log."""
    stamps = [dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for line in log.read_text().splitlines() if (m := LOG_TIME.match(line))]
    if len(stamps) < 2:
        raise SystemExit(f"{log}: fewer than two timestamped lines; did the training run?")
    return (stamps[-1] - stamps[0]).total_seconds() / 60


def training_precision(log: Path) -> str:
    """The precision the training step chose, as its log states it (the first such line)."""
    found = PRECISION.search(log.read_text())
    return found.group(1) if found else "unknown"


def test_scores(metrics_file: Path) -> dict:
    """The demo's headline test figures from ``eval/metrics.json``."""
    metrics = json.loads(metrics_file.read_text())
    return {"n": metrics["n"], "auroc": metrics["auroc"], "auroc_ci": metrics["ci"]["auroc"],
            "finding_auroc_mean": metrics["finding_auroc_mean"], "vcdr_mae": metrics["vcdr_mae"],
            "oracle_auroc": metrics["oracle_auroc"]}


def run_demo(key: str, work: Path) -> dict:
    """``make demo`` into ``work/<key>`` with the run's environment; its figures."""
    env = RUNS[key]
    folder = work / key
    command = " ".join([*(f"{k}={v}" for k, v in env.items()), "make demo", f"OUT=<work>/{key}"])
    print(f"[demo] {command}", flush=True)
    started = time.perf_counter()
    subprocess.run(["make", "demo", f"OUT={folder}"], cwd=ROOT, env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL)
    wall = (time.perf_counter() - started) / 60
    log = folder / "train" / "train.log"
    return {"key": key, "name": run_name(key), "command": command, "precision": training_precision(log),
            "wall_min": round(wall, 2), "training_min": round(log_span_minutes(log), 2),
            "metrics_file": f"<work>/{key}/eval/metrics.json", "test": test_scores(folder / "eval" / "metrics.json")}


def run_name(key: str) -> str:
    """How the table names a run: the CPU capped, or as it is with what it runs natively."""
    from benchmarks.timing import cpu_flags

    if key == "avx2":
        return "capped to AVX2"
    flags = cpu_flags()
    return "as it is (" + ("AVX-512 with BF16" if "avx512_bf16" in flags else
                           "AVX-512" if "avx512f" in flags else ", ".join(flags) or "no AVX") + ")"


def machine() -> dict:
    from benchmarks.timing import cpu_flags, load_average
    from xmed.runtime import available_cpus, cpu_model

    return {"cpu": cpu_model(), "cpu instruction sets": ", ".join(cpu_flags()), "cpu cores": available_cpus(),
            "load average at start": load_average()}


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# `make demo` on {m['cpu cores']} CPU cores", "",
             f"{results['description']}; {results['date']}, {m['cpu']}, {m['cpu cores']} cores "
             f"({m['cpu instruction sets']}), load average at start {m['load average at start']}.", "",
             f"Command: `{results['command']}` (`<work>`: its `--work`, where the runs' folders are)", "",
             "| CPU | command | precision chosen | wall time | of it training | test AUROC (95% CI) "
             "| mean finding AUROC | vCDR MAE | oracle AUROC |", "|---|---|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        t = run["test"]
        low, high = t["auroc_ci"]
        lines.append(f"| {run['name']} | `{run['command']}` | {run['precision']} | {run['wall_min']:.1f} min "
                     f"| {run['training_min']:.1f} min | {t['auroc']:.3f} ({low:.3f}–{high:.3f}) "
                     f"| {t['finding_auroc_mean']:.3f} | {t['vcdr_mae']:.3f} | {t['oracle_auroc']:.3f} |")
    lines += ["", f"Metrics from each run's `eval/metrics.json` ({results['runs'][0]['test']['n']} test eyes)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "demo_benchmark",
                        help="where the runs' folders go (each replaced by its run)")
    parser.add_argument("--runs", default="native,avx2", help="comma-separated: native, avx2")
    args = parser.parse_args(argv)
    keys = args.runs.split(",")
    unknown = [k for k in keys if k not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; known: {', '.join(RUNS)}")
    results = {"description": DESCRIPTION, "date": dt.date.today().isoformat(), "machine": machine(),
               "command": " ".join(["python -m benchmarks.demo", *(argv if argv is not None else sys.argv[1:])]),
               "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for key in keys:
        results["runs"].append(run_demo(key, args.work))
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")  # a killed run keeps the first
        (args.out / "results.md").write_text(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
