"""The benchmark harness: ``python -m benchmarks --quick`` runs every CPU benchmark and
``benchmarks/gpu.sh --device cpu --quick`` the GPU suite, each into one results.json whose every
figure is finite and written next to its baseline and their ratio; a failing benchmark is recorded
and the others still run."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package lives beside xmed, in the source tree

from benchmarks.runner import SUITES, main  # noqa: E402
from xmed.explain import EXPLAINERS  # noqa: E402

HEADER = ("cpu", "cpu instruction sets", "cpu cores", "gpu", "gpu driver", "torch", "cuda",
          "precision (xmed.runtime.choose_precision)", "command", "load average at end")


def checked_results(out: Path, suite: str) -> dict:
    """results.json of a finished run, with what holds for every run checked."""
    results = json.loads((out / "results.json").read_text())
    assert [p["name"] for p in results["parts"]] == list(SUITES[suite])
    assert all(key in results["header"] for key in HEADER), results["header"]
    for part in results["parts"]:
        assert part["errors"] == [], (part["name"], part["errors"])
        assert part["figures"], part["name"]
        for figure in part["figures"]:
            assert math.isfinite(figure["value"]) and figure["value"] > 0, figure
            if figure["baseline"] is None:    # only a share of an unknown GPU's peak is left out, and said so
                assert figure["ratio"] is None and "share of peak omitted" in figure["note"], figure
            else:
                assert figure["baseline"] > 0 and figure["ratio"] == pytest.approx(
                    figure["value"] / figure["baseline"], rel=1e-3), figure
            assert (figure["met"] is None) == (figure["goal"] is None), figure
        assert all(check["met"] for check in part["checks"]), part["checks"]
    markdown = (out / "results.md").read_text()
    assert "| part | figure | value | baseline | ratio | goal |" in markdown
    assert all(f"### {p['name']}" in markdown for p in results["parts"])
    return results


def figures(results: dict, part: str) -> list[str]:
    return [f["name"] for p in results["parts"] if p["name"] == part for f in p["figures"]]


@pytest.mark.timeout(600)
def test_the_quick_cpu_suite_writes_every_figure_with_its_baseline(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = checked_results(tmp_path, "cpu")
    assert results["header"]["suite"] == "cpu" and results["header"]["quick"] is True
    goals = {f["name"]: f["goal"] for p in results["parts"] for f in p["figures"] if f["goal"]}
    assert goals["import xmed.explain"] == goals["import xmed.metrics"] == "ratio <= 1.25"
    assert goals["render 256 px, 1 core"] == "value >= 40"
    assert figures(results, "scale_out") == ["xmed-predict, trainer=ddp_cpu (2 processes)",
                                             "xmed-explain, trainer=ddp_cpu (2 processes)"]
    checks = [c["name"] for p in results["parts"] if p["name"] == "scale_out" for c in p["checks"]]
    assert len(checks) == 2 and all("the same" in c for c in checks)
    assert figures(results, "loader_decode") == [
        "256 px JPEG -> 64 px input: decode_reduced=true (1/1 decode)",
        "512 px JPEG -> 64 px input: decode_reduced=true (1/2 decode)"]
    assert figures(results, "loader_handover") == [
        "cached train epoch, 2 workers, uint8 hand-over: batch copied once in the main process (the GPU normalises)",
        "cached train epoch, 2 workers, uint8 hand-over: batch normalised in the main process (training on the CPU)"]


@pytest.mark.slow  # about 30 s: it installs nothing but runs the whole GPU suite's code path on the CPU
@pytest.mark.timeout(600)
def test_the_gpu_script_runs_the_gpu_suite_on_a_cpu(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu.sh", "--device", "cpu", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=580)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = checked_results(tmp_path, "gpu")
    assert results["header"]["suite"] == "gpu" and results["header"]["gpu"] == "none used"
    training = figures(results, "gpu_training")
    assert "resnet18 64 px, batch 4: eager training" in training
    assert "resnet18 64 px, batch 4: torch.compile (aot_eager)" in training
    assert any(name.startswith("Lightning Trainer") for name in training)
    loader = figures(results, "gpu_loader")
    assert loader[0].startswith("libjpeg (CPU) decode alone") and loader[1].startswith("device preparation alone")
    assert [name.split(",")[0] + "," + name.split(",")[2].split("(")[0] for name in loader[2:]] == [
        "data.pipeline=gpu, epochs after the first ", "data.pipeline=gpu, a first epoch ",
        "data.pipeline=cpu, epochs after the first ", "data.pipeline=cpu, a first epoch "]
    goals = {f["name"].split(",")[0]: f["goal"] for p in results["parts"] for f in p["figures"] if f["goal"]}
    assert goals["gradcam (batch_size: auto)"] == "value >= 20000" and goals["xmed-predict"] == "value >= 3000"
    assert goals["adversarial edit"] == "value >= 1000"
    explained = figures(results, "gpu_explain")
    assert [name.split(",")[0] for name in explained[:5]] == [
        "gradcam (batch_size: auto)", "gradcam (batch_size: auto)", "adversarial edit", "adversarial edit",
        "xmed-predict"]
    assert explained[5] == "xmed-predict start-up: a folder of one eye" and explained[6].startswith("image-quality gate")
    assert [name.split(",")[0] for name in explained[7:7 + len(EXPLAINERS)]] == list(EXPLAINERS)
    assert explained[-1].startswith("adversarial counterfactual")


def test_a_failing_benchmark_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    def broken(part, ctx):
        raise MemoryError("out of memory")

    def measured(part, ctx):
        part.figure("a", 2.0, "s", "b", 4.0)

    monkeypatch.setattr(importlib.import_module("benchmarks.phantom_speed"), "run", broken)
    monkeypatch.setattr(importlib.import_module("benchmarks.import_time"), "run", measured)
    status = main(["--device", "cpu", "--only", "phantom_speed,import_time", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert status == 1
    first, second = results["parts"]
    assert first["errors"][0].startswith("MemoryError: out of memory") and first["figures"] == []
    assert second["errors"] == [] and second["figures"][0]["ratio"] == 0.5
    assert "**error**: MemoryError: out of memory" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("name", ["timing", "runner", "explain_speed", "gpu_training", "gpu_explain",
                                  "scale_out"])
def test_the_examples_in_the_docstrings_hold(name):
    module = importlib.import_module(f"benchmarks.{name}")
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0
