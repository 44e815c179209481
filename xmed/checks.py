"""Checks of the numbers a function or class is given; each raises :class:`~xmed.errors.ConfigError`
naming the argument (the config key a user sets) and returns the value as its type. :class:`Rule`
says what a config value must be, in the words of an error message (``xmed.cli.config_rules``);
:func:`at_least` and :func:`json_object` are the same checks as ``argparse`` types (``xmed-data``).

Example:
    >>> int_at_least("max_steps", 3, 1), positive("epsilon", 2), non_negative("tv_weight", 0)
    (3, 2.0, 0.0)
    >>> int_at_least("max_steps", 0, 1)
    Traceback (most recent call last):
    ...
    xmed.errors.ConfigError: config key 'max_steps': must be an int >= 1, got 0
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

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


@dataclass(frozen=True)
class Rule:
    """What one config value must be: ``accepts(value)`` says whether it is; ``expected`` says
    what it should be, in the words of the error message."""

    expected: str
    accepts: Callable[[Any], bool]

    def __or__(self, other: "Rule") -> "Rule":
        return Rule(f"{self.expected} or {other.expected}", lambda v: self.accepts(v) or other.accepts(v))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int | None = None) -> Rule:
    """A whole number (not a bool, not 2.0), at least ``minimum``."""
    return Rule("an integer" + (f" ≥ {minimum}" if minimum is not None else ""),
                lambda v: isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum))


def number(minimum: float | None = None, above: float | None = None, below: float | None = None) -> Rule:
    """A finite number: ``minimum`` ≤ it, ``above`` < it, it < ``below`` (each where given)."""
    bounds = [f"{sign} {bound:g}" for sign, bound in (("≥", minimum), (">", above), ("<", below))
              if bound is not None]
    return Rule(" ".join(["a number", " and ".join(bounds)]).strip(),
                lambda v: is_number(v) and (minimum is None or v >= minimum) and (above is None or v > above)
                and (below is None or v < below))


def one_of(*choices: Any) -> Rule:
    """Exactly one of ``choices`` (``1`` is not ``True``)."""
    names = ["null" if c is None else str(c) for c in choices]
    return Rule(names[0] if len(names) == 1 else "one of " + ", ".join(names),
                lambda v: any(v == c and type(v) is type(c) for c in choices))


BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
PROBABILITY = Rule("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1)


def json_object(text: str) -> dict:
    """An argument given as a JSON object; anything else is an argparse error naming the argument,
    and for bad JSON the position.

    Example:
        >>> json_object('{"split": "test"}')
        {'split': 'test'}
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): "
                                         f"{text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"split\": \"test\"}}', got {text!r}")
    return value


#: the most digits a JSON integer read by :func:`strict_json` may have (Python refuses more than 4300)
JSON_DIGITS = 100


def strict_json(data: str | bytes) -> Any:
    """``data`` parsed as JSON text, refusing what Python's reader would take but nothing else
    should: NaN and Infinity, integers of more than :data:`JSON_DIGITS` digits, lone surrogates
    (``"\\ud800"``, which no text file can hold). Raises ValueError with a one-line reason for
    those, for bad JSON and for nesting too deep to read (never RecursionError).

    Example:
        >>> strict_json('{"location": 4}')
        {'location': 4}
        >>> strict_json("[" * 100_000)
        Traceback (most recent call last):
        ...
        ValueError: nested too deeply
    """
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_int=_bounded_int)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{err.msg} at line {err.lineno}, column {err.colno}") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except UnicodeEncodeError as err:
        raise ValueError(f"holds a lone surrogate {err.object[err.start:err.end]!r}, which is not text") from None
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > JSON_DIGITS:
        raise ValueError(f"holds an integer of {len(text.lstrip('-'))} digits; at most {JSON_DIGITS}")
    return int(text)


def at_least(minimum: int):
    """An argparse ``type``: a whole number, at least ``minimum``.

    Example:
        >>> at_least(1)("3")
        3
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {minimum}, got {text!r}")
        return value

    return parse
