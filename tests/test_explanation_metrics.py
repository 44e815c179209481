"""Explanation metrics against hand-computed values, scikit-learn and a sparse direct solver."""

from __future__ import annotations

import ast
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg as sparse_linalg
import torch
from scipy import sparse
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn
from torchvision.transforms.functional import gaussian_blur

import xmed.metrics
from xmed.errors import ConfigError
from xmed.metrics import METRICS, Evidence, Metric, create_metric, evaluate, register_metric, score_direction
from xmed.metrics.explanation import (
    ROAD,
    Deletion,
    EnergyPointingGame,
    Insertion,
    MapAUPRC,
    MapAUROC,
    ModelParameterRandomisation,
    PointingGame,
    Sparseness,
    evaluate_explanations,
    noisy_linear_imputation,
    randomisation_layers,
)

EXPECTED_SCORE_DIRECTION = {
    "pointing_game": "higher", "energy_pointing_game": "higher", "map_auroc": "higher",
    "map_auprc": "higher", "deletion": "lower", "insertion": "higher", "road_morf": "lower",
    "road_lerf": "higher", "randomisation_spearman": "lower", "randomisation_ssim": "lower",
    "sparseness": "higher",
}


def mean_forward(images: torch.Tensor) -> torch.Tensor:
    return images.mean((1, 2, 3))


def gradient_x_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return (grad * x).sum(1, keepdim=True)


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), bn=nn.BatchNorm2d(8), act1=nn.ReLU(),
        conv2=nn.Conv2d(8, 8, 3, padding=1), act2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, 1)))


# --------------------------------------------------------------------------------------------
# localisation


def test_pointing_game_hit_miss_tolerance_and_undefined():
    maps = torch.zeros(4, 1, 8, 8)
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:, 4:, 4:] = True
    maps[0, 0, 5, 6] = 2.0                   # hit
    maps[1, 0, 1, 5] = 2.0                   # 3 rows above the mask
    maps[2, 0, 0, 0] = maps[2, 0, 7, 7] = 1.0  # tied maxima, one inside: a hit (as in Quantus)
    maps[3] = 1.0                            # constant map: points nowhere
    assert PointingGame()(maps, masks)[:3].tolist() == [1.0, 0.0, 1.0]
    assert PointingGame(tolerance_px=2)(maps, masks)[1].item() == 0.0
    assert PointingGame(tolerance_px=3)(maps, masks)[1].item() == 1.0
    assert math.isnan(PointingGame()(maps, masks)[3].item())
    masks[0] = False
    assert math.isnan(PointingGame()(maps, masks)[0].item())          # empty mask
    assert PointingGame()(maps, masks[:, None].float())[1].item() == 0.0  # B×1×H×W 0/1 masks work
    with pytest.raises(ConfigError):
        PointingGame(tolerance_px=-1)


def test_energy_pointing_game_known_split():
    maps = torch.zeros(3, 1, 4, 4)
    maps[:, 0, 0, 0], maps[:, 0, 1, 1], maps[:, 0, 3, 3], maps[:, 0, 3, 0] = 2.0, 1.0, 1.0, -7.0
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    maps[1] = -maps[1].abs()                 # no positive energy
    masks[2] = False                         # empty mask
    out = EnergyPointingGame()(maps, masks)
    assert out[0].item() == 0.75             # 3 of 4 units of positive energy in the mask
    assert math.isnan(out[1].item()) and math.isnan(out[2].item())


def test_map_auroc_auprc_equal_sklearn_per_image():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(6, 1, 12, 12, generator=g)
    maps[1] = torch.round(maps[1] * 2)       # many ties
    maps[2] = maps[2] * 1000 + 50            # far outside [0, 1]: no sigmoid saturation
    masks = torch.rand(6, 12, 12, generator=g) < 0.3
    masks[4] = False
    masks[5] = True
    auroc, auprc = MapAUROC()(maps, masks), MapAUPRC()(maps, masks)
    for i in range(4):
        y, s = masks[i].flatten().numpy(), maps[i].flatten().double().numpy()
        assert auroc[i].item() == pytest.approx(roc_auc_score(y, s), abs=1e-6)
        assert auprc[i].item() == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert all(math.isnan(v) for v in auroc[4:].tolist() + auprc[4:].tolist())
    one = MapAUROC()(maps[:1], masks[:1])                 # a single valid image takes the binary path
    assert one.item() == pytest.approx(auroc[0].item(), abs=1e-7)


