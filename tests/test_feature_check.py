"""The model's own out-of-distribution check (:mod:`xmed.models.feature_check`): the Mahalanobis
distance under a Ledoit-Wolf covariance equals a hand computation; the statistics travel with an
exported model, a folder without them loads unchecked and hostile ones are refused naming the file;
``xmed-predict`` and the rationale flag a real photograph that a model fitted on phantom eyes has
never seen, and not a phantom eye it has not seen either."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import pytest
import torch
from safetensors.torch import load_file, save_file

from xmed.data import render_phantom
from xmed.errors import CheckpointError
from xmed.models import FundusClassifier
from xmed.models.export import export_model, load_model
from xmed.models.feature_check import (UNFAMILIAR_FEATURES, fit_feature_check, fit_gaussian, mahalanobis,
                                       pooled_features, whitening_matrix)

from helpers.predict import SIZE, predict

TINY = "test_resnet.r160_in1k"
ROWS = [(0, 0), (1, 1), (2, 2.5), (3, 2.5), (4, 4.5), (5, 5), (6, 5.5), (7, 7.5)]
VAL = [(1, 0), (2, 2), (6, 1), (3, 4)]


def hand_ledoit_wolf(rows):
    """Mean, covariance and shrinkage of 2-D rows by Ledoit and Wolf's formulas, in plain floats."""
    n, p = len(rows), 2
    mean = [sum(r[j] for r in rows) / n for j in range(p)]
    c = [[r[j] - mean[j] for j in range(p)] for r in rows]
    s = [[sum(x[i] * x[j] for x in c) / n for j in range(p)] for i in range(p)]
    mu = (s[0][0] + s[1][1]) / p
    d2 = ((s[0][0] - mu) ** 2 + (s[1][1] - mu) ** 2 + 2 * s[0][1] ** 2) / p             # ‖S − μI‖² / p
    b2 = (sum((x[0] ** 2 + x[1] ** 2) ** 2 for x in c) - n * sum(v * v for row in s for v in row)) / (p * n * n)
    shrinkage = min(b2, d2) / d2
    cov = [[(1 - shrinkage) * s[i][j] + (shrinkage * mu if i == j else 0.0) for j in range(p)] for i in range(p)]
    return mean, cov, shrinkage


def hand_distance(point, mean, cov) -> float:
    dx, dy = point[0] - mean[0], point[1] - mean[1]
    det = cov[0][0] * cov[1][1] - cov[0][1] ** 2
    return math.sqrt((cov[1][1] * dx * dx - 2 * cov[0][1] * dx * dy + cov[0][0] * dy * dy) / det)


def test_the_distance_is_the_hand_computed_mahalanobis_distance_under_ledoit_wolf():
    mean, cov, shrinkage = hand_ledoit_wolf(ROWS)
    assert 0.2 < shrinkage < 0.25                                  # shrunk, not replaced by the identity
    got_mean, got_cov, got_shrinkage = fit_gaussian(torch.tensor(ROWS, dtype=torch.float64))
    assert got_mean.tolist() == pytest.approx(mean, rel=1e-15)
    assert got_cov.flatten().tolist() == pytest.approx([v for row in cov for v in row], rel=1e-13)
    assert got_shrinkage == pytest.approx(shrinkage, rel=1e-13)
    probe = (6.0, 1.0)
    exact = mahalanobis(torch.tensor([probe], dtype=torch.float64), got_mean, whitening_matrix(got_cov))
    assert exact.item() == pytest.approx(hand_distance(probe, mean, cov), rel=1e-13)

    check = fit_feature_check(torch.tensor(ROWS), torch.tensor(VAL), percentile=75)   # float32, as a model runs
    assert check(torch.tensor([probe])).item() == pytest.approx(hand_distance(probe, mean, cov), rel=1e-6)
    val = sorted(hand_distance(v, mean, cov) for v in VAL)          # 75th percentile: 3/4 of the way from
    assert check.threshold == pytest.approx(val[2] + 0.25 * (val[3] - val[2]), rel=1e-6)   # the 3rd to the 4th
    assert (check.train_eyes, check.val_eyes, check.percentile) == (8, 4, 75.0)
    assert check.unfamiliar(torch.tensor([0.0, check.threshold + 1, math.nan])).tolist() == [False, True, True]


def phantom_eyes(seeds) -> list:
    return [render_phantom(seed, 128).image for seed in seeds]


@pytest.fixture(scope="module")
def checked_model(tmp_path_factory) -> Path:
    """A tiny random model whose feature check is fitted on 48 phantom eyes (12 more set the
    threshold), exported."""
    torch.manual_seed(0)
    model = FundusClassifier(TINY, input_size=SIZE, threshold=0.5).eval()
    train, val = (pooled_features(model, [model.prepare(phantom_eyes(seeds))]) for seeds in (range(48), range(48, 60)))
    model.feature_check = fit_feature_check(train, val)
    return export_model(model, tmp_path_factory.mktemp("checked") / "model")


def test_an_exported_check_round_trips(checked_model):
    loaded = load_model(checked_model)
    settings = json.loads((checked_model / "config.json").read_text())["model"]["feature_check"]
    assert loaded.feature_check.settings() == settings and settings["train_eyes"] == 48 and settings["val_eyes"] == 12
    state = load_file(str(checked_model / "model.safetensors"))
    assert torch.equal(loaded.feature_check.mean, state["feature_check.mean"])
    assert torch.equal(loaded.feature_check.whitening, state["feature_check.whitening"])
    images = loaded.prepare(phantom_eyes([60, 61]))
    with torch.no_grad():
        distance = loaded(images)["feature_distance"]
        check = loaded.feature_check
        expected = mahalanobis(loaded.pooled_features(images), check.mean, check.whitening)
    torch.testing.assert_close(distance, expected)


