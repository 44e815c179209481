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

import fnmatch
import functools
import re
import warnings
from typing import Any, Callable, Mapping, TypeVar

from xmed.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

#: config keys renamed since they were published, old -> new, by the config node that holds them
#: (``*``: any entry of a group); a saved config, a keyword and a command-line override are read
#: under the old name with a warning.
RENAMED_CONFIG_KEYS: dict[str, dict[str, str]] = {
    "data.augment": {"color": "colour"},
    "explainer.*": {"normalize_gradient": "normalise_gradient"},   # the latent shift's option
}


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


def renamed_override(override: str) -> tuple[str, str | None]:
    """A Hydra command-line override with a renamed key (:data:`RENAMED_CONFIG_KEYS`) under its new
    name, and the notice to print (None when nothing was renamed). Hydra itself would answer the
    old key with "not in struct".

    Example:
        >>> renamed_override("+data.augment.color=false")
        ('+data.augment.colour=false', 'data.augment.color is now data.augment.colour; the old name is read for now and will go')
        >>> renamed_override("data.augment.hflip=0")
        ('data.augment.hflip=0', None)
    """
    prefix = re.match(r"[+~]*", override).group()
    key, equals, value = override[len(prefix):].partition("=")
    node, _, leaf = key.rpartition(".")
    for group, names in RENAMED_CONFIG_KEYS.items():
        if leaf in names and fnmatch.fnmatchcase(node, group):
            new = f"{node}.{names[leaf]}"
            return f"{prefix}{new}{equals}{value}", f"{key} is now {new}; the old name is read for now and will go"
    return override, None
