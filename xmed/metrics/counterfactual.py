"""Counterfactual-quality metrics: validity, proximity, the changed fraction, localisation, clinical
sense, realism — and, as functions, the colour of an edit (:func:`hue_share`) and its agreement
with a known change (:func:`change_correlation`).

Quantus style, as :mod:`xmed.metrics.explanation`: every metric is a class with ``name``,
``score_direction`` (``"higher"`` or ``"lower"`` is better), ``category`` (``"counterfactual"``)
and ``requires`` (:mod:`xmed.metrics.base`); hyper-parameters go to ``__init__``, data to
``__call__``, which returns one value per image (a float tensor of shape ``B`` on the inputs'
device); :meth:`CounterfactualMetric.score` reads the same data from the evidence's
:class:`~xmed.explain.counterfactual.Counterfactual`. A value that is undefined for an image (an empty mask, no change at
all, a path of one frame, a NaN input) is NaN, never a silent 0. Batch summaries
(:func:`flip_rate`, :func:`vcdr_falls`, ...) are NaN-ignoring means, NaN when nothing is defined.

Inputs are the fields of a :class:`~xmed.explain.counterfactual.Counterfactual` (or any tensors of
the same shapes):

* ``probability``: ``T×B`` the target's probability along the path (row 0: the input);
* ``original``, ``edited``: ``B×C×H×W`` images in the model's input space; ``std`` (the model's
  normalisation, ``Counterfactual.std``) turns their difference into [0, 1] pixel units
  (``Δpixel = Δinput × std``; None: the inputs are in pixel units already);
* ``change``: ``B×C×H×W`` the signed change ``edited − original`` (or ``B×1×H×W`` change maps);
* ``masks``, ``fov``: ``B×1×H×W`` or ``B×H×W`` bool regions;
* ``vcdr``: ``T×B`` the predicted vCDR along the path.

Example:
    >>> import torch
    >>> probability = torch.tensor([[0.9, 0.8, 0.3], [0.2, 0.6, 0.1]])   # T=2 frames, B=3
    >>> Validity()(probability, "decrease").tolist(), flip_rate(probability, "decrease").item()
    ([1.0, 0.0, nan], 0.5)
    >>> change = torch.tensor([[[[3.0, 1.0], [0.0, 0.0]]]])   # B=1, C=1, 2×2
    >>> round(energy_in_mask(change, torch.tensor([[[True, False], [False, False]]])).item(), 6)
    0.9
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from xmed.checks import non_negative
from xmed.errors import ConfigError
from xmed.metrics.base import Evidence, Metric, evaluate, nan_unless, register_metric

if TYPE_CHECKING:
    from xmed.explain.counterfactual import Counterfactual

__all__ = [
    "ChangedFraction", "CounterfactualMetric", "EnergyInMask", "ProximityL1", "ProximityL2",
    "L1InMask", "ReconstructionError", "VCDRFalls", "VCDRMonotonic", "Validity", "energy_in_mask",
    "change_correlation", "evaluate_counterfactuals", "flip_rate", "hue_share", "mask_coverage",
    "reconstruction_error", "seconds_per_image", "vcdr_falls", "vcdr_monotonic_fraction",
]

#: The way a counterfactual moves its target (and the way the vCDR should move with it).
Expected = Literal["decrease", "increase"]

# --------------------------------------------------------------------------------------------
# input handling


def _float(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _nanmean(values: Tensor) -> Tensor:
    """Mean of the defined values (a 0-dim tensor), NaN when none is."""
    finite = ~torch.isnan(values)
    if not bool(finite.any()):
        return torch.full((), math.nan, dtype=values.dtype, device=values.device)
    return values[finite].mean()


def _expected(key: str, value: Any) -> str:
    if value not in ("decrease", "increase"):
        raise ConfigError(key, f"must be 'decrease' or 'increase', got {value!r}")
    return value


def _path(values: Tensor, key: str) -> Tensor:
    """A ``T×B`` path (a ``B`` vector is one frame)."""
    if not isinstance(values, Tensor):
        raise ConfigError(key, f"expected a tensor, got {type(values).__name__}")
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.shape[0] < 1:
        raise ConfigError(key, f"expected a T×B path, got shape {tuple(values.shape)}")
    return _float(values.detach())


def _pair(original: Tensor, edited: Tensor) -> tuple[Tensor, Tensor]:
    for key, t in (("original", original), ("edited", edited)):
        if not isinstance(t, Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ConfigError(key, f"expected a B×C×H×W tensor, got {shape}")
    if original.shape != edited.shape:
        raise ConfigError("edited", f"shape {tuple(edited.shape)} differs from the original's {tuple(original.shape)}")
    return _float(original.detach()), _float(edited.detach()).to(original.device)


def _pixel_change(original: Tensor, edited: Tensor, std: Sequence[float] | Tensor | None) -> Tensor:
    """``B×C×H×W`` change in [0, 1] pixel units."""
    original, edited = _pair(original, edited)
    delta = edited - original
    if std is None:
        return delta
    scale = torch.as_tensor(std, dtype=delta.dtype, device=delta.device).flatten()
    if scale.numel() not in (1, delta.shape[1]):
        raise ConfigError("std", f"has {scale.numel()} values for images with {delta.shape[1]} channels")
    return delta * scale.view(1, -1, 1, 1)


def _region(mask: Tensor | None, like: Tensor, key: str) -> Tensor | None:
    """Bool ``B×1×H×W`` region matching ``like`` (B×·×H×W), on its device."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise ConfigError(key, f"expected a tensor, got {type(mask).__name__}")
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != like.shape[0] or mask.shape[2:] != like.shape[2:]:
        raise ConfigError(key, f"expected B×H×W or B×1×H×W matching {tuple(like.shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ConfigError(key, "must be bool or hold only 0 and 1")
        mask = mask != 0
    return mask.to(like.device)



# --------------------------------------------------------------------------------------------
# base class


class CounterfactualMetric(Metric):
    """Base of the counterfactual metrics: :meth:`score` reads the evidence's counterfactual.

    An image that was not edited (it met the goal as given: 0 steps) has no edit to score: its
    value is NaN, so means over a batch describe the edits that were made.
    """

    category = "counterfactual"
    requires: tuple[str, ...] = ("counterfactual",)

    def score(self, evidence: Evidence) -> Tensor:
        cf = evidence.counterfactual
        edited = cf.steps.to(cf.images.device) > 0
        return nan_unless(edited, self.score_edits(cf, evidence))

    def score_edits(self, cf: Counterfactual, evidence: Evidence) -> Tensor:
        """B values for the counterfactual ``cf`` of ``evidence`` (every image, edited or not)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# validity


@register_metric
class Validity(CounterfactualMetric):
    """Did the decision flip in the requested direction? 1.0 yes, 0.0 no, per image.

    The first frame must be on the other side of ``threshold`` (at or above it for
    ``"decrease"``, at or below for ``"increase"``) and the last frame strictly on the requested
    side. NaN for an image that already started on the requested side (no flip was asked of it)
    and for NaN probabilities.

    Args:
        threshold: the decision threshold on the probability; None: the goal the counterfactual
            was made for (``Counterfactual.threshold``) in :meth:`score`, 0.5 when called on
            probabilities.

    Example:
        >>> Validity()(torch.tensor([[0.2, 0.7], [0.9, 0.6]]), "increase").tolist()
        [1.0, nan]
    """

    name = "validity"
    score_direction = "higher"

    def __init__(self, threshold: float | None = None):
        self.threshold = None if threshold is None else float(threshold)

    def __call__(self, probability: Tensor, direction: Expected) -> Tensor:
        return self._flipped(probability, direction, 0.5 if self.threshold is None else self.threshold)

    def score_edits(self, cf: Counterfactual, evidence: Evidence) -> Tensor:
        return self._flipped(cf.probability, cf.direction, cf.threshold if self.threshold is None else self.threshold)

    @staticmethod
    def _flipped(probability: Tensor, direction: str, threshold: float) -> Tensor:
        probability = _path(probability, "probability")
        direction = _expected("direction", direction)
        first, last = probability[0], probability[-1]
        if direction == "decrease":
            needed, done = first >= threshold, last < threshold
        else:
            needed, done = first <= threshold, last > threshold
        valid = needed & ~torch.isnan(first) & ~torch.isnan(last)
        return nan_unless(valid, done.to(probability.dtype))


def flip_rate(probability: Tensor, direction: Expected, threshold: float = 0.5) -> Tensor:
    """Share of the images that needed a flip whose decision flipped (:class:`Validity`), 0-dim.

    Example:
        >>> round(flip_rate(torch.tensor([[0.9, 0.8, 0.7, 0.4], [0.1, 0.2, 0.6, 0.1]]), "decrease").item(), 4)
        0.6667
    """
    return _nanmean(Validity(threshold)(probability, direction))


# --------------------------------------------------------------------------------------------
# proximity and the changed fraction


class _ImageChange(CounterfactualMetric):
    """A measure of the change ``edited − original`` in [0, 1] pixel units, over a field of view.

    ``std``: the model's normalisation std (``Counterfactual.std``); None: the counterfactual's in
    :meth:`score`, pixel units when called on images.
    """

    score_direction = "lower"

    def __init__(self, std: Sequence[float] | None = None):
        self.std = None if std is None else tuple(float(s) for s in std)

    def __call__(self, original: Tensor, edited: Tensor, fov: Tensor | None = None) -> Tensor:
        return self._measure(_pixel_change(original, edited, self.std), fov)

    def score_edits(self, cf: Counterfactual, evidence: Evidence) -> Tensor:
        std = cf.std if self.std is None else self.std
        return self._measure(_pixel_change(cf.frames[0], cf.images, std), cf.fov)

    def _measure(self, delta: Tensor, fov: Tensor | None) -> Tensor:
        raise NotImplementedError


class _Proximity(_ImageChange):
    """A per-pixel-value average of the change (over the field of view), reduced by :meth:`_reduce`."""

    def _reduce(self, delta: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _measure(self, delta: Tensor, fov: Tensor | None) -> Tensor:
        region = _region(fov, delta, "fov")
        weight = torch.ones_like(delta[:, :1]) if region is None else region.to(delta.dtype)
        weight = weight.expand_as(delta)
        count = weight.flatten(1).sum(1)
        value = self._reduce(delta, weight)
        finite = torch.isfinite(delta).flatten(1).all(1)
        return nan_unless(finite & (count > 0), value)


@register_metric
class ProximityL1(_Proximity):
    """Mean absolute change per pixel value, in [0, 1] pixel units (over the ``fov`` if given).

    Args:
        std: the model's normalisation std (``Counterfactual.std``); None: the counterfactual's in
            :meth:`score`, pixel units when called on images.

    Example:
        >>> a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[0.4, 0.0], [0.0, 0.0]]]])
        >>> round(ProximityL1()(a, b).item(), 6), round(ProximityL1(std=(0.5,))(a, b).item(), 6)
        (0.1, 0.05)
    """

    name = "proximity_l1"

    def _reduce(self, delta: Tensor, weight: Tensor) -> Tensor:
        count = weight.flatten(1).sum(1)
        return (delta.abs() * weight).flatten(1).sum(1) / count.clamp_min(1)


@register_metric
class ProximityL2(_Proximity):
    """Root-mean-square change per pixel value, in [0, 1] pixel units (over the ``fov`` if given).

    Example:
        >>> a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[0.4, 0.0], [0.0, 0.0]]]])
        >>> round(ProximityL2()(a, b).item(), 6)
        0.2
    """

    name = "proximity_l2"

    def _reduce(self, delta: Tensor, weight: Tensor) -> Tensor:
        count = weight.flatten(1).sum(1)
        return ((delta * delta * weight).flatten(1).sum(1) / count.clamp_min(1)).sqrt()


@register_metric
class ChangedFraction(_ImageChange):
    """Share of the pixels changed (lower is better: an edit that touches little): a pixel counts
    when any of its channels moved by more than ``tolerance`` (in [0, 1] pixel units); over the
    ``fov`` if given (NaN for an empty one).

    Args:
        tolerance: the smallest change that counts (default: one 8-bit grey level).
        std: the model's normalisation std; None: the counterfactual's in :meth:`score`, pixel
            units when called on images.

    Example:
        >>> a = torch.zeros(1, 3, 2, 2)
        >>> b = a.clone()
        >>> b[0, 1, 0, 0], b[0, 2, 1, 1] = 0.5, 0.001
        >>> ChangedFraction()(a, b).item()
        0.25
    """

    name = "changed_fraction"

    def __init__(self, tolerance: float = 1 / 255, std: Sequence[float] | None = None):
        self.tolerance = non_negative("tolerance", tolerance)
        super().__init__(std)

    def _measure(self, delta: Tensor, fov: Tensor | None) -> Tensor:
        changed = (delta.abs().amax(dim=1, keepdim=True) > self.tolerance).flatten(1)
        region = _region(fov, delta, "fov")
        region = torch.ones_like(changed) if region is None else region.flatten(1)
        count = region.sum(1)
        share = (changed & region).sum(1).to(delta.dtype) / count.clamp_min(1).to(delta.dtype)
        finite = torch.isfinite(delta).flatten(1).all(1)
        return nan_unless(finite & (count > 0), share)


# --------------------------------------------------------------------------------------------
# localisation


@register_metric
class EnergyInMask(CounterfactualMetric):
    """Share of the change's energy inside a ground-truth mask: ``Σ_mask Σ_c |δ_c|^p / Σ Σ_c |δ_c|^p``.

    ``p = 2`` (the default) is the energy proper, ``‖δ‖₂²``: the quantity an L2 budget bounds,
    so the share says how much of the budget the edit spent inside the mask. ``p = 1`` is the
    share of the absolute change (:class:`L1InMask`), which weighs the faint, spread-out part of
    an edit more. Compare either with :func:`mask_coverage` (the share of the field of view the
    mask covers): a change spread evenly over the field of view scores that much by chance. NaN
    for an empty mask, for an image without any change and for non-finite changes.

    Args:
        power: the exponent ``p``.

    Call with ``change`` (``B×C×H×W`` signed change ``edited − original``, or a ``B×1×H×W``
    change map) and ``masks``; :meth:`score` takes the counterfactual's change, in the model's
    input space (where the L2 budget is set), and the evidence's masks.

    Example:
        >>> d = torch.tensor([[[[3.0, 1.0], [0.0, 0.0]]]])
        >>> round(EnergyInMask()(d, torch.tensor([[[True, False], [False, False]]])).item(), 6)
        0.9
    """

    name = "energy_in_mask"
    score_direction = "higher"
    requires = ("counterfactual", "masks")

    def __init__(self, power: float = 2.0):
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
            raise ConfigError("power", f"must be a positive number, got {power!r}")
        self.power = float(power)

    def __call__(self, change: Tensor, masks: Tensor) -> Tensor:
        if not isinstance(change, Tensor) or change.ndim not in (3, 4):
            raise ConfigError("change", f"expected a B×C×H×W change, got {getattr(change, 'shape', type(change))}")
        change = _float(change.detach())
        change = change[:, None] if change.ndim == 3 else change
        per_pixel = change.abs().nan_to_num(0.0).pow(self.power).sum(1, keepdim=True)
        masks = _region(masks, per_pixel, "masks")
        inside = (per_pixel * masks).flatten(1).sum(1)
        total = per_pixel.flatten(1).sum(1)
        valid = torch.isfinite(change).flatten(1).all(1) & masks.flatten(1).any(1) & (total > 0)
        return nan_unless(valid, inside / torch.where(total > 0, total, torch.ones_like(total)))

    def score_edits(self, cf: Counterfactual, evidence: Evidence) -> Tensor:
        return self(cf.images - cf.frames[0], evidence.masks)


@register_metric
class L1InMask(EnergyInMask):
    """Share of the absolute change ``Σ_c |δ_c|`` inside a mask (:class:`EnergyInMask` with ``p = 1``).

    Example:
        >>> d = torch.tensor([[[[3.0, 1.0], [0.0, 0.0]]]])
        >>> L1InMask()(d, torch.tensor([[[True, False], [False, False]]])).item()
        0.75
    """

    name = "l1_in_mask"

    def __init__(self):
        super().__init__(power=1.0)


def energy_in_mask(change: Tensor, masks: Tensor) -> Tensor:
    """B shares of the change's energy (``Σ_c δ_c²`` per pixel) inside ``masks`` (:class:`EnergyInMask`)."""
    return EnergyInMask()(change, masks)


