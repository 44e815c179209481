"""Checks of the numbers a function or class is given; each raises :class:`~xmed.errors.ConfigError`
naming the argument (the config key a user sets) and returns the value as its type.

Example:
    >>> int_at_least("max_steps", 3, 1), positive("epsilon", 2), non_negative("tv_weight", 0)
    (3, 2.0, 0.0)
    >>> int_at_least("max_steps", 0, 1)
    Traceback (most recent call last):
    ...
    xmed.errors.ConfigError: config key 'max_steps': must be an int >= 1, got 0
"""

from __future__ import annotations

import math
from typing import Any

from xmed.errors import ConfigError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive(key: str, value: Any) -> float:
    """A finite number above 0."""
    if not _is_number(value) or not value > 0:
        raise ConfigError(key, f"must be a positive number, got {value!r}")
    return float(value)


def non_negative(key: str, value: Any) -> float:
    """A finite number of at least 0."""
    if not _is_number(value) or not value >= 0:
        raise ConfigError(key, f"must be a non-negative number, got {value!r}")
    return float(value)


def int_at_least(key: str, value: Any, minimum: int) -> int:
    """A whole number (not a bool, not 2.0) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, f"must be an int >= {minimum}, got {value!r}")
    return value
