"""xmed's commands run as a user runs them, in a fresh process each (``python -m xmed.cli.<name>``),
timed, with the peak device memory the process allocated.

Example::

    done = run_command("predict", ["ckpt_path=model", "input=eyes", "paths.output_dir=out"], cwd, 600)
    done.seconds, done.peak_memory_mb
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK = "BENCHMARK_PEAK_MEMORY_MB"
# runs the command's module as __main__ (as `python -m` does: Lightning relaunches its extra
# processes the same way) and says the peak device memory it allocated
WRAPPER = (f"import runpy, sys, torch\n"
           f"try:\n"
           f"    runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
           f"finally:\n"
           f"    if torch.cuda.is_available():\n"
           f"        print('{PEAK}', torch.cuda.max_memory_allocated() / 2**20, flush=True)\n")


@dataclass
class Done:
    """A finished command: its wall time (start-up included), peak device memory (None off CUDA),
    exit status and the last of its output."""

    seconds: float
    peak_memory_mb: float | None
    returncode: int
    output: str


def source_env() -> dict[str, str]:
    """The environment with this source tree first on ``PYTHONPATH`` (xmed need not be installed)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def run_command(name: str, overrides: list[str], cwd: Path, timeout: float, env: dict | None = None) -> Done:
    """``python -m xmed.cli.<name> <overrides>`` in ``cwd``; an exit status other than 0 is returned, not raised."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, f"xmed.cli.{name}", *overrides], cwd=cwd,
                          env={**source_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    peak = next((float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith(PEAK)), None)
    return Done(seconds, peak, done.returncode, (done.stdout + done.stderr)[-3000:])


def write_phantom_jpegs(out: Path, n: int, size: int, seed: int) -> None:
    """``n`` phantom eyes as JPEG files in ``out``, written by ``xmed-data phantom`` (its entry point,
    called in this process: a fresh interpreter would only add start-up time)."""
    from xmed.cli.data import main

    workers = 1 if n < 200 else 0  # 0: one process per core
    status = main(["phantom", "--out", str(out), "--n", str(n), "--size", str(size), "--seed", str(seed),
                   "--format", "jpg", "--workers", str(workers), "--quiet"])
    if status:
        raise RuntimeError(f"xmed-data phantom exited with status {status}")