def mask_coverage(masks: Tensor, fov: Tensor | None = None) -> Tensor:
    """B shares of the field of view that the mask covers: ``|mask ∧ fov| / |fov|`` — the chance
    level of :func:`energy_in_mask`. NaN for an empty field of view and, as for
    :func:`energy_in_mask`, for an empty mask (e.g. a healthy eye has no findings to point at);
    ``fov`` None: the image.

    Example:
        >>> masks = torch.tensor([[[True, False], [False, False]]])
        >>> mask_coverage(masks, torch.tensor([[[True, True], [False, False]]])).item()
        0.5
    """
    if not isinstance(masks, Tensor) or masks.ndim not in (3, 4):
        raise ConfigError("masks", f"expected B×H×W or B×1×H×W masks, got {getattr(masks, 'shape', type(masks))}")
    like = masks[:, None] if masks.ndim == 3 else masks
    masks = _region(masks, like, "masks")
    region = _region(fov, masks, "fov")
    region = torch.ones_like(masks) if region is None else region
    count = region.flatten(1).sum(1)
    inside = (masks & region).flatten(1).sum(1)
    share = inside.float() / count.clamp_min(1).float()
    return nan_unless((count > 0) & (inside > 0), share)


# --------------------------------------------------------------------------------------------
# clinical sense: does the predicted vCDR move the expected way along the path?