def test_localisation_rejects_mismatched_masks_and_nan_maps():
    maps = torch.rand(2, 1, 6, 6)
    with pytest.raises(ConfigError) as err:
        PointingGame()(maps, torch.ones(2, 5, 6, dtype=torch.bool))
    assert err.value.key == "masks"
    maps[1, 0, 0, 0] = float("nan")
    masks = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True
    for metric in (PointingGame(), EnergyPointingGame(), MapAUROC(), MapAUPRC()):
        out = metric(maps, masks)
        assert not math.isnan(out[0].item()) and math.isnan(out[1].item())


# --------------------------------------------------------------------------------------------
# faithfulness: deletion / insertion


def test_deletion_below_insertion_and_curve_endpoints():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 16, 16, generator=g) + 0.1
    maps = images.mean(1, keepdim=True)
    for baseline in ("zero", "mean", "blur"):
        deletion, insertion = Deletion(8, baseline), Insertion(8, baseline)
        fractions, del_curve = deletion.curve(mean_forward, images, maps)
        _, ins_curve = insertion.curve(mean_forward, images, maps)
        base = {"zero": torch.zeros_like(images),
                "mean": images.mean((2, 3), keepdim=True).expand_as(images),
                "blur": gaussian_blur(images, [7, 7], [1.0, 1.0])}[baseline]   # sigma = 16 / 16
        assert fractions.tolist() == pytest.approx([i / 8 for i in range(9)])
        torch.testing.assert_close(del_curve[:, 0], mean_forward(images))
        torch.testing.assert_close(del_curve[:, -1], mean_forward(base))
        torch.testing.assert_close(ins_curve[:, 0], mean_forward(base))
        torch.testing.assert_close(ins_curve[:, -1], mean_forward(images))
        assert bool((deletion(mean_forward, images, maps) < insertion(mean_forward, images, maps)).all())


def test_deletion_auc_chunks_and_ties():
    g = torch.Generator().manual_seed(3)
    images, maps = torch.rand(3, 1, 8, 8, generator=g), torch.rand(3, 1, 8, 8, generator=g)
    seen: list[int] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return mean_forward(x)

    full = Deletion(n_steps=5, baseline="zero", batch_size=100)(counting, images, maps)
    assert seen == [18]
    seen.clear()
    chunked = Deletion(n_steps=5, baseline="zero", batch_size=4)(counting, images, maps)
    assert max(seen) == 4 and sum(seen) == 18
    torch.testing.assert_close(full, chunked)
    fractions, curve = Deletion(n_steps=5, baseline="zero").curve(mean_forward, images, maps)
    torch.testing.assert_close(full, torch.from_numpy(np.trapezoid(curve.numpy(), fractions.numpy(), axis=1)))

    # ties go in row-major order: a constant map removes pixel (0, 0) first
    first_pixel = lambda x: x[:, 0, 0, 0]
    _, curve = Deletion(n_steps=64, baseline="zero").curve(first_pixel, images, torch.ones(3, 1, 8, 8))
    assert bool((curve[:, 0] == images[:, 0, 0, 0]).all()) and bool((curve[:, 1:] == 0).all())
    with pytest.raises(ConfigError):
        Deletion(baseline="noise")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Deletion()(lambda x: x.mean((2, 3)), torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8))


# --------------------------------------------------------------------------------------------
# faithfulness: ROAD


def direct_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The paper's sparse linear system (8 neighbours, 1/6 and 1/12), solved with spsolve."""
    c, h, w = image.shape
    idx = np.flatnonzero(removed)
    var = -np.ones(h * w, dtype=int)
    var[idx] = np.arange(idx.size)
    a = sparse.lil_matrix((idx.size, idx.size))
    b = np.zeros((idx.size, c))
    flat = image.reshape(c, -1)
    for row, pixel in enumerate(idx):
        y, x = divmod(pixel, w)
        total = 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if (dy, dx) == (0, 0) or not (0 <= yy < h and 0 <= xx < w):
                    continue
                weight = 1 / 12 if dy and dx else 1 / 6
                total += weight
                if removed.flat[yy * w + xx]:
                    a[row, var[yy * w + xx]] = -weight
                else:
                    b[row] += weight * flat[:, yy * w + xx]
        a[row, row] = total
    out = flat.copy()
    out[:, idx] = sparse_linalg.spsolve(a.tocsr(), b).reshape(idx.size, c).T
    return out.reshape(c, h, w)


