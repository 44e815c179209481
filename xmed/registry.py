"""Registries: a name -> class table filled by a class decorator, with a lookup that names the known keys.

The explanation methods (``xmed.explain.METHODS``: saliency explainers, edit methods and the
rationale) and the metrics (``xmed.metrics.METRICS``) are each one :class:`Registry`. A registry is a
``dict`` (name -> class, in the order of registration), so it reads like one: ``list(METHODS)``,
``METHODS["gradcam"]``. A :class:`RegistryView` shows the part of a registry one kind of class
makes up (``xmed.explain.EXPLAINERS``: the saliency explainers), read at each use, so that a class
registered later is in it too.

Example:
    >>> SHAPES = Registry("shape", aliases={"box": "square"})
    >>> @SHAPES.register
    ... class Square:
    ...     name, corners = "square", 4
    >>> SHAPES.lookup("box").__name__, list(SHAPES)
    ('Square', ['square'])
    >>> SHAPES.lookup("circle")
    Traceback (most recent call last):
    ...
    xmed.errors.ConfigError: config key 'shape': unknown shape 'circle'; known: square
    >>> POLYGONS = SHAPES.view("polygon", lambda cls: cls.corners > 0)
    >>> @SHAPES.register
    ... class Circle:
    ...     name, corners = "circle", 0
    >>> list(SHAPES), list(POLYGONS), "circle" in POLYGONS
    (['square', 'circle'], ['square'], False)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Generic, Iterator, TypeVar

from xmed.errors import ConfigError

__all__ = ["Registry", "RegistryView"]

T = TypeVar("T", bound=type)


class _Lookup(Generic[T]):
    """:meth:`lookup` for a name -> class table with a ``kind``, a config ``key`` and ``aliases``."""

    kind: str
    key: str
    aliases: Mapping[str, str]

    def lookup(self, name: str) -> T:
        """The class registered as ``name`` (or as what the alias ``name`` stands for).

        Raises:
            ConfigError: for an unknown name, listing the known ones.
        """
        registered = self.aliases.get(name, name)
        if registered not in self:
            raise ConfigError(self.key, f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}")
        return self[registered]


class Registry(dict[str, T], _Lookup[T]):
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

    def view(self, kind: str, keep: Callable[[T], bool], key: str | None = None) -> RegistryView[T]:
        """The classes of this registry that ``keep`` accepts, as a :class:`RegistryView` of ``kind``."""
        return RegistryView(self, kind, keep, key)


class RegistryView(_Lookup[T], Mapping[str, T]):
    """The classes of ``registry`` that ``keep`` accepts, in its order, read at each use (a class
    registered later is in the view when ``keep`` accepts it). It reads like the registry — a
    read-only mapping with :meth:`lookup` — with messages naming its own ``kind``; the registry's
    aliases of the classes it shows are its aliases.

    Args:
        registry: where the classes are registered.
        kind: what the classes of the view are, for messages.
        keep: whether a class of the registry is one of the view's.
        key: the config key an unknown name is reported under (default: the registry's).
    """

    def __init__(self, registry: Registry[T], kind: str, keep: Callable[[T], bool], key: str | None = None):
        self.registry, self.kind, self.keep = registry, kind, keep
        self.key = key or registry.key

    @property
    def aliases(self) -> dict[str, str]:
        return {alias: name for alias, name in self.registry.aliases.items() if name in self}

    def __getitem__(self, name: str) -> T:
        cls = self.registry[name]
        if not self.keep(cls):
            raise KeyError(name)
        return cls

    def __iter__(self) -> Iterator[str]:
        return (name for name, cls in list(self.registry.items()) if self.keep(cls))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!r}, {dict(self)!r})"
