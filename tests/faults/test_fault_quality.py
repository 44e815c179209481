"""An image that is no fundus photograph never passes as one: the image-quality gate flags it
(``xmed.data.quality``), the library warns, and the flag travels with the eye into
``predictions.csv``, the explain run's records and the rationale. An eye whose model output is not
finite gets no prediction, is left out of the metrics and is listed as failed."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data

import xmed
from xmed.data import FundusDataModule, render_phantom
from xmed.data.quality import CHECKS, assess_prepared, assess_quality, prepared_checks
from xmed.errors import InputError, QualityWarning
from xmed.models import FundusClassifier

ALL = ("no_field_of_view", "nearly_uniform", "out_of_distribution")
FOV = ("no_field_of_view",)
FOV_COLOUR = ("no_field_of_view", "out_of_distribution")
COLOUR = ("out_of_distribution",)
WHITE = np.full((512, 512, 3), 255, np.uint8)


def noise() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)


def gray_retina() -> np.ndarray:
    return np.repeat(data.retina().mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)


IMAGES = [  # (image, the flags it must get), calibrated in xmed/data/quality.py
    pytest.param(data.retina, (), id="real-fundus-photograph"),
    pytest.param(lambda: render_phantom(3, 256).image, (), id="phantom-256px"),
    pytest.param(lambda: render_phantom(7, 32).image, (), id="phantom-32px"),
    pytest.param(lambda: render_phantom(11, 128, shortcut=1.0).image, (), id="phantom-with-marker"),
    pytest.param(lambda: WHITE, ALL, id="all-white"),
    pytest.param(lambda: np.zeros((512, 512, 3), np.uint8), ALL, id="all-black"),
    pytest.param(lambda: np.full((512, 512, 3), 128, np.uint8), ALL, id="uniform-gray"),
    pytest.param(noise, FOV_COLOUR, id="random-noise"),
    pytest.param(lambda: np.repeat(data.checkerboard()[..., None], 3, axis=2), FOV_COLOUR, id="checkerboard"),
    pytest.param(data.astronaut, FOV, id="natural-photograph-astronaut"),
    pytest.param(data.chelsea, FOV, id="natural-photograph-cat"),
    pytest.param(data.coffee, FOV, id="natural-photograph-reddish-coffee"),
    pytest.param(data.camera, FOV_COLOUR, id="grayscale-photograph"),
    pytest.param(data.moon, FOV_COLOUR, id="grayscale-moon-surface"),
    pytest.param(gray_retina, COLOUR, id="grayscale-fundus"),
    pytest.param(lambda: data.retina()[..., ::-1].copy(), COLOUR, id="bgr-swapped-fundus"),
]


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return FundusClassifier("test_resnet.r160_in1k", input_size=64).eval()


@pytest.mark.parametrize("make, flags", IMAGES)
def test_each_image_gets_exactly_its_flags(make, flags):
    quality = assess_quality(make())
    assert quality.flags == flags, quality.measures
    assert str(quality) == ";".join(flags) and quality.ok == (not flags)


@pytest.mark.parametrize("crop_fov", [True, False], ids=["fov-crop", "no-crop"])
@pytest.mark.parametrize("make, flags", IMAGES)
def test_the_batch_path_flags_the_prepared_image_as_the_photograph(make, flags, crop_fov):
    """``predict`` and the explain run see normalised tensors: de-normalised, they get the flags
    of the photograph they were prepared from."""
    model = FundusClassifier("test_resnet.r160_in1k", input_size=64, data_config={"crop_fov": crop_fov})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        prepared = model.prepare(make())
    assert assess_prepared(prepared, model.data_config)[0].flags == flags


@pytest.mark.parametrize("size, config, judged", [
    pytest.param(64, {}, CHECKS, id="whole-photograph"),
    pytest.param(64, {"crop_disc": 0.5}, ("nearly_uniform", "out_of_distribution"), id="disc-crop-has-no-border"),
    pytest.param(16, {}, ("nearly_uniform", "out_of_distribution"), id="input-too-small-to-find-a-border"),
    pytest.param(64, {"contrast": "graham"}, ("nearly_uniform",), id="contrast-normalised"),
])
def test_a_prepared_batch_is_judged_on_what_its_preparation_leaves(size, config, judged):
    model = FundusClassifier("test_resnet.r160_in1k", input_size=size, data_config=config)
    assert prepared_checks(model.data_config) == judged
    with pytest.warns(QualityWarning):
        quality = assess_prepared(model.prepare(WHITE), model.data_config)[0]
    assert quality.judged == judged and quality.flags == tuple(f for f in ALL if f in judged)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.sampled_from([32, 48, 96, 192]))
def test_every_phantom_eye_passes(seed, size):
    quality = assess_quality(render_phantom(seed, size).image)
    assert quality.ok, (seed, size, quality.measures)


@settings(max_examples=15, deadline=None)
@given(colour=st.tuples(*[st.integers(0, 255)] * 3), size=st.integers(32, 200))
def test_every_single_colour_image_is_flagged_uniform_without_a_field_of_view(colour, size):
    quality = assess_quality(np.full((size, size + 7, 3), colour, np.uint8))
    assert {"no_field_of_view", "nearly_uniform"} <= set(quality.flags), (colour, quality.measures)


def test_an_unknown_check_is_named():
    with pytest.raises(InputError, match=r"unknown check\(s\) \['sharpness'\]") as err:
        assess_quality(WHITE, checks=["sharpness"])
    assert err.value.name == "checks"


def test_prepare_warns_naming_the_image_and_its_flags(classifier):
    with pytest.warns(QualityWarning) as caught:
        classifier.prepare([render_phantom(0, 128).image, WHITE, noise()])
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "2 of 3 images failed the image-quality check, and their outputs are not to be relied on: "
        "image 1 (no_field_of_view;nearly_uniform;out_of_distribution), image 2 (no_field_of_view;out_of_distribution)")


def test_a_good_photograph_raises_no_warning(classifier):
    with warnings.catch_warnings():
        warnings.simplefilter("error", QualityWarning)
        classifier.prepare(data.retina())


def test_the_rationale_of_a_flagged_eye_says_not_to_rely_on_it(classifier):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        batch = classifier.prepare([render_phantom(2, 128).image, WHITE])
    with pytest.warns(QualityWarning, match=r"1 of 2 images .*: image 1 \(no_field_of_view;nearly_uniform;"
                                            r"out_of_distribution\)$"):
        good, flagged = xmed.rationale(classifier, batch, counterfactual=None, heatmaps=False)
    assert good.quality == [] and good.sentence.startswith(good.decision[0].upper() + good.decision[1:])
    assert flagged.quality == list(ALL)
    assert flagged.sentence.startswith(
        "The image failed the quality check (no fundus field of view against a dark border; a nearly uniform image; "
        "colour or exposure unlike a colour fundus photograph): do not rely on this decision. ")
    assert json.loads(json.dumps(flagged.to_dict(), allow_nan=False))["quality"] == list(ALL)


# ------------------------------------------------------------------------- batch commands
class FailsOn(FundusClassifier):
    """A classifier whose output ``output`` becomes ``value`` for the eye whose prepared image is
    ``image`` (every other eye is predicted as usual)."""

    failing: torch.Tensor | None = None

    def fail_on(self, image: torch.Tensor, output: str, value: float) -> "FailsOn":
        self.failing, self.output, self.value = image, output, value
        return self

    def forward(self, x, intervene=None):
        out = super().forward(x, intervene)
        if self.failing is not None:
            hit = (x == self.failing.to(x)).flatten(1).all(dim=1)
            target = out[self.output]
            hit = hit.view(-1, *[1] * (target.ndim - 1))
            out[self.output] = torch.where(hit, torch.full_like(target, self.value), target)
        return out


@pytest.fixture(scope="module")
def phantom():
    """A tiny rendered data set (48 eyes of 48 px), set up."""
    dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 48, "size": 48}, image_size=48)
    dm.setup()
    return dm


def tiny_model(dm) -> FailsOn:
    torch.manual_seed(0)
    return FailsOn("test_resnet.r160_in1k", input_size=48, data_config=dm.data_config()).eval()


def split_eye(dm, position: int) -> tuple[str, str, torch.Tensor]:
    """(id, laterality, prepared image) of the test split's eye at ``position``."""
    view = dm.splits["test"]
    sample = view[position]
    return sample["meta"]["id"], sample["meta"]["eye"], sample["image"]