def test_imputation_reproduces_ramp_constant_and_direct_solution():
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = torch.stack([0.1 * yy + 0.05 * xx + 0.2, 1.0 - 0.03 * xx]).unsqueeze(0)
    g = torch.Generator().manual_seed(4)
    removed = torch.rand(1, 1, 16, 16, generator=g) < 0.5
    removed[..., 3:12, 4:13] = True
    removed[..., [0, -1], :] = False   # a ramp solves the averaging equation away from the border
    removed[..., :, [0, -1]] = False
    assert (noisy_linear_imputation(ramp, removed, noise=0.0) - ramp).abs().max() < 1e-3
    constant = torch.full((1, 3, 16, 16), 0.37)
    everywhere = torch.rand(1, 1, 16, 16, generator=g) < 0.9
    assert (noisy_linear_imputation(constant, everywhere, noise=0.0) - 0.37).abs().max() < 1e-6

    image = torch.rand(2, 3, 12, 12, generator=g)
    holes = torch.rand(2, 1, 12, 12, generator=g) < 0.6
    holes[1, :, :10, :10] = True                            # a wide hole touching the border
    out = noisy_linear_imputation(image, holes, noise=0.0, rtol=1e-10, n_iter=48)  # solved tightly
    default = noisy_linear_imputation(image, holes, noise=0.0)                    # the default budget
    for i in range(2):
        ref = direct_imputation(image[i].double().numpy(), holes[i, 0].numpy())
        assert np.abs(out[i].double().numpy() - ref).max() < 1e-5
        assert np.abs(default[i].double().numpy() - ref).max() < 1e-3

    noisy = noisy_linear_imputation(image, holes, noise=0.1, generator=torch.Generator().manual_seed(0))
    kept = ~holes.expand_as(image)
    assert torch.equal(noisy[kept], image[kept])                  # noise on the imputed pixels only
    assert 0.05 < (noisy - out)[~kept].std().item() < 0.15


def fundus_and_cam_hole(size: int, removed_fraction: float, most_relevant: bool):
    """skimage's fundus photograph at ``size`` px and the pixels ROAD removes for a CAM-like blob."""
    from skimage import data

    image = torch.from_numpy(data.retina()).permute(2, 0, 1)[None].double() / 255
    image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    cam = torch.exp(-((xx - 0.3) ** 2 + (yy + 0.1) ** 2) / 0.5).flatten()
    order = torch.argsort(cam, descending=most_relevant, stable=True)
    removed = torch.zeros(size * size, dtype=torch.bool)
    removed[order[:round(removed_fraction * size * size)]] = True
    return image.float(), removed.view(1, 1, size, size)


@pytest.mark.parametrize("most_relevant", [
    pytest.param(True, id="morf-one-blob-over-90-percent"),
    pytest.param(False, id="lerf-ring-around-the-kept-peak"),
])
def test_default_imputation_matches_direct_solve_on_a_large_hole(most_relevant):
    image, removed = fundus_and_cam_hole(128, 0.9, most_relevant)
    out = noisy_linear_imputation(image, removed, noise=0.0)
    ref = direct_imputation(image[0].double().numpy(), removed[0, 0].numpy())
    error = np.abs(out[0].double().numpy() - ref)[:, removed[0, 0].numpy()]
    assert error.max() < 0.01


