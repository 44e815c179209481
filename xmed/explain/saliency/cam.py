"""Class activation maps: Grad-CAM, Grad-CAM++, HiResCAM and Layer-CAM.

All four weigh the activations A (B×C×h×w) of a target layer with the gradients G = ∂score/∂A
and differ only in the weighting, so they share one pass (:meth:`CAMExplainer.activations`).

They are written here rather than taken from captum because the pass records the autograd graph
*only from the target layer on*: the forward runs without gradient up to that layer, whose output
is then detached and marked as requiring grad, so the backward pass walks the head alone. That
makes a CAM cost about one plain forward pass: 1.02× on a 2-core CPU, where captum's
``LayerGradCam``, which records the whole graph, took 1.06× (``benchmarks/explain_speed.py``;
its results folder holds the figures).

Example:
    >>> import timm, torch
    >>> net = timm.create_model("resnet10t", num_classes=3).eval()
    >>> cam = GradCAM(net)(torch.rand(2, 3, 64, 64), target=1)
    >>> tuple(cam.maps.shape), bool((cam.maps >= 0).all())
    ((2, 1, 64, 64), True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmed.errors import ConfigError
from xmed.explain.base import Explainer, register_explainer
from xmed.explain.layers import TargetLayer, resolve_layer
from xmed.explain.targets import Target, select_target


class CAMExplainer(Explainer):
    """Base of the CAM family.

    Args:
        model: the network.
        layer: the target layer (a module or its dotted name); None finds the last spatial stage
            (:func:`~xmed.explain.layers.find_target_layer`).
        relu: drop negative evidence (the published methods do).
        upsample: ``"bilinear"`` or ``"nearest"`` interpolation to the input size.
    """

    backward_pass = True

    def __init__(self, model: nn.Module, layer: nn.Module | str | None = None, relu: bool = True,
                 upsample: str = "bilinear"):
        super().__init__(model)
        if upsample not in ("bilinear", "nearest"):
            raise ConfigError("upsample", f"must be bilinear or nearest, got {upsample!r}")
        self._layer_arg = layer
        self.layer: TargetLayer | None = None
        self.relu = relu
        self.upsample = upsample

    def activations(self, images: Tensor, target: Target | None) -> tuple[Tensor, Tensor]:
        """Target-layer activations and the target's gradients with respect to them, as B×C×h×w.

        The hook is registered for this call only and removed in ``finally``, whatever happens.
        """
        if self.layer is None:
            self.layer = resolve_layer(self.model, self._layer_arg, images)
        captured: list[Tensor] = []

        def hook(_module, _inputs, output):
            if captured:  # a module called twice: the first call is the target
                return None
            if not isinstance(output, Tensor):
                raise ConfigError("layer", f"{self.layer.name} returns {type(output).__name__}, not a tensor")
            leaf = output.detach().requires_grad_(True)
            captured.append(leaf)
            torch.set_grad_enabled(True)  # from here on the graph is recorded
            return leaf

        was_enabled = torch.is_grad_enabled()
        handle = self.layer.module.register_forward_hook(hook)
        try:
            torch.set_grad_enabled(False)
            output = self.model(images)
            if not captured:
                raise ConfigError("layer", f"{self.layer.name} was not called in the forward pass")
            torch.set_grad_enabled(True)
            score = select_target(output, target)
            if not score.requires_grad:
                raise ConfigError("target", f"the target does not depend on layer {self.layer.name}")
            (grads,) = torch.autograd.grad(score.sum(), captured[0])
        finally:
            handle.remove()
            torch.set_grad_enabled(was_enabled)
        return self.layer.to_map(captured[0].detach()), self.layer.to_map(grads)

    def weigh(self, acts: Tensor, grads: Tensor) -> Tensor:
        """B×1×h×w map from activations and gradients (the method's rule)."""
        raise NotImplementedError

    def attribute(self, images: Tensor, target: Target | None) -> Tensor:
        acts, grads = self.activations(images, target)
        cam = self.weigh(acts.float(), grads.float())
        kwargs = {"align_corners": False} if self.upsample == "bilinear" else {}
        cam = F.interpolate(cam, size=images.shape[-2:], mode=self.upsample, **kwargs)
        # ReLU after upsampling (as captum's LayerGradCam + interpolate + ReLU): negative cells
        # then pull the edges of neighbouring positive cells down instead of being cut first
        return cam.clamp(min=0) if self.relu else cam


@register_explainer
class GradCAM(CAMExplainer):
    """Grad-CAM (Selvaraju et al., 2017): channels weighted by their spatially averaged gradient."""

    name, title = "gradcam", "Grad-CAM"

    def weigh(self, acts: Tensor, grads: Tensor) -> Tensor:
        weights = grads.mean(dim=(2, 3), keepdim=True)
        return (weights * acts).sum(dim=1, keepdim=True)


@register_explainer
class GradCAMPlusPlus(CAMExplainer):
    """Grad-CAM++ (Chattopadhay et al., 2018): pixel-wise weights α from higher-order terms,
    with the exponential-score closed form (second/third derivatives as powers of the first)."""

    name, title = "gradcampp", "Grad-CAM++"

    def weigh(self, acts: Tensor, grads: Tensor) -> Tensor:
        g2, g3 = grads.pow(2), grads.pow(3)
        denominator = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
        alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
        return (weights * acts).sum(dim=1, keepdim=True)


@register_explainer
class HiResCAM(CAMExplainer):
    """HiResCAM (Draelos & Carin, 2020): activations times gradients element-wise, summed over
    channels — provably faithful to the score for heads that pool linearly."""

    name, title = "hirescam", "HiResCAM"

    def weigh(self, acts: Tensor, grads: Tensor) -> Tensor:
        return (grads * acts).sum(dim=1, keepdim=True)


@register_explainer
class LayerCAM(CAMExplainer):
    """Layer-CAM (Jiang et al., 2021): activations times the positive gradients, element-wise."""

    name, title = "layercam", "LayerCAM"

    def weigh(self, acts: Tensor, grads: Tensor) -> Tensor:
        return (grads.clamp(min=0) * acts).sum(dim=1, keepdim=True)