def show_white_for(monkeypatch, dm, eye_id: str) -> None:
    """Eye ``eye_id`` of the data set loads as an all-white frame."""
    load = dm.base.load_sample

    def load_sample(record):
        sample = load(record)
        return {**sample, "image": np.full_like(sample["image"], 255)} if record.id == eye_id else sample

    monkeypatch.setattr(dm.base, "load_sample", load_sample)


def evaluate(model, dm, out) -> tuple[dict, dict[str, dict[str, str]]]:
    from xmed.pipeline.evaluation import evaluate_model

    metrics = evaluate_model(model, dm, out, n_bootstrap=0)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    with open(out / "predictions.csv", newline="") as fh:
        return metrics, {row["id"]: row for row in csv.DictReader(fh)}


def test_predictions_csv_flags_an_eye_that_failed_the_quality_check(phantom, monkeypatch, tmp_path):
    eye_id, _, _ = split_eye(phantom, 2)
    show_white_for(monkeypatch, phantom, eye_id)
    n = len(phantom.splits["test"])
    with pytest.warns(QualityWarning, match=rf"1 of {n} images .*: {eye_id} \(no_field_of_view;nearly_uniform;"
                                            r"out_of_distribution\)$"):
        metrics, rows = evaluate(tiny_model(phantom), phantom, tmp_path)
    assert rows[eye_id]["quality"] == "no_field_of_view;nearly_uniform;out_of_distribution"
    assert rows[eye_id]["status"] == "" and 0.0 <= float(rows[eye_id]["prob"]) <= 1.0   # flagged, still scored
    assert [r["quality"] for i, r in rows.items() if i != eye_id] == [""] * (n - 1)
    assert metrics["quality_flagged"] == {"val": 0, "test": 1} and metrics["n"] == n and metrics["failed"] == []


