"""Reference images for attribution and faithfulness: what "absent" looks like in a model's input space.

Integrated Gradients integrates from a baseline to the image; occlusion and RISE fill hidden
pixels with it (:mod:`xmed.explain`); deletion and insertion curves move between the image and it
(:mod:`xmed.metrics`): both read it from here.

Example:
    >>> import torch
    >>> make_baseline(torch.ones(1, 3, 4, 4), "zero").sum().item()
    0.0
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError

Baseline = Literal["zero", "black", "mean", "blur"]
BASELINES: tuple[str, ...] = ("zero", "black", "mean", "blur")


def make_baseline(images: Tensor, baseline: Baseline | float | Tensor, model: nn.Module | None = None) -> Tensor:
    """The reference input: ``"zero"`` (zeros in the model's input space — the mean colour for
    normalised inputs), ``"black"`` (RGB 0 through the model's normalisation, when it carries a
    data config; else zero), ``"mean"`` (each image's channel means), ``"blur"`` (a Gaussian blur
    of each image, sigma = a sixteenth of its side), a number or a tensor.

    Example:
        >>> make_baseline(torch.ones(1, 3, 4, 4), 0.5).mean().item()
        0.5
    """
    if isinstance(baseline, Tensor):
        return baseline.to(images.device, images.dtype).expand_as(images)
    if isinstance(baseline, (int, float)):
        return torch.full_like(images, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(images)
    if baseline == "black":
        config = getattr(model, "data_config", None)
        if config is None:
            return torch.zeros_like(images)
        mean = torch.tensor(config.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(config.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        return (-mean / std).expand_as(images).clone()
    if baseline == "mean":
        return images.mean((2, 3), keepdim=True).expand_as(images).clone()
    if baseline == "blur":
        from torchvision.transforms.functional import gaussian_blur  # heavy import, needed here only

        h, w = images.shape[2:]
        sigma = [max(w / 16, 1e-3), max(h / 16, 1e-3)]                   # (x, y)
        size = [min(2 * math.ceil(3 * s) + 1, 2 * n - 1) for s, n in zip(sigma, (w, h))]
        work = images if images.dtype in (torch.float32, torch.float64) else images.float()
        return gaussian_blur(work, size, sigma).to(images.dtype)
    raise ConfigError("baseline", f"must be one of {', '.join(BASELINES)}, a number or a tensor, got {baseline!r}")