def test_a_folder_without_the_statistics_loads_and_flags_nothing(tmp_path):
    from xmed.inference import eye_records, score_batch

    old = export_model(FundusClassifier(TINY, input_size=SIZE, threshold=0.5), tmp_path / "old")
    assert "feature_check" not in json.loads((old / "config.json").read_text())["model"]
    model = load_model(old)
    assert model.feature_check is None
    unknown = torch.tensor([math.nan])
    batch = {"image": model.prepare(phantom_eyes([0])), "meta": {"id": ["a"], "eye": ["OD"]},
             "label": unknown, "findings": torch.full((1, 10), math.nan), "vcdr": unknown}
    scores = score_batch(model, batch)
    record = eye_records(scores, batch)[0]
    assert scores["feature_distance"] is None and record["feature_distance"] is None and record["quality"] == ""


def rewrite_config(folder: Path, drop: str | None = None, **settings) -> None:
    """The folder's feature-check settings with ``settings`` changed and ``drop`` left out (NaN is
    written as JSON's non-standard ``NaN``)."""
    config = json.loads((folder / "config.json").read_text())
    config["model"]["feature_check"].update(settings)
    config["model"]["feature_check"].pop(drop, None)
    (folder / "config.json").write_text(json.dumps(config))


def rewrite_weights(folder: Path, name: str, value: torch.Tensor | None) -> None:
    state = load_file(str(folder / "model.safetensors"))
    if value is None:
        del state[name]
    else:
        state[name] = value
    save_file(state, str(folder / "model.safetensors"))


HOSTILE = {
    "another width": (lambda f: rewrite_config(f, features=95), "config.json",
                      "feature_check.features: must be the width of the model's pooled features, 96"),
    "a negative threshold": (lambda f: rewrite_config(f, threshold=-3.0), "config.json",
                             "feature_check.threshold: must be a finite number ≥ 0"),
    "a threshold in words": (lambda f: rewrite_config(f, threshold="NaN"), "config.json",
                             "feature_check.threshold: must be a finite number ≥ 0, got 'NaN'"),
    "a NaN threshold": (lambda f: rewrite_config(f, threshold=math.nan), "config.json", "not valid JSON"),
    "no percentile": (lambda f: rewrite_config(f, drop="percentile"), "config.json",
                      "feature_check: missing key 'percentile'"),
    "a percentile of 0": (lambda f: rewrite_config(f, percentile=0), "config.json", "feature_check.percentile"),
    "a whitening of the wrong shape": (lambda f: rewrite_weights(f, "feature_check.whitening", torch.eye(95)),
                                       "model.safetensors", "size mismatch for feature_check.whitening"),
    "a NaN in the mean": (lambda f: rewrite_weights(f, "feature_check.mean", torch.full((96,), math.nan)),
                          "model.safetensors", "96 weights are NaN or infinite, in feature_check.mean"),
    "no mean": (lambda f: rewrite_weights(f, "feature_check.mean", None), "model.safetensors",
                "missing ['feature_check.mean']"),
}


@pytest.mark.parametrize("spoil", HOSTILE, ids=list(HOSTILE))
def test_hostile_statistics_are_refused_naming_the_file(checked_model, tmp_path, spoil):
    import shutil

    folder = Path(shutil.copytree(checked_model, tmp_path / "model"))
    edit, name, message = HOSTILE[spoil]
    edit(folder)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace("[", r"\[")) as err:
        load_model(folder)
    assert err.value.path == str(folder / name)


def test_xmed_predict_flags_a_real_photograph_and_not_a_phantom_eye(checked_model, tmp_path):
    from skimage import data

    folder = tmp_path / "clinic"
    folder.mkdir()
    for name, image in (("retina", data.retina()), ("phantom", render_phantom(100, 128).image)):
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    summary, rows = predict(checked_model, folder, tmp_path / "out")
    threshold = summary["feature_check"]["threshold"]
    assert float(rows["retina"]["feature_distance"]) > 1.5 * threshold
    assert UNFAMILIAR_FEATURES in rows["retina"]["quality"].split(";")
    assert float(rows["phantom"]["feature_distance"]) < threshold and rows["phantom"]["quality"] == ""
    assert summary["unfamiliar_features"] == ["retina"] and summary["quality_flagged"] == ["retina"]


def test_the_rationale_says_not_to_rely_on_an_unfamiliar_eye(checked_model):
    import xmed
    from skimage import data

    model = load_model(checked_model)
    with pytest.warns(xmed.errors.QualityWarning, match=rf"image 0 \({UNFAMILIAR_FEATURES}\)"):
        retina, phantom = xmed.rationale(model, model.prepare([data.retina(), render_phantom(100, 128).image]),
                                         counterfactual=None, heatmaps=False)
    assert retina.sentence.startswith("The model was not trained on images like this one: do not rely on this "
                                      "decision. ")
    assert retina.quality == [UNFAMILIAR_FEATURES] and retina.feature_distance > model.feature_check.threshold
    assert phantom.quality == [] and not phantom.sentence.startswith("The model")
    assert retina.to_dict()["feature_distance"] == retina.feature_distance