def test_road_morf_below_lerf_and_reproducible():
    g = torch.Generator().manual_seed(5)
    images = torch.zeros(2, 1, 16, 16)
    images[..., 2:6, 2:6] = 1.0                  # the evidence: 16 of 256 pixels
    maps = 0.01 * torch.rand(2, 1, 16, 16, generator=g)
    maps[..., 2:6, 2:6] += 1.0                   # the map marks it as most relevant
    region = lambda x: x[:, 0, 2:6, 2:6].sum((1, 2))
    morf, lerf = ROAD("morf", noise=0.01), create_metric("road_lerf", noise=0.01)
    fractions, lerf_curve = lerf.curve(region, images, maps)
    assert fractions.tolist() == pytest.approx([0.1 * i for i in range(1, 10)])
    assert bool((lerf_curve == 16.0).all())      # the region is never removed, noise never reaches it
    assert bool((morf(region, images, maps) < 1.0).all())         # imputed from its zero surroundings
    assert (morf.score_direction, lerf.score_direction, lerf.name) == ("lower", "higher", "road_lerf")

    noisy = ROAD("morf", percentages=(0.3, 0.6), noise=0.5, seed=1)
    a = noisy.curve(region, images, maps)[1]
    torch.testing.assert_close(a, ROAD("morf", (0.3, 0.6), noise=0.5, seed=1, batch_size=1).curve(
        region, images, maps)[1])                 # the noise does not depend on the chunking
    assert not torch.equal(a, ROAD("morf", (0.3, 0.6), noise=0.5, seed=2).curve(region, images, maps)[1])
    with pytest.raises(ConfigError):
        ROAD(percentages=(0.5, 1.0))
    with pytest.raises(ConfigError):
        ROAD(order="random")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# randomisation


def test_randomisation_similarity_falls_and_model_untouched():
    net = tiny_net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    maps = gradient_x_input(net, images)
    rng = torch.get_rng_state()
    for similarity in ("spearman", "ssim"):
        metric = ModelParameterRandomisation(similarity)
        torch.testing.assert_close(metric.similarity(maps, maps), torch.ones(4))
        out = metric(net, gradient_x_input, images)
        assert list(out) == ["fc", "conv2", "bn", "conv1"]
        assert all(v.shape == (4,) for v in out.values())
        assert metric.summary(out).mean().item() < 0.5
        torch.testing.assert_close(metric(net, gradient_x_input, images)["conv1"], out["conv1"])  # seeded
    assert torch.equal(torch.get_rng_state(), rng)          # the caller's random state is left alone
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net.training


def test_randomisation_cascade_order_and_mode():
    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.randn(1, 4, 1, 1))
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.stages = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))

        def forward(self, x):
            return self.stages(self.stem(x) + self.pos_embed)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))

        def forward(self, x):
            return self.head(self.backbone(x))

    net = Net()
    assert [n for n, _, _ in randomisation_layers(net)] == ["head.2", "backbone.stages", "backbone.stem",
                                                             "backbone.pos_embed"]
    snapshots: list[dict[str, torch.Tensor]] = []
    modes: list[bool] = []

    def explain(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})
        modes.append(model.training)
        return gradient_x_input(model, x)

    for training in (True, False):
        snapshots.clear()
        modes.clear()
        net.train(training)
        ModelParameterRandomisation("ssim")(net, explain, torch.rand(2, 3, 8, 8))
        assert modes == [training] * 5 and net.training is training
        prefixes = ["head.2.", "backbone.stages.", "backbone.stem.", "backbone.pos_embed"]
        for step, prefix in enumerate(prefixes, start=1):   # each step changes its group, only it
            changed = {k for k in snapshots[0] if not torch.equal(snapshots[step][k], snapshots[step - 1][k])}
            assert changed == {k for k in snapshots[0] if k.startswith(prefix)}


def test_spearman_similarity_equals_scipy_with_ties():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(3, 1, 20, 20, generator=g).clamp(min=0)      # ReLU'd: one big tie group of zeros
    b = a + 0.5 * torch.randn(3, 1, 20, 20, generator=g).round()
    out = ModelParameterRandomisation(absolute=False).similarity(a, b)
    for i in range(3):
        assert out[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-6)
    constant = ModelParameterRandomisation().similarity(torch.ones(1, 1, 4, 4), a[:1, :, :4, :4])
    assert math.isnan(constant.item())


# --------------------------------------------------------------------------------------------
# complexity, registry, the one-call evaluation