class _VCDRPath(CounterfactualMetric):
    """A vCDR-along-the-path metric: which way the vCDR should move, and by how much counts.

    ``expected``: ``"decrease"`` or ``"increase"``; None: the way the counterfactual moved its
    target in :meth:`score` (toward "normal" the cup should shrink), ``"decrease"`` when called on
    a path.
    """

    score_direction = "higher"
    requires = ("counterfactual.vcdr",)

    def __init__(self, expected: Expected | None = None, tolerance: float = 0.0):
        self.expected = None if expected is None else _expected("expected", expected)
        self.tolerance = non_negative("tolerance", tolerance)

    def __call__(self, vcdr: Tensor) -> Tensor:
        return self._along(_path(vcdr, "vcdr"), self.expected or "decrease")

    def score_edits(self, cf: Counterfactual, evidence: Evidence) -> Tensor:
        return self._along(_path(cf.vcdr, "vcdr"), self.expected or _expected("direction", cf.direction))

    def _along(self, vcdr: Tensor, expected: str) -> Tensor:
        raise NotImplementedError


@register_metric
class VCDRFalls(_VCDRPath):
    """1.0 when the predicted vCDR moved the ``expected`` way from the first to the last frame by
    more than ``tolerance``, else 0.0, per image. NaN for a path of one frame or NaN values.

    A counterfactual toward "normal" that also lowers the predicted cup-to-disc ratio edits what
    a glaucoma specialist would look at.

    Example:
        >>> VCDRFalls()(torch.tensor([[0.7, 0.5], [0.6, 0.5]])).tolist()
        [1.0, 0.0]
    """

    name = "vcdr_falls"

    def _along(self, vcdr: Tensor, expected: str) -> Tensor:
        move = vcdr[-1] - vcdr[0]
        moved = move < -self.tolerance if expected == "decrease" else move > self.tolerance
        valid = torch.isfinite(vcdr).all(0) & (vcdr.shape[0] > 1)
        return nan_unless(valid, moved.to(vcdr.dtype))


