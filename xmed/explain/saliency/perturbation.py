"""Perturbation methods: Occlusion (captum) and RISE.

These need no gradients — only forward passes — so they explain any black box, at the price of
many forward passes (``batch_size`` bounds how many run at once).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 1))
    >>> maps = RISE(net, n_masks=64, batch_size=32)(torch.rand(2, 3, 16, 16), target=0).maps
    >>> tuple(maps.shape)
    (2, 1, 16, 16)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmed.errors import ConfigError
from xmed.explain.base import Explainer, register_explainer
from xmed.models.baselines import Baseline, make_baseline
from xmed.explain.targets import Target, captum_forward, fix_target, target_function


@register_explainer
class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus, 2014) via captum: slide a baseline patch over the image; a
    pixel's value is the mean drop of the score over the patches covering it.

    Args:
        window: patch side in pixels (None: an eighth of the image side).
        stride: step in pixels (None: half the window).
        baseline: what the patch is filled with (see :func:`~xmed.models.baselines.make_baseline`).
        batch_size: occluded images per forward pass.
    """

    name, title = "occlusion", "Occlusion"

    def __init__(self, model: nn.Module, window: int | None = None, stride: int | None = None,
                 baseline: Baseline | float = "zero", batch_size: int = 64):
        super().__init__(model)
        self.window, self.stride, self.baseline, self.batch_size = window, stride, baseline, batch_size

    def attribute(self, images: Tensor, target: Target | None) -> Tensor:
        from captum.attr import Occlusion as CaptumOcclusion  # captum loads on first use

        forward, captum_target = captum_forward(self.model, fix_target(self.model, images, target))
        b, c, h, w = images.shape
        window = self.window or max(min(h, w) // 8, 1)
        stride = self.stride or max(window // 2, 1)
        with torch.no_grad():
            attributions = CaptumOcclusion(forward).attribute(
                images, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                baselines=make_baseline(images, self.baseline, self.model), target=captum_target,
                perturbations_per_eval=max(self.batch_size // b, 1))
        # the window spans all channels, so every channel holds the same value
        return attributions.mean(dim=1, keepdim=True)


@register_explainer
class RISE(Explainer):
    """RISE (Petsiuk et al., 2018): the score-weighted average of random smooth masks.

    Written here because captum has no RISE. Masks are shared by the images of a batch: each is
    a ``grid``×``grid`` Bernoulli(``p_keep``) pattern, bilinearly upsampled to a cell larger than
    the image and randomly shifted, as in the paper. The map is Σ (score(x ⊙ M) − s̄)·M / Σ M:
    the paper's estimator with two changes. The per-pixel mask sum replaces its expectation
    N·p_keep — with a few hundred masks a region kept 2 % less often than p_keep otherwise loses
    more than a weak score difference adds, and the map inverts. And the mean score s̄ over all
    masks is subtracted (``centre=True``), so a pixel's value is how much keeping it raises the
    score: zero means no evidence, negative means evidence against, as for the other methods
    (the paper's map carries s̄ everywhere, which swamps energy-based localisation metrics).

    Args:
        n_masks: random masks N (the paper uses thousands; a few hundred already localise).
        grid: cells per side of a mask before upsampling.
        p_keep: probability that a cell is kept.
        batch_size: masked images per forward pass.
        baseline: what masked-out pixels become (``"zero"`` is the paper's).
        seed: mask generator seed (None: nondeterministic).
        centre: subtract the mean masked score (see above); False gives the paper's scale.
    """

    name, title = "rise", "RISE"

    def __init__(self, model: nn.Module, n_masks: int = 500, grid: int = 8, p_keep: float = 0.5,
                 batch_size: int = 64, baseline: Baseline | float = "zero", seed: int | None = 0,
                 centre: bool = True):
        super().__init__(model)
        if not 0 < p_keep <= 1:
            raise ConfigError("p_keep", f"must lie in (0, 1], got {p_keep}")
        self.n_masks, self.grid, self.p_keep = n_masks, grid, p_keep
        self.batch_size, self.baseline, self.seed, self.centre = batch_size, baseline, seed, centre

    def masks(self, height: int, width: int, device: torch.device) -> Tensor:
        """N×1×H×W smooth random masks in [0, 1]."""
        generator = torch.Generator(device="cpu")
        if self.seed is not None:
            generator.manual_seed(self.seed)
        else:
            generator.seed()
        cells = (torch.rand(self.n_masks, 1, self.grid, self.grid, generator=generator) < self.p_keep).float()
        cell_h, cell_w = -(-height // self.grid), -(-width // self.grid)
        up = F.interpolate(cells.to(device), size=((self.grid + 1) * cell_h, (self.grid + 1) * cell_w),
                           mode="bilinear", align_corners=False)
        dy = torch.randint(0, cell_h, (self.n_masks,), generator=generator)
        dx = torch.randint(0, cell_w, (self.n_masks,), generator=generator)
        return torch.stack([up[i, :, y:y + height, x:x + width] for i, (y, x) in enumerate(zip(dy.tolist(), dx.tolist()))])

    def attribute(self, images: Tensor, target: Target | None) -> Tensor:
        score = target_function(self.model, fix_target(self.model, images, target), as_probability=True)
        b, _, h, w = images.shape
        masks = self.masks(h, w, images.device)
        coverage = masks.sum(dim=0, keepdim=True).clamp(min=1e-6)          # 1×1×H×W
        base = make_baseline(images, self.baseline, self.model)
        total = torch.zeros(b, 1, h, w, device=images.device)
        score_sum = torch.zeros(b, device=images.device)
        per_pass = max(self.batch_size // b, 1)
        with torch.no_grad():
            for start in range(0, self.n_masks, per_pass):
                m = masks[start:start + per_pass]                       # n×1×H×W
                mixed = images[:, None] * m[None] + base[:, None] * (1 - m[None])   # B×n×C×H×W
                scores = score(mixed.flatten(0, 1)).float().view(b, -1)              # B×n
                total += torch.einsum("bn,nchw->bchw", scores, m)
                score_sum += scores.sum(dim=1)
        saliency = total / coverage
        if self.centre:
            saliency = saliency - (score_sum / self.n_masks).view(-1, 1, 1, 1)
        return saliency