def test_sparseness_gini():
    hot = torch.zeros(2, 1, 32, 32)
    hot[0, 0, 5, 7] = 3.0
    hot[1] = -2.0
    out = Sparseness()(hot)
    assert out[0].item() == pytest.approx(1023 / 1024) and out[0].item() > 0.95
    assert out[1].item() == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(Sparseness()(torch.zeros(1, 1, 4, 4)).item())
    x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(8)) - 0.3
    a = np.sort(np.abs(x.flatten().double().numpy()))
    n = a.size
    gini = np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * a.sum())   # Quantus' formula
    assert Sparseness()(x).item() == pytest.approx(gini, abs=1e-6)


def test_registry_score_directions_categories():
    saliency = {name: cls for name, cls in METRICS.items() if cls.category != "counterfactual"}
    assert set(saliency) == set(EXPECTED_SCORE_DIRECTION)
    for name, cls in saliency.items():
        metric = create_metric(name)
        assert cls.name == metric.name == name
        assert cls.score_direction == metric.score_direction == score_direction(name) == EXPECTED_SCORE_DIRECTION[name]
        assert cls.category in ("localisation", "faithfulness", "randomisation", "complexity")
        assert not hasattr(metric, "direction")        # "direction" is a counterfactual's decrease/increase
    with pytest.raises(ConfigError, match="unknown metric 'nope'; known: .*pointing_game"):
        create_metric("nope")
    with pytest.raises(ConfigError, match="n_step.*the options of deletion: n_steps, baseline, batch_size"):
        create_metric("deletion", n_step=4)
    assert create_metric("deletion", n_steps=3, baseline="zero").n_steps == 3
    assert create_metric("road_morf", percentages=(0.2, 0.4)).percentages == (0.2, 0.4)
    assert xmed.metrics.METRICS is METRICS


def test_register_metric_checks_what_a_metric_declares():
    class Undeclared(Metric):
        name = "undeclared_test_metric"
        requires = ("maps",)

    class UnknownEvidence(Metric):
        name = "unknown_evidence_test_metric"
        score_direction = "higher"
        category = "complexity"
        requires = ("heatmap",)

    with pytest.raises(TypeError, match="score_direction must be one of higher, lower; category must be"):
        register_metric(Undeclared)
    with pytest.raises(TypeError, match="requires must name Evidence fields"):
        register_metric(UnknownEvidence)
    with pytest.raises(ValueError, match="'sparseness' is already taken by Sparseness"):
        register_metric(type("Sparseness2", (Sparseness,), {}))
    assert "undeclared_test_metric" not in METRICS and "unknown_evidence_test_metric" not in METRICS


def test_every_metric_scores_one_evidence_like_its_own_call():
    g = torch.Generator().manual_seed(12)
    images = torch.rand(2, 3, 8, 8, generator=g)
    maps = torch.randn(2, 1, 8, 8, generator=g)
    masks = torch.rand(2, 8, 8, generator=g) < 0.4
    net = tiny_net()
    evidence = Evidence(maps=maps, masks=masks, forward=mean_forward, images=images, model=net,
                        explain_fn=gradient_x_input)
    options = {"deletion": {"n_steps": 4}, "insertion": {"n_steps": 4}, "road_morf": {"percentages": (0.5,)},
               "road_lerf": {"percentages": (0.5,)}}
    scores = evaluate(evidence, options=options)        # None: every metric whose evidence is given
    assert list(scores) == list(EXPECTED_SCORE_DIRECTION)
    assert all(v.shape == (2,) for v in scores.values())
    torch.testing.assert_close(scores["pointing_game"], PointingGame()(maps, masks))
    torch.testing.assert_close(scores["deletion"], Deletion(4)(mean_forward, images, maps))
    torch.testing.assert_close(scores["road_lerf"], ROAD("lerf", (0.5,))(mean_forward, images, maps))
    torch.testing.assert_close(scores["sparseness"], Sparseness()(maps))
    cascade = ModelParameterRandomisation()(net, gradient_x_input, images)
    torch.testing.assert_close(scores["randomisation_spearman"], list(cascade.values())[-1])
    # built metrics go in as they are, by name in the result
    built = evaluate(evidence, [PointingGame(tolerance_px=8), "map_auroc"])
    assert built["pointing_game"].tolist() == [1.0, 1.0] and list(built) == ["pointing_game", "map_auroc"]


