"""Bad input never becomes a diagnosis: what enters the explainers, counterfactuals and rationales is
checked in one place (``xmed.explain.base.check_images``), a non-finite output is never read as a
decision, and a model file with non-finite weights or an impossible data config is refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import xmed
from xmed.errors import CheckpointError, InputError
from xmed.models import FundusClassifier, export_model, load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FundusClassifier("test_resnet.r160_in1k", input_size=32, data_config={"crop_fov": False}).eval()


def nan_pixel() -> torch.Tensor:
    x = torch.rand(2, 3, 32, 32)
    x[1, 0, 5, 5] = math.nan
    return x


def inf_pixel() -> torch.Tensor:
    x = torch.rand(2, 3, 32, 32)
    x[0, 2, 0, 0] = math.inf
    return x


BAD_IMAGES = {
    "numpy array": (lambda: np.zeros((1, 3, 32, 32), np.float32), "must be a torch tensor"),
    "uint8 pixels": (lambda: torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "must be floating point"),
    "one H×W×C photograph": (lambda: torch.rand(32, 32, 3), "one H×W×C photograph"),
    "C×H×W without batch": (lambda: torch.rand(3, 32, 32), "must be a B×C×H×W batch, got shape (3, 32, 32)"),
    "channels last": (lambda: torch.rand(2, 32, 32, 3), "looks channels-last"),
    "empty batch": (lambda: torch.zeros(0, 3, 32, 32), "empty batch"),
    "float64": (lambda: torch.rand(1, 3, 32, 32, dtype=torch.float64), "the model computes in torch.float32"),
    "a NaN pixel": (nan_pixel, "image(s) [1] of the batch hold NaN or infinite values"),
    "an infinite pixel": (inf_pixel, "image(s) [0] of the batch hold NaN or infinite values"),
}
ENTRY_POINTS = {
    "xmed.explain (Grad-CAM)": lambda m, x: xmed.explain(m, x, method="gradcam"),
    "xmed.explain (Integrated Gradients)": lambda m, x: xmed.explain(m, x, method="integrated_gradients", n_steps=2),
    "xmed.counterfactual": lambda m, x: xmed.counterfactual(m, x, max_steps=2),
    "xmed.rationale": lambda m, x: xmed.rationale(m, x, counterfactual=None, heatmaps=False),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", BAD_IMAGES)
def test_every_entry_point_gives_the_same_clear_error(model, case, entry):
    make, message = BAD_IMAGES[case]
    with pytest.raises(InputError) as err:
        ENTRY_POINTS[entry](model, make())
    assert err.value.name == "images" and message in str(err.value)


def test_a_rationale_never_states_a_decision_it_does_not_have(model):
    broken = FundusClassifier("test_resnet.r160_in1k", input_size=32, data_config={"crop_fov": False}).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.glaucoma_head.bias.fill_(math.nan)   # finite images, NaN output
    with pytest.raises(InputError, match=r"output for image\(s\) \[0, 1\] .* is not finite"):
        xmed.rationale(broken, torch.rand(2, 3, 32, 32), counterfactual=None, heatmaps=False)


def test_a_rationale_is_strict_json(model):
    r = xmed.rationale(model, torch.rand(1, 3, 32, 32), counterfactual=None, heatmaps=False)[0]
    r.unexplained = math.nan
    d = r.to_dict()
    assert d["unexplained"] is None and d["probability"] == r.probability
    json.dumps(d, allow_nan=False)


def test_weights_that_are_not_finite_are_refused_naming_the_file(model, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = export_model(model, tmp_path / "model")
    state = load_file(str(folder / "model.safetensors"))
    state["glaucoma_head.weight"][0, :7] = math.nan
    state["vcdr_head.bias"][:] = math.inf
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"8 weights are NaN or infinite, in glaucoma_head.weight, vcdr_head.bias") as err:
        load_model(folder)
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("key, value", [("std", [0.2, 0.0, 0.2]), ("std", [0.2, -1.0, 0.2]), ("mean", [0.5, "x", 0.5]),
                                        ("std", [0.2, 0.2])])
def test_an_impossible_data_config_is_refused_naming_the_file(model, tmp_path, key, value):
    folder = export_model(model, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["data_config"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"config.json: data_config.{key}: must be three finite numbers"):
        load_model(folder)


# ------------------------------------------------------------------- raw photographs: model.prepare
def photograph(size: int = 64) -> np.ndarray:
    from xmed.data import render_phantom

    return render_phantom(5, size).image


def with_nan() -> list[np.ndarray]:
    bad = photograph().astype(np.float32) / 255
    bad[3, 4, 1] = math.nan
    return [photograph(), bad]


def with_inf() -> list[np.ndarray]:
    bad = photograph().astype(np.float64) / 255
    bad[0, 0, 0] = math.inf
    return [bad]


BAD_PHOTOGRAPHS = [  # (images given to prepare, the text the InputError("images", ...) must hold)
    pytest.param(lambda: photograph().astype(np.uint16) * 257, "image 0 has uint16 pixels, whose bit depth",
                 id="uint16"),
    pytest.param(lambda: [photograph(), photograph().astype(np.float32)],
                 "image 1 has float pixels in [0, 255]; float pixels must lie in [0, 1]", id="float-0-255"),
    pytest.param(with_nan, "image 1 holds 1 NaN or infinite pixel values", id="float-with-nan"),
    pytest.param(with_inf, "image 0 holds 1 NaN or infinite pixel values", id="float-with-inf"),
    pytest.param(lambda: photograph().astype(np.int64), "image 0 has int64 pixels; pass uint8", id="int64"),
    pytest.param(lambda: photograph() > 128, "image 0 has bool pixels", id="bool"),
    pytest.param(lambda: np.zeros((1, 1, 3), np.uint8), "image 0 is 1×1 pixels; a fundus photograph needs at least 32",
                 id="one-pixel"),
    pytest.param(lambda: [photograph(), photograph(), photograph()[:31]], "image 2 is 64×31 pixels", id="too-small"),
    pytest.param(lambda: photograph().transpose(2, 0, 1), "image 0 has shape (3, 64, 64), which looks channels-first",
                 id="channels-first"),
    pytest.param(lambda: np.zeros((64, 64, 2), np.uint8), "image 0 has shape (64, 64, 2); pass an H×W×3", id="two-channels"),
    pytest.param(lambda: np.zeros(64, np.uint8), "image 0 has shape (64,)", id="1-d-array"),
    pytest.param(lambda: np.stack([photograph()] * 2).transpose(0, 3, 1, 2),
                 "a 4-D array must hold N×H×W×3 photographs, got shape (2, 3, 64, 64)", id="4-d-channels-first-batch"),
    pytest.param(lambda: np.zeros((0, 64, 64, 3), np.uint8), "is an empty array (N = 0)", id="empty-4-d-array"),
    pytest.param(lambda: [], "is an empty list", id="empty-list"),
    pytest.param(lambda: [photograph(), "eye.png"], "image 1 is a builtins.str, not a numpy array; pass an H×W×3 uint8 "
                 "RGB photograph (or float in [0, 1]) (read the file first: xmed.data.read_image(path))",
                 id="path-instead-of-pixels"),
    pytest.param(lambda: torch.zeros(64, 64, 3), "image 0 is a torch.Tensor, not a numpy array", id="torch-tensor"),
]


@pytest.mark.parametrize("make, message", BAD_PHOTOGRAPHS)
def test_prepare_refuses_what_is_no_photograph_naming_the_image(model, make, message):
    with pytest.raises(InputError) as err:
        model.prepare(make())
    assert err.value.name == "images" and message in str(err.value), str(err.value)


def gray(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2).round().astype(np.uint8)


CONVERTED = [  # (images given to prepare, the uint8 H×W×3 photographs they mean)
    pytest.param(lambda p: p.astype(np.float32) / 255, lambda p: p, id="float32-in-0-1"),
    pytest.param(lambda p: p / 255.0, lambda p: p, id="float64-in-0-1"),
    pytest.param(lambda p: gray(p), lambda p: np.repeat(gray(p)[..., None], 3, axis=2), id="grayscale-h-w"),
    pytest.param(lambda p: gray(p)[..., None], lambda p: np.repeat(gray(p)[..., None], 3, axis=2), id="grayscale-h-w-1"),
    pytest.param(lambda p: np.dstack([p, np.full(p.shape[:2], 255, np.uint8)]), lambda p: p, id="rgba-opaque"),
    pytest.param(lambda p: np.dstack([p, np.zeros(p.shape[:2], np.uint8)]), np.zeros_like, id="rgba-transparent-is-black"),
    pytest.param(lambda p: np.stack([p, p]), lambda p: [p, p], id="n-h-w-3-array"),
]


@pytest.mark.parametrize("given, meant", CONVERTED)
def test_prepare_converts_explicitly_what_it_documents(model, given, meant):
    import warnings

    from xmed.errors import QualityWarning

    p = photograph()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)   # grey and black are flagged, not refused
        assert torch.equal(model.prepare(given(p)), model.prepare(meant(p)))


def test_the_same_photograph_gets_the_same_probability_in_every_accepted_form(model):
    """Float pixels in [0, 1] were once read as if 0-255 (another probability for the same eye)."""
    p = photograph()
    with torch.no_grad():
        probs = [torch.sigmoid(model(model.prepare(x))["logits"]).item() for x in (p, p / 255.0, p.astype(np.float16) / 255)]
    assert probs[0] == probs[1] == probs[2]
