"""The commands on a GPU (``trainer=gpu``): training, the evaluation after it and ``xmed-eval`` run
on the GPU and agree with the CPU; ``xmed-predict`` and ``xmed-explain`` give the CPU's answers.
Skipped where torch sees no GPU."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from helpers.commands import compose, tiny_overrides

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    from xmed.pipeline.training import train

    out = tmp_path_factory.mktemp("gpu_train")
    metrics = train(compose("train", [*tiny_overrides(out, n=64, epochs=1), "trainer=gpu"]))
    return out, metrics


def test_training_and_its_evaluation_run_on_the_gpu(gpu_run):
    out, metrics = gpu_run
    card = (out / "model_card.md").read_text()
    assert "- **devices**: 1 x cuda" in card
    assert metrics["n"] > 0 and 0.0 <= metrics["auroc"] <= 1.0


def test_eval_on_the_gpu_matches_the_cpu(gpu_run, tmp_path):
    from xmed.pipeline.evaluation import evaluate

    out, _ = gpu_run
    base = ["data=phantom_render", "data.dataset_options.n=64", "data.dataset_options.size=48",
            "data.num_workers=0", "n_bootstrap=20", f"ckpt_path={out / 'model'}"]
    results = {t: evaluate(compose("eval", [*base, f"trainer={t}", f"paths.output_dir={tmp_path / t}"]))
               for t in ("cpu", "gpu")}
    assert results["gpu"]["auroc"] == pytest.approx(results["cpu"]["auroc"], abs=1e-6)
    cpu, gpu = rows(tmp_path / "cpu" / "predictions.csv"), rows(tmp_path / "gpu" / "predictions.csv")
    assert cpu.keys() == gpu.keys()
    for eye_id, row in cpu.items():   # cuDNN and oneDNN sum in different orders
        assert float(gpu[eye_id]["prob"]) == pytest.approx(float(row["prob"]), abs=1e-4)


def test_predict_and_explain_on_the_gpu_match_the_cpu(gpu_run, tmp_path):
    from xmed.pipeline.explanation import explain_run
    from xmed.pipeline.prediction import predict_run

    out, _ = gpu_run
    images = out.parent / "images"
    if not images.exists():
        from xmed.data.phantom.writer import write_phantom_dataset

        write_phantom_dataset(images, n=40, size=64, seed=3, progress=False)
    for trainer in ("cpu", "gpu"):
        predict_run(compose("predict", [f"ckpt_path={out / 'model'}", f"input={images / 'images'}", "num_workers=0",
                                        f"trainer={trainer}", f"paths.output_dir={tmp_path / 'predict' / trainer}"]))
        explain_run(compose("explain", ["data=phantom", f"data.root={images}", f"ckpt_path={out / 'model'}",
                                        "n=4", "explainer=[gradcam,integrated_gradients]", "randomisation.n_images=0",
                                        f"trainer={trainer}", f"paths.output_dir={tmp_path / 'explain' / trainer}"]))
    cpu, gpu = (rows(tmp_path / "predict" / t / "predictions.csv") for t in ("cpu", "gpu"))
    assert cpu.keys() == gpu.keys() and len(cpu) == 40
    for eye_id, row in cpu.items():
        assert float(gpu[eye_id]["prob"]) == pytest.approx(float(row["prob"]), abs=1e-4)
    scores = [json.loads((tmp_path / "explain" / t / "metrics.json").read_text())["methods"] for t in ("cpu", "gpu")]
    for method in ("gradcam", "integrated_gradients"):
        assert scores[1][method]["deletion"] == pytest.approx(scores[0][method]["deletion"], abs=1e-3), method
