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
