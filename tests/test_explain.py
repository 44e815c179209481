"""Saliency explainers: reference equality with captum, completeness, hooks, targets, every method."""

from __future__ import annotations

import inspect
import pydoc

import timm
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

import pytest
import xmed
from xmed.errors import ConfigError
from xmed.explain import EXPLAINERS, GradCAM, IntegratedGradients, find_target_layer, get_explainer
from xmed.explain.targets import select_target
from xmed.models import FundusClassifier


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def captum_gradcam(forward, layer: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """The reference: captum's LayerGradCam, upsampled bilinearly to the input, ReLU."""
    cam = LayerGradCam(forward, layer).attribute(images, target=target).detach()
    return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear").clamp(min=0)


@pytest.fixture(scope="module")
def tv_resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5).eval()


def test_gradcam_equals_captum_on_torchvision_resnet(tv_resnet):
    images = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    ours = GradCAM(tv_resnet)(images, target=2).maps
    reference = captum_gradcam(tv_resnet, tv_resnet.layer4, images, 2)
    assert ours.shape == reference.shape == (3, 1, 96, 96)
    for k in range(3):
        assert pearson(ours[k], reference[k]) >= 0.99
    assert torch.allclose(ours, reference, rtol=1e-3, atol=1e-5 * float(reference.abs().max()))


class _SplitTokens(nn.Module):
    """Tokens -> B×C×h×w (prefix tokens stashed), so captum's LayerGradCam sees a spatial map."""

    def __init__(self, prefix: int, grid: tuple[int, int]):
        super().__init__()
        self.prefix, self.grid, self.stash = prefix, grid, None

    def forward(self, tokens):
        self.stash = tokens[:, :self.prefix]
        patches = tokens[:, self.prefix:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)


class _JoinTokens(nn.Module):
    def __init__(self, split: _SplitTokens):
        super().__init__()
        self.split = [split]  # not a submodule

    def forward(self, grid_map):
        return torch.cat([self.split[0].stash, grid_map.flatten(2).transpose(1, 2)], dim=1)


@pytest.mark.parametrize("img_size", [(64, 64), (48, 80)])
def test_gradcam_equals_captum_on_timm_vit(img_size):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=img_size, num_classes=4).eval()
    images = torch.randn(2, 3, *img_size, generator=torch.Generator().manual_seed(2))
    layer = find_target_layer(vit, images)
    assert layer.name == "blocks.11.norm1" and layer.layout == "tokens"
    assert layer.grid == (img_size[0] // 16, img_size[1] // 16) and layer.prefix_tokens == 1
    ours = GradCAM(vit)(images, target=3).maps
    # reference: the same block with an identity split/join pair exposing a spatial map to captum
    split = _SplitTokens(1, layer.grid)
    vit.blocks[-1].norm1 = nn.Sequential(vit.blocks[-1].norm1, split, _JoinTokens(split))
    reference = captum_gradcam(vit, split, images, 3)
    assert ours.shape == reference.shape == (2, 1, *img_size)
    for k in range(2):
        assert pearson(ours[k], reference[k]) >= 0.99


def test_fundus_classifier_layer_is_in_the_backbone():
    model = FundusClassifier("resnet10t", input_size=64, mask_head=["disc"]).eval()
    layer = find_target_layer(model, torch.zeros(1, 3, 64, 64))
    assert layer.name == "backbone.layer4"  # never the mask head, although it is spatial too


def test_integrated_gradients_completeness():
    torch.manual_seed(0)
    model = FundusClassifier("resnet10t", input_size=64).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    maps = IntegratedGradients(model, n_steps=64)(images, target="glaucoma").maps
    with torch.no_grad():
        delta = model(images)["logits"] - model(torch.zeros_like(images))["logits"]
    assert delta.abs().min() > 1e-3  # the check below means something
    relative_error = (maps.sum(dim=(1, 2, 3)) - delta).abs() / delta.abs()
    assert float(relative_error.max()) <= 0.05


def test_hooks_are_released_and_memory_is_flat():
    model = timm.create_model("test_resnet.r160_in1k", num_classes=2).eval()
    explainer = GradCAM(model)
    images = torch.rand(2, 3, 32, 32)
    explainer(images, target=1)
    module = explainer.layer.module

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    for _ in range(100):
        explainer(images, target=1)
    before = rss_mb()
    for _ in range(900):
        explainer(images, target=1)
    assert rss_mb() - before < 30
    assert not module._forward_hooks
    with pytest.raises(ConfigError, match="out of range"):
        explainer(images, target=7)  # fails after the hook was registered
    assert not module._forward_hooks and torch.is_grad_enabled()


def test_targets_select_the_named_scalar():
    model = FundusClassifier("test_resnet.r160_in1k", input_size=64).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
    assert torch.equal(select_target(out, "DH"), out["finding_logits"][:, 7])
    for name in ("vcdr", "vCDR"):  # the vCDR in any case, never through a sigmoid
        assert torch.equal(select_target(out, name), out["vcdr"])
        assert torch.equal(select_target(out, name, as_probability=True), out["vcdr"])
    assert torch.equal(select_target(out, None), out["logits"])
    assert xmed.explain(model, images, "input_x_gradient", target="vCDR").target == "vcdr"
    maps_dh = xmed.explain(model, images, "gradcam", target="DH").maps
    maps_g = xmed.explain(model, images, "gradcam", target="glaucoma").maps
    assert not torch.allclose(maps_dh, maps_g)


def test_target_errors_say_what_to_do(tv_resnet):
    images = torch.rand(1, 3, 64, 64)
    with pytest.raises(ConfigError, match="class index"):
        xmed.explain(tv_resnet, images, "gradcam", target="glaucoma")
    model = FundusClassifier("test_resnet.r160_in1k", input_size=64).eval()
    with pytest.raises(ConfigError, match="unknown target 'XYZ'"):
        xmed.explain(model, torch.rand(1, 3, 64, 64), "gradcam", target="XYZ")
    with pytest.raises(ConfigError, match="unknown explainer 'nope'"):
        get_explainer("nope")
    with pytest.raises(ConfigError, match="no submodule 'layer9'"):
        GradCAM(tv_resnet, layer="layer9")(images, target=0)


def test_default_target_is_the_predicted_class(tv_resnet):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    predicted = tv_resnet(images).argmax(1)
    default = GradCAM(tv_resnet)(images).maps
    explicit = GradCAM(tv_resnet)(images, target=predicted).maps
    assert torch.allclose(default, explicit)


class _RegionScore(nn.Module):
    """score = 5 × mean of channel 0 over a fixed square (rows/cols 4..11 of 32×32), with a ReLU so
    guided backprop has one; every method must put its evidence there."""

    def __init__(self):
        super().__init__()
        weight = torch.zeros(1, 1, 32, 32)
        weight[..., 4:12, 4:12] = 1 / 64
        self.register_buffer("weight", weight)
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 5.0   # logit 0 reads input channel 0; logit 1 is constant
            self.conv.bias.fill_(0.1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        feature = self.relu(self.conv(x))              # 2 channels, spatial (a CAM layer)
        return (feature * self.weight).sum(dim=(2, 3))  # B×2 "logits"


def test_gradcam_equals_the_hand_computed_map():
    # the score's gradient w.r.t. feature channel 0 is 1/64 on the 64-pixel region, so its spatial
    # mean is 1/1024 and Grad-CAM is relu(5 x0 + 0.1) / 1024 everywhere: Grad-CAM's global average
    # cannot localise inside one feature map (HiResCAM and Layer-CAM do, tested below)
    model = _RegionScore().eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)) - 0.3
    expected = (5 * images[:, :1] + 0.1).clamp(min=0) / 1024
    assert torch.allclose(GradCAM(model)(images, target=0).maps, expected, atol=1e-7)