def test_evaluate_names_the_missing_evidence_and_misplaced_options():
    maps, masks = torch.rand(1, 1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ConfigError, match="randomisation_ssim needs model and explain_fn and images"):
        evaluate(Evidence(maps=maps), ["randomisation_ssim"])
    with pytest.raises(ConfigError, match="validity needs counterfactual"):
        evaluate(Evidence(maps=maps), ["validity"])
    with pytest.raises(ConfigError, match="vcdr_falls needs counterfactual.vcdr"):
        evaluate(Evidence(maps=maps), ["vcdr_falls"])
    with pytest.raises(ConfigError, match="options for metrics that are not run: deletion"):
        evaluate(Evidence(maps=maps, masks=masks), options={"deletion": {"n_steps": 2}})
    with pytest.raises(ConfigError, match="pointing_game is given built"):
        evaluate(Evidence(maps=maps, masks=masks), [PointingGame()], options={"pointing_game": {"tolerance_px": 1}})
    with pytest.raises(ConfigError, match="named more than once: sparseness"):
        evaluate(Evidence(maps=maps), ["sparseness", Sparseness()])


def test_evaluate_explanations_runs_what_the_inputs_allow():
    g = torch.Generator().manual_seed(9)
    images = torch.rand(2, 3, 8, 8, generator=g)
    maps = images.mean(1, keepdim=True)
    masks = maps[:, 0] > 0.5
    local = evaluate_explanations(maps, masks=masks)
    assert list(local) == ["pointing_game", "energy_pointing_game", "map_auroc", "map_auprc", "sparseness"]
    torch.testing.assert_close(local["map_auroc"], MapAUROC()(maps, masks))
    options = {"deletion": {"n_steps": 4}, "insertion": {"n_steps": 4},
               "road_morf": {"percentages": (0.5,)}, "road_lerf": {"percentages": (0.5,)}}
    full = evaluate_explanations(maps, masks=masks, forward=mean_forward, images=images, options=options)
    assert set(full) == set(local) | {"deletion", "insertion", "road_morf", "road_lerf"}
    torch.testing.assert_close(full["deletion"], Deletion(4)(mean_forward, images, maps))
    assert all(v.shape == (2,) for v in full.values())
    with pytest.raises(ConfigError):
        evaluate_explanations(maps, metrics=("deletion",))                 # needs forward and images
    with pytest.raises(ConfigError):
        evaluate_explanations(maps, masks=masks, metrics=("randomisation_ssim",))
    with pytest.raises(ConfigError):
        evaluate_explanations(maps, metrics=("nope",))


@pytest.mark.parametrize("module", ["base", "classification", "explanation", "counterfactual"])
def test_metric_modules_import_neither_data_nor_lightning(module):
    source = (Path(xmed.metrics.__file__).parent / f"{module}.py").read_text()
    nodes = list(ast.walk(ast.parse(source)))
    imported = [a.name for node in nodes if isinstance(node, ast.Import) for a in node.names]
    imported += [node.module or "" for node in nodes if isinstance(node, ast.ImportFrom)]
    forbidden = [m for m in imported
                 if m.startswith("xmed.data") or m.split(".")[0] in ("lightning", "pytorch_lightning")]
    assert not forbidden


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(10)
    images, maps = torch.rand(2, 3, 16, 16, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    masks = torch.rand(2, 16, 16, generator=g) < 0.3
    options = {"deletion": {"n_steps": 4}, "insertion": {"n_steps": 4},
               "road_morf": {"noise": 0.0}, "road_lerf": {"noise": 0.0}}
    cpu = evaluate_explanations(maps, masks=masks, forward=mean_forward, images=images, options=options)
    gpu = evaluate_explanations(maps.cuda(), masks=masks.cuda(), forward=mean_forward, images=images.cuda(),
                                options=options)
    for name, value in cpu.items():
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), value, atol=1e-4, rtol=1e-4)
    net = tiny_net().cuda()
    out = ModelParameterRandomisation()(net, gradient_x_input, images.cuda())
    assert all(v.device.type == "cuda" for v in out.values())
