"""Counterfactual explanations (adversarial, APGD-style) and counterfactual metrics.

Known answers come from a hand-built model whose logit is the mean of one channel over a region:
its input gradient is known exactly, so the direction, the budget, the field of view, the place of
the change and early stopping can be asserted as numbers.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import xmed.explain.counterfactual as cf_module
from xmed.errors import ConfigError, InputError
from xmed.explain.counterfactual import COUNTERFACTUALS, AdversarialExplainer, Counterfactual, counterfactual
from xmed.explain.counterfactual.adversarial import apgd_checkpoints, gaussian_blur, total_variation
from xmed.findings import FINDINGS
from xmed.metrics import METRICS, Evidence, evaluate, score_direction
from xmed.metrics.counterfactual import (
    ChangedFraction,
    L1InMask,
    ProximityL1,
    ProximityL2,
    Validity,
    VCDRFalls,
    VCDRMonotonic,
    energy_in_mask,
    evaluate_counterfactuals,
    flip_rate,
    mask_coverage,
    reconstruction_error,
    vcdr_falls,
    vcdr_monotonic_fraction,
)
from xmed.models import FundusClassifier

from helpers.counterfactual import assert_path_is_the_models

SIZE = 32


def square(r0: int, r1: int, c0: int, c1: int, size: int = SIZE) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[r0:r1, c0:c1] = True
    return mask


def disc(radius: float, size: int = SIZE) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = (size - 1) / 2
    return (yy - centre) ** 2 + (xx - centre) ** 2 <= radius ** 2


class RegionScore(nn.Module):
    """Logits ``gain × (mean of channel c over the region − offset)``, one per channel in
    ``channels`` (B×len(channels)); convex (linear) in the image, gradient known."""

    def __init__(self, region: torch.Tensor, offset: float = 0.5, gain: float = 20.0, channels=(0,)):
        super().__init__()
        self.register_buffer("region", region.float())
        self.offset, self.gain, self.channels = offset, gain, tuple(channels)
        self.scale = nn.Parameter(torch.ones(()))  # a parameter: the model has a device and grads to check

    def region_mean(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, list(self.channels)] * self.region).sum((2, 3)) / self.region.sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * self.scale * (self.region_mean(x) - self.offset)


def rand_images(n: int, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ the toy model


@pytest.mark.parametrize("direction, offset", [("decrease", 0.3), ("increase", 0.7)])
def test_toy_direction_budget_fov_and_place_of_change(direction, offset):
    region = square(8, 16, 10, 20)
    fov = disc(14.0).expand(4, 1, SIZE, SIZE)
    assert bool(fov[0, 0][region].all())  # the region lies inside the field of view
    model = RegionScore(region, offset=offset)
    images = rand_images(4, seed=1)
    eps = 1.5
    cf = AdversarialExplainer(model, epsilon=eps, max_steps=12, early_stop=False, record_every=3)(
        images, target=0, direction=direction, fov_mask=fov)

    before, after = model(images)[:, 0], model(cf.images)[:, 0]
    moved = after - before
    assert bool((moved < -0.5).all()) if direction == "decrease" else bool((moved > 0.5).all())
    # the budget holds for every image
    norms = (cf.images - images).flatten(1).norm(dim=1)
    assert bool((norms <= eps + 1e-5).all()), norms
    assert bool((norms > 0.5 * eps).all())  # and is used: the objective is linear
    # outside the field of view the image is bit-identical
    outside = ~fov.expand_as(images)
    assert torch.equal(cf.images[outside], images[outside])
    # the change lies where the score is computed: channel 0 of the region
    share = energy_in_mask(cf.difference, region.expand(4, 1, SIZE, SIZE))
    assert bool((share > 0.9).all()), share
    assert torch.equal(cf.images[:, 1:], images[:, 1:])
    # stays in the valid pixel range
    assert float(cf.images.min()) >= 0.0 and float(cf.images.max()) <= 1.0
    # the path: frame 0 is the input, the last frame the result, T rows of probabilities
    assert torch.equal(cf.frames[0], images) and torch.equal(cf.frames[-1], cf.images)
    assert cf.frames.shape == (5, 4, 3, SIZE, SIZE)  # input, steps 3, 6, 9, end (12)
    assert cf.probability.shape == (5, 4)
    assert torch.allclose(cf.probability, torch.sigmoid(model(cf.frames.flatten(0, 1))[:, 0]).view(5, 4),
                          atol=1e-6)
    steps = cf.probability[1:] - cf.probability[:-1]  # monotone: each frame is the best point so far
    assert bool((steps <= 1e-6).all()) if direction == "decrease" else bool((steps >= -1e-6).all())
    assert cf.findings is None and cf.vcdr is None
    assert cf.steps.tolist() == [12] * 4 and cf.reached.dtype == torch.bool
    assert cf.method == "adversarial" and cf.target == "class 0" and cf.direction == direction
    assert cf.seconds > 0 and torch.equal(cf.epsilon, torch.full((4,), eps))


def test_toy_outside_fov_unchanged_when_the_gradient_is_everywhere():
    model = RegionScore(torch.ones(SIZE, SIZE, dtype=torch.bool), offset=0.2)
    images = rand_images(3, seed=2)
    fov = disc(10.0).expand(3, SIZE, SIZE)  # B×H×W form
    cf = counterfactual(model, images, target=0, direction="decrease", epsilon=3.0, max_steps=5,
                        early_stop=False, fov_mask=fov)
    outside = ~fov[:, None].expand_as(images)
    assert torch.equal(cf.images[outside], images[outside])
    assert bool((cf.difference[:, 0][fov] > 0).float().mean() > 0.9)  # the FOV did change
    assert torch.equal(cf.fov, fov[:, None])


def test_default_fov_is_the_bright_disc():
    fov = disc(12.0)
    images = rand_images(2, seed=3) * 0.8 + 0.2
    images = images * fov  # black outside the disc
    model = RegionScore(torch.ones(SIZE, SIZE, dtype=torch.bool), offset=0.2)
    cf = AdversarialExplainer(model, epsilon=2.0, max_steps=3, early_stop=False)(images, 0, "decrease")
    assert torch.equal(cf.fov, fov.expand(2, 1, SIZE, SIZE))
    assert torch.equal(cf.images[:, :, ~fov], images[:, :, ~fov])
    # the default budget is relative to the image norm inside the field of view
    relative = AdversarialExplainer(model, max_steps=1)
    assert torch.allclose(relative.budget(images, cf.fov), 0.03 * images.flatten(1).norm(dim=1))


def test_fov_default_undoes_the_model_normalisation():
    class Normalised(RegionScore):
        data_config = type("DC", (), {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})()

    model = Normalised(torch.ones(SIZE, SIZE, dtype=torch.bool))
    pixels = torch.zeros(1, 3, SIZE, SIZE)
    pixels[..., 4:8, 4:8] = 0.6
    explainer = AdversarialExplainer(model, epsilon=1.0)
    fov = explainer.field_of_view((pixels - 0.5) / 0.25)
    assert torch.equal(fov[0, 0], square(4, 8, 4, 8))
    # the valid range is [0, 1] before normalisation: [-2, 2] in input space
    low, high = explainer._box((pixels - 0.5) / 0.25)
    assert float(low.max()) == -2.0 and float(high.min()) == 2.0


def test_early_stop_freezes_and_skips_images_at_the_goal():
    region = square(8, 24, 8, 24)
    model = RegionScore(region, offset=0.5)
    images = rand_images(4, seed=4)
    images[0, 0][region] = 0.1  # already below 0.5: nothing to do
    images[2, 0][region] = 0.2
    images[1, 0][region] = 0.9  # far from the goal
    images[3, 0][region] = 0.6  # near the goal
    cf = AdversarialExplainer(model, epsilon=8.0, max_steps=20, record_every=1)(images, 0, "decrease")
    assert cf.steps[0].item() == 0 and cf.steps[2].item() == 0
    assert torch.equal(cf.images[0], images[0]) and torch.equal(cf.images[2], images[2])
    assert bool(cf.reached.all())
    assert bool((cf.steps[[1, 3]] >= 1).all())
    assert bool((cf.probability[-1] < 0.5).all())
    # every image stays frozen from its last step on (frame t = after step t with record_every=1)
    assert cf.frames.shape[0] == int(cf.steps.max()) + 1
    for b in range(4):
        for t in range(int(cf.steps[b]), cf.frames.shape[0]):
            assert torch.equal(cf.frames[t, b], cf.images[b])
    # the image that was nearer needed no more steps than the far one
    assert cf.steps[3] <= cf.steps[1]


def test_a_goal_per_direction_edits_eyes_already_past_the_decision_threshold():
    region = square(8, 24, 8, 24)
    model = RegionScore(region, offset=0.5)
    images = rand_images(3, seed=4)
    images[0, 0][region] = 0.53  # p = sigmoid(0.6) ≈ 0.65: past 0.5, short of 0.95
    images[1, 0][region] = 0.40  # p ≈ 0.12
    images[2, 0][region] = 0.80  # p ≈ 1.00: already past 0.95
    goals = {"decrease": 0.5, "increase": 0.95}
    explainer = AdversarialExplainer(model, epsilon=8.0, max_steps=20, threshold=goals)
    up = explainer(images, 0, "increase")
    assert up.threshold == 0.95 and up.steps[0] >= 1 and up.steps[1] >= 1 and up.steps[2] == 0
    assert bool((up.probability[-1] > 0.95).all()) and bool(up.reached.all())
    # validity is judged against the goal the counterfactual was made for
    assert evaluate_counterfactuals(up)["validity"].tolist()[:2] == [1.0, 1.0]
    scores = evaluate_counterfactuals(up, masks=region.expand(3, 1, SIZE, SIZE))
    # the third eye was not edited: it has no edit to score, only the mask's coverage
    assert all(math.isnan(v[2].item()) for k, v in scores.items() if k not in ("mask_coverage", "seconds_per_image"))
    assert not any(math.isnan(v[0].item()) for v in scores.values())
    assert scores["mask_coverage"][2].item() == pytest.approx(region.float().mean().item())
    assert evaluate_counterfactuals(up, threshold=0.5)["validity"][0].isnan()  # not asked of it at 0.5
    down = explainer(images, 0, "decrease")
    assert down.threshold == 0.5 and down.steps[1] == 0 and bool(down.reached.all())
    # one threshold, the default: the first eye is already "glaucomatous" and is left as it is
    assert AdversarialExplainer(model, epsilon=8.0, max_steps=20)(images, 0, "increase").steps[0] == 0
    with pytest.raises(ConfigError, match="threshold.*sideways"):
        AdversarialExplainer(model, threshold={"sideways": 0.5})
    with pytest.raises(ConfigError, match="threshold"):
        AdversarialExplainer(model, threshold={"increase": "high"})


def test_a_logit_step_gives_every_image_its_own_goal():
    region = square(8, 24, 8, 24)
    model = RegionScore(region, offset=0.5)      # logit = 20 × (mean of channel 0 over the region − 0.5)
    images = rand_images(3, seed=4)
    images[0, 0][region] = 0.675                 # logit 3.5: P ≈ 0.97, past a fixed goal of 0.95
    images[1, 0][region] = 0.5                   # P = 0.5
    images[2, 0][region] = 0.3                   # logit −4: P ≈ 0.018
    explainer = AdversarialExplainer(model, epsilon=8.0, max_steps=20, logit_step=3.0, threshold=0.95)
    for direction, sign in (("increase", 1.0), ("decrease", -1.0)):
        cf = explainer(images, 0, direction)
        start = cf.probability[0]
        torch.testing.assert_close(cf.threshold, torch.sigmoid(torch.logit(start) + sign * 3.0))
        assert bool((cf.steps >= 1).all()) and bool(cf.reached.all())   # every eye edited, each to its goal
        past = cf.probability[-1] > cf.threshold if direction == "increase" else cf.probability[-1] < cf.threshold
        assert torch.equal(cf.reached, past)
        moved = sign * (model(cf.images) - model(images))[:, 0]
        assert bool((moved >= 3.0).all()), moved                        # the logit moved by the step
        assert evaluate_counterfactuals(cf)["validity"].tolist() == [1.0, 1.0, 1.0]
    assert cf.threshold[1].item() == pytest.approx(0.0474, abs=1e-4)
    up = explainer(images, 0, "increase")
    assert up.threshold[0].item() == pytest.approx(0.9985, abs=1e-4) and up.probability[-1, 0] > 0.9985
    # reached iff past its own goal: a budget too small to get there is no flip, not "not edited"
    short = AdversarialExplainer(model, epsilon=0.05, max_steps=3, logit_step=3.0)(images, 0, "increase")
    assert short.steps.tolist() == [3, 3, 3] and not bool(short.reached.any())
    assert bool((short.probability[-1] > short.probability[0]).all())
    assert evaluate_counterfactuals(short)["validity"].tolist() == [0.0, 0.0, 0.0]


def test_all_at_goal_takes_no_step():
    model = RegionScore(torch.ones(SIZE, SIZE, dtype=torch.bool), offset=0.9)
    images = rand_images(2, seed=5)
    cf = AdversarialExplainer(model, epsilon=1.0)(images, 0, "decrease")
    assert cf.steps.tolist() == [0, 0] and torch.equal(cf.images, images)
    assert cf.frames.shape[0] == 1 and cf.probability.shape == (1, 2)
    assert float(cf.difference.abs().sum()) == 0.0


def test_per_image_class_targets_with_early_stopping():
    region = square(4, 28, 4, 28)
    model = RegionScore(region, offset=0.5, channels=(0, 1))  # two classes: channel 0, channel 1
    images = rand_images(3, seed=6) * 0.1 + 0.45
    images[0, 0] = 0.7  # image 0: class 0 likely (p ≈ 0.98)
    images[1, 1] = 0.7  # image 1: class 1 likely
    images[2, 1] = 0.0  # image 2: class 1 already unlikely
    target = torch.tensor([0, 1, 1])
    cf = AdversarialExplainer(model, epsilon=8.0, max_steps=10)(images, target, "decrease")
    assert cf.steps[2].item() == 0 and torch.equal(cf.images[2], images[2])
    assert bool((cf.steps[:2] >= 1).all()) and bool(cf.reached.all())
    probs = torch.softmax(model(cf.images), dim=1)
    assert probs[0, 0] < 0.5 and probs[1, 1] < 0.5
    assert torch.allclose(cf.probability[-1], probs[torch.arange(3), target], atol=1e-6)
    # a log-softmax target moves its own channel down and the other class's channel up
    delta = (cf.images - images)[:, :, region].mean(-1)
    assert delta[0, 0] < 0 < delta[0, 1] and delta[1, 1] < 0 < delta[1, 0]
    assert torch.equal(cf.images[:, 2], images[:, 2])  # channel 2 never matters


def test_smoothing_spreads_the_change_and_tv_runs():
    point = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    point[16, 16] = True
    model = RegionScore(point, offset=0.0)
    images = torch.full((1, 3, SIZE, SIZE), 0.5)
    sharp = AdversarialExplainer(model, epsilon=0.4, max_steps=3, early_stop=False,
                                 fov_threshold=None)(images, 0, "decrease")
    smooth = AdversarialExplainer(model, epsilon=0.4, max_steps=3, early_stop=False, smooth=2.0,
                                  fov_threshold=None)(images, 0, "decrease")
    assert float(sharp.difference[0, 0, 16, 18]) == 0.0
    assert float(smooth.difference[0, 0, 16, 18]) > 0.0
    assert float((smooth.images - images).norm()) <= 0.4 + 1e-5
    tv = AdversarialExplainer(model, epsilon=0.4, max_steps=3, early_stop=False, tv_weight=1.0,
                              fov_threshold=None)(images, 0, "decrease")
    assert model(tv.images)[0, 0] < model(images)[0, 0]
    assert float((tv.images - images).norm()) <= 0.4 + 1e-5


def test_helpers():
    assert sorted(apgd_checkpoints(10)) == [3, 5, 6, 7, 8, 9, 10]
    assert total_variation(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])).item() == 1.0
    blurred = gaussian_blur(torch.ones(1, 2, 8, 8), 1.5)
    assert torch.allclose(blurred, torch.ones_like(blurred), atol=1e-6)


def test_bad_arguments_raise_config_errors():
    model = RegionScore(torch.ones(SIZE, SIZE, dtype=torch.bool))
    images = rand_images(2)
    with pytest.raises(ConfigError, match="direction"):
        AdversarialExplainer(model)(images, 0, "down")
    with pytest.raises(ConfigError, match="fov_mask"):
        AdversarialExplainer(model)(images, 0, "decrease", fov_mask=torch.ones(2, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(ConfigError, match="epsilon"):
        AdversarialExplainer(model, epsilon=-1.0)
    with pytest.raises(ConfigError, match="method"):
        counterfactual(model, images, method="nope", target=0)
    with pytest.raises(InputError, match=r"images: must be a B×C×H×W batch, got shape \(3, 32, 32\)"):
        AdversarialExplainer(model)(images[0], 0)
    with pytest.raises(ConfigError, match="target"):
        AdversarialExplainer(model)(images, "glaucoma")  # a string target needs named heads


def test_registry_and_callable_module():
    from xmed.explain.counterfactual import LatentShiftExplainer

    assert COUNTERFACTUALS == {"adversarial": AdversarialExplainer, "latent_shift": LatentShiftExplainer}
    model = RegionScore(torch.ones(SIZE, SIZE, dtype=torch.bool), offset=0.2)
    out = cf_module(model, rand_images(1), target=0, epsilon=1.0, max_steps=2)
    assert isinstance(out, Counterfactual)


# ------------------------------------------------------------------------------ FundusClassifier


@pytest.fixture(scope="module")
def fundus_model():
    torch.manual_seed(0)
    return FundusClassifier("test_resnet.r160_in1k", input_size=48).eval()


@pytest.mark.parametrize("target", ["glaucoma", "DH", "vCDR"])
def test_fundus_classifier_shapes_and_recorded_heads(fundus_model, target):
    model = fundus_model
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(7))
    cf = counterfactual(model, images, target=target, direction="decrease", max_steps=3, record_every=2,
                        early_stop=False)
    t = 3  # input, step 2, end (step 3)
    assert cf.images.shape == (2, 3, 48, 48) and cf.frames.shape == (t, 2, 3, 48, 48)
    assert cf.probability.shape == (t, 2) and cf.findings.shape == (t, 2, len(FINDINGS))
    assert cf.vcdr.shape == (t, 2) and cf.difference.shape == (2, 1, 48, 48)
    assert cf.steps.tolist() == [3, 3] and cf.reached.shape == (2,) and cf.reached.dtype == torch.bool
    assert cf.target == {"vCDR": "vcdr"}.get(target, target) and cf.std == tuple(model.data_config.std)
    # the recorded probabilities are the model's on the recorded frames
    assert_path_is_the_models(model, cf, target)
    assert bool((cf.probability[-1] < cf.probability[0]).all())  # moved the asked way
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_fundus_classifier_mode_and_parameters_untouched():
    torch.manual_seed(1)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=48)  # own copy: train mode updates BN stats
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(8))
    model.train()
    try:
        AdversarialExplainer(model, max_steps=2, early_stop=False)(images, "glaucoma", "increase")
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())
    cf = AdversarialExplainer(model, max_steps=2)(images, "glaucoma", "increase")
    assert not model.training and cf.findings is not None


# ------------------------------------------------------------------------------ metrics


def test_validity_and_flip_rate():
    probability = torch.tensor([[0.9, 0.8, 0.7, 0.4, 0.6],
                                [0.6, 0.6, 0.6, 0.3, 0.5],
                                [0.1, 0.49, 0.6, 0.2, math.nan]])
    assert Validity()(probability, "decrease").tolist()[:3] == [1.0, 1.0, 0.0]
    values = Validity()(probability, "decrease")
    assert math.isnan(values[3]) and math.isnan(values[4])  # started below / NaN
    assert flip_rate(probability, "decrease").item() == pytest.approx(2 / 3)
    assert flip_rate(probability, "increase").item() == pytest.approx(0.0)  # only image 3 needed it: 0.4 -> 0.2
    assert math.isnan(flip_rate(torch.tensor([[0.1], [0.0]]), "decrease").item())


def test_proximity_and_changed_fraction_hand_computed():
    original = torch.zeros(2, 3, 2, 2)
    edited = original.clone()
    edited[0, 0, 0, 0] = 0.6      # one value moved by 0.6
    edited[0, 1, 1, 1] = -0.003   # below the tolerance of 1/255
    edited[1] = 0.1               # everything moved by 0.1
    l1, l2, sp = ProximityL1()(original, edited), ProximityL2()(original, edited), ChangedFraction()(original, edited)
    assert l1.tolist() == pytest.approx([(0.6 + 0.003) / 12, 0.1])
    assert l2.tolist() == pytest.approx([math.sqrt((0.36 + 0.003 ** 2) / 12), 0.1])
    assert sp.tolist() == pytest.approx([0.25, 1.0])
    # input space -> pixels with the normalisation std
    assert ProximityL1(std=(0.5, 0.5, 0.5))(original, edited)[1].item() == pytest.approx(0.05)
    # over a field of view; an empty one is undefined
    fov = torch.zeros(2, 2, 2, dtype=torch.bool)
    fov[0, 0, 0] = True
    sp_fov = ChangedFraction()(original, edited, fov)
    assert sp_fov[0].item() == 1.0 and math.isnan(sp_fov[1].item())
    assert ProximityL1()(original, edited, fov)[0].item() == pytest.approx(0.2)
    assert math.isnan(ProximityL2()(original, edited, fov)[1].item())


def test_energy_in_mask_and_coverage_hand_computed():
    difference = torch.zeros(3, 1, 4, 4)
    difference[0, 0, 0, 0], difference[0, 0, 3, 3] = 3.0, 1.0
    difference[2, 0, 1, 1] = 2.0
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[1, :2, :2] = True          # no change at all in image 1
    # image 2: empty mask
    values = energy_in_mask(difference, masks)   # the energy: (9 + 0) / (9 + 1)
    assert values[0].item() == pytest.approx(0.9)
    assert math.isnan(values[1].item()) and math.isnan(values[2].item())
    assert L1InMask()(difference, masks)[0].item() == 0.75
    # a signed B×C×H×W change: energy per pixel is the sum over channels of the squares
    change = torch.zeros(1, 3, 4, 4)
    change[0, :, 0, 0] = torch.tensor([1.0, -2.0, 2.0])  # 9 inside the mask
    change[0, 0, 3, 3] = -3.0                            # 9 outside
    assert energy_in_mask(change, masks[:1])[0].item() == 0.5
    assert L1InMask()(change, masks[:1])[0].item() == pytest.approx(5 / 8)
    with pytest.raises(ConfigError, match="change"):
        energy_in_mask(torch.zeros(4, 4), masks)
    fov = torch.zeros(3, 4, 4, dtype=torch.bool)
    fov[:, :, :2] = True             # 8 pixels
    coverage = mask_coverage(masks, fov)
    assert coverage[0].item() == 0.5 and math.isnan(coverage[2].item())  # an empty mask has no chance level
    assert math.isnan(mask_coverage(masks, torch.zeros(3, 4, 4, dtype=torch.bool))[0].item())
    assert mask_coverage(masks)[0].item() == 0.25


def test_vcdr_metrics_hand_computed():
    vcdr = torch.tensor([[0.8, 0.7, 0.5],     # T=4 frames (rows) of B=3 paths (columns):
                         [0.7, 0.75, 0.5],    # 0: falls monotonically, 1: falls with a bump,
                         [0.6, 0.6, 0.6],     # 2: rises
                         [0.5, 0.6, 0.8]])
    assert VCDRFalls()(vcdr).tolist() == [1.0, 1.0, 0.0]
    assert VCDRMonotonic()(vcdr).tolist() == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert vcdr_falls(vcdr).item() == pytest.approx(2 / 3)
    assert vcdr_monotonic_fraction(vcdr).item() == pytest.approx(1 / 3)
    assert VCDRFalls(expected="increase")(vcdr).tolist() == [0.0, 0.0, 1.0]
    assert math.isnan(VCDRFalls()(vcdr[:1])[0].item()) and math.isnan(VCDRMonotonic()(vcdr[:1])[0].item())


def test_reconstruction_error_and_evaluate():
    images = torch.ones(2, 3, 4, 4)
    assert reconstruction_error(lambda x: x * 0.5, images).tolist() == [0.25, 0.25]
    model = RegionScore(torch.ones(SIZE, SIZE, dtype=torch.bool), offset=0.45)
    cf = counterfactual(model, rand_images(2, seed=9), target=0, epsilon=3.0, max_steps=5)
    masks = torch.ones(2, SIZE, SIZE, dtype=torch.bool)
    out = evaluate_counterfactuals(cf, masks=masks, autoencoder=lambda x: x)
    assert sorted(out) == ["changed_fraction", "energy_in_mask", "l1_in_mask", "mask_coverage", "proximity_l1",
                           "proximity_l2", "reconstruction_error", "seconds_per_image", "validity"]
    assert out["validity"].tolist() == [1.0, 1.0] and out["energy_in_mask"].tolist() == [1.0, 1.0]
    assert out["reconstruction_error"].tolist() == [0.0, 0.0]
    assert all(v.shape == (2,) for v in out.values())
    counterfactual_metrics = {name: cls for name, cls in METRICS.items() if cls.category == "counterfactual"}
    assert list(counterfactual_metrics) == ["validity", "proximity_l1", "proximity_l2", "changed_fraction",
                                            "energy_in_mask", "l1_in_mask", "vcdr_falls", "vcdr_monotonic",
                                            "reconstruction_error"]
    for name, cls in counterfactual_metrics.items():
        assert cls.name == name and cls.score_direction in ("higher", "lower")
    # every key a table shows has its better side, but the chance level, which has none
    assert {key: score_direction(key) for key in out} == {
        "validity": "higher", "proximity_l1": "lower", "proximity_l2": "lower", "changed_fraction": "lower",
        "energy_in_mask": "higher", "l1_in_mask": "higher", "mask_coverage": None, "reconstruction_error": "lower",
        "seconds_per_image": "lower"}


def test_counterfactual_metrics_score_one_evidence_as_evaluate_counterfactuals_does(fundus_model):
    images = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(11))
    cf = counterfactual(fundus_model, images, target="glaucoma", direction="decrease", max_steps=3,
                        threshold=0.0, early_stop=False)
    cf.steps[2] = 0                                    # as if the third eye had met the goal as given
    goal = float(cf.probability[0].min()) - 1e-3        # every eye starts above it: validity is defined
    masks = torch.zeros(3, 48, 48, dtype=torch.bool)
    masks[:, 10:30, 12:40] = True
    autoencoder = lambda x: 0.9 * x                     # noqa: E731
    wrapped = evaluate_counterfactuals(cf, masks=masks, autoencoder=autoencoder, threshold=goal, tolerance=0.02)
    evidence = Evidence(counterfactual=cf, masks=masks, autoencoder=autoencoder)
    scored = evaluate(evidence, options={"validity": {"threshold": goal}, "changed_fraction": {"tolerance": 0.02}})
    assert list(scored) == [k for k in wrapped if k not in ("mask_coverage", "seconds_per_image")]
    assert "vcdr_falls" in scored and "reconstruction_error" in scored
    for name, values in scored.items():
        torch.testing.assert_close(values, wrapped[name], equal_nan=True)
        assert math.isnan(values[2].item()), name       # an eye that was not edited has no edit to score
        assert not math.isnan(values[0].item()), name
    # score() fills in what the metric leaves to the counterfactual: its std, its direction, its goal
    torch.testing.assert_close(scored["proximity_l1"][:2],
                               ProximityL1(std=cf.std)(cf.original, cf.images, cf.fov)[:2])
    torch.testing.assert_close(scored["vcdr_falls"][:2], VCDRFalls("decrease")(cf.vcdr)[:2])
    assert ChangedFraction(tolerance=0.02).score(evidence)[:2].tolist() == scored["changed_fraction"][:2].tolist()
    assert torch.equal(Validity(threshold=goal).score(evidence)[:2], scored["validity"][:2])
    assert torch.equal(Validity().score(evidence)[:2], Validity(cf.threshold)(cf.probability, "decrease")[:2])
    with pytest.raises(ConfigError, match="reconstruction_error needs autoencoder"):
        evaluate(Evidence(counterfactual=cf), ["reconstruction_error"])
    with pytest.raises(ConfigError, match="energy_in_mask needs masks"):
        evaluate(Evidence(counterfactual=cf), ["energy_in_mask"])
    no_vcdr = Evidence(counterfactual=Counterfactual(**{**vars(cf), "vcdr": None}))
    assert "vcdr_falls" not in evaluate(no_vcdr)
