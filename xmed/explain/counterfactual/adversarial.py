"""Adversarial explanations: edit the image along the model's own gradient until its decision flips.

The method of Chang et al. (*Ophthalmology* 2021, "adversarial explanations" of glaucoma
decisions): iterative targeted gradient steps on the image that raise (``"increase"``) or lower
(``"decrease"``) the target's logit, within an L2 budget, so that the edit shows what the model
would need to see to decide otherwise — on a fundus, e.g. a smaller cup or a filled-in rim notch.

The optimiser is a faithful simplification of APGD (Croce & Hein, ICML 2020), per image:

* step size ``η = 2ε`` at first (``step_size`` × ε), along the L2-normalised gradient;
* momentum ``α = 0.75``: ``x ← P(x + α(z − x) + (1 − α)(x − x_prev))`` with ``z = P(x + η ĝ)``
  (the first step is a plain gradient step);
* checkpoints at APGD's fractions of ``max_steps`` (0.22, 0.41, 0.57, 0.70, ...): η is halved and
  the image restarts from its best point so far when, since the last checkpoint, fewer than
  ``ρ = 0.75`` of the steps raised the objective, or η was not halved last time and the best
  objective did not improve;
* kept from APGD: the 2ε start, the momentum, both halving conditions, the restart from the best
  point; left out: the cross-entropy/DLR losses (the objective here is the target's logit), the
  random start and restarts of the attack; changed: the momentum is cleared at a restart.

``P`` projects the change ``δ = x − x₀`` onto the allowed set: zero outside the field of view,
``‖δ‖₂ ≤ ε`` (scaled down, not clipped per pixel), then the valid pixel range (a clamp, which only
shrinks ``|δ|``; pixels already outside the range are never pushed further out), so the budget
holds exactly. Each image stops at the first step whose probability crosses ``threshold`` in the
requested direction (``early_stop``) and stays frozen there; an image that already satisfies the
goal takes 0 steps and is returned unchanged. Images that never cross return their best point
(the highest objective seen: APGD's iterates themselves need not improve at every step). The
recorded path shows, every ``record_every`` steps, what each image would return if it stopped
there — so along it the objective never gets worse.

**The budget.** ``epsilon`` is the L2 norm of the change per image in the model's input space.
By default it is relative: ``relative_epsilon`` (0.03) × the L2 norm of the image inside its
field of view (in input space), so it does not depend on the image size or on the scale of the
normalisation. For an ImageNet-normalised fundus (RMS ≈ 1.1 normalised units inside the field of
view) that is an RMS change of ≈ 0.033 normalised units, ≈ 0.0075 (2/255) in [0, 1] pixel units:
invisible per pixel, yet enough to flip a trained, non-robust classifier. Calibration on the
reference phantom model (``outputs/phantom_ref``: resnet18, 256 px) and 32 test eyes of the
phantom (16 glaucoma → ``"decrease"``, 16 normal → ``"increase"``, 30 of them on the wrong side
of 0.5): at 0.03 all 30 flipped in one step, and the predicted vCDR moved the same way as the
diagnosis along 29 of the 32 paths; at 0.02 all 30 flipped in 1–2 steps; of a 12-eye subset
(9 needing a flip), 8 flipped at 0.01 and 3 at 0.005. So the default leaves a margin for other
models and data. As in APGD the first step is 2ε, so an edit that flips uses about the whole
budget: lower ``relative_epsilon`` for smaller, closer-to-minimal edits (more images will then
need more steps, or not flip).

Regularisers that keep the edit anatomical rather than high-frequency noise (both off by default):
``smooth`` (σ in pixels) low-pass filters the gradient with a Gaussian before each step;
``tv_weight`` subtracts ``tv_weight × TV(δ)`` (mean absolute difference between neighbouring
pixels of the change) from the objective.

**The colours an edit may change** (``colour``). Unconstrained (``"free"``), the steepest way to
move a fundus classifier often changes hue — cyan, blue or white blobs at the cup margin, which a
reader takes for colour artefacts, not for a smaller or larger cup. ``"lightness"`` allows only
grey changes in pixel space (R, G and B of a pixel change alike); ``"fundus"`` only changes along
the photograph's own colour axes: the top ``colour_axes`` principal components of the RGB of its
field-of-view pixels, per image (a fundus photograph's colours lie near a plane of RGB). The
gradient of every step is projected, in input space, onto the changes whose pixel-space change
(``Δpixel = Δinput × std``) lies in that subspace (orthogonally in input space, where the step and
the budget are measured), and the valid-range clamp becomes a per-pixel shrink of the change
toward zero (every channel of the pixel by the same factor), so every iterate, and the result,
stays in the subspace (:func:`colour_projection`, :func:`shrink_into_box`).

**The goal.** ``threshold`` sets a fixed goal probability; ``logit_step`` instead sets each
image's own goal a fixed step of the logit from where it starts, ``sigmoid(logit(p₀) ± step)``
(:func:`step_goals`): with a step of 3 an eye at P 0.5 is edited to 0.047 / 0.953, and an eye at
P 0.97 is still edited toward more glaucoma (to 0.9985), so no eye is left unedited because it was
already past a fixed goal. ``Counterfactual.threshold`` is then the B goals.

The model's parameters get no gradients (``torch.autograd.grad`` with respect to the image only)
and its train/eval mode is left as it is; everything stays on the model's device. Each step costs
one forward and one input-gradient pass (of the images still moving); the last step's point only
needs a forward pass.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0), net[0].bias.fill_(-1.5)
    >>> cf = AdversarialExplainer(net, epsilon=8.0, fov_threshold=None)(
    ...     torch.full((1, 3, 8, 8), 0.6), target=0, direction="decrease")
    >>> bool(cf.reached[0]), cf.probability[0, 0] > 0.5 > cf.probability[-1, 0]
    (True, tensor(True))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmed.checks import int_at_least, non_negative, positive
from xmed.errors import ConfigError
from xmed.explain.base import option_value
from xmed.explain.counterfactual import (
    Counterfactual,
    CounterfactualExplainer,
    Direction,
    Threshold,
    at_goal,
    direction_thresholds,
    register_counterfactual,
    step_goals,
)
from xmed.explain.targets import Target, fix_target, select_target
from xmed.findings import VCDR, canonical_target

DEFAULT_RELATIVE_EPSILON = 0.03
DEFAULT_FOV_THRESHOLD = 0.05  # un-normalised brightness (max over RGB, 0..1) of the field of view
#: the colours an edit may change: any, grey only, the photograph's own colour axes
COLOURS = ("free", "lightness", "fundus")


class InputSpace:
    """A model's input space as a counterfactual explainer edits it: the normalisation to undo for
    pixel-space limits (``mean``/``std``: given, else the model's ``data_config``, else none) and
    the default field of view (pixels whose un-normalised RGB maximum exceeds ``fov_threshold``;
    None: the whole image).

    Example:
        >>> InputSpace(torch.nn.Identity(), fov_threshold=0.1, std=(0.5,)).std
        (0.5,)
    """

    def __init__(self, model: nn.Module, fov_threshold: float | None = DEFAULT_FOV_THRESHOLD,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):
        self.fov_threshold = None if fov_threshold is None else float(fov_threshold)
        config = getattr(model, "data_config", None)
        self.mean = tuple(mean) if mean is not None else (tuple(config.mean) if config is not None else None)
        self.std = tuple(std) if std is not None else (tuple(config.std) if config is not None else None)
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError("std", f"must be positive, got {self.std!r}")

    def channel(self, values: tuple[float, ...] | None, fill: float, images: Tensor, key: str) -> Tensor:
        """``values`` (one per channel, or one for all; None: ``fill``) as a 1×C×1×1 tensor like ``images``."""
        if values is None:
            return torch.full((1, 1, 1, 1), fill, device=images.device, dtype=images.dtype)
        if len(values) not in (1, images.shape[1]):
            raise ConfigError(key, f"has {len(values)} values for images with {images.shape[1]} channels")
        return torch.tensor(values, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)

    def pixels(self, images: Tensor) -> Tensor:
        """``images`` un-normalised: in [0, 1] pixel units.

        Example:
            >>> InputSpace(torch.nn.Identity(), mean=(0.5,), std=(0.25,)).pixels(torch.ones(1, 1, 1, 1)).item()
            0.75
        """
        return images * self.channel(self.std, 1.0, images, "std") + self.channel(self.mean, 0.0, images, "mean")

    def field_of_view(self, images: Tensor, fov_mask: Tensor | None = None) -> Tensor:
        """B×1×H×W bool: where edits are allowed (``fov_mask`` checked, or the default).

        Example:
            >>> images = torch.zeros(1, 3, 2, 2)
            >>> images[0, 0, 0, 0] = 1.0
            >>> InputSpace(torch.nn.Identity()).field_of_view(images)[0, 0].tolist()
            [[True, False], [False, False]]
        """
        b, _, h, w = images.shape
        if fov_mask is not None:
            if not isinstance(fov_mask, Tensor):
                raise ConfigError("fov_mask", f"expected a tensor, got {type(fov_mask).__name__}")
            mask = fov_mask[:, None] if fov_mask.ndim == 3 else fov_mask
            if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != b or tuple(mask.shape[2:]) != (h, w):
                raise ConfigError("fov_mask", f"expected B×1×H×W or B×H×W matching the images "
                                              f"{tuple(images.shape)}, got {tuple(fov_mask.shape)}")
            if mask.dtype != torch.bool:
                if bool(((mask != 0) & (mask != 1)).any()):
                    raise ConfigError("fov_mask", "must be bool or hold only 0 and 1")
                mask = mask != 0
            return mask.to(images.device)
        if self.fov_threshold is None:
            return torch.ones(b, 1, h, w, dtype=torch.bool, device=images.device)
        return self.pixels(images).amax(dim=1, keepdim=True) > self.fov_threshold


@register_counterfactual
class AdversarialExplainer(CounterfactualExplainer):
    """Adversarial explanations (Chang et al., 2021) with an APGD-style step schedule.

    Args:
        model: any differentiable ``nn.Module``; a :class:`~xmed.models.FundusClassifier` also
            gets findings and vCDR recorded along the path.
        epsilon: L2 budget of the change per image, in the model's input space; None: relative.
        relative_epsilon: the budget as a share of the L2 norm of each image inside its field of
            view (used when ``epsilon`` is None).
        max_steps: most gradient steps per image.
        threshold: the decision threshold on the target's probability (the vCDR value for
            ``"vcdr"``); ``"decrease"`` aims below it, ``"increase"`` above it. A mapping gives a
            goal per direction (:func:`~xmed.explain.counterfactual.direction_thresholds`), e.g.
            ``{"decrease": 0.5, "increase": 0.95}`` also edits eyes already above 0.5.
        early_stop: stop each image at the first step past the threshold (and skip images that
            start past it); False runs ``max_steps`` for every image and returns the best points.
        step_size: the first step size as a multiple of the budget (APGD: 2).
        momentum: APGD's α (1 = no momentum).
        rho: APGD's share of successful steps below which the step size is halved.
        smooth: σ in pixels of a Gaussian low-pass filter on the gradient (0: off).
        tv_weight: weight of the total-variation penalty on the change (0: off).
        colour: the colours the edit may change (:data:`COLOURS`): ``"free"`` any; ``"lightness"``
            grey changes only (equal change of R, G and B in pixel space); ``"fundus"`` changes
            along the photograph's own colour axes (the top ``colour_axes`` principal components
            of its field-of-view pixels' RGB). Needs RGB images unless ``"free"``.
        colour_axes: how many principal components ``"fundus"`` keeps (1 or 2).
        logit_step: each image's goal a step of the logit from where it starts,
            ``sigmoid(logit(p₀) ± logit_step)`` (:func:`step_goals`), instead of ``threshold``
            (which is then not used); None: the goal is ``threshold``.
        fov_threshold: default field of view: pixels whose un-normalised RGB has a maximum above
            this (in [0, 1]); None: the whole image. A ``fov_mask`` given to the call wins.
        pixel_range: the valid range of un-normalised pixel values; None: no clamp.
        mean, std: the input normalisation (per channel); None: the model's ``data_config`` when
            it has one, else none (inputs in pixel units).
        record_every: keep a frame of the path every this many steps (plus the input and the end).

    Example:
        >>> AdversarialExplainer(torch.nn.Identity(), max_steps=0)
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'max_steps': must be an int >= 1, got 0
    """

    name, title = "adversarial", "Adversarial explanation"

    def __init__(self, model: nn.Module, epsilon: float | None = None,
                 relative_epsilon: float = DEFAULT_RELATIVE_EPSILON, max_steps: int = 50, threshold: Threshold = 0.5,
                 early_stop: bool = True, step_size: float = 2.0, momentum: float = 0.75, rho: float = 0.75,
                 smooth: float = 0.0, tv_weight: float = 0.0, fov_threshold: float | None = DEFAULT_FOV_THRESHOLD,
                 pixel_range: tuple[float, float] | None = (0.0, 1.0), mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, record_every: int = 10, colour: str = "free",
                 colour_axes: int = 2, logit_step: float | None = None):
        super().__init__(model)
        self.epsilon = None if epsilon is None else positive("epsilon", epsilon)
        self.relative_epsilon = positive("relative_epsilon", relative_epsilon)
        self.max_steps = int_at_least("max_steps", max_steps, 1)
        self.thresholds = direction_thresholds(threshold)
        self.early_stop = bool(early_stop)
        self.step_size = positive("step_size", step_size)
        if not 0.0 < float(momentum) <= 1.0:
            raise ConfigError("momentum", f"must be in (0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        if not 0.0 <= float(rho) <= 1.0:
            raise ConfigError("rho", f"must be in [0, 1], got {rho!r}")
        self.rho = float(rho)
        self.smooth = non_negative("smooth", smooth)
        self.tv_weight = non_negative("tv_weight", tv_weight)
        if colour not in COLOURS:
            raise ConfigError("colour", f"must be one of {', '.join(COLOURS)}, got {colour!r}")
        self.colour = colour
        self.colour_axes = int_at_least("colour_axes", colour_axes, 1)
        if self.colour_axes > 2:
            raise ConfigError("colour_axes", f"must be 1 or 2 (3 axes are every colour: colour='free'), "
                                             f"got {colour_axes!r}")
        self.logit_step = None if logit_step is None else positive("logit_step", logit_step)
        self.space = InputSpace(model, fov_threshold, mean, std)
        self.fov_threshold, self.mean, self.std = self.space.fov_threshold, self.space.mean, self.space.std
        if pixel_range is not None and (len(pixel_range) != 2 or not pixel_range[0] < pixel_range[1]):
            raise ConfigError("pixel_range", f"must be (low, high) with low < high, or None, got {pixel_range!r}")
        self.pixel_range = None if pixel_range is None else (float(pixel_range[0]), float(pixel_range[1]))
        self.record_every = int_at_least("record_every", record_every, 1)
        self.checkpoints = apgd_checkpoints(self.max_steps)

    @classmethod
    def recorded_frames(cls, options: Mapping[str, Any]) -> int:
        """The frames of its path: the input, one every ``record_every`` steps and the end."""
        every = max(int(option_value(cls, options, "record_every")), 1)
        return int(option_value(cls, options, "max_steps")) // every + 2

    # ------------------------------------------------------------------ set-up
    def field_of_view(self, images: Tensor, fov_mask: Tensor | None = None) -> Tensor:
        """B×1×H×W bool: where edits are allowed (``fov_mask`` checked, or the default;
        :meth:`InputSpace.field_of_view`).

        Example:
            >>> images = torch.zeros(1, 3, 2, 2)
            >>> images[0, 0, 0, 0] = 1.0
            >>> AdversarialExplainer(torch.nn.Identity()).field_of_view(images)[0, 0].tolist()
            [[True, False], [False, False]]
        """
        return self.space.field_of_view(images, fov_mask)

    def budget(self, images: Tensor, fov: Tensor) -> Tensor:
        """B L2 budgets in input space: ``epsilon``, or ``relative_epsilon`` × the FOV image norm."""
        if self.epsilon is not None:
            return torch.full((images.shape[0],), self.epsilon, device=images.device, dtype=images.dtype)
        return self.relative_epsilon * (images * fov).flatten(1).norm(dim=1)

    def _box(self, images: Tensor) -> tuple[Tensor, Tensor] | tuple[None, None]:
        if self.pixel_range is None:
            return None, None
        mean = self.space.channel(self.mean, 0.0, images, "mean")
        std = self.space.channel(self.std, 1.0, images, "std")
        low = (self.pixel_range[0] - mean) / std
        high = (self.pixel_range[1] - mean) / std
        # never push a pixel further out than it already is (so the input itself is always allowed)
        return torch.minimum(low, images), torch.maximum(high, images)

    # ------------------------------------------------------------------ pieces of a step
    def _project_(self, delta: Tensor, eps: Tensor, low: Tensor | None, high: Tensor | None) -> Tensor:
        """In place: scale each change into its L2 ball, then into the valid range (``low``/``high``
        are bounds on the change; both contain 0, so this only shrinks): a clamp per value, or,
        when the colours are constrained, a shrink per pixel that keeps its colour direction."""
        norm = delta.flatten(1).norm(dim=1).clamp_min_(1e-12)
        delta.mul_((eps / norm).clamp_(max=1.0).view(-1, 1, 1, 1))
        if low is None:
            return delta
        return delta.clamp_(low, high) if self.colour == "free" else shrink_into_box(delta, low, high)

    def _masked(self, grad: Tensor, fov: Tensor, projection: Tensor | None) -> Tensor:
        """The gradient, smoothed and projected onto the allowed colours (each when asked), inside
        the field of view; ``grad`` is consumed."""
        if self.smooth > 0:
            grad = gaussian_blur(grad, self.smooth)
        if projection is not None:
            grad = torch.einsum("bij,bjhw->bihw", projection, grad)
        return grad.mul_(fov)

    def colour_projection(self, images: Tensor, fov: Tensor) -> Tensor | None:
        """B×3×3 projections, in input space, onto the changes :attr:`colour` allows
        (:func:`colour_projection`); None for ``"free"``."""
        if self.colour == "free":
            return None
        if images.shape[1] != 3:
            raise ConfigError("colour", f"{self.colour!r} needs RGB images, got {images.shape[1]} channel(s)")
        basis = colour_basis(self.space.pixels(images), fov, self.colour, self.colour_axes)
        std = self.space.channel(self.std, 1.0, images, "std").flatten().expand(3)
        return colour_projection(basis, std)

    def _evaluate(self, x: Tensor, x0: Tensor, target: Target, sign: float,
                  need_grad: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """Objective (B), probability (B), input gradient of the objective, findings, vCDR."""
        grad = None
        with torch.set_grad_enabled(need_grad):
            if need_grad:
                x = x.detach().requires_grad_(True)
            output = self.model(x)
            score, probability = target_score(output, target)
            objective = sign * score
            if self.tv_weight > 0:
                objective = objective - self.tv_weight * total_variation(x - x0)
            if need_grad:
                if not objective.requires_grad:
                    raise ConfigError("target", "the target does not depend on the input image")
                (grad,) = torch.autograd.grad(objective.sum(), x)
        findings, vcdr = recorded_heads(output)
        return objective.detach(), probability.detach(), grad, findings, vcdr

    # ------------------------------------------------------------------ the loop
    def generate(self, images: Tensor, target: Target | None, direction: Direction,
                 fov_mask: Tensor | None) -> Counterfactual:
        # The iterates are kept as changes δ = x − x₀ and updated in place where possible: next to
        # the model's passes the step arithmetic is a handful of sweeps over the batch.
        x0 = images
        b = x0.shape[0]
        fov = self.field_of_view(x0, fov_mask)
        fov_f = fov.to(x0.dtype)
        projection = self.colour_projection(x0, fov)
        eps = self.budget(x0, fov)
        low, high = self._box(x0)
        d_low, d_high = (None, None) if low is None else (low - x0, high - x0)
        if target is None:
            target = fix_target(self.model, x0, None)  # each image's predicted class, fixed once
        sign = 1.0 if direction == "increase" else -1.0

        def view(mask: Tensor) -> Tensor:
            return mask.view(-1, 1, 1, 1)

        f, p, g, findings, vcdr = self._evaluate(x0, x0, target, sign, need_grad=True)
        g = self._masked(g, fov_f, projection)
        threshold = self.thresholds[direction] if self.logit_step is None else step_goals(p, direction, self.logit_step)

        def done(p: Tensor) -> Tensor:
            return at_goal(p, direction, threshold)

        frames, probs, find_path, vcdr_path = [x0.clone()], [p.clone()], [], []
        if findings is not None:
            find_path.append(findings.clone())
        if vcdr is not None:
            vcdr_path.append(vcdr.clone())

        delta, prev = torch.zeros_like(x0), torch.zeros_like(x0)
        best_delta, best_g, best_f, best_p = torch.zeros_like(x0), g.clone(), f.clone(), p.clone()
        best_findings = None if findings is None else findings.clone()
        best_vcdr = None if vcdr is None else vcdr.clone()
        steps = torch.zeros(b, dtype=torch.long, device=x0.device)
        frozen = done(p) if self.early_stop else torch.zeros(b, dtype=torch.bool, device=x0.device)
        active = ~frozen
        eta = self.step_size * eps
        successes = torch.zeros(b, dtype=torch.long, device=x0.device)
        eta_at_check, best_at_check, last_check = eta.clone(), best_f.clone(), 0

        steps_run = 0
        for k in range(self.max_steps):
            if self.early_stop and not bool(active.any()):
                break
            steps_run = k + 1
            # z = P(δ + η ĝ); δ_new = P(δ + α(z − δ) + (1 − α)(δ − δ_prev))
            #                       = P(αz + 2(1 − α)δ − (1 − α)δ_prev)
            alpha = 1.0 if k == 0 else self.momentum
            scale = eta / g.flatten(1).norm(dim=1).clamp_min(1e-12)
            new = self._project_(torch.addcmul(delta, g, scale.view(-1, 1, 1, 1)), eps, d_low, d_high)
            if alpha < 1.0:
                new.mul_(alpha).add_(delta, alpha=2.0 * (1.0 - alpha)).sub_(prev, alpha=1.0 - alpha)
                self._project_(new, eps, d_low, d_high)
            all_active = bool(active.all()) if self.early_stop else True
            need_grad = k < self.max_steps - 1
            if all_active:
                prev, delta = delta, new
                steps += 1
                f_new, p_new, g_new, fi_new, v_new = self._evaluate(x0 + delta, x0, target, sign, need_grad)
                successes += (f_new > f).long()
                f, p = f_new, p_new
                if g_new is not None:
                    g = self._masked(g_new, fov_f, projection)
                findings = fi_new if fi_new is not None else findings
                vcdr = v_new if v_new is not None else vcdr
            else:
                moving = view(active)
                prev, delta = torch.where(moving, delta, prev), torch.where(moving, new, delta)
                steps += active.long()
                idx = active.nonzero().squeeze(1)
                sub_target = target[idx] if isinstance(target, Tensor) and target.ndim == 1 else target
                x_sub = x0.index_select(0, idx)
                f_new, p_new, g_new, fi_new, v_new = self._evaluate(x_sub + delta.index_select(0, idx), x_sub,
                                                                    sub_target, sign, need_grad)
                successes[idx] += (f_new > f[idx]).long()
                f, p = f.index_copy(0, idx, f_new), p.index_copy(0, idx, p_new)
                if g_new is not None:
                    sub_projection = None if projection is None else projection.index_select(0, idx)
                    g = g.index_copy(0, idx, self._masked(g_new, fov_f.index_select(0, idx), sub_projection))
                if fi_new is not None:
                    findings = findings.index_copy(0, idx, fi_new)
                if v_new is not None:
                    vcdr = vcdr.index_copy(0, idx, v_new)
            better = active & (f > best_f)
            _copy_rows(best_delta, delta, better)
            _copy_rows(best_g, g, better)
            best_f, best_p = torch.where(better, f, best_f), torch.where(better, p, best_p)
            if findings is not None:
                best_findings = torch.where(better[:, None], findings, best_findings)
            if vcdr is not None:
                best_vcdr = torch.where(better, vcdr, best_vcdr)
            if self.early_stop:
                arrived = active & done(p)
                frozen, active = frozen | arrived, active & ~arrived
            if k + 1 in self.checkpoints:
                span = k + 1 - last_check
                stalled = successes.double() < self.rho * span
                stuck = (eta == eta_at_check) & (best_f <= best_at_check)
                restart = active & (stalled | stuck)
                if bool(restart.any()):
                    eta = torch.where(restart, eta / 2, eta)
                    delta = torch.where(view(restart), best_delta, delta)
                    prev = torch.where(view(restart), best_delta, prev)  # the momentum starts afresh
                    g = torch.where(view(restart), best_g, g)
                    f, p = torch.where(restart, best_f, f), torch.where(restart, best_p, p)
                    if findings is not None:
                        findings = torch.where(restart[:, None], best_findings, findings)
                    if vcdr is not None:
                        vcdr = torch.where(restart, best_vcdr, vcdr)
                successes.zero_()
                eta_at_check, best_at_check, last_check = eta.clone(), best_f.clone(), k + 1
            if (k + 1) % self.record_every == 0:  # what each image would return if it stopped now
                frames.append(x0 + torch.where(view(frozen), delta, best_delta))
                probs.append(torch.where(frozen, p, best_p))
                if findings is not None:
                    find_path.append(torch.where(frozen[:, None], findings, best_findings))
                if vcdr is not None:
                    vcdr_path.append(torch.where(frozen, vcdr, best_vcdr))

        # the result: where each frozen image stopped, the best point of the others
        final = x0 + torch.where(view(frozen), delta, best_delta)
        if low is not None:  # undo rounding in x₀ + δ (an ulp at most: the colour constraint holds to it)
            final = torch.clamp(final, low, high)
        final = torch.where(fov, final, x0)  # bit-identical outside the field of view
        final_p = torch.where(frozen, p, best_p)
        final_findings = None if findings is None else torch.where(frozen[:, None], findings, best_findings)
        final_vcdr = None if vcdr is None else torch.where(frozen, vcdr, best_vcdr)
        if steps_run > 0:
            if steps_run % self.record_every == 0:  # the last periodic frame is the end: replace it
                frames.pop(), probs.pop()
                if find_path:
                    find_path.pop()
                if vcdr_path:
                    vcdr_path.pop()
            frames.append(final)
            probs.append(final_p)
            if final_findings is not None:
                find_path.append(final_findings)
            if final_vcdr is not None:
                vcdr_path.append(final_vcdr)
        return Counterfactual(
            images=final, frames=torch.stack(frames), probability=torch.stack(probs),
            findings=torch.stack(find_path) if find_path else None,
            vcdr=torch.stack(vcdr_path) if vcdr_path else None,
            difference=(final - x0).abs().sum(dim=1, keepdim=True), steps=steps, reached=done(final_p),
            method=self.name, target="", direction=direction, seconds=0.0, epsilon=eps, std=self.std, fov=fov,
            threshold=threshold,
        )


# ---------------------------------------------------------------------------------- helpers


def recorded_heads(output: Any) -> tuple[Tensor | None, Tensor | None]:
    """The finding probabilities (B×10) and vCDR (B) a path records, detached; None for outputs
    without those heads (any model other than a :class:`~xmed.models.FundusClassifier`).

    Example:
        >>> findings, vcdr = recorded_heads({"finding_logits": torch.zeros(1, 10), "vcdr": torch.ones(1)})
        >>> findings[0, 0].item(), vcdr.item(), recorded_heads(torch.zeros(1, 2))
        (0.5, 1.0, (None, None))
    """
    if not isinstance(output, Mapping):
        return None, None
    findings = torch.sigmoid(output["finding_logits"].detach()) if "finding_logits" in output else None
    vcdr = output["vcdr"].detach() if "vcdr" in output else None
    return findings, vcdr


def target_score(output: Any, target: Target) -> tuple[Tensor, Tensor]:
    """The objective (a logit-like score, B) and the probability (B) of ``target`` in ``output``.

    ``"glaucoma"`` and finding codes: their logit and its sigmoid; ``"vcdr"``: the logit of the
    value and the value; a class of a multi-class output: its log-softmax and softmax (so the
    other classes count too); a one-logit output or a callable target: the value and its sigmoid.

    Example:
        >>> out = torch.tensor([[0.0, 0.0]])
        >>> [round(float(v), 3) for v in target_score(out, 1)]
        [-0.693, 0.5]
    """
    if isinstance(output, Mapping) and isinstance(target, str):
        value = select_target(output, target)
        if canonical_target(target) == VCDR:
            return torch.logit(value, eps=1e-6), value
        return value, torch.sigmoid(value)
    value = select_target(output, target)  # validates the target (and names the problem)
    if isinstance(output, Tensor) and not (callable(target) and not isinstance(target, Tensor)):
        logits = output.reshape(output.shape[0], -1)
        if logits.shape[1] > 1:
            log_probs = select_target(logits.log_softmax(dim=1), target)
            return log_probs, log_probs.exp()
    return value, torch.sigmoid(value)


def _copy_rows(dst: Tensor, src: Tensor, rows: Tensor) -> None:
    """``dst[rows] = src[rows]`` in place (one copy when every row is chosen)."""
    if dst.device.type != "cpu":  # no host synchronisation on an accelerator
        dst.copy_(torch.where(rows.view(-1, *([1] * (dst.ndim - 1))), src, dst))
        return
    n = int(rows.sum())
    if n == rows.numel():
        dst.copy_(src)
    elif n:
        idx = rows.nonzero().squeeze(1)
        dst.index_copy_(0, idx, src.index_select(0, idx))


def colour_basis(pixels: Tensor, fov: Tensor, colour: str, axes: int = 2) -> Tensor:
    """B×3×k orthonormal bases, in pixel RGB, of the colour changes ``colour`` allows: the grey
    axis (k = 1) for ``"lightness"``; for ``"fundus"`` the top ``axes`` principal components of
    the RGB of each image's field-of-view pixels (``pixels``: B×3×H×W in [0, 1] units, ``fov``:
    B×1×H×W bool), strongest first. Computed in float64 on the CPU (3×3 matrices), returned on
    the pixels' device and dtype.

    Example:
        >>> pixels = torch.zeros(1, 3, 2, 2)
        >>> pixels[0, :, 0, 0] = torch.tensor([0.9, 0.5, 0.3])   # one bright orange pixel on black
        >>> fov = torch.ones(1, 1, 2, 2, dtype=torch.bool)
        >>> [round(abs(v), 4) for v in colour_basis(pixels, fov, "fundus", axes=1)[0, :, 0].tolist()]
        [0.8393, 0.4663, 0.2798]
        >>> colour_basis(pixels, fov, "lightness")[0, :, 0]
        tensor([0.5774, 0.5774, 0.5774])
    """
    b = pixels.shape[0]
    if colour == "lightness":
        grey = torch.full((b, 3, 1), 1 / math.sqrt(3), dtype=torch.float64)
        return grey.to(device=pixels.device, dtype=pixels.dtype)
    if colour != "fundus":
        raise ConfigError("colour", f"must be 'lightness' or 'fundus' for a colour basis, got {colour!r}")
    values = pixels.detach().double().cpu().flatten(2)                  # B×3×N
    weight = fov.detach().cpu().flatten(2).double()                      # B×1×N
    count = weight.sum(2, keepdim=True).clamp_min(1)
    centred = (values - (values * weight).sum(2, keepdim=True) / count) * weight
    covariance = centred @ centred.transpose(1, 2) / count               # B×3×3
    _, vectors = torch.linalg.eigh(covariance)                           # ascending eigenvalues
    return vectors.flip(-1)[..., :axes].to(device=pixels.device, dtype=pixels.dtype)


def colour_projection(basis: Tensor, std: Tensor) -> Tensor:
    """B×3×3 matrices that project a change of the model's input onto the changes whose pixel-space
    change (``Δpixel = Δinput × std``) lies in the span of ``basis`` (B×3×k, pixel RGB):
    ``P = V (VᵀV)⁻¹ Vᵀ`` with ``V = basis / std``, orthogonal in input space, where the step and
    the budget are measured. ``P`` applied to a pixel's 3 input values ``x`` is ``P @ x``.

    Example:
        >>> grey = torch.full((1, 3, 1), 3 ** -0.5)
        >>> P = colour_projection(grey, torch.tensor([0.5, 0.25, 0.25]))
        >>> change = P[0] @ torch.tensor([1.0, 0.0, 0.0])        # input space
        >>> [round(v, 4) for v in (change * torch.tensor([0.5, 0.25, 0.25])).tolist()]   # pixels: grey
        [0.0556, 0.0556, 0.0556]
    """
    v = basis.detach().double().cpu() / std.detach().double().cpu().view(1, -1, 1)
    projection = v @ torch.linalg.solve(v.transpose(1, 2) @ v, v.transpose(1, 2))
    return projection.to(device=basis.device, dtype=basis.dtype)


def shrink_into_box(delta: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """In place: each pixel's change (B×C×H×W) scaled by the largest factor in [0, 1] that brings
    every channel into ``[low, high]`` (bounds on the change, like ``delta``, that contain 0). The
    change keeps its colour direction — a per-value clamp would turn a grey change of a pixel
    with one saturated channel into a coloured one.

    Example:
        >>> d = torch.tensor([0.5, 0.2, -0.1]).view(1, 3, 1, 1)
        >>> shrink_into_box(d, torch.full_like(d, -1.0), torch.full_like(d, 0.25)).flatten().tolist()
        [0.25, 0.10000000149011612, -0.05000000074505806]
    """
    limit = torch.where(delta > 0, high, low)
    ratio = torch.where(delta != 0, limit / delta, torch.full_like(delta, math.inf))
    return delta.mul_(ratio.amin(dim=1, keepdim=True).clamp_(min=0.0, max=1.0))


def total_variation(delta: Tensor) -> Tensor:
    """B anisotropic total variation of a change: mean |vertical| + mean |horizontal| neighbour
    difference (so the weight does not depend on the image size).

    Example:
        >>> total_variation(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])).item()
        1.0
    """
    dy = (delta[..., 1:, :] - delta[..., :-1, :]).abs().flatten(1)
    dx = (delta[..., :, 1:] - delta[..., :, :-1]).abs().flatten(1)
    zero = delta.new_zeros(delta.shape[0])
    return (dy.mean(1) if dy.shape[1] else zero) + (dx.mean(1) if dx.shape[1] else zero)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian low-pass filter of a B×C×H×W tensor (reflect padding, ±3σ).

    Example:
        >>> x = torch.zeros(1, 1, 9, 9)
        >>> x[0, 0, 4, 4] = 1.0
        >>> y = gaussian_blur(x, 1.0)
        >>> round(y.sum().item(), 4), bool(y[0, 0, 4, 4] < 1.0)
        (1.0, True)
    """
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c, (h, w) = images.shape[1], images.shape[2:]
    mode = "reflect" if radius < min(h, w) else "replicate"
    out = F.pad(images, (radius, radius, radius, radius), mode=mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def apgd_checkpoints(n_steps: int) -> frozenset[int]:
    """APGD's checkpoints (Croce & Hein 2020): ``ceil(p_j · n)`` with ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``.

    Example:
        >>> sorted(apgd_checkpoints(50))
        [11, 21, 29, 35, 40, 44, 47, 50]
    """
    fractions, previous, current = [], 0.0, 0.22
    while current <= 1.0:
        fractions.append(current)
        previous, current = current, current + max(current - previous - 0.03, 0.06)
    return frozenset(c for c in (math.ceil(round(p * n_steps, 9)) for p in fractions) if 0 < c <= n_steps)





__all__ = ["COLOURS", "DEFAULT_FOV_THRESHOLD", "DEFAULT_RELATIVE_EPSILON", "AdversarialExplainer", "InputSpace",
           "apgd_checkpoints", "colour_basis", "colour_projection", "gaussian_blur", "recorded_heads",
           "shrink_into_box", "target_score", "total_variation"]
