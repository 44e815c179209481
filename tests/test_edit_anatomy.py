"""Adversarial edits that read as anatomy: the colour of an edit (hue share), its agreement with a
known change, the colour-constrained editor (``colour="lightness"`` / ``"fundus"``), the phantom
re-rendered with another cup, and the review's edits — both for every eye, each saying what it
changed."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from xmed.data import render_phantom
from xmed.errors import ConfigError
from xmed.explain.counterfactual import AdversarialExplainer, edit_changes, step_goals
from xmed.explain.counterfactual.adversarial import colour_basis, colour_projection, shrink_into_box
from xmed.metrics.counterfactual import change_correlation, hue_share
from xmed.models import FundusClassifier

SIZE = 48


def lab_to_rgb(lab: list[float]) -> torch.Tensor:
    """One CIELAB colour as a 3-vector of [0, 1] RGB (OpenCV's float conversion)."""
    return torch.from_numpy(cv2.cvtColor(np.array([[lab]], np.float32), cv2.COLOR_Lab2RGB)[0, 0].copy())


def filled(rgb: torch.Tensor, size: int = 8) -> torch.Tensor:
    return rgb.view(1, 3, 1, 1).expand(1, 3, size, size).clone()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FundusClassifier("test_resnet.r160_in1k", input_size=SIZE).eval()


@pytest.fixture(scope="module")
def fundus_images(model):
    """Three phantom eyes as the model's input (ImageNet-normalised: the std differs per channel)."""
    dc = model.data_config
    mean, std = torch.tensor(dc.mean).view(1, 3, 1, 1), torch.tensor(dc.std).view(1, 3, 1, 1)
    pixels = torch.stack([torch.from_numpy(render_phantom(seed, SIZE).image).permute(2, 0, 1).float() / 255
                          for seed in range(3)])
    return (pixels - mean) / std


def pixel_change(model, original: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    return (edited - original) * torch.tensor(model.data_config.std).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------ measuring an edit


def test_hue_share_of_a_grey_change_is_zero_and_of_a_hue_change_near_one():
    grey = filled(lab_to_rgb([50.0, 0.0, 0.0]))
    assert hue_share(grey, grey + 0.1).item() < 1e-4            # grey to a lighter grey: L only
    hue = filled(lab_to_rgb([50.0, 20.0, -20.0]))                # same L, another a and b
    assert hue_share(grey, hue).item() > 0.999
    # half and half in energy: ΔL² = Δa² + Δb²
    both = filled(lab_to_rgb([50.0 + math.sqrt(800.0), 20.0, -20.0]))
    assert hue_share(grey, both).item() == pytest.approx(0.5, abs=0.01)
    # in input space, un-normalised with mean and std; only the field of view counts
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    normalise = lambda x: (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)  # noqa: E731
    coloured = grey.clone()
    coloured[..., :4] = hue[..., :4]                             # a hue change in the left half only
    fov = torch.zeros(1, 8, 8, dtype=torch.bool)
    fov[:, :, 4:] = True
    lighter = coloured.clone()
    lighter[..., 4:] += 0.1                                      # a grey change in the right half
    assert hue_share(normalise(grey), normalise(lighter), fov, mean, std).item() < 1e-4
    assert hue_share(normalise(grey), normalise(lighter), None, mean, std).item() > 0.5
    assert math.isnan(hue_share(grey, grey).item())              # no change: undefined
    with pytest.raises(ConfigError, match="original"):
        hue_share(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4))


def test_change_correlation_against_an_ideal_change():
    ideal = torch.zeros(2, 3, 8, 8)
    ideal[:, :, 2:5, 2:5] = torch.tensor([0.05, 0.4, 0.45]).view(1, 3, 1, 1)   # a paler ring-like patch
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert change_correlation(0.3 * ideal, ideal).tolist() == pytest.approx([1.0, 1.0])
    assert change_correlation(-ideal, ideal).tolist() == pytest.approx([-1.0, -1.0])
    mixed = change_correlation(ideal + 0.1 * noise, ideal)
    expected = [np.corrcoef((ideal[i] + 0.1 * noise[i]).flatten().numpy(), ideal[i].flatten().numpy())[0, 1]
                for i in range(2)]
    assert mixed.tolist() == pytest.approx(expected, abs=1e-6) and 0.5 < min(expected) < max(expected) < 1.0
    # std: per-channel scales in input space change the correlation's weights, not a perfect match
    assert change_correlation(ideal, ideal, std=(0.2, 0.3, 0.4)).tolist() == pytest.approx([1.0, 1.0])
    fov = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    fov[0, :, 5:] = True                                         # eye 0: only where both are zero
    fov[1] = True
    values = change_correlation(ideal + 0.1 * noise, ideal, fov)
    assert math.isnan(values[0].item()) and values[1].item() == pytest.approx(mixed[1].item())
    with pytest.raises(ConfigError, match="ideal"):
        change_correlation(ideal, ideal[:, :1])


def test_the_phantom_re_rendered_with_another_cup():
    eye = render_phantom(5, 128)
    same = render_phantom(5, 128, cup_vcdr=eye.vcdr)
    assert np.array_equal(same.image, eye.image)
    larger = render_phantom(5, 128, cup_vcdr=min(eye.vcdr + 0.2, 0.92))
    assert np.array_equal(larger.masks["disc"], eye.masks["disc"])       # the same disc
    assert larger.masks["cup"].sum() > eye.masks["cup"].sum()
    assert larger.vcdr == pytest.approx(min(eye.vcdr + 0.2, 0.92))
    assert larger.label == eye.label and larger.findings["LC"] == int(larger.vcdr >= 0.7)
    # without the camera's blur and JPEG blocks, only pixels at the disc change
    plain = render_phantom(5, 128, camera=False)
    plain_larger = render_phantom(5, 128, camera=False, cup_vcdr=larger.vcdr)
    changed = np.abs(plain_larger.image.astype(int) - plain.image.astype(int)).max(axis=2) > 2
    near_disc = cv2.dilate(plain.masks["disc"].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert changed.sum() > 20 and changed[~near_disc].sum() == 0
    with pytest.raises(ConfigError, match="cup_vcdr"):
        render_phantom(5, 128, cup_vcdr=1.2)


# ------------------------------------------------------------------------------ constrained edits


def test_a_lightness_edit_changes_r_g_and_b_alike(model, fundus_images):
    images = fundus_images.clone()
    images[0, 0, 20:28, 20:28] = (1.0 - model.data_config.mean[0]) / model.data_config.std[0]   # saturated red
    cf = AdversarialExplainer(model, relative_epsilon=0.2, max_steps=3, early_stop=False, smooth=1.0,
                              colour="lightness")(images, "glaucoma", "increase")
    change = pixel_change(model, images, cf.images)
    assert float(change.abs().max()) > 0.01                                # it did edit
    torch.testing.assert_close(change[:, 1], change[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(change[:, 2], change[:, 0], atol=1e-5, rtol=0)
    pixels = cf.images * torch.tensor(model.data_config.std).view(1, 3, 1, 1) + \
        torch.tensor(model.data_config.mean).view(1, 3, 1, 1)
    assert float(pixels.min()) >= -1e-5 and float(pixels.max()) <= 1 + 1e-5
    # where red is at 1, no brightening is left: a per-value clamp would have made it green-blue
    assert float(change[0, :, 20:28, 20:28].clamp_min(0).max()) < 1e-5
    free = AdversarialExplainer(model, relative_epsilon=0.2, max_steps=3, early_stop=False, smooth=1.0)(
        images, "glaucoma", "increase")
    free_change = pixel_change(model, images, free.images)
    assert float((free_change[:, 1] - free_change[:, 0]).abs().max()) > 0.01   # unconstrained: not grey


@pytest.mark.parametrize("axes", [1, 2])
def test_a_fundus_edit_stays_in_the_photographs_colour_axes(model, fundus_images, axes):
    editor = AdversarialExplainer(model, relative_epsilon=0.2, max_steps=3, early_stop=False, colour="fundus",
                                  colour_axes=axes, smooth=2.0)
    cf = editor(fundus_images, "glaucoma", "decrease")
    change = pixel_change(model, fundus_images, cf.images)
    basis = colour_basis(editor.space.pixels(fundus_images), cf.fov, "fundus", axes)      # B×3×k, orthonormal
    assert basis.shape == (3, 3, axes)
    torch.testing.assert_close(basis.transpose(1, 2) @ basis, torch.eye(axes).expand(3, axes, axes), atol=1e-5, rtol=0)
    inside = torch.einsum("bik,bjk,bjhw->bihw", basis, basis, change)                    # projected onto the axes
    assert float(change.abs().max()) > 0.01
    assert float((change - inside).abs().max()) < 1e-5 * max(1.0, float(change.abs().max()))
    # the first axis of a fundus is its orange: red varies most, blue least
    first = basis[:, :, 0].abs()
    assert bool((first[:, 0] > first[:, 2]).all())


def test_colour_projection_and_the_shrink_keep_a_change_in_its_subspace():
    std = torch.tensor([0.229, 0.224, 0.225])
    basis = torch.nn.functional.normalize(torch.tensor([[0.8, 0.5, 0.3], [0.1, 0.6, 0.7]]).T, dim=0)[None]
    basis = torch.linalg.qr(basis)[0]
    P = colour_projection(basis, std)[0]
    torch.testing.assert_close(P @ P, P, atol=1e-6, rtol=0)                 # a projection
    g = torch.randn(3, generator=torch.Generator().manual_seed(1))
    pixel = (P @ g) * std                                                   # its change in pixel space
    torch.testing.assert_close(basis[0] @ (basis[0].T @ pixel), pixel, atol=1e-6, rtol=0)
    delta = (P @ g).view(1, 3, 1, 1).repeat(1, 1, 2, 2) * 5
    low, high = torch.full_like(delta, -0.1), torch.full_like(delta, 0.2)
    shrunk = shrink_into_box(delta.clone(), low, high)
    assert bool((shrunk >= low - 1e-7).all() and (shrunk <= high + 1e-7).all())
    ratio = shrunk / delta                                                 # one factor per pixel
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6, rtol=0)


def test_colour_options_are_checked(model):
    with pytest.raises(ConfigError, match="'colour'.*free, lightness, fundus"):
        AdversarialExplainer(model, colour="grey")
    with pytest.raises(ConfigError, match="colour_axes"):
        AdversarialExplainer(model, colour="fundus", colour_axes=3)
    with pytest.raises(ConfigError, match="logit_step"):
        AdversarialExplainer(model, logit_step=-1.0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ConfigError, match="'colour'.*RGB"):
        AdversarialExplainer(net, colour="lightness", fov_threshold=None)(torch.rand(1, 1, 8, 8), 0, "decrease")


# ------------------------------------------------------------------------------ the review's edits


def test_edit_changes_names_what_moved_largest_first():
    from xmed.explain.counterfactual import Counterfactual
    from xmed.findings import FINDINGS

    findings = torch.full((3, 2, len(FINDINGS)), 0.5)
    code = {c: FINDINGS.index(c) for c in ("ANRI", "DH", "LC")}
    findings[:, 0, code["ANRI"]] = torch.tensor([0.9, 0.6, 0.3])   # -0.6
    findings[:, 0, code["DH"]] = torch.tensor([0.1, 0.15, 0.2])    # 0.1: below min_change
    findings[:, 0, code["LC"]] = torch.tensor([0.8, 0.7, 0.5])     # -0.3
    vcdr = torch.tensor([[0.74, 0.5], [0.6, 0.5], [0.48, 0.52]])   # eye 0: -0.26 (×4 = 1.04); eye 1: +0.02
    cf = Counterfactual(images=torch.zeros(2, 3, 2, 2), frames=torch.zeros(3, 2, 3, 2, 2),
                        probability=torch.tensor([[0.8, 0.6], [0.5, 0.5], [0.1, 0.4]]), findings=findings, vcdr=vcdr,
                        difference=torch.zeros(2, 1, 2, 2), steps=torch.tensor([9, 9]),
                        reached=torch.tensor([True, True]),
                        method="adversarial", target="glaucoma", direction="decrease", seconds=0.0)
    assert edit_changes(cf, 0) == [{"code": "vcdr", "from": 0.74, "to": 0.48}, {"code": "ANRI", "from": 0.9, "to": 0.3},
                                   {"code": "LC", "from": 0.8, "to": 0.5}]
    assert edit_changes(cf, 1) == []                                # nothing moved far enough
    assert edit_changes(cf, 1, min_change=0.05) == [{"code": "vcdr", "from": 0.5, "to": 0.52}]
    assert edit_changes(cf, 0, min_change=0.5) == [{"code": "vcdr", "from": 0.74, "to": 0.48},
                                                   {"code": "ANRI", "from": 0.9, "to": 0.3}]
    headless = Counterfactual(**{**vars(cf), "findings": None, "vcdr": None})
    assert edit_changes(headless, 0) == []


def test_the_review_edits_every_eye_both_ways_and_says_what_changed(model, fundus_images):
    from xmed.review.build import COUNTERFACTUAL_DEFAULTS, REVIEW_GOALS, _edits, _editor
    from xmed.viz.overlay import to_uint8_image

    with torch.no_grad():
        logits = model(fundus_images)["logits"].reshape(-1)
        model.glaucoma_head.bias.add_(4.0 - float(logits[0]))  # eye 0 at P ≈ 0.98: past any fixed 0.95 goal
    try:
        editor = _editor(model, {"max_steps": 3})
        assert editor.logit_step == REVIEW_GOALS["logit_step"] and editor.colour == COUNTERFACTUAL_DEFAULTS["colour"]
        edits, fov = _edits(editor, fundus_images, model.data_config)
    finally:
        with torch.no_grad():
            model.glaucoma_head.bias.sub_(4.0 - float(logits[0]))
    assert fov.shape == (3, SIZE, SIZE)
    assert edits["toward_glaucoma"][0].probability_from > 0.97
    dc = model.data_config
    for name, direction in (("toward_normal", "decrease"), ("toward_glaucoma", "increase")):
        for i, edit in enumerate(edits[name]):
            assert edit.steps > 0                                   # never "not edited"
            change = edit.image.astype(int) - to_uint8_image(fundus_images[i], dc.mean, dc.std).astype(int)
            # grey: R, G and B changed alike (8-bit rounding aside)
            assert np.abs(change).max() > 2 and np.abs(change - change[..., :1]).max() <= 1
            goal = step_goals(torch.tensor([edit.probability_from]), direction, REVIEW_GOALS["logit_step"]).item()
            assert edit.goal == pytest.approx(goal, abs=2e-3)        # its own goal (from P as rounded to 4 decimals)
            passed = edit.probability_to > edit.goal if direction == "increase" else edit.probability_to < edit.goal
            if abs(edit.probability_to - edit.goal) > 1e-3:         # reached iff past its own goal (rounding aside)
                assert edit.reached == passed
            assert isinstance(edit.changes, list) and all(set(c) == {"code", "from", "to"} for c in edit.changes)
            if edit.vcdr_to is not None and edit.changes and edit.changes[0]["code"] == "vcdr":
                assert edit.changes[0]["to"] == pytest.approx(edit.vcdr_to, abs=1e-3)
