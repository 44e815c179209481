"""``xmed-train`` / ``xmed-eval`` end to end on a tiny rendered phantom and a tiny timm model.

The default test composes the Hydra config with the compose API and calls ``train(cfg)`` and
``evaluate(cfg)`` in-process (no HydraConfig: the run folder is ``paths.output_dir``). The
``slow`` test runs the console script as two CPU processes (DDP over gloo) against one process.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers.commands import PUBLISHED, compose, tiny_overrides

METRIC_KEYS = ("auroc", "pauroc_90", "sens_at_95spec", "sensitivity", "specificity", "accuracy", "brier", "ece",
               "finding_auroc", "finding_hamming", "vcdr_mae", "n", "ci")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny training run, shared by the tests below: (run folder, returned metrics, config)."""
    from hydra.core.hydra_config import HydraConfig

    from xmed.pipeline.training import train

    out = tmp_path_factory.mktemp("train_run")
    cfg = compose("train", tiny_overrides(out))
    assert not HydraConfig.initialized()
    metrics = train(cfg)
    return out, metrics, cfg


def test_train_writes_every_artefact(run):
    out, metrics, _ = run
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))  # best and last
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "config.json").is_file()
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model"]["backbone"] == "test_resnet.r160_in1k"
    assert config["model"]["data_config"]["input_size"] == 48 and config["dataset"] == "phantom_render"
    # every validation photograph of the phantom passes every image-quality check: the model keeps them all
    assert config["model"]["data_config"]["quality_checks"] == ["no_field_of_view", "nearly_uniform",
                                                               "out_of_distribution"]
    assert ("- **Image-quality checks**: no_field_of_view (0% of validation eyes fail it), nearly_uniform (0% "
            in (out / "model_card.md").read_text())
    assert {p.name for p in (out / "plots").glob("*.png")} >= {"roc.png", "calibration.png", "finding_auroc.png"}


def test_train_fits_the_feature_check_on_the_training_eyes(run):
    """As training ends the exported model gets its out-of-distribution check: fitted on every
    training eye, its threshold on every validation eye; the test eyes it flags are counted."""
    from xmed.data import FundusDataModule

    out, metrics, _ = run
    dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 48, "size": 48}, image_size=48)
    dm.setup()
    check = json.loads((out / "model" / "config.json").read_text())["model"]["feature_check"]
    assert (check["train_eyes"], check["val_eyes"], check["percentile"]) == (len(dm.splits["train"]),
                                                                           len(dm.splits["val"]), 99.0)
    assert check["threshold"] > 0 and check["features"] == 96
    assert set(metrics["unfamiliar_features"]) == {"val", "test"}
    assert metrics["unfamiliar_features"]["val"] <= 1    # the threshold lies at the largest distances of the few
    assert f"- **Out-of-distribution check**: Mahalanobis distance of the 96 pooled backbone features from a " \
           f"Gaussian fitted on {check['train_eyes']} training eyes" in (out / "model_card.md").read_text()


def test_train_metrics_json(run):
    out, metrics, _ = run
    written = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(written)
    assert written["auroc"] == metrics["auroc"]
    assert 0.0 <= written["auroc"] <= 1.0 and 0.0 <= written["brier"] <= 1.0
    assert set(written["finding_auroc"]) <= {"ANRS", "ANRI", "RNFLDS", "RNFLDI", "BCLVS", "BCLVI", "NVT", "DH",
                                             "LD", "LC"}
    lo, hi = written["ci"]["auroc"]
    assert lo <= hi and 0.0 <= lo and hi <= 1.0


def test_train_predictions_one_row_per_test_eye(run):
    from xmed.data import FundusDataModule

    out, metrics, cfg = run
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 48, "size": 48}, image_size=48)
    dm.setup()
    test_ids = [dm.base.records[i].id for i in dm.splits["test"].indices]
    assert [r["id"] for r in rows] == test_ids
    assert metrics["n"] == len(rows) == 8
    labels = [float(r["label"]) for r in rows]
    assert labels == dm.splits["test"].labels().tolist()
    assert all(0.0 <= float(r["prob"]) <= 1.0 for r in rows)


