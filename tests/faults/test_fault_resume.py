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
import torch
from safetensors.torch import load_file

from helpers.commands import tiny_overrides

BIN = Path(sys.executable).parent


def overrides(out: Path) -> list[str]:
    base = [o for o in tiny_overrides(out, n=160, epochs=6) if o != "logger=none"]
    return [*base, "logger=csv", "deterministic=true", "callbacks.progress_bar.refresh_rate=0",
            "data.dataset_options.n=160", "model.lr=3e-3"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "xmed-train"), *overrides(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> float:
    """The moment ``path`` exists (the process must still be running)."""
    started = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() - started < timeout
        time.sleep(0.01)
    return time.monotonic()


def versions_until_exit(path: Path, process: subprocess.Popen) -> list[float]:
    """The moments each new version of ``path`` appeared, until the process ends."""
    seen, times = None, []
    while process.poll() is None:
        try:
            version = path.stat().st_ino, path.stat().st_mtime_ns
        except FileNotFoundError:
            version = None
        if version and version != seen:
            seen, times = version, [*times, time.monotonic()]
        time.sleep(0.005)
    return times


def validation_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("val/auroc")]


def epochs_logged(run: Path) -> list[int]:
    return [int(float(r["epoch"])) for r in validation_rows(run)]


def val_aurocs(run: Path) -> list[str]:
    return [r["val/auroc"] for r in validation_rows(run)]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = start(whole)
    saved = versions_until_exit(whole / "checkpoints" / "last.ckpt", reference)
    assert reference.returncode == 0, reference.stderr.read()[-2000:]
    assert len(saved) == 6   # last.ckpt rewritten after every epoch
    training = saved[-1] - saved[0]   # from the end of epoch 0 to the end of the last one

    interrupted = start(killed)
    wait_for(killed / "checkpoints" / "last.ckpt", interrupted)
    delay = random.uniform(0.02, 0.9) * training   # somewhere in epochs 1..5
    time.sleep(delay)
    interrupted.send_signal(signal.SIGKILL)
    assert interrupted.wait() == -signal.SIGKILL, f"the run ended before the kill ({delay:.2f} s)"
    assert not (killed / "metrics.json").exists()
    killed_at = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert killed_at < 5, f"killed after training ended ({delay:.2f} s)"

    resumed = subprocess.run([str(BIN / "xmed-train"), *overrides(killed), "ckpt_path=last"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    reference_metrics = json.loads((whole / "metrics.json").read_text())
    resumed_metrics = json.loads((killed / "metrics.json").read_text())
    for key in ("auroc", "brier", "vcdr_mae", "finding_auroc_mean", "threshold"):
        assert resumed_metrics[key] == reference_metrics[key], (key, f"killed {delay:.2f} s after epoch 0, resumed after epoch {killed_at}")
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    # the final weights too (the exported model is the best epoch, which may precede the kill)
    last = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in (whole, killed)]
    assert last[0].keys() == last[1].keys() and all(torch.equal(last[0][k], last[1][k]) for k in last[0])
    assert epochs_logged(killed) == epochs_logged(whole) == list(range(6))
    assert val_aurocs(killed) == val_aurocs(whole)
    assert not [p for p in killed.rglob("*.part")]
