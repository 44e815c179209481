"""Counterfactual explanations: *what would have to change* for the model to decide otherwise.

``xmed.explain.counterfactual(model, images, method="adversarial", target="glaucoma",
direction="decrease")`` edits each image, within a budget, until the target's probability crosses a
threshold (the decision flips), and returns the edited images, the path that led there and what
the model said along it (:class:`Counterfactual`). On a :class:`~xmed.models.FundusClassifier` the
path also records every finding probability and the vCDR, so one can read *which findings* the
edit moved (a shrinking cup, a filled-in rim notch...: :func:`edit_changes`).

Like :mod:`xmed.explain`, this package is both a module and a function: call it for a one-off
counterfactual, or build a method once and call it on many batches
(``AdversarialExplainer(model, max_steps=30)(images, "glaucoma", "decrease")``). Methods are
registered in :data:`COUNTERFACTUALS` (``adversarial``, ``latent_shift``), the edit methods of
:data:`xmed.explain.METHODS`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> cf = counterfactual(net, torch.rand(2, 3, 16, 16), target=0, direction="increase",
    ...                     epsilon=1.0, max_steps=4, fov_threshold=None)
    >>> tuple(cf.images.shape), tuple(cf.difference.shape), cf.method, cf.direction
    ((2, 3, 16, 16), (2, 1, 16, 16), 'adversarial', 'increase')
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError
from xmed.explain.base import (
    METHODS,
    ModelMethod,
    check_images,
    describe_target,
    make_module_callable,
    register_method,
    synchronize,
)
from xmed.explain.targets import Target
from xmed.findings import FINDINGS, VCDR
from xmed.registry import RegistryView

Direction = Literal["decrease", "increase"]
DIRECTIONS: tuple[str, ...] = ("decrease", "increase")
#: One decision threshold for both directions, or a goal per direction.
Threshold = float | Mapping[str, float]


def direction_thresholds(threshold: Threshold) -> dict[str, float]:
    """``{direction: goal probability}`` from one threshold or a mapping with one per direction.

    A goal per direction lets an eye already past the decision threshold still be edited, e.g.
    ``{"decrease": 0.5, "increase": 0.95}`` also shows a glaucomatous eye made *more* glaucomatous.

    Example:
        >>> direction_thresholds(0.5)
        {'decrease': 0.5, 'increase': 0.5}
        >>> direction_thresholds({"increase": 0.9})
        {'decrease': 0.5, 'increase': 0.9}
    """
    if isinstance(threshold, Mapping):
        unknown = set(threshold) - set(DIRECTIONS)
        if unknown:
            raise ConfigError("threshold", f"unknown direction(s) {', '.join(map(str, sorted(unknown)))}; "
                                           f"use {' and/or '.join(DIRECTIONS)}")
        values = {d: threshold.get(d, 0.5) for d in DIRECTIONS}
    else:
        values = dict.fromkeys(DIRECTIONS, threshold)
    for direction, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError("threshold", f"must be a number or {{decrease: …, increase: …}}, "
                                           f"got {value!r} for {direction}")
    return {d: float(v) for d, v in values.items()}


def at_goal(probability: Tensor, direction: str, threshold: float | Tensor) -> Tensor:
    """B bool: whether each probability is on the requested side of ``threshold`` (one goal, or B)."""
    return probability > threshold if direction == "increase" else probability < threshold


def step_goals(probability: Tensor, direction: str, step: float) -> Tensor:
    """B goals a fixed step of the logit from where each image starts: ``sigmoid(logit(p) + step)``
    for ``"increase"``, ``sigmoid(logit(p) − step)`` for ``"decrease"`` — so an image already past
    any fixed goal still has one to move to. (A probability of exactly 0 or 1 has its goal there:
    one it cannot pass.)

    Example:
        >>> [round(v, 4) for v in step_goals(torch.tensor([0.5, 0.97]), "increase", 3.0).tolist()]
        [0.9526, 0.9985]
        >>> round(step_goals(torch.tensor([0.5]), "decrease", 3.0).item(), 4)
        0.0474
    """
    sign = 1.0 if direction == "increase" else -1.0
    return torch.sigmoid(torch.logit(probability) + sign * float(step))


@dataclass
class Counterfactual:
    """Counterfactual images of one batch and the path that led to them (all on the model's device).

    Attributes:
        images: B×C×H×W edited images, in the model's input space (normalised as the input was).
        frames: T×B×C×H×W the path: frame 0 is the input, the last frame is ``images``; in
            between, every ``record_every`` steps, what each image would have returned had it
            stopped there (its best point so far). An image that stopped early stays as it
            stopped in the later frames.
        probability: T×B the target's probability at each frame (sigmoid of the logit for
            ``"glaucoma"``, a finding code, a one-logit or callable target; softmax for a class of
            a multi-class output; the value itself for ``"vcdr"``).
        findings: T×B×10 finding probabilities at each frame (models with named heads), else None.
        vcdr: T×B predicted vCDR at each frame (models with named heads), else None.
        difference: B×1×H×W per-pixel change ``|images - input|`` summed over channels, in the
            model's input space.
        steps: B gradient steps taken per image (0: it met the goal as given and was not edited).
        reached: B bool, whether the final probability is on the requested side of the threshold.
        method: registry name of the method.
        target: the target as text.
        direction: ``"decrease"`` or ``"increase"``.
        seconds: wall time (device synchronised).
        epsilon: B the L2 budget each image had, in the model's input space.
        std: the per-channel std that maps a change in input space to [0, 1] pixel units
            (``Δpixel = Δinput × std``), from the model's data config; None when the input was
            taken to be in pixel units.
        fov: B×1×H×W bool, where edits were allowed (the field of view).
        threshold: the goal in this direction (``reached`` and the validity metric use it): one
            probability, or B of them when each image has its own (``logit_step``: :func:`step_goals`).
    """

    images: Tensor
    frames: Tensor
    probability: Tensor
    findings: Tensor | None
    vcdr: Tensor | None
    difference: Tensor
    steps: Tensor
    reached: Tensor
    method: str
    target: str
    direction: str
    seconds: float
    epsilon: Tensor | None = None
    std: tuple[float, ...] | None = None
    fov: Tensor | None = None
    threshold: float | Tensor = 0.5

    @property
    def original(self) -> Tensor:
        """The input images (frame 0)."""
        return self.frames[0]


class CounterfactualExplainer(ModelMethod):
    """Base class of the edit methods: subclasses set ``name`` and ``title`` and implement :meth:`generate`.

    Args:
        model: any differentiable ``nn.Module`` (pass it in eval mode; its mode is left as it is).
    """

    kind = "edit"

    def generate(self, images: Tensor, target: Target | None, direction: Direction,
                 fov_mask: Tensor | None) -> Counterfactual:
        """The counterfactual of ``images`` (already on the model's device); ``seconds`` is set by
        :meth:`__call__`."""
        raise NotImplementedError

    def __call__(self, images: Tensor, target: Target | None = "glaucoma", direction: Direction = "decrease",
                 fov_mask: Tensor | None = None) -> Counterfactual:
        """Move ``target`` of a B×C×H×W batch in ``direction``; ``fov_mask`` (B×1×H×W or B×H×W
        bool) says where edits are allowed (None: the method's default)."""
        images = check_images(images, self.model)
        if direction not in DIRECTIONS:
            raise ConfigError("direction", f"must be 'decrease' or 'increase', got {direction!r}")
        images = images.detach().to(self.device)
        synchronize(images.device)
        start = time.perf_counter()
        result = self.generate(images, target, direction, fov_mask)
        synchronize(images.device)
        result.seconds = time.perf_counter() - start
        result.method, result.target, result.direction = self.name, describe_target(target), direction
        return result



#: The edit methods of :data:`xmed.explain.METHODS` (kind ``edit``) by name.
COUNTERFACTUALS: RegistryView[type[CounterfactualExplainer]] = METHODS.view(
    "counterfactual method", lambda cls: cls.kind == "edit")


def register_counterfactual(cls: type[CounterfactualExplainer]) -> type[CounterfactualExplainer]:
    """Class decorator: make a method available by its ``name`` (``counterfactual(method=name)``)."""
    if cls.kind != "edit":
        raise ValueError(f"{cls.__name__} is of kind {cls.kind!r}, not an edit method: use register_method")
    return register_method(cls)


def get_counterfactual(method: str) -> type[CounterfactualExplainer]:
    """The counterfactual method registered as ``method``."""
    return COUNTERFACTUALS.lookup(method)


def edit_changes(cf: Counterfactual, index: int, min_change: float = 0.15) -> list[dict[str, Any]]:
    """What the edit of image ``index`` changed, in the model's words: ``[{"code", "from", "to"}]``
    for the predicted vCDR when it moved by at least ``min_change / 4`` and for each finding whose
    probability moved by at least ``min_change`` (from the input to the result, rounded to 3
    decimals), largest first (a vCDR move weighs 4× a probability move). Empty for a
    counterfactual without finding heads (``findings`` and ``vcdr`` None).

    Example:
        >>> findings = torch.zeros(2, 1, len(FINDINGS))
        >>> findings[:, 0, FINDINGS.index("ANRI")] = torch.tensor([0.9, 0.3])
        >>> cf = Counterfactual(images=torch.zeros(1, 3, 2, 2), frames=torch.zeros(2, 1, 3, 2, 2),
        ...                     probability=torch.tensor([[0.8], [0.1]]), findings=findings,
        ...                     vcdr=torch.tensor([[0.74], [0.48]]), difference=torch.zeros(1, 1, 2, 2),
        ...                     steps=torch.tensor([5]), reached=torch.tensor([True]), method="adversarial",
        ...                     target="glaucoma", direction="decrease", seconds=0.0)
        >>> edit_changes(cf, 0)
        [{'code': 'vcdr', 'from': 0.74, 'to': 0.48}, {'code': 'ANRI', 'from': 0.9, 'to': 0.3}]
    """
    before, after = {}, {}
    if cf.vcdr is not None:
        before[VCDR], after[VCDR] = float(cf.vcdr[0, index]), float(cf.vcdr[-1, index])
    if cf.findings is not None:
        before.update(zip(FINDINGS, cf.findings[0, index].tolist()))
        after.update(zip(FINDINGS, cf.findings[-1, index].tolist()))
    return moved_concepts(before, after, min_change, digits=3)


def moved_concepts(before: Mapping[str, float], after: Mapping[str, float], min_change: float = 0.15,
                   digits: int | None = None) -> list[dict[str, Any]]:
    """The rule of :func:`edit_changes` on plain values: ``{code: value}`` before and after an edit
    (finding probabilities, and the vCDR under ``"vcdr"``), each code in both kept when it moved by
    at least ``min_change`` (the vCDR by ``min_change / 4``), largest first (a vCDR move weighs 4×),
    values rounded to ``digits`` when given.

    Example:
        >>> moved_concepts({"vcdr": 0.74, "LC": 0.9, "DH": 0.1}, {"vcdr": 0.48, "LC": 0.2, "DH": 0.15})
        [{'code': 'vcdr', 'from': 0.74, 'to': 0.48}, {'code': 'LC', 'from': 0.9, 'to': 0.2}]
    """
    def weight(code: str) -> float:
        return 4.0 if code == VCDR else 1.0

    def shown(value: float) -> float:
        return value if digits is None else round(value, digits)

    changes = [{"code": code, "from": shown(a), "to": shown(after[code])} for code, a in before.items()
               if code in after and abs(after[code] - a) * weight(code) >= min_change]
    changes.sort(key=lambda c: -abs(c["to"] - c["from"]) * weight(c["code"]))
    return changes


def counterfactual(model: nn.Module, images: Tensor, method: str = "adversarial", target: Target | None = "glaucoma",
                   direction: Direction = "decrease", fov_mask: Tensor | None = None,
                   **options: Any) -> Counterfactual:
    """Counterfactuals of a B×C×H×W batch with the registered ``method``.

    ``options`` go to the method's class (e.g. ``epsilon=``, ``max_steps=``, ``smooth=``; see
    :class:`AdversarialExplainer`). A string target needs a model with named heads; other models
    take a class index, a B-tensor of indices or a callable.
    """
    return get_counterfactual(method)(model, **options)(images, target, direction, fov_mask)


# The methods import the base above: this import stays below it.
from xmed.explain.counterfactual.adversarial import AdversarialExplainer
from xmed.explain.counterfactual.latent_shift import LatentShiftExplainer

make_module_callable(__name__, counterfactual)

__all__ = [
    "COUNTERFACTUALS",
    "DIRECTIONS",
    "AdversarialExplainer",
    "Counterfactual",
    "CounterfactualExplainer",
    "Direction",
    "LatentShiftExplainer",
    "Threshold",
    "at_goal",
    "counterfactual",
    "direction_thresholds",
    "edit_changes",
    "moved_concepts",
    "get_counterfactual",
    "register_counterfactual",
    "step_goals",
]