def test_train_model_card(run):
    out, metrics, _ = run
    card = (out / "model_card.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "xmed"
    assert front["base_model"] == "test_resnet.r160_in1k" and front["datasets"] == ["phantom_render"]
    card_metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert card_metrics["auroc"] == pytest.approx(metrics["auroc"], abs=1e-4)
    # the digests the card lists are those of the files on disk
    for rel in ("model/model.safetensors", *(f"checkpoints/{p.name}" for p in (out / "checkpoints").glob("*.ckpt")
                                           if f"checkpoints/{p.name}" in card)):
        digest = re.search(rf"`{re.escape(rel)}` sha256 `([0-9a-f]{{64}})`", card)
        assert digest, rel
        assert digest.group(1) == hashlib.sha256((out / rel).read_bytes()).hexdigest()


def test_train_log_and_card_say_which_precision_and_why(run):
    from xmed.runtime import choose_precision

    out, _, _ = run
    expected = choose_precision("cpu")  # what this machine gets from `precision: auto`
    card = (out / "model_card.md").read_text()
    compute = card.split("## Compute", 1)[1].split("\n## ", 1)[0]
    assert f"- **precision**: {expected.value} ({expected.reason})" in compute
    assert "- **channels_last**: True (oneDNN convolutions" in compute
    assert "- **loader workers**: 0 (set in the config)" in compute
    assert "- **cpu kernels**: " in compute and "- **torch threads**: " in compute


def test_eval_on_the_exported_model_gives_the_same_auroc(run, tmp_path):
    from xmed.pipeline.evaluation import evaluate

    out, metrics, _ = run
    cfg = compose("eval", ["data=phantom_render", "data.dataset_options.n=48", "data.dataset_options.size=48",
                           "data.num_workers=0", "n_bootstrap=20", f"ckpt_path={out / 'model'}",
                           f"paths.output_dir={tmp_path}"])
    result = evaluate(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["auroc"] == result["auroc"] == metrics["auroc"]
    assert written["n"] == metrics["n"] and written["vcdr_mae"] == metrics["vcdr_mae"]
    assert (tmp_path / "predictions.csv").read_text() == (out / "predictions.csv").read_text()


def eval_command(model: Path, out: Path, trainer: str) -> list[str]:
    return [str(Path(sys.executable).with_name("xmed-eval")), "data=phantom_render", "data.dataset_options.n=48",
            "data.dataset_options.size=48", "data.num_workers=0", "data.batch_size=4", "n_bootstrap=50",
            f"ckpt_path={model}", f"paths.output_dir={out}", f"trainer={trainer}"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_eval_in_two_processes_gives_what_one_gives(run, tmp_path):
    """`xmed-eval trainer=ddp_cpu` (two gloo processes, each scoring half of every split) writes the
    same per-eye predictions and the same metrics as one process."""
    out, _, _ = run
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for trainer in ("cpu", "ddp_cpu"):
        done = subprocess.run(eval_command(out / "model", tmp_path / trainer, trainer), env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    one, two = (read_rows(tmp_path / t / "predictions.csv") for t in ("cpu", "ddp_cpu"))
    metrics = [json.loads((tmp_path / t / "metrics.json").read_text()) for t in ("cpu", "ddp_cpu")]
    assert len(one) == metrics[0]["n"] == 8 and [r["id"] for r in one] == [r["id"] for r in two]  # each eye once
    for a, b in zip(one, two):
        assert a["pred"] == b["pred"] and a["label"] == b["label"]
        for key in ("prob", "vcdr_pred", "p_RNFLDS"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-6)
    for key in ("auroc", "sens_at_95spec", "threshold", "finding_auroc_mean", "n", "excluded"):
        assert metrics[0][key] == pytest.approx(metrics[1][key], abs=1e-5), key
    assert metrics[0]["ci"]["auroc"] == pytest.approx(metrics[1]["ci"]["auroc"], abs=1e-5)


def test_training_skips_masks_unless_a_mask_head_uses_them(tmp_path):
    from xmed.pipeline.training import training_data_config

    plain = training_data_config(compose("train", tiny_overrides(tmp_path)))
    assert plain.dataset_options.load_masks is False and plain.dataset_options.n == 48
    with_head = training_data_config(compose("train", tiny_overrides(tmp_path) + ["+model.net.mask_head=[disc]"]))
    assert "load_masks" not in with_head.dataset_options
    asked = training_data_config(compose("train", tiny_overrides(tmp_path) + ["+data.dataset_options.load_masks=true"]))
    assert asked.dataset_options.load_masks is True


def test_init_from_starts_a_run_from_the_trained_weights(run, tmp_path):
    """``init_from`` loads the trained model: with no epochs to train, the new run exports the
    same weights and scores the same test AUROC; the card says where the weights came from. The
    feature check is fitted anew, on the same eyes: the same statistics to float32 rounding (the
    model that trained no epoch computes them in its training memory format)."""
    from safetensors.torch import load_file

    from xmed.pipeline.training import train

    out, metrics, _ = run
    cfg = compose("train", tiny_overrides(tmp_path, epochs=0) + [f"init_from={out / 'model'}"])
    again = train(cfg)
    before, after = load_file(out / "model" / "model.safetensors"), load_file(tmp_path / "model" / "model.safetensors")
    assert before.keys() == after.keys() and {"feature_check.mean", "feature_check.whitening"} <= before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("feature_check."))
    for k in ("feature_check.mean", "feature_check.whitening"):
        torch.testing.assert_close(after[k], before[k], rtol=1e-4, atol=1e-5 * float(before[k].abs().max()))
    assert again["auroc"] == metrics["auroc"]
    assert f"- **initialised from**: `{out / 'model'}`" in (tmp_path / "model_card.md").read_text()


def test_init_from_names_the_key_when_the_architecture_differs(run):
    from xmed.pipeline.training import initialise_from
    from xmed.errors import ConfigError
    from xmed.models import FundusModule

    out, _, _ = run
    bottleneck = FundusModule(net={"backbone": "test_resnet.r160_in1k", "input_size": 48, "mode": "concept_bottleneck"})
    with pytest.raises(ConfigError, match="init_from.*do not fit model.net"):
        initialise_from(bottleneck, out / "model")
    other = FundusModule(net={"backbone": "resnet10t", "input_size": 48})
    with pytest.raises(ConfigError, match="init_from.*'test_resnet.r160_in1k' model, model.net.backbone is 'resnet10t'"):
        initialise_from(other, out / "model")
    with pytest.raises(ConfigError, match="init_from.*task 'autoencoder'"):
        initialise_from(other, out / "model", task="autoencoder")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ddp_cpu_training_matches_single_process(tmp_path):
    """Two gloo processes vs one, same seed and data, full precision: the same global batch (16 = 2 x 8,
    the same eyes: the epoch sampler deals one shuffled order out to the ranks), augmentations drawn per
    eye, and a backbone without batch norm (LayerNorm: a per-process batch statistic would differ, and
    torch's SyncBatchNorm runs on GPUs only) — so the same training steps, and the test predictions and
    metrics agree up to the order of floating-point sums (probabilities within 1e-4)."""
    script = Path(sys.executable).with_name("xmed-train")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for trainer in ("cpu", "ddp_cpu"):
        out = tmp_path / trainer
        cmd = [str(script), *tiny_overrides(out, n=200, epochs=2), f"trainer={trainer}", "trainer.precision=32-true",
               f"data.batch_size={8 if trainer == 'ddp_cpu' else 16}", "callbacks.progress_bar.refresh_rate=0",
               "model.net.backbone=test_convnext", "model.net.drop_rate=0.0"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, two = (read_rows(tmp_path / t / "predictions.csv") for t in ("cpu", "ddp_cpu"))
    assert len(one) == 30 and [r["id"] for r in one] == [r["id"] for r in two]
    for a, b in zip(one, two):
        assert float(a["prob"]) == pytest.approx(float(b["prob"]), abs=1e-4)
    metrics = [json.loads((tmp_path / t / "metrics.json").read_text()) for t in ("cpu", "ddp_cpu")]
    print(f"test AUROC: cpu {metrics[0]['auroc']:.4f}, ddp_cpu {metrics[1]['auroc']:.4f}")
    for key in ("auroc", "finding_auroc_mean", "vcdr_mae"):
        assert metrics[0][key] == pytest.approx(metrics[1][key], abs=1e-2), key


def test_autoencoder_task_trains_exports_and_feeds_latent_shift(tmp_path):
    """`xmed-train task=autoencoder` writes a loadable autoencoder whose reconstruction error it
    reports; xmed-explain then runs latent shift with it on a classifier of the same input space."""
    from xmed.pipeline.explanation import explain_run
    from xmed.pipeline.training import train
    from xmed.models import FundusClassifier, export_model, load_autoencoder

    out = tmp_path / "ae"
    overrides = [o for o in tiny_overrides(out, n=40, epochs=2) if not o.startswith("model=")]
    cfg = compose("train", [*overrides, "task=autoencoder", "model.net.channels=[8,16]",
                            "model.net.latent_channels=8"])
    assert cfg.model._target_ == "xmed.models.autoencoder.AutoencoderModule" and cfg.task_type == "autoencoder"
    metrics = train(cfg)
    written = json.loads((out / "metrics.json").read_text())
    assert written == metrics and written["n"] == 6 and 0 < written["reconstruction_l1"] < 2
    autoencoder = load_autoencoder(out / "autoencoder")
    assert autoencoder.data_config.input_size == 48 and not autoencoder.training

    classifier = FundusClassifier("test_resnet.r160_in1k", data_config=autoencoder.data_config.as_dict()).eval()
    model_dir = export_model(classifier, tmp_path / "classifier")
    run = tmp_path / "explain"
    result = explain_run(compose("explain", [
        "data=phantom_render", "data.dataset_options.n=40", "data.dataset_options.size=48", "data.num_workers=0",
        f"ckpt_path={model_dir}", "n=2", "batch_size=2", "overlays=1", "randomisation.n_images=0",
        "explainer=latent_shift", f"explainer.latent_shift.autoencoder={out / 'autoencoder'}",
        "explainer.latent_shift.n_lambdas=3", f"paths.output_dir={run}"]))
    assert set(result["methods"]) == {"latent_shift_decrease", "latent_shift_increase"}
    with open(run / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for direction in ("decrease", "increase"):   # the overlay eye's path, where the edit changed it
        first = next(r for r in rows if r["method"] == f"latent_shift_{direction}")
        gifs = list((run / "counterfactuals" / f"latent_shift_{direction}").glob("*.gif"))
        assert len(gifs) == int(first["steps"] != "0"), direction
    assert any(r["steps"] != "0" for r in rows)


@pytest.mark.parametrize("name", PUBLISHED)
def test_one_experiment_trains_on_any_published_data_set(name):
    cfg = compose("train", ["experiment=public", f"data={name}", "paths.data_dir=/data"])
    assert cfg.data.dataset == name and cfg.data.root.startswith("/data/")
    assert cfg.model.net.backbone == "efficientnet_b0" and cfg.data.image_size == 384 and cfg.trainer.max_epochs == 30
    assert list(cfg.tags) == ["public", name]


def test_the_public_experiment_needs_its_data_set():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="You must specify 'data'"):
        compose("train", ["experiment=public"])
