"""The decision a model's probability reads as, and the threshold it is read at: the one place
``xmed-predict``, ``xmed-explain``'s rationales, the review and the evaluation decide.

A model decides "referable glaucoma" from its operating threshold on: the one chosen on
validation when it was trained (``model.threshold``), unless the user gives one. A probability
that is not a finite number is never read as a decision.

Example:
    >>> from types import SimpleNamespace
    >>> model = SimpleNamespace(threshold=0.42)
    >>> operating_threshold(model), operating_threshold(model, 0.6), operating_threshold(object())
    (0.42, 0.6, 0.5)
    >>> decision(0.45, 0.42), decision(0.41, 0.42), is_referable(0.42, 0.42)
    ('referable glaucoma', 'no referable glaucoma', True)
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from xmed.errors import ConfigError, InputError

Decision = Literal["referable glaucoma", "no referable glaucoma"]
REFERABLE, NOT_REFERABLE = get_args(Decision)
#: the threshold of a model that carries none of its own (a plain classifier, by convention)
DEFAULT_THRESHOLD = 0.5


def check_threshold(threshold: Any, key: str = "model.net.threshold") -> float | None:
    """``threshold`` as a float in [0, 1], or None; anything else raises :class:`ConfigError`
    naming ``key``.

    Example:
        >>> check_threshold(0.42), check_threshold(None)
        (0.42, None)
    """
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(key, f"must be a probability in [0, 1], got {threshold!r}")
    return float(threshold)


def operating_threshold(model: Any, override: Any = None, *, fallback: float | None = DEFAULT_THRESHOLD,
                        key: str = "threshold", source: str = "the model") -> float:
    """The threshold ``model``'s decisions are read at: ``override`` when given (checked, naming
    ``key``), else the model's own (``model.threshold``), else ``fallback``. With ``fallback=None``
    a model that carries none raises :class:`ConfigError` on ``key`` naming ``source`` (the model's
    folder): where a decision is the output (``xmed-predict``), no convention stands in for the
    model's operating point.
    """
    if override is not None:
        return check_threshold(override, key)
    own = getattr(model, "threshold", None)
    if own is not None:
        return float(own)
    if fallback is None:
        raise ConfigError(key, f"{source} carries no operating threshold (exported before models kept one); "
                               f"pass {key}=<P(glaucoma)>, e.g. the one in its model card")
    return fallback


def is_referable(probability: Any, threshold: float) -> Any:
    """Whether ``probability`` reads as referable glaucoma at ``threshold`` (at or above it); a
    number, an array or a tensor (element-wise). Non-finite values are the caller's to set apart."""
    return probability >= threshold


def decision(probability: float, threshold: float) -> Decision:
    """The decision one probability reads as; a probability that is not finite raises
    :class:`InputError` (a NaN is never a diagnosis)."""
    if not math.isfinite(probability):
        raise InputError("probability", f"is {probability}: the model's output gives no decision")
    return REFERABLE if is_referable(probability, threshold) else NOT_REFERABLE
