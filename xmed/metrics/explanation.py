"""Explanation-quality metrics: localisation, faithfulness, randomisation and complexity.

Quantus style: every metric is a class with ``name``, ``score_direction`` (``"higher"`` or
``"lower"`` is better), ``category`` and ``requires`` (:mod:`xmed.metrics.base`);
hyper-parameters go to ``__init__``, data to ``__call__``, which returns one value per image (a
float tensor of shape ``B``, on the device of the inputs); :meth:`~xmed.metrics.base.Metric.score`
takes the same data as one :class:`~xmed.metrics.base.Evidence`.
A value that is undefined for an image (an empty mask, a map without energy, a map that is not
finite) is NaN, never a silent 0.

Inputs:

* ``maps``: ``B×1×H×W`` float attribution maps (any sign; larger = more evidence), at the
  resolution of the images;
* ``masks``: ``B×1×H×W`` or ``B×H×W`` bool ground-truth regions (e.g. a finding's mask);
* ``images``: ``B×C×H×W``, the images the maps explain;
* ``forward``: ``images -> B`` scores, e.g.
  ``xmed.explain.targets.target_function(model, "glaucoma", as_probability=True)``.

This module never imports ``xmed.data`` or Lightning; it works on any ``nn.Module``.

Example:
    >>> import torch
    >>> maps = torch.zeros(1, 1, 4, 4)
    >>> maps[0, 0, 0, 1], maps[0, 0, 3, 3] = 3.0, 1.0
    >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    >>> masks[0, :2, :2] = True
    >>> PointingGame()(maps, masks).tolist(), EnergyPointingGame()(maps, masks).tolist()
    ([1.0], [0.75])
    >>> sorted(evaluate_explanations(maps, masks=masks))
    ['energy_pointing_game', 'map_auprc', 'map_auroc', 'pointing_game', 'sparseness']
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmed.checks import int_at_least
from xmed.errors import ConfigError
from xmed.models.baselines import BASELINES, Baseline, make_baseline
from xmed.metrics.base import Evidence, ExplainFn, ForwardFn, Metric, evaluate, nan_unless, register_metric

__all__ = [
    "Baseline", "PointingGame", "EnergyPointingGame", "MapAUROC", "MapAUPRC",
    "Deletion", "Insertion", "ROAD", "ROADLeRF", "noisy_linear_imputation",
    "ModelParameterRandomisation", "ModelParameterRandomisationSSIM", "randomisation_layers",
    "Sparseness", "evaluate_explanations",
]

log = logging.getLogger(__name__)

_SIMILARITIES: tuple[str, ...] = ("spearman", "ssim")
_ROAD_PERCENTAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

# --------------------------------------------------------------------------------------------
# input handling


def _result_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def _maps(maps: Tensor, key: str = "maps") -> Tensor:
    """``B×1×H×W`` floating maps (a ``B×H×W`` tensor gets its channel axis)."""
    if not isinstance(maps, Tensor):
        raise ConfigError(key, f"expected a tensor, got {type(maps).__name__}")
    if maps.ndim == 3:
        maps = maps[:, None]
    if maps.ndim != 4 or maps.shape[1] != 1:
        raise ConfigError(key, f"expected attribution maps of shape B×1×H×W, got {tuple(maps.shape)}")
    if not maps.is_floating_point():
        maps = maps.float()
    return maps.detach()


def _masks(masks: Tensor, maps: Tensor) -> Tensor:
    """Bool ``B×1×H×W`` masks on the maps' device, checked against the maps' shape."""
    if not isinstance(masks, Tensor):
        raise ConfigError("masks", f"expected a tensor, got {type(masks).__name__}")
    if masks.ndim == 3:
        masks = masks[:, None]
    if masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[0] != maps.shape[0] \
            or masks.shape[2:] != maps.shape[2:]:
        raise ConfigError("masks", f"expected B×H×W or B×1×H×W masks matching the maps "
                                   f"{tuple(maps.shape)}, got {tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        if bool(((masks != 0) & (masks != 1)).any()):
            raise ConfigError("masks", "must be bool or hold only 0 and 1")
        masks = masks != 0
    return masks.to(maps.device)


def _images(images: Tensor, maps: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError("images", f"expected a B×C×H×W tensor, got {shape}")
    if images.shape[0] != maps.shape[0] or images.shape[2:] != maps.shape[2:]:
        raise ConfigError("maps", f"maps {tuple(maps.shape)} do not match the images "
                                  f"{tuple(images.shape)}: expected B×1×H×W at the input resolution")
    return images.detach()


def _finite(maps: Tensor) -> Tensor:
    """Per image: does the map hold only finite values?"""
    return torch.isfinite(maps).flatten(1).all(1)


def _as_scores(value: Any, n: int) -> Tensor:
    """The ``forward`` output as ``n`` scores."""
    if not isinstance(value, Tensor):
        raise ConfigError("forward", f"must return a tensor of scores, got {type(value).__name__}")
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.ndim != 1 or value.shape[0] != n:
        raise ConfigError("forward", f"must return one score per image ({n}), got shape {tuple(value.shape)}")
    return value.detach()



def _check_batch_size(batch_size: int | None) -> int | None:
    return None if batch_size is None else int_at_least("batch_size", batch_size, 1)


def _descending_order(maps: Tensor) -> Tensor:
    """Pixel indices per image, most relevant first; ties go to the lower (row-major) index."""
    flat = maps.flatten(1).nan_to_num(nan=-math.inf)
    return torch.sort(flat, dim=1, descending=True, stable=True).indices


def _ranks(maps: Tensor) -> Tensor:
    """``B×N`` rank of every pixel in :func:`_descending_order` (0 = most relevant)."""
    order = _descending_order(maps)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 1..N along dim 1, ties sharing their mean rank (``scipy.stats.rankdata``), float64.

    Hand-written and batched: torchmetrics' ``spearman_corrcoef`` ranks one column at a time and
    sums tied ranks in int32, which overflows for large tie groups (e.g. the zeros of a ReLU'd
    512×512 map) and then disagrees with scipy.
    """
    n = x.shape[1]
    sorted_x, order = torch.sort(x, dim=1, stable=True)
    starts = torch.ones_like(sorted_x, dtype=torch.bool)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    pos = torch.arange(n, device=x.device).expand_as(order)
    first = torch.where(starts, pos, torch.zeros_like(pos)).cummax(1).values
    last = torch.where(ends, pos, torch.full_like(pos, n)).flip(1).cummin(1).values.flip(1)
    mean_rank = (first + last).double() / 2 + 1
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def _spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each row of ``a`` with the same row of ``b`` (NaN if constant)."""
    varies = (a.amax(1) > a.amin(1)) & (b.amax(1) > b.amin(1))
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    scale = ((ra * ra).sum(1) * (rb * rb).sum(1)).sqrt()
    rho = (ra * rb).sum(1) / torch.where(varies, scale, torch.ones_like(scale))
    return nan_unless(varies, rho.clamp(-1.0, 1.0))


def _min_max(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Each map scaled to [0, 1] in float64 (constant maps become 0), and whether it varies."""
    flat = maps.flatten(1).double()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    varies = (hi > lo)[:, 0]
    scaled = (flat - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return scaled.view(maps.shape), varies


def _run_in_chunks(forward: ForwardFn, make: Callable[[Tensor], Tensor], n_items: int, chunk: int,
                   device: torch.device) -> Tensor:
    """``forward`` over ``make(indices)`` for all item indices, ``chunk`` images at a time."""
    scores = []
    with torch.no_grad():
        for start in range(0, n_items, chunk):
            idx = torch.arange(start, min(start + chunk, n_items), device=device)
            batch = make(idx)
            scores.append(_as_scores(forward(batch), batch.shape[0]).to(device))
    return torch.cat(scores)


# --------------------------------------------------------------------------------------------
# localisation


@register_metric
class PointingGame(Metric):
    """Pointing game (Zhang et al., ECCV 2016): does the map's maximum lie in the mask?

    1.0 for a hit, 0.0 for a miss. Several pixels sharing the maximum count as a hit when any of
    them is in the mask (as in Quantus). NaN for an empty mask and for a constant map (it points
    nowhere).

    Args:
        tolerance_px: the mask is dilated by this many pixels (a square, by max-pooling) first.

    Example:
        >>> maps = torch.zeros(1, 1, 5, 5)
        >>> maps[0, 0, 0, 2] = 1.0
        >>> masks = torch.zeros(1, 5, 5, dtype=torch.bool)
        >>> masks[0, 2:, 2:] = True
        >>> PointingGame()(maps, masks).item(), PointingGame(tolerance_px=2)(maps, masks).item()
        (0.0, 1.0)
    """

    name = "pointing_game"
    score_direction = "higher"
    category = "localisation"
    requires = ("maps", "masks")

    def __init__(self, tolerance_px: int = 0):
        self.tolerance_px = int_at_least("tolerance_px", tolerance_px, 0)

    def __call__(self, maps: Tensor, masks: Tensor) -> Tensor:
        maps = _maps(maps)
        masks = _masks(masks, maps)
        region = masks
        if self.tolerance_px:
            t = self.tolerance_px
            region = F.max_pool2d(masks.float(), 2 * t + 1, stride=1, padding=t) > 0
        flat = maps.flatten(1).nan_to_num(0.0)
        top, bottom = flat.max(1, keepdim=True).values, flat.min(1, keepdim=True).values
        hit = ((flat == top) & region.flatten(1)).any(1).to(_result_dtype(maps))
        valid = _finite(maps) & masks.flatten(1).any(1) & (top > bottom)[:, 0]
        return nan_unless(valid, hit)


@register_metric
class EnergyPointingGame(Metric):
    """Energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020).

    ``sum(relu(map) * mask) / sum(relu(map))``: the share of the positive evidence that falls in
    the mask. NaN for an empty mask and for a map without positive energy.

    Example:
        >>> maps = torch.tensor([[[[3.0, -5.0], [1.0, 0.0]]]])
        >>> EnergyPointingGame()(maps, torch.tensor([[[True, True], [False, False]]])).item()
        0.75
    """

    name = "energy_pointing_game"
    score_direction = "higher"
    category = "localisation"
    requires = ("maps", "masks")

    def __call__(self, maps: Tensor, masks: Tensor) -> Tensor:
        maps = _maps(maps)
        masks = _masks(masks, maps)
        positive = maps.flatten(1).nan_to_num(0.0).clamp(min=0)
        inside = (positive * masks.flatten(1)).sum(1)
        total = positive.sum(1)
        valid = _finite(maps) & masks.flatten(1).any(1) & (total > 0)
        ratio = inside / torch.where(total > 0, total, torch.ones_like(total))
        return nan_unless(valid, ratio.to(_result_dtype(maps)))


class _PixelRanking(Metric):
    """Map values as scores of a per-image binary pixel classification (mask = positive)."""

    score_direction = "higher"
    category = "localisation"
    requires = ("maps", "masks")
    _binary: str          # torchmetrics.functional.classification names, imported on first use
    _multilabel: str

    def __call__(self, maps: Tensor, masks: Tensor) -> Tensor:
        maps = _maps(maps)
        masks = _masks(masks, maps)
        labels = masks.flatten(1)
        n_positive = labels.sum(1)
        valid = _finite(maps) & (n_positive > 0) & (n_positive < labels.shape[1])
        out = torch.full((maps.shape[0],), math.nan, dtype=_result_dtype(maps), device=maps.device)
        if bool(valid.any()):
            # min-max in float64 first: torchmetrics applies a sigmoid to scores outside [0, 1],
            # which would tie large map values in float32; the scaling keeps the ranking exact.
            scores, _ = _min_max(maps[valid])
            scores, targets = scores.flatten(1), labels[valid].long()
            # imported here: `import torchmetrics` loads its audio and image packages (seconds)
            from torchmetrics.functional import classification

            if scores.shape[0] == 1:
                per_image = getattr(classification, self._binary)(scores[0], targets[0])
            else:
                # One label per image: torchmetrics' multilabel form with average=None gives one
                # AUROC / AP per image, each exactly its binary (and scikit-learn's) computation.
                per_image = getattr(classification, self._multilabel)(scores.T, targets.T,
                                                                      num_labels=scores.shape[0], average=None)
            out[valid] = per_image.reshape(-1).to(out.dtype)
        return out


@register_metric
class MapAUROC(_PixelRanking):
    """Area under the ROC curve of the map's pixel values against the mask, per image.

    Uses torchmetrics (equal to scikit-learn's ``roc_auc_score``; ties count half). NaN when the
    mask is empty or covers the whole image.

    Example:
        >>> maps = torch.tensor([[[[0.9, 0.2], [0.6, 0.1]]]])
        >>> MapAUROC()(maps, torch.tensor([[[True, False], [False, True]]])).item()
        0.5
    """

    name = "map_auroc"
    _binary, _multilabel = "binary_auroc", "multilabel_auroc"


@register_metric
class MapAUPRC(_PixelRanking):
    """Average precision of the map's pixel values against the mask, per image.

    Uses torchmetrics (equal to scikit-learn's ``average_precision_score``). NaN when the mask is
    empty or covers the whole image.

    Example:
        >>> maps = torch.tensor([[[[0.9, 0.2], [0.6, 0.1]]]])
        >>> MapAUPRC()(maps, torch.tensor([[[True, False], [False, True]]])).item()
        0.75
    """

    name = "map_auprc"
    _binary, _multilabel = "binary_average_precision", "multilabel_average_precision"


# --------------------------------------------------------------------------------------------
# faithfulness: deletion / insertion


class _Perturbation(Metric):
    """Deletion and insertion (Petsiuk et al., BMVC 2018, "RISE")."""

    category = "faithfulness"
    requires = ("forward", "images", "maps")
    _insert: bool = False

    def __init__(self, n_steps: int = 20, baseline: Baseline = "blur", batch_size: int | None = None):
        self.n_steps = int_at_least("n_steps", n_steps, 1)
        if baseline not in BASELINES:
            raise ConfigError("baseline", f"unknown baseline {baseline!r}; known: {', '.join(BASELINES)}")
        self.baseline = baseline
        self.batch_size = _check_batch_size(batch_size)

    def curve(self, forward: ForwardFn, images: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        """The score curve.

        Args:
            forward: ``images -> B`` scores.
            images: ``B×C×H×W``.
            maps: ``B×1×H×W``.

        Returns:
            ``fractions`` (``K = n_steps + 1`` values from 0 to 1: the share of pixels removed or
            revealed) and ``scores`` (``B×K``); NaN rows for maps that are not finite.
        """
        images = _images(images, _maps(maps))
        maps = _maps(maps).to(images.device)
        b, n_pixels = images.shape[0], maps[0].numel()
        k = self.n_steps + 1
        counts = torch.round(torch.arange(k, device=images.device, dtype=torch.float64)
                             * n_pixels / self.n_steps).long()
        ranks = _ranks(maps)
        base = make_baseline(images, self.baseline)
        shown, hidden = (base, images) if not self._insert else (images, base)

        def make(idx: Tensor) -> Tensor:
            img, step = idx // k, idx % k
            changed = (ranks[img] < counts[step][:, None]).view(-1, 1, *images.shape[2:])
            return torch.where(changed, shown[img], hidden[img])

        scores = _run_in_chunks(forward, make, b * k, self.batch_size or 4 * b, images.device)
        scores = scores.view(b, k).to(_result_dtype(scores))
        fractions = (counts.double() / n_pixels).to(scores.dtype)
        return fractions, nan_unless(_finite(maps)[:, None], scores)

    def __call__(self, forward: ForwardFn, images: Tensor, maps: Tensor) -> Tensor:
        """Trapezoid area under the score curve over the fractions 0..1, per image."""
        fractions, scores = self.curve(forward, images, maps)
        return torch.trapezoid(scores, fractions, dim=1)


@register_metric
class Deletion(_Perturbation):
    """Deletion (Petsiuk et al. 2018): remove the most relevant pixels first; the score should fall.

    Pixels are ranked by map value (ties: lower row-major index first) and replaced by the
    baseline image in ``n_steps`` equal steps; the value is the trapezoid AUC of the ``forward``
    score over the removed fraction 0..1 (lower is better).

    Args:
        n_steps: number of steps; ``forward`` sees ``n_steps + 1`` images per input image.
        baseline: ``"blur"`` (Gaussian blur, sigma = H/16 and W/16), ``"zero"`` or ``"mean"``
            (per-image channel mean).
        batch_size: images per ``forward`` call (``None``: four times the input batch).

    Example:
        >>> images = torch.arange(4.0).view(1, 1, 2, 2)
        >>> mean = lambda x: x.mean((1, 2, 3))
        >>> Deletion(n_steps=4, baseline="zero")(mean, images, images).item()
        0.4375
    """

    name = "deletion"
    score_direction = "lower"
    _insert = False


@register_metric
class Insertion(_Perturbation):
    """Insertion (Petsiuk et al. 2018): reveal the most relevant pixels first; the score should rise.

    Starts from the baseline image and puts the original pixels back in the order of the map;
    the arguments and the AUC are those of :class:`Deletion` (higher is better).

    Example:
        >>> images = torch.arange(4.0).view(1, 1, 2, 2)
        >>> mean = lambda x: x.mean((1, 2, 3))
        >>> Insertion(n_steps=4, baseline="zero")(mean, images, images).item()
        1.0625
    """

    name = "insertion"
    score_direction = "higher"
    _insert = True


# --------------------------------------------------------------------------------------------
# faithfulness: ROAD


def noisy_linear_imputation(images: Tensor, removed: Tensor, *, noise: float = 0.01,
                            n_iter: int | None = None, rtol: float = 1e-5,
                            generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Tensor:
    """Fill the removed pixels by noisy linear imputation (Rong et al., ICML 2022, "ROAD").

    Every removed pixel equals the weighted mean of its in-image neighbours (1/6 for the four
    direct, 1/12 for the four diagonal ones), jointly for all removed pixels of an image and
    channel, plus Gaussian noise of std ``noise``. Kept pixels are unchanged.

    The authors build this sparse linear system and solve it with a direct solver on the CPU.
    Here the *same* system (symmetric positive definite on the removed pixels, given at least one
    kept pixel) is solved iteratively on the device, batched over images and channels, by conjugate
    gradient iterations whose matrix product is a 3×3 stencil with the neighbour weights,
    applied to the removed pixels only, started from the solution of the same problem on a 2×
    coarser grid (cascadic multigrid). Conjugate
    gradients need far fewer sweeps than Jacobi or Gauss-Seidel iterations for wide holes (about
    the hole's width instead of its square). With the defaults the imputed values are within
    1e-3 of a sparse direct solve, far below the noise, also when 90 % of the image is one hole
    (the removed region of a CAM-like map); a smaller ``rtol`` gets closer.

    Args:
        images: ``B×C×H×W``.
        removed: ``B×1×H×W`` or ``B×H×W`` bool, True where a pixel is imputed.
        noise: std of the Gaussian noise added to the imputed pixels.
        n_iter: at most this many conjugate gradient iterations at full resolution (``None``:
            ``4 * max(H, W)`` at every level, a cap that ``rtol`` normally ends the loop before);
            a system stops changing once converged, and the loop ends when all have. A cap far
            below ``max(H, W)`` stops early on wide holes.
        rtol: convergence: residual norm below ``rtol`` times the right-hand side's.
        generator: for the noise: one generator, or one per image (on the images' device).

    Returns:
        The imputed images, same shape, dtype and device.

    Example:
        >>> ramp = torch.arange(5.0).expand(1, 1, 5, 5)
        >>> hole = torch.zeros(1, 5, 5, dtype=torch.bool)
        >>> hole[0, 1:4, 2] = True
        >>> out = noisy_linear_imputation(ramp, hole, noise=0.0)
        >>> bool(torch.allclose(out, ramp, atol=1e-5))
        True
    """
    n, c, h, w = images.shape
    if removed.ndim == 3:
        removed = removed[:, None]
    if removed.shape != (n, 1, h, w):
        raise ConfigError("removed", f"expected a B×1×H×W mask matching the images {tuple(images.shape)}, "
                                     f"got {tuple(removed.shape)}")
    # float64: the system is ill-conditioned for wide holes (condition number ~ width^2), and
    # float32 conjugate gradients stall at errors of ~1e-3 there; the convolutions are memory-bound.
    work = torch.float32 if images.device.type == "mps" else torch.float64
    x = images.to(work).reshape(n * c, 1, h, w)
    m = removed.to(images.device, work).expand(n, c, h, w).reshape(n * c, 1, h, w)
    kept = 1 - m

    known = x * kept
    guess = _solve_imputation(x, m, n_iter, rtol)
    out = (known + guess).view(n, c, h, w)
    if noise:
        if generator is None or isinstance(generator, torch.Generator):
            draw = torch.randn(n, c, h, w, generator=generator, device=images.device, dtype=work)
        else:
            if len(generator) != n:
                raise ConfigError("generator",
                                  f"expected one generator per image ({n}), got {len(generator)}")
            draw = torch.stack([torch.randn(c, h, w, generator=g, device=images.device, dtype=work)
                                for g in generator])
        out = out + noise * draw * m.view(n, c, h, w)
    return out.to(images.dtype)


def _neighbours(v: Tensor) -> Tensor:
    """The weighted neighbour sum: the 3×3 kernel [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 (1/6 direct,
    1/12 diagonal) with zero padding, so out-of-image neighbours drop out, as in the authors' code.
    That kernel is (outer([1, 2, 1], [1, 2, 1]) - 4 * centre) / 12: two separable passes of shifted
    slices, since float64 conv2d has no fast CPU kernel."""
    p = F.pad(v, (1, 1, 1, 1))
    rows = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]
    return (rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:] - 4 * v) / 12


_COARSEST = 24


def _solve_imputation(x: Tensor, m: Tensor, n_iter: int | None, rtol: float) -> Tensor:
    """Values of the removed pixels (``m`` = 1) solving the imputation system, 0 elsewhere.

    Cascadic: the same problem on a 2× coarser grid (known values averaged per block; a block is
    removed when most of it is) is solved first, recursively, and its upsampled solution starts
    the conjugate gradients here. The coarse levels remove the smooth error components that
    conjugate gradients resolve slowest, so each level converges in fewer iterations; the coarser
    levels always use the default cap ``4 * max(H, W)``, ``n_iter`` caps the finest one.
    """
    h, w = x.shape[-2:]
    kept = 1 - m
    known = x * kept
    if min(h, w) >= 2 * _COARSEST:
        block_kept = F.avg_pool2d(kept, 2, ceil_mode=True)
        coarse_x = F.avg_pool2d(known, 2, ceil_mode=True) / block_kept.clamp(min=1e-12)
        coarse_m = (block_kept < 0.5).to(x.dtype)
        coarse = _solve_imputation(coarse_x * (1 - coarse_m), coarse_m, None, rtol)
        coarse = coarse + coarse_x * (1 - coarse_m)
        guess = m * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    else:
        guess = m * _pyramid_fill(known, kept)
    if n_iter is None:
        # a safety cap, not the stopping rule (rtol is): conjugate gradients need about as many
        # iterations as a hole is wide even from the coarse start, so a cap below the image size
        # stops them early on large contiguous holes (90 % of the image in one blob)
        n_iter = 4 * max(h, w)
    weight = _neighbours(torch.ones(1, 1, h, w, device=x.device, dtype=x.dtype))

    def system(v: Tensor) -> Tensor:             # A v on the removed pixels: W_i v_i - sum_j w_ij v_j
        return m * (weight * v - _neighbours(m * v))

    rhs = m * _neighbours(known)
    dims = (1, 2, 3)
    residual = rhs - system(guess)
    direction = residual
    rr = (residual * residual).sum(dims, keepdim=True)
    tiny = torch.finfo(x.dtype).tiny
    # stop at a residual rtol of the right-hand side: far below the imputation noise (0.01 of the
    # pixel range), and many times fewer iterations than solving to machine precision
    tol = (rtol ** 2) * (rhs * rhs).sum(dims, keepdim=True).clamp(min=tiny)
    zero = torch.zeros_like(rr)
    for i in range(n_iter):
        active = rr > tol
        if i % 16 == 15 and not bool(active.any()):  # every system converged (one sync per 16 steps)
            break
        a_dir = system(direction)
        curvature = (direction * a_dir).sum(dims, keepdim=True)
        alpha = torch.where(active & (curvature > 0), rr / curvature.clamp(min=tiny), zero)
        guess = guess + alpha * direction
        residual = residual - alpha * a_dir
        rr_new = (residual * residual).sum(dims, keepdim=True)
        beta = torch.where(active, rr_new / rr.clamp(min=tiny), zero)
        direction = residual + beta * direction
        rr = torch.where(active, rr_new, rr)
    return guess


def _pyramid_fill(values: Tensor, weights: Tensor) -> Tensor:
    """Values where ``weights`` is 1, and the coarser levels' mean of the known values elsewhere."""
    h, w = values.shape[-2:]
    mean = values / weights.clamp(min=1e-12)
    if min(h, w) <= 2 or bool((weights > 0).all()):
        return torch.where(weights > 0, mean, (values.sum((2, 3), keepdim=True)
                                              / weights.sum((2, 3), keepdim=True).clamp(min=1e-12)))
    coarse = _pyramid_fill(F.avg_pool2d(values, 2, ceil_mode=True), F.avg_pool2d(weights, 2, ceil_mode=True))
    up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return torch.where(weights > 0, mean, up)


@register_metric
class ROAD(Metric):
    """Remove And Debias (Rong et al., ICML 2022): remove pixels, impute them, re-score.

    For each fraction in ``percentages``, the most relevant (``order="morf"``) or least relevant
    (``"lerf"``) pixels by map value (ties: lower row-major index first) are removed and filled by
    :func:`noisy_linear_imputation`, which hides the shape of the removed region from the model.
    The value is the mean ``forward`` score over the fractions: with MoRF (``road_morf``) lower is
    better, with LeRF (``road_lerf``) higher is better.

    Args:
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        percentages: fractions of the pixels to remove, each in [0, 1).
        noise: std of the imputation noise (in image units).
        seed: seed of the noise; image ``i`` at fraction ``j`` gets its own generator, so the values
            do not depend on ``batch_size``.
        n_iter: iterations of the imputation solver (``None``: enough to converge, see
            :func:`noisy_linear_imputation`).
        batch_size: images per ``forward`` call (``None``: four times the input batch).

    Example:
        >>> images = torch.zeros(1, 1, 6, 6)
        >>> images[..., 2:4, 2:4] = 1.0                        # the evidence, which the map marks
        >>> centre = lambda x: x[:, 0, 2:4, 2:4].mean((1, 2))
        >>> morf = ROAD("morf", percentages=(0.2,), noise=0.0)(centre, images, images)
        >>> lerf = ROAD("lerf", percentages=(0.2,), noise=0.0)(centre, images, images)
        >>> morf.item() < 0.1, lerf.item()
        (True, 1.0)
    """

    name = "road_morf"
    score_direction = "lower"
    category = "faithfulness"
    requires = ("forward", "images", "maps")

    def __init__(self, order: Literal["morf", "lerf"] = "morf",
                 percentages: Sequence[float] = _ROAD_PERCENTAGES, noise: float = 0.01, seed: int = 0,
                 n_iter: int | None = None, batch_size: int | None = None):
        if order not in ("morf", "lerf"):
            raise ConfigError("order", f"must be 'morf' or 'lerf', got {order!r}")
        self.order = order
        self.name = f"road_{order}"
        self.score_direction = "lower" if order == "morf" else "higher"
        self.percentages = tuple(float(p) for p in percentages)
        if not self.percentages or any(not 0 <= p < 1 for p in self.percentages):
            raise ConfigError("percentages", f"need one or more fractions in [0, 1), got {percentages!r}")
        if not noise >= 0:
            raise ConfigError("noise", f"must be >= 0, got {noise!r}")
        self.noise = float(noise)
        self.seed = int(seed)
        self.n_iter = None if n_iter is None else int_at_least("n_iter", n_iter, 0)
        self.batch_size = _check_batch_size(batch_size)

    def curve(self, forward: ForwardFn, images: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        """``fractions`` (the ``P`` percentages) and ``scores`` (``B×P``) after removal and imputation."""
        images = _images(images, _maps(maps))
        maps = _maps(maps).to(images.device)
        b, n_pixels, device = images.shape[0], maps[0].numel(), images.device
        k = len(self.percentages)
        # at least one kept pixel, so that the imputation has something to start from
        counts = torch.tensor([min(round(p * n_pixels), n_pixels - 1) for p in self.percentages],
                              device=device)
        ranks = _ranks(maps)
        if self.order == "lerf":
            ranks = n_pixels - 1 - ranks

        def make(idx: Tensor) -> Tensor:
            img, step = idx // k, idx % k
            removed = (ranks[img] < counts[step][:, None]).view(-1, 1, *images.shape[2:])
            generators = None
            if self.noise:
                generators = [torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + int(i))
                              for i in idx.tolist()]
            return noisy_linear_imputation(images[img], removed, noise=self.noise, n_iter=self.n_iter,
                                           generator=generators)

        scores = _run_in_chunks(forward, make, b * k, self.batch_size or 4 * b, device)
        scores = scores.view(b, k).to(_result_dtype(scores))
        fractions = torch.tensor(self.percentages, device=device, dtype=scores.dtype)
        return fractions, nan_unless(_finite(maps)[:, None], scores)

    def __call__(self, forward: ForwardFn, images: Tensor, maps: Tensor) -> Tensor:
        """Mean score over the percentages, per image."""
        return self.curve(forward, images, maps)[1].mean(1)


@register_metric
class ROADLeRF(ROAD):
    """:class:`ROAD` removing the least relevant pixels first (``road_lerf``, higher is better)."""

    name = "road_lerf"
    score_direction = "higher"

    def __init__(self, percentages: Sequence[float] = _ROAD_PERCENTAGES, noise: float = 0.01, seed: int = 0,
                 n_iter: int | None = None, batch_size: int | None = None):
        super().__init__("lerf", percentages, noise, seed, n_iter, batch_size)


# --------------------------------------------------------------------------------------------
# randomisation


def _owns_parameters(module: nn.Module, recurse: bool = True) -> bool:
    return any(True for _ in module.parameters(recurse=recurse))


def _descend(module: nn.Module) -> bool:
    """Is ``module`` a container whose children are randomised one after the other?"""
    children = sum(1 for c in module.children() if _owns_parameters(c))
    return children >= (1 if isinstance(module, _CONTAINERS) else 2)


def _groups_of(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """``(name, module, recurse)`` from the output side: children in reverse, then own parameters."""
    groups = [(f"{prefix}{name}", child, True) for name, child in reversed(list(module.named_children()))
              if _owns_parameters(child)]
    if _owns_parameters(module, recurse=False):
        own = ",".join(name for name, _ in module.named_parameters(recurse=False))
        groups.append((f"{prefix}{own}", module, False))
    return groups


def randomisation_layers(model: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """The cascade of :class:`ModelParameterRandomisation`: layer groups from output to input.

    The top-level children that own parameters, in reverse order; a child that is a container
    (``Sequential`` / ``ModuleList`` / ``ModuleDict``, or a module such as a ``backbone`` with
    several children that own parameters) is replaced by its children, in reverse. Parameters
    that a descended module owns directly (e.g. a ViT's ``pos_embed``) form a group of their own
    after its children (on the input side), named by the parameter names. A model without
    children that own parameters is one group, ``"model"``.

    Returns:
        ``(name, module, recurse)`` triples; ``recurse=False`` means the module's own parameters only.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
        >>> [name for name, _, _ in randomisation_layers(net)]
        ['2.1', '0']
    """
    if not any(_owns_parameters(child) for child in model.children()):
        return [("model", model, True)] if _owns_parameters(model) else []
    groups: list[tuple[str, nn.Module, bool]] = []
    for name, module, recurse in _groups_of("", model):
        if recurse and _descend(module):
            groups.extend(_groups_of(f"{name}.", module))
        else:
            groups.append((name, module, recurse))
    return groups


def _randomise(module: nn.Module, recurse: bool) -> None:
    """Re-initialise a layer group with its modules' ``reset_parameters()``.

    A parameter that no ``reset_parameters()`` covers is redrawn from a normal distribution with
    its own mean and standard deviation (so a constant one, e.g. a fresh scale, stays as it is).
    """
    covered: set[int] = set()
    if recurse:
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in sub.parameters(recurse=False))
    with torch.no_grad():
        for p in module.parameters(recurse=recurse):
            if id(p) not in covered and not isinstance(p, nn.parameter.UninitializedParameter) \
                    and p.numel():
                mean, std = p.float().mean(), (p.float().std() if p.numel() > 1 else torch.zeros(()))
                p.copy_(torch.randn(p.shape, device=p.device) * std.to(p.device) + mean.to(p.device))


@register_metric
class ModelParameterRandomisation(Metric):
    """Cascading model parameter randomisation test (Adebayo et al., NeurIPS 2018, sanity checks).

    A deep copy of the model (the caller's model is never touched; the copy keeps its train/eval
    mode) gets its layer groups (:func:`randomisation_layers`) re-initialised one after the other,
    from the output towards the input; after each step the maps are recomputed with
    ``explain_fn`` and compared, per image, with the maps of the trained model. A good explainer
    depends on the parameters, so the similarity should fall: lower is better.

    Similarities: ``"spearman"``, the rank correlation of the flattened maps; ``"ssim"``, the SSIM
    of the maps min-max scaled to [0, 1] per image. With ``absolute=True`` (the default, as in
    Adebayo et al.) both compare the absolute values of the maps. A constant map gives NaN.

    Args:
        similarity: ``"spearman"`` (name ``randomisation_spearman``) or ``"ssim"``
            (``randomisation_ssim``).
        seed: re-initialisation of group ``i`` runs under ``torch.manual_seed(seed + i)`` inside
            ``torch.random.fork_rng`` (the caller's random state is left as it was).
        absolute: compare ``|maps|``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1))
        >>> explain = lambda model, x: model(x)                # the output as a "map"
        >>> out = ModelParameterRandomisation()(net, explain, torch.rand(2, 1, 8, 8))
        >>> list(out), tuple(out["0"].shape)
        (['2', '0'], (2,))
    """

    name = "randomisation_spearman"
    score_direction = "lower"
    category = "randomisation"
    requires = ("model", "explain_fn", "images")

    def __init__(self, similarity: Literal["spearman", "ssim"] = "spearman", seed: int = 0,
                 absolute: bool = True):
        if similarity not in _SIMILARITIES:
            raise ConfigError("similarity",
                              f"unknown similarity {similarity!r}; known: {', '.join(_SIMILARITIES)}")
        self.similarity_name = similarity
        self.name = f"randomisation_{similarity}"
        self.seed = int(seed)
        self.absolute = bool(absolute)

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-image similarity of two ``B×1×H×W`` map batches (1.0 for identical maps)."""
        a, b = _maps(a, "maps"), _maps(b, "maps")
        if a.shape != b.shape:
            raise ConfigError("maps", f"cannot compare maps of shapes {tuple(a.shape)} and {tuple(b.shape)}")
        if self.absolute:
            a, b = a.abs(), b.abs()
        valid = _finite(a) & _finite(b)
        a, b = a.nan_to_num(0.0), b.nan_to_num(0.0)
        if self.similarity_name == "spearman":
            out = _spearman(a.flatten(1), b.flatten(1))
        else:
            (sa, va), (sb, vb) = _min_max(a), _min_max(b)
            valid = valid & va & vb
            side = min(a.shape[2:])
            if side < 3:
                raise ConfigError("maps",
                                  f"SSIM needs maps of at least 3×3 pixels, got {tuple(a.shape[2:])}")
            kernel = min(11, side if side % 2 else side - 1)     # the usual 11×11 window, or smaller
            from torchmetrics.functional.image import structural_similarity_index_measure

            out = structural_similarity_index_measure(sa, sb, kernel_size=kernel, data_range=1.0,
                                                      reduction="none")
        return nan_unless(valid, out.to(_result_dtype(a)))

    def __call__(self, model: nn.Module, explain_fn: ExplainFn, images: Tensor) -> dict[str, Tensor]:
        """Similarity to the original maps after each cascading step.

        Args:
            model: the trained model (left unchanged).
            explain_fn: ``(model, images) -> B×1×H×W`` maps.
            images: ``B×C×H×W``.

        Returns:
            ``{layer group name: similarity (B)}`` in cascade order; the last entry (all groups
            randomised) is the summary, see :meth:`summary`.
        """
        net = copy.deepcopy(model)
        net.train(model.training)
        original = _maps(explain_fn(net, images))
        devices = sorted({p.device.index or 0 for p in net.parameters() if p.device.type == "cuda"})
        result: dict[str, Tensor] = {}
        for step, (name, module, recurse) in enumerate(randomisation_layers(net)):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed + step)
                _randomise(module, recurse)
            result[name] = self.similarity(original, _maps(explain_fn(net, images)))
        if not result:
            log.warning("ModelParameterRandomisation: %s has no parameters; nothing to randomise",
                        type(model).__name__)
        return result

    def score(self, evidence: Evidence) -> Tensor:
        """The :meth:`summary` of the cascade on ``evidence.model``, ``explain_fn`` and ``images``."""
        return self.summary(self(evidence.model, evidence.explain_fn, evidence.images))

    @staticmethod
    def summary(result: Mapping[str, Tensor]) -> Tensor:
        """The similarity once every layer group is randomised (the last entry of a result)."""
        if not result:
            raise ConfigError("result", "empty: the model had no parameters to randomise")
        return list(result.values())[-1]


@register_metric
class ModelParameterRandomisationSSIM(ModelParameterRandomisation):
    """:class:`ModelParameterRandomisation` with the SSIM similarity (``randomisation_ssim``)."""

    name = "randomisation_ssim"

    def __init__(self, seed: int = 0, absolute: bool = True):
        super().__init__("ssim", seed, absolute)


# --------------------------------------------------------------------------------------------
# complexity


@register_metric
class Sparseness(Metric):
    """Sparseness (Chalasani et al., ICML 2020): the Gini index of ``|map|``, per image.

    0 for a constant map, ``(N - 1) / N`` for a single hot pixel among ``N``; NaN for an all-zero map.

    Example:
        >>> hot = torch.zeros(1, 1, 4, 4)
        >>> hot[0, 0, 1, 2] = 5.0
        >>> Sparseness()(hot).item(), Sparseness()(torch.ones(1, 1, 4, 4)).item()
        (0.9375, 0.0)
    """

    name = "sparseness"
    score_direction = "higher"
    category = "complexity"
    requires = ("maps",)

    def __call__(self, maps: Tensor) -> Tensor:
        maps = _maps(maps)
        a = maps.flatten(1).nan_to_num(0.0).abs().double().sort(1).values
        n = a.shape[1]
        i = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
        total = a.sum(1)
        gini = ((2 * i - n - 1) * a).sum(1) / (n * torch.where(total > 0, total, torch.ones_like(total)))
        return nan_unless(_finite(maps) & (total > 0), gini.to(_result_dtype(maps)))


# --------------------------------------------------------------------------------------------
# the one-call evaluation


def evaluate_explanations(maps: Tensor, *, masks: Tensor | None = None, forward: ForwardFn | None = None,
                          images: Tensor | None = None, metrics: Sequence[str | Metric] | None = None,
                          options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Tensor]:
    """Run several explanation metrics on one batch of maps (:func:`xmed.metrics.evaluate` on
    ``Evidence(maps, masks, forward, images)``).

    Localisation metrics need ``masks``, faithfulness metrics ``forward`` and ``images``,
    sparseness only the maps. The randomisation test needs a model and an explainer: give them
    to :func:`xmed.metrics.evaluate` as evidence, or call :class:`ModelParameterRandomisation`.

    Args:
        maps: ``B×1×H×W`` attribution maps.
        masks: ``B×H×W`` (or ``B×1×H×W``) bool ground-truth regions.
        forward: ``images -> B`` scores.
        images: ``B×C×H×W``.
        metrics: names in :data:`xmed.metrics.METRICS` (or built metrics); ``None``: every metric
            whose inputs are given. A named metric whose inputs are missing is an error.
        options: ``{name: hyper-parameters}`` for :func:`xmed.metrics.create_metric`.

    Returns:
        ``{name: values (B)}`` in the order of ``metrics``.

    Example:
        >>> maps = torch.tensor([[[[3.0, 0.0], [1.0, 0.0]]]])
        >>> masks = torch.tensor([[[True, False], [False, False]]])
        >>> out = evaluate_explanations(maps, masks=masks, metrics=("pointing_game", "energy_pointing_game"))
        >>> {k: v.tolist() for k, v in out.items()}
        {'pointing_game': [1.0], 'energy_pointing_game': [0.75]}
    """
    return evaluate(Evidence(maps=maps, masks=masks, forward=forward, images=images), metrics, options)