@pytest.mark.parametrize("output, value", [
    pytest.param("logits", math.nan, id="nan-diagnosis"),
    pytest.param("logits", math.inf, id="infinite-diagnosis-logit-sigmoid-would-read-1"),
    pytest.param("finding_logits", math.nan, id="nan-finding-with-finite-diagnosis"),
    pytest.param("vcdr", math.nan, id="nan-vcdr"),
])
def test_an_eye_with_a_non_finite_output_is_marked_failed_and_not_scored(phantom, tmp_path, output, value):
    eye_id, eye, image = split_eye(phantom, 3)
    n = len(phantom.splits["test"])
    metrics, rows = evaluate(tiny_model(phantom).fail_on(image, output, value), phantom, tmp_path)
    failed = rows[eye_id]
    assert failed["status"] == "non-finite output"
    assert [failed[k] for k in ("prob", "pred", "vcdr_pred", *(f"p_{c}" for c in xmed.FINDINGS))] == [""] * 13
    assert failed["label"] in ("0", "1")                                   # the truth is still reported
    others = [r for i, r in rows.items() if i != eye_id]
    assert len(others) == n - 1 and all(r["status"] == "" and 0.0 <= float(r["prob"]) <= 1.0 for r in others)
    assert metrics["failed"] == [{"split": "test", "id": eye_id, "eye": eye, "reason": "non-finite output"}]
    assert metrics["excluded"] == {"val": 0, "test": 1} and metrics["n"] == n - 1


def test_when_every_eye_fails_nothing_is_scored(phantom, tmp_path):
    model = tiny_model(phantom)
    with torch.no_grad():
        model.glaucoma_head.bias.fill_(math.nan)
    metrics, rows = evaluate(model, phantom, tmp_path)
    n_val, n_test = len(phantom.splits["val"]), len(phantom.splits["test"])
    assert metrics["excluded"] == {"val": n_val, "test": n_test} and len(metrics["failed"]) == n_val + n_test
    assert metrics["n"] == 0 and metrics["auroc"] is None and metrics["threshold"] is None
    assert {r["status"] for r in rows.values()} == {"non-finite output"} and {r["prob"] for r in rows.values()} == {""}


def test_an_empty_test_split_is_named_not_crashed_on(phantom, tmp_path):
    from xmed.errors import DatasetError

    empty = FundusDataModule(dataset="phantom_render", dataset_options={"n": 48, "size": 48}, image_size=48)
    empty.setup()
    empty.splits["test"].indices = []
    with pytest.raises(DatasetError, match=r"phantom_render: the test split holds no eye to evaluate \(0 files"):
        evaluate(tiny_model(phantom), empty, tmp_path)


