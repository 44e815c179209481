"""A training run killed with SIGKILL at a random moment and resumed with ``ckpt_path=last`` ends with
the same weights, metrics and history as the run that was never interrupted (deterministic mode)."""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from test_train_cli import tiny_overrides

BIN = Path(sys.executable).parent


def overrides(out: Path) -> list[str]:
    base = [o for o in tiny_overrides(out, n=160, epochs=6) if o != "logger=none"]
    return [*base, "logger=csv", "deterministic=true", "callbacks.progress_bar.refresh_rate=0",
            "data.dataset_options.n=160", "model.lr=3e-3"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "xmed-train"), *overrides(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> float:
    """Seconds until ``path`` exists (the process must still be running)."""
    started = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() - started < timeout
        time.sleep(0.02)
    return time.monotonic()


def epochs_logged(run: Path) -> list[int]:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return [int(float(r["epoch"])) for r in csv.DictReader(fh) if r.get("val/auroc")]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = start(whole)
    first_checkpoint = wait_for(whole / "checkpoints" / "last.ckpt", reference)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]
    training_left = time.monotonic() - first_checkpoint

    interrupted = start(killed)
    wait_for(killed / "checkpoints" / "last.ckpt", interrupted)
    delay = random.uniform(0.05, 0.6) * training_left   # somewhere in epochs 2..6
    time.sleep(delay)
    interrupted.send_signal(signal.SIGKILL)
    assert interrupted.wait() == -signal.SIGKILL, f"the run ended before the kill ({delay:.2f} s)"
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run([str(BIN / "xmed-train"), *overrides(killed), "ckpt_path=last"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    reference_metrics = json.loads((whole / "metrics.json").read_text())
    resumed_metrics = json.loads((killed / "metrics.json").read_text())
    for key in ("auroc", "brier", "vcdr_mae", "finding_auroc_mean", "threshold"):
        assert resumed_metrics[key] == reference_metrics[key], (key, f"killed after {delay:.2f} s")
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert epochs_logged(killed) == epochs_logged(whole) == list(range(6))
    assert not [p for p in killed.rglob("*.part")]
