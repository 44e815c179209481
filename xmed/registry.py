"""Registries: a name -> class table filled by a class decorator, with a lookup that names the known keys.

The explainers (``xmed.explain.EXPLAINERS``), the counterfactual methods
(``xmed.explain.counterfactual.COUNTERFACTUALS``) and the metrics (``xmed.metrics.METRICS``) are each
one :class:`Registry`. A registry is a ``dict`` (name -> class, in the order of registration), so it
reads like one: ``list(EXPLAINERS)``, ``EXPLAINERS["gradcam"]``.

Example:
    >>> SHAPES = Registry("shape", aliases={"box": "square"})
    >>> @SHAPES.register
    ... class Square:
    ...     name = "square"
    >>> SHAPES.lookup("box").__name__, list(SHAPES)
    ('Square', ['square'])
    >>> SHAPES.lookup("circle")
    Traceback (most recent call last):
    ...
    xmed.errors.ConfigError: config key 'shape': unknown shape 'circle'; known: square
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from xmed.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T", bound=type)


class Registry(dict[str, T]):
    """Classes by their ``name`` attribute.

    Args:
        kind: what the classes are, for messages (``"explainer"``, ``"metric"``).
        key: the config key an unknown name is reported under (default: ``kind``).
        aliases: other names :meth:`lookup` accepts (alias -> registered name).
    """

    def __init__(self, kind: str, key: str | None = None, aliases: Mapping[str, str] | None = None):
        super().__init__()
        self.kind = kind
        self.key = key or kind
        self.aliases = dict(aliases or {})

    def register(self, cls: T) -> T:
        """Class decorator: hold ``cls`` under its ``name``; a name taken by another class is an error."""
        name = getattr(cls, "name", "")
        if not name:
            raise ValueError(f"{cls.__name__} has no name to register it under")
        if name in self and self[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.kind} name {name!r} is already taken by {self[name].__qualname__}")
        self[name] = cls
        return cls

    def lookup(self, name: str) -> T:
        """The class registered as ``name`` (or as what the alias ``name`` stands for).

        Raises:
            ConfigError: for an unknown name, listing the known ones.
        """
        registered = self.aliases.get(name, name)
        if registered not in self:
            raise ConfigError(self.key, f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}")
        return self[registered]