LOCALISING = sorted(set(EXPLAINERS) - {"gradcam", "gradcampp"})


@pytest.mark.parametrize("method", LOCALISING)
def test_every_method_finds_the_region_that_drives_the_score(method):
    model = _RegionScore().eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) + 0.5
    options = {"rise": {"n_masks": 400, "grid": 8}, "occlusion": {"window": 4, "stride": 4},
               "smoothgrad": {"n_samples": 8}, "smoothgrad_sq": {"n_samples": 8},
               "integrated_gradients": {"n_steps": 16}}.get(method, {})
    explanation = xmed.explain(model, images, method, target=0, **options)
    maps = explanation.maps
    assert maps.shape == (2, 1, 32, 32) and explanation.method == method and explanation.seconds > 0
    assert torch.isfinite(maps).all()
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[4:12, 4:12] = True
    if method == "rise":
        # a Monte-Carlo map: the mean score sits everywhere, with sampling noise on top; the
        # region must stand out of the noise outside it
        inside, outside = maps[:, 0, region], maps[:, 0, ~region]
        contrast = (inside.mean(1) - outside.mean(1)) / outside.std(1)
        assert float(contrast.min()) >= 4, f"rise: contrast {contrast.tolist()}"
        return
    positive = maps[:, 0] - maps[:, 0].amin(dim=(1, 2), keepdim=True)
    share = positive[:, region].sum(1) / positive.flatten(1).sum(1)
    floor = 0.9 if method == "occlusion" else 0.75
    assert float(share.min()) >= floor, f"{method}: share of map inside the region {share.tolist()}"


def test_every_method_runs_on_a_fundus_classifier_target():
    model = FundusClassifier("resnet10t", input_size=64).eval()
    images = torch.rand(1, 3, 64, 64)
    light = {"rise": {"n_masks": 16}, "smoothgrad": {"n_samples": 2}, "smoothgrad_sq": {"n_samples": 2},
             "integrated_gradients": {"n_steps": 4}, "occlusion": {"window": 32, "stride": 32}}
    for method in EXPLAINERS:
        maps = xmed.explain(model, images, method, target="RNFLDI", **light.get(method, {})).maps
        assert maps.shape == (1, 1, 64, 64) and torch.isfinite(maps).all(), method


@pytest.mark.parametrize(("package_name", "function_name", "parameters"), [
    pytest.param("explain", "explain", ["model", "images", "method", "target", "options"], id="xmed.explain"),
    pytest.param("counterfactual", "counterfactual",
                 ["model", "images", "method", "target", "direction", "fov_mask", "options"], id="xmed.counterfactual"),
])
def test_callable_package_shows_the_function_signature_and_docstring(package_name, function_name, parameters):
    package = getattr(xmed, package_name)
    function = getattr(package, function_name)
    assert list(inspect.signature(package).parameters) == parameters
    assert inspect.signature(package) == inspect.signature(function)
    page = pydoc.render_doc(package, renderer=pydoc.plaintext)
    description = page[page.index("DESCRIPTION"):page.index("PACKAGE CONTENTS")]  # the package's own text
    assert f"Calling the package: {function_name}{inspect.signature(function)}" in description
    assert all(line.strip() in description for line in inspect.getdoc(function).splitlines())