@register_metric
class VCDRMonotonic(_VCDRPath):
    """Share of the frame-to-frame moves along which the vCDR did not go against the ``expected``
    way by more than ``tolerance``, per image (1.0: a monotone path). NaN for one frame.

    Example:
        >>> VCDRMonotonic()(torch.tensor([[0.7], [0.6], [0.65], [0.5], [0.5]])).tolist()
        [0.75]
    """

    name = "vcdr_monotonic"

    def _along(self, vcdr: Tensor, expected: str) -> Tensor:
        if vcdr.shape[0] < 2:
            return torch.full((vcdr.shape[1],), math.nan, dtype=vcdr.dtype, device=vcdr.device)
        moves = vcdr[1:] - vcdr[:-1]
        ok = moves <= self.tolerance if expected == "decrease" else moves >= -self.tolerance
        return nan_unless(torch.isfinite(vcdr).all(0), ok.to(vcdr.dtype).mean(0))


def vcdr_falls(vcdr: Tensor, expected: Expected = "decrease", tolerance: float = 0.0) -> Tensor:
    """Share of the paths along which the predicted vCDR fell from the first to the last frame
    (rose, for ``expected="increase"``), 0-dim; NaN when no path is defined.

    Example:
        >>> round(vcdr_falls(torch.tensor([[0.7, 0.5, 0.6], [0.6, 0.4, 0.7]])).item(), 4)
        0.6667
    """
    return _nanmean(VCDRFalls(expected, tolerance)(vcdr))


