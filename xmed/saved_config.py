"""A config read from disk is data: nothing in it is imported or called by name.

A Hydra config names classes to build (``_target_: xmed.data.FundusDataModule``), and
``hydra.utils.instantiate`` imports and calls whatever such a value names — ``builtins.open``,
``torch.load``, ``subprocess.run`` — before any check of xmed's can run. A config a command
composes from its own groups and the user's overrides is the user's own; a config read back from
a folder someone handed over (an ``xmed-explain`` run's ``.hydra/config.yaml``) is not. Such a
config is checked here, whole, before anything is built from it: every ``_target_`` must be one
that xmed's shipped configs name (:func:`shipped_targets`), and the part that is built must still
hold only those once its interpolations are resolved (:func:`buildable`).

Example:
    >>> check_targets({"data": {"_target_": "xmed.data.FundusDataModule"}}, "run/.hydra/config.yaml")
    >>> check_targets({"callbacks": [{"_target_": "builtins.open"}]}, "run/.hydra/config.yaml")
    Traceback (most recent call last):
    ...
    xmed.errors.UnsafeConfigError: refused config run/.hydra/config.yaml: key 'callbacks[0]._target_' names 'builtins.open', ...
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from typing import Any, Iterator

from xmed.errors import ConfigError, PathError, UnsafeConfigError, XmedError

TARGET = "_target_"
#: the largest config file read back (a saved command config is a few kilobytes)
MAX_CONFIG_BYTES = 10_000_000


@functools.lru_cache(maxsize=None)
def shipped_targets(group: str | None = None) -> frozenset[str]:
    """Every ``_target_`` the configs shipped in ``xmed.configs`` name — those of one config group
    (``"data"``, ``"trainer"``…) when ``group`` is given.

    Example:
        >>> sorted(shipped_targets("data"))
        ['xmed.data.FundusDataModule']
    """
    import yaml

    root = resources.files("xmed.configs")
    folders = [root / group] if group else [root]
    targets: set[str] = set()
    while folders:
        folder = folders.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                folders.append(entry)
            elif entry.name.endswith(".yaml"):
                targets.update(value for _, value in targets_in(yaml.safe_load(entry.read_text()))
                               if isinstance(value, str))
    return frozenset(targets)


def targets_in(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(key path, value)`` of every ``_target_`` key in nested mappings and lists.

    Example:
        >>> list(targets_in({"a": [{"_target_": "x.Y"}]}))
        [('a[0]._target_', 'x.Y')]
    """
    return ((where, value) for where, value in _walk(node, path) if where.rpartition(".")[2] == TARGET)


def check_targets(config: Any, source: str | os.PathLike, allowed: frozenset[str] | None = None,
                  prefix: str = "") -> None:
    """Raise :class:`~xmed.errors.UnsafeConfigError` naming ``source`` and the key when any
    ``_target_`` in ``config`` (a plain container or an OmegaConf node, read as written: an
    interpolation is not resolved here) is not in ``allowed`` (default: every shipped target)."""
    allowed = shipped_targets() if allowed is None else allowed
    for where, value in targets_in(_plain(config, resolve=False), prefix):
        if not isinstance(value, str) or value not in allowed:
            raise UnsafeConfigError(source, f"key {where!r} names {value!r}, which xmed does not build from a "
                                            f"config read from disk (it builds only the classes its own configs "
                                            f"name: {', '.join(sorted(allowed))})")


def load_saved_config(path: str | os.PathLike):
    """The OmegaConf config of a YAML file read from disk (e.g. a run's ``.hydra/config.yaml``),
    once every ``_target_`` in it has passed :func:`check_targets`; a file that is not a YAML
    mapping raises :class:`~xmed.errors.PathError` naming it."""
    import yaml
    from omegaconf import DictConfig, OmegaConf

    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise PathError(path, f"not a config: larger than {MAX_CONFIG_BYTES // 1_000_000} MB")
        text = open(path, encoding="utf-8").read()
        # an alias repeats a node wherever it is named: nine aliases nested eight deep are 43 million
        # values from a few lines (memory exhausted); a config a command saved has none
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise PathError(path, "not a config: it uses YAML aliases (*name), which a saved config never holds")
        config = OmegaConf.create(text)  # YAML's safe loader: no tags that build Python objects
    except PathError:
        raise
    except Exception as err:  # OS, yaml and omegaconf errors have no common base
        raise PathError(path, f"not a readable YAML config ({type(err).__name__}: {err})") from None
    if not isinstance(config, DictConfig):
        raise PathError(path, "not a config (a YAML mapping of settings)")
    check_targets(config, path)
    return config


def buildable(node: Any, source: str | os.PathLike, group: str, key: str | None = None) -> dict | list:
    """``node`` of a config read from ``source``, resolved into plain containers that
    ``hydra.utils.instantiate`` may build: each ``_target_`` one that the shipped configs of
    ``group`` name, and no interpolation left (an escaped ``${…}`` would be resolved again by
    ``instantiate``, and ``oc.create``/``oc.decode`` can make a ``_target_`` from a string).
    Errors name ``source`` and the key (``key`` is the node's own, e.g. ``data``).

    Example:
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({"root": "/d", "data": {"_target_": "xmed.data.FundusDataModule",
        ...                                                 "root": "${root}"}})
        >>> buildable(cfg.data, "run/.hydra/config.yaml", "data")["root"]
        '/d'
    """
    key = key or group
    try:
        plain = _plain(node, resolve=True)
    except Exception as err:  # omegaconf's interpolation errors (a missing key, an unknown resolver)
        raise UnsafeConfigError(source, f"key {key!r} cannot be resolved: {err}") from None
    check_targets(plain, source, shipped_targets(group), prefix=key)
    for where, text in _walk(plain, key):
        if isinstance(text, str) and "${" in text:
            raise UnsafeConfigError(source, f"key {where!r} still holds an interpolation after resolving "
                                            f"({text!r}): refused")
    return plain


def instantiate_group(node: Any, group: str, source: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures name the config group (``data``, ``model``…).
    ``source``: the file ``node`` was read from, when the command did not compose it itself; it
    is then built only as :func:`buildable` allows (xmed's own classes).

    Example:
        >>> instantiate_group({"_target_": "pathlib.PurePosixPath", "_args_": ["runs", "a"]}, "paths")
        PurePosixPath('runs/a')
    """
    # here: Hydra and OmegaConf load with what builds from a config, not with `import xmed.saved_config`
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if source is not None:
        node = OmegaConf.create(buildable(node, source, group))
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, XmedError):
            raise cause from None
        raise ConfigError(group, str(cause or err)) from None


def _plain(node: Any, resolve: bool) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=resolve) if OmegaConf.is_config(node) else node


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(key path, value)`` of ``node`` and of everything nested in it."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")