def test_explain_records_carry_quality_and_failure(phantom, monkeypatch, tmp_path):
    from xmed.pipeline.explanation import ExplainModule, ExplanationWriter, build_metrics
    from xmed.pipeline.explanation_report import summarise, write_per_image
    from xmed.data.datasets.base import collate_samples
    from xmed.explain import GradCAM, RationaleExplainer

    failing_id, _, failing_image = split_eye(phantom, 0)
    white_id, _, _ = split_eye(phantom, 1)
    show_white_for(monkeypatch, phantom, white_id)
    model = tiny_model(phantom).fail_on(failing_image, "logits", math.nan)
    batch = collate_samples([phantom.splits["test"][i] for i in range(4)])
    module = ExplainModule(model, {"gradcam": GradCAM(model),
                                   "rationale": RationaleExplainer(model, counterfactual=None, heatmaps=False)},
                           "glaucoma", build_metrics(["deletion"], {"n_steps": 4, "baseline": "blur"}))
    with pytest.warns(QualityWarning, match=rf"1 of 4 images .*: {white_id} \("):
        step = module.predict_step(batch, 0)
    ExplanationWriter(tmp_path, [], model.data_config).write_files(step)
    records = {r["id"]: r for r in step["records"]}
    assert len(records) == 4
    assert (records[failing_id]["status"], records[failing_id]["deletion"]) == ("non-finite output", None)
    assert records[white_id]["quality"] == "no_field_of_view;nearly_uniform;out_of_distribution"
    assert records[white_id]["status"] == "" and 0.0 <= records[white_id]["deletion"] <= 1.0
    write_per_image(tmp_path / "per_image.csv", list(records.values()))
    with open(tmp_path / "per_image.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames[:4] == ["id", "method", "quality", "status"]
        assert {row["id"]: row["status"] for row in reader}[failing_id] == "non-finite output"
    assert summarise(list(records.values()), ["gradcam"])["gradcam"]["deletion_n"] == 3
    failed_json = json.loads((tmp_path / "rationale" / f"{failing_id}.json").read_text())
    assert failed_json == {"id": failing_id, "quality": "", "status": "non-finite output"}
    white_json = json.loads((tmp_path / "rationale" / f"{white_id}.json").read_text())
    assert white_json["quality"] == list(ALL) and white_json["sentence"].startswith("The image failed the quality check")


# ------------------------------------------------------------------------- a gate fitted to the model
def borderless(images: torch.Tensor) -> torch.Tensor:
    """Prepared eyes cropped inside their field of view and resized back: a disc-centred data set."""
    side = images.shape[-1]
    inner = images[..., side // 4: side - side // 4, side // 4: side - side // 4]
    return torch.nn.functional.interpolate(inner, size=(side, side), mode="bilinear", align_corners=False)


def validation_batches(dm, crop: bool = False):
    for batch in dm.val_dataloader():
        yield borderless(batch["image"]) if crop else batch["image"]


@pytest.mark.parametrize("crop, kept, off", [
    pytest.param(False, CHECKS, (), id="fundus-photographs-keep-every-check"),
    pytest.param(True, ("nearly_uniform", "out_of_distribution"), FOV, id="disc-crops-turn-the-fov-check-off"),
])
def test_a_model_is_held_to_the_checks_its_own_photographs_pass(phantom, crop, kept, off):
    from xmed.data.quality import calibrate_checks
    from xmed.models.classifier import DataConfig

    dc = DataConfig.from_dict(phantom.data_config())
    checks, failing = calibrate_checks(validation_batches(phantom, crop), dc)
    assert checks == kept and set(failing) == set(CHECKS)
    assert all(failing[c] > 0.05 for c in off) and all(failing[c] <= 0.05 for c in kept)


def test_a_check_the_model_is_not_held_to_flags_nothing(phantom):
    from xmed.models.classifier import DataConfig

    held = DataConfig.from_dict({**phantom.data_config(), "quality_checks": ["nearly_uniform"]})
    crops = borderless(next(iter(phantom.val_dataloader()))["image"])
    assert prepared_checks(held) == ("nearly_uniform",)
    assert {str(q) for q in assess_prepared(crops, held)} == {""}
    every = DataConfig.from_dict(phantom.data_config())
    assert {str(q) for q in assess_prepared(crops, every)} == {"no_field_of_view"}


def test_the_checks_travel_with_the_exported_model(phantom, tmp_path):
    from xmed.models.export import export_model, load_model

    model = FundusClassifier("test_resnet.r160_in1k", input_size=48,
                             data_config={**phantom.data_config(), "quality_checks": ["nearly_uniform"]})
    assert load_model(export_model(model, tmp_path / "m")).data_config.quality_checks == ("nearly_uniform",)
    with pytest.warns(QualityWarning, match=r"image 0 \(nearly_uniform\)$"):
        model.prepare(WHITE)   # held to nearly_uniform alone: the other two flags are not raised


def test_an_unknown_quality_check_in_a_data_config_is_named(phantom):
    from xmed.errors import ConfigError
    from xmed.models.classifier import DataConfig

    with pytest.raises(ConfigError, match=r"quality_checks.*unknown check\(s\) \['sharpness'\]") as err:
        DataConfig.from_dict({**phantom.data_config(), "quality_checks": ["sharpness"]})
    assert err.value.key == "model.net.data_config.quality_checks"