def vcdr_monotonic_fraction(vcdr: Tensor, expected: Expected = "decrease", tolerance: float = 0.0) -> Tensor:
    """Share of the paths that are monotone in the expected way (every frame-to-frame move), 0-dim.

    Example:
        >>> vcdr_monotonic_fraction(torch.tensor([[0.7, 0.5], [0.6, 0.6], [0.5, 0.7]])).item()
        0.5
    """
    per_image = VCDRMonotonic(expected, tolerance)(vcdr)
    return _nanmean(nan_unless(~torch.isnan(per_image), (per_image == 1).to(per_image.dtype)))


# --------------------------------------------------------------------------------------------
# colour, and agreement with a known change


def hue_share(original: Tensor, edited: Tensor, fov: Tensor | None = None, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> Tensor:
    """B shares of an edit's change in CIELAB that is colour rather than lightness:
    ``Σ(Δa² + Δb²) / Σ(ΔL² + Δa² + Δb²)`` over the field of view (0: a pure lightness change,
    1: a pure change of hue or saturation).

    ``original`` and ``edited`` are B×3×H×W in the model's input space, un-normalised with
    ``mean`` and ``std`` (None: pixel units already), clipped to [0, 1] and converted with
    OpenCV's float32 RGB→Lab (sRGB, D65). Note that an equal change of R, G and B is grey only on
    a grey pixel: on the orange of a fundus it also changes a and b a little. NaN for an empty
    field of view, no change inside it, or non-finite values.

    Example:
        >>> grey = torch.full((1, 3, 4, 4), 0.5)
        >>> hue_share(grey, grey + 0.1).item() < 1e-4
        True
        >>> redder = grey.clone(); redder[:, 0] += 0.1; redder[:, 1:] -= 0.05
        >>> round(hue_share(grey, redder).item(), 2)
        0.99
    """
    import cv2

    original, edited = _pair(original, edited)
    if original.shape[1] != 3:
        raise ConfigError("original", f"expected RGB images, got {original.shape[1]} channel(s)")
    region = _region(fov, original, "fov")
    shift = torch.zeros(3) if mean is None else torch.as_tensor(mean, dtype=torch.float32).flatten()
    scale = torch.ones(3) if std is None else torch.as_tensor(std, dtype=torch.float32).flatten()
    out = torch.full((original.shape[0],), math.nan, dtype=torch.float64)
    for i in range(original.shape[0]):
        lab = []
        for image in (original[i], edited[i]):
            pixels = (image.float().cpu() * scale.view(-1, 1, 1) + shift.view(-1, 1, 1)).clamp(0, 1)
            lab.append(cv2.cvtColor(pixels.permute(1, 2, 0).contiguous().numpy(), cv2.COLOR_RGB2Lab))
        delta = torch.from_numpy(lab[1] - lab[0]).double()              # H×W×3: ΔL, Δa, Δb
        inside = torch.ones(delta.shape[:2], dtype=torch.bool) if region is None else region[i, 0].cpu()
        energy = delta[inside].pow(2)
        total = energy.sum()
        if inside.any() and bool(torch.isfinite(total)) and total > 0:
            out[i] = energy[:, 1:].sum() / total
    return out.to(device=original.device, dtype=original.dtype)


def change_correlation(change: Tensor, ideal: Tensor, fov: Tensor | None = None,
                       std: Sequence[float] | None = None) -> Tensor:
    """B Pearson correlations between an edit's signed change and an ideal one (both B×C×H×W
    changes in the model's input space; ``std`` turns them into pixel units, None: they are) over
    every channel of every pixel of the field of view: 1 when the edit changes the image as the
    ideal does (up to its size), 0 when it is unrelated. On the phantom the ideal is the eye
    re-rendered with another cup (:func:`xmed.data.render_phantom`'s ``cup_vcdr``) less the eye.
    NaN for an empty field of view, a change or ideal that is constant there, or non-finite values.

    Example:
        >>> ideal = torch.zeros(1, 3, 4, 4); ideal[0, :, 1:3, 1:3] = 0.2
        >>> change_correlation(0.5 * ideal, ideal).item(), change_correlation(-ideal, ideal).item()
        (1.0, -1.0)
    """
    if not isinstance(change, Tensor) or not isinstance(ideal, Tensor) or change.shape != ideal.shape \
            or change.ndim != 4:
        raise ConfigError("ideal", f"expected two B×C×H×W changes of one shape, got "
                                   f"{tuple(getattr(change, 'shape', ()))} and {tuple(getattr(ideal, 'shape', ()))}")
    zeros = torch.zeros_like(change)
    a = _pixel_change(zeros, change, std).double()
    b = _pixel_change(zeros, ideal.to(change.device), std).double()
    region = _region(fov, a, "fov")
    weight = torch.ones_like(a) if region is None else region.expand_as(a).double()
    count = weight.flatten(1).sum(1)
    safe = count.clamp_min(1)
    a = a - (a * weight).flatten(1).sum(1).div(safe).view(-1, 1, 1, 1)
    b = b - (b * weight).flatten(1).sum(1).div(safe).view(-1, 1, 1, 1)
    covariance = (a * b * weight).flatten(1).sum(1)
    spread = ((a * a * weight).flatten(1).sum(1) * (b * b * weight).flatten(1).sum(1)).sqrt()
    valid = (count > 0) & (spread > 0) & torch.isfinite(spread)
    value = covariance / torch.where(spread > 0, spread, torch.ones_like(spread))
    return nan_unless(valid, value.clamp(-1.0, 1.0)).to(change.dtype)


# --------------------------------------------------------------------------------------------
# realism proxy and cost


@register_metric
class ReconstructionError(CounterfactualMetric):
    """Mean squared error between images and ``autoencoder(images)``, per image — a realism
    proxy: an autoencoder trained on real fundi reconstructs in-distribution images well.

    Args:
        autoencoder: any callable ``B×C×H×W -> B×C×H×W`` (an ``nn.Module``, a function); it is
            called without gradients on the images as given. :meth:`score` takes the evidence's
            autoencoder and scores the edited images.

    Example:
        >>> ReconstructionError(lambda x: x * 0.5)(torch.ones(1, 1, 2, 2)).item()
        0.25
    """

    name = "reconstruction_error"
    score_direction = "lower"
    requires = ("counterfactual", "autoencoder")

    def __init__(self, autoencoder: Callable[[Tensor], Tensor] | None = None):
        self.autoencoder = None if autoencoder is None else _callable(autoencoder)

    def __call__(self, images: Tensor) -> Tensor:
        if self.autoencoder is None:
            raise ConfigError("autoencoder", "none given: ReconstructionError(autoencoder)(images)")
        return self._error(self.autoencoder, images)

    def score_edits(self, cf: Counterfactual, evidence: Evidence) -> Tensor:
        return self._error(_callable(evidence.autoencoder), cf.images)

    @staticmethod
    def _error(autoencoder: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise ConfigError("images", f"expected a B×C×H×W tensor, got {getattr(images, 'shape', type(images))}")
        with torch.no_grad():
            recon = autoencoder(images)
        if not isinstance(recon, Tensor) or recon.shape != images.shape:
            raise ConfigError("autoencoder", f"must return a tensor shaped like its input {tuple(images.shape)}, "
                                             f"got {getattr(recon, 'shape', type(recon).__name__)}")
        error = (_float(recon.detach()) - _float(images.detach())).pow(2).flatten(1).mean(1)
        return nan_unless(torch.isfinite(error), error)


def _callable(autoencoder: Any) -> Callable[[Tensor], Tensor]:
    if not callable(autoencoder):
        raise ConfigError("autoencoder", f"must be callable, got {type(autoencoder).__name__}")
    return autoencoder


def reconstruction_error(autoencoder: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """B mean squared reconstruction errors (:class:`ReconstructionError`)."""
    return ReconstructionError(autoencoder)(images)


def seconds_per_image(counterfactual: Counterfactual) -> float:
    """Wall time of a counterfactual batch divided by its size (lower is better)."""
    return counterfactual.seconds / max(1, counterfactual.images.shape[0])


# --------------------------------------------------------------------------------------------
# the one-call evaluation


def evaluate_counterfactuals(counterfactual: Counterfactual, *, masks: Tensor | None = None,
                             threshold: float | None = None, tolerance: float = 1 / 255,
                             autoencoder: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """Every metric whose inputs are there, per image, for one :class:`Counterfactual`
    (:func:`xmed.metrics.evaluate` on ``Evidence(counterfactual=, masks=, autoencoder=)``), with
    ``mask_coverage`` and ``seconds_per_image`` beside them.

    Proximity and the changed fraction are in pixel units (``counterfactual.std``) over its field
    of view (``counterfactual.fov``, else the whole image); ``energy_in_mask`` and ``l1_in_mask``
    (and ``mask_coverage``, their chance level) need ``masks``; the vCDR metrics need a path with a
    vCDR (expected to move the way the target was asked to: toward "normal", the cup should
    shrink); ``reconstruction_error`` needs an ``autoencoder`` (applied to the edited images);
    ``seconds_per_image`` is the batch time shared out. ``validity`` is judged against
    ``threshold``, by default the goal the counterfactual was made for
    (``counterfactual.threshold``); ``tolerance`` is the smallest change ``changed_fraction``
    counts. An image that was not edited (it met the goal as given: 0 steps) has no edit to
    score: NaN for everything but ``mask_coverage`` and the time, so means over a batch describe
    the edits that were made.

    Returns:
        ``{name: B values}``.
    """
    evidence = Evidence(counterfactual=counterfactual, masks=masks, autoencoder=autoencoder)
    out = evaluate(evidence, options={"validity": {"threshold": threshold}, "changed_fraction": {"tolerance": tolerance}})
    if masks is not None:
        out["mask_coverage"] = mask_coverage(masks, counterfactual.fov)
    images = counterfactual.images
    out["seconds_per_image"] = torch.full((images.shape[0],), seconds_per_image(counterfactual), device=images.device)
    return out
