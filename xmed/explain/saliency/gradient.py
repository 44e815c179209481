"""Gradient-based input attributions (captum underneath): Integrated Gradients, SmoothGrad (plain
and squared), Input×Gradient and Guided Grad-CAM.

Captum attributes each input channel; the maps here sum the channels (signed for Integrated
Gradients and Input×Gradient, so completeness still holds for the map; absolute values for
the gradient-magnitude methods).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    >>> ig = IntegratedGradients(net, n_steps=16)
    >>> x = torch.rand(1, 3, 4, 4)
    >>> maps = ig(x, target=1).maps
    >>> bool(torch.isclose(maps.sum(), net(x)[0, 1] - net(torch.zeros_like(x))[0, 1], atol=1e-4))
    True
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError
from xmed.models.baselines import Baseline, make_baseline
from xmed.explain.base import ChannelReduce, Explainer, option_value, reduce_channels, register_explainer
from xmed.explain.saliency.cam import GradCAM
from xmed.explain.targets import Target, captum_forward, fix_target

@register_explainer
class IntegratedGradients(Explainer):
    """Integrated Gradients (Sundararajan et al., 2017) via captum.

    Args:
        n_steps: points on the path from the baseline to the image.
        baseline: see :func:`make_baseline`.
        internal_batch_size: images per forward pass over the path (bounds memory); None:
            ``max(B, 16)`` — all B·n_steps points in chunks of that size.
        method: captum's integration rule (``gausslegendre``, ``riemann_trapezoid``, ...).
    """

    name, title = "integrated_gradients", "Integrated gradients"
    backward_pass = True

    def __init__(self, model: nn.Module, n_steps: int = 64, baseline: Baseline | float | Tensor = "zero",
                 internal_batch_size: int | None = None, method: str = "gausslegendre",
                 channel_reduce: ChannelReduce = "sum"):
        super().__init__(model)
        self.n_steps, self.baseline, self.method = n_steps, baseline, method
        self.internal_batch_size, self.channel_reduce = internal_batch_size, channel_reduce

    def attribute(self, images: Tensor, target: Target | None) -> Tensor:
        from captum.attr import IntegratedGradients as CaptumIntegratedGradients  # captum loads on first use

        forward, captum_target = captum_forward(self.model, fix_target(self.model, images, target))
        attributions = CaptumIntegratedGradients(forward).attribute(
            images, baselines=make_baseline(images, self.baseline, self.model), target=captum_target,
            n_steps=self.n_steps, method=self.method,
            internal_batch_size=self.internal_batch_size or max(images.shape[0], 16))
        return reduce_channels(attributions, self.channel_reduce)


@register_explainer
class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al., 2017): gradient magnitudes averaged over noisy copies.

    Args:
        n_samples: noisy copies per image.
        noise_level: noise standard deviation as a fraction of each batch's value range (the
            paper's 10-20 %).
        batch_size: noisy copies per forward pass (None: all at once).
    """

    name, title = "smoothgrad", "SmoothGrad"
    backward_pass = True
    nt_type = "smoothgrad"

    def __init__(self, model: nn.Module, n_samples: int = 25, noise_level: float = 0.15,
                 batch_size: int | None = None, channel_reduce: ChannelReduce = "sum", seed: int | None = 0):
        super().__init__(model)
        self.n_samples, self.noise_level, self.batch_size = n_samples, noise_level, batch_size
        self.channel_reduce, self.seed = channel_reduce, seed

    @classmethod
    def held_graphs(cls, options: Mapping[str, Any]) -> int:
        """One graph per noisy copy run at once (``batch_size``; None: all ``n_samples``)."""
        return int(option_value(cls, options, "batch_size") or option_value(cls, options, "n_samples"))

    def attribute(self, images: Tensor, target: Target | None) -> Tensor:
        from captum.attr import NoiseTunnel, Saliency

        forward, captum_target = captum_forward(self.model, fix_target(self.model, images, target))
        stdev = self.noise_level * float(images.max() - images.min())
        with _seeded(self.seed, images.device):
            attributions = NoiseTunnel(Saliency(forward)).attribute(
                images, nt_type=self.nt_type, nt_samples=self.n_samples, stdevs=stdev,
                nt_samples_batch_size=self.batch_size, target=captum_target, abs=True)
        return reduce_channels(attributions, self.channel_reduce)


@register_explainer
class SmoothGradSquared(SmoothGrad):
    """SmoothGrad² (Hooker et al., 2019): the mean of the *squared* noisy gradients."""

    name, title = "smoothgrad_sq", "SmoothGrad²"
    nt_type = "smoothgrad_sq"


@register_explainer
class InputXGradient(Explainer):
    """Input × gradient (Shrikumar et al., 2016), via captum."""

    name, title = "input_x_gradient", "Input × gradient"
    backward_pass = True

    def __init__(self, model: nn.Module, channel_reduce: ChannelReduce = "sum"):
        super().__init__(model)
        self.channel_reduce = channel_reduce

    def attribute(self, images: Tensor, target: Target | None) -> Tensor:
        from captum.attr import InputXGradient as CaptumInputXGradient

        forward, captum_target = captum_forward(self.model, target)
        with torch.enable_grad():
            attributions = CaptumInputXGradient(forward).attribute(images.detach().requires_grad_(True),
                                                                   target=captum_target)
        return reduce_channels(attributions, self.channel_reduce)


@register_explainer
class GuidedGradCAM(Explainer):
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backpropagation (captum) times the
    upsampled Grad-CAM map. Guided backpropagation needs the network's ReLUs as modules."""

    name, title = "guided_gradcam", "Guided Grad-CAM"
    backward_pass = True

    def __init__(self, model: nn.Module, layer: nn.Module | str | None = None,
                 channel_reduce: ChannelReduce = "abs_sum"):
        super().__init__(model)
        self.gradcam = GradCAM(model, layer)
        self.channel_reduce = channel_reduce

    @classmethod
    def held_graphs(cls, options: Mapping[str, Any]) -> int:
        """Grad-CAM's graph and guided backpropagation's."""
        return 2

    def attribute(self, images: Tensor, target: Target | None) -> Tensor:
        from captum.attr import GuidedBackprop

        target = fix_target(self.model, images, target)
        cam = self.gradcam.attribute(images, target)
        if not any(isinstance(m, nn.ReLU) for m in self.model.modules()):
            raise ConfigError("method", "guided_gradcam needs nn.ReLU modules (guided backpropagation "
                                        f"rewrites their gradient); {type(self.model).__name__} has none")
        forward, captum_target = captum_forward(self.model, target)
        with _relus_not_inplace(self.model), torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # expected here
            guided = GuidedBackprop(_ForwardModule(forward, self.model)).attribute(
                images.detach().requires_grad_(True), target=captum_target)
        return reduce_channels(guided * cam, self.channel_reduce)


class _ForwardModule(nn.Module):
    """Wraps a forward function as a module holding the model, so that captum's guided
    backpropagation finds (and hooks) the model's ReLUs."""

    def __init__(self, forward, model: nn.Module):
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, images: Tensor) -> Tensor:
        return self._forward(images)


@contextmanager
def _relus_not_inplace(model: nn.Module) -> Iterator[None]:
    # backward hooks cannot sit on in-place ReLUs (autograd refuses to modify their views);
    # switch them off for the call and restore them after
    changed = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Reproducible noise without touching the caller's global random state."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


