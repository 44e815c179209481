"""Public keywords and config keys that were renamed: read under their old names, with a warning.

xmed's API spells the British way (``colour``, ``normalise``); a name published before with the
American spelling, or a name that changed, is still read under it for a while, with a
:class:`DeprecationWarning` naming the new one.

Example:
    >>> import warnings
    >>> @renamed_keywords(color="colour")
    ... def jitter(colour: bool = True) -> bool:
    ...     return colour
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     jitter(color=False), jitter(colour=False), str(caught[0].message)
    (False, False, "jitter: 'color' is now 'colour'; the old name is read for now and will go")
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Mapping, TypeVar

from xmed.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def renamed(options: Mapping[str, Any], names: Mapping[str, str], where: str, stacklevel: int = 2) -> dict[str, Any]:
    """``options`` with each old key of ``names`` (old -> new) under its new one, warning once per
    old key found (a :class:`DeprecationWarning` naming ``where``: a config group, a function).
    Both names given raise :class:`~xmed.errors.ConfigError` naming ``where.old``.

    Example:
        >>> import warnings
        >>> warnings.simplefilter("ignore", DeprecationWarning)
        >>> renamed({"color": False, "hflip": 0.5}, {"color": "colour"}, "data.augment")
        {'hflip': 0.5, 'colour': False}
        >>> renamed({"color": False, "colour": True}, {"color": "colour"}, "data.augment")
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'data.augment.color': is the old name of 'colour', given both: keep 'colour'
    """
    out = dict(options)
    for old, new in names.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"{where}.{old}", f"is the old name of {new!r}, given both: keep {new!r}")
        warnings.warn(f"{where}: {old!r} is now {new!r}; the old name is read for now and will go",
                      DeprecationWarning, stacklevel=stacklevel + 1)
        out[new] = out.pop(old)
    return out


def renamed_keywords(**names: str) -> Callable[[F], F]:
    """A decorator: the function (or ``__init__``) also takes each old keyword of ``names``
    (``old="new"``), passed on under its new name with a :class:`DeprecationWarning` (see
    :func:`renamed`); both names given raise :class:`TypeError`, as a keyword given twice does. The
    function's signature shows the new names only."""

    def decorate(function: F) -> F:
        where = function.__qualname__.removesuffix(".__init__")

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            old = names.keys() & kwargs.keys()
            if not old:
                return function(*args, **kwargs)
            both = sorted(name for name in old if names[name] in kwargs)
            if both:
                raise TypeError(f"{where}() got {both[0]!r} and its new name {names[both[0]]!r}: keep the new one")
            return function(*args, **renamed(kwargs, names, where))

        return call  # type: ignore[return-value]

    return decorate
