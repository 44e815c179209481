"""One module per public glaucoma data set, each read as it is published.

Data sets are looked up by name in :data:`DATASETS` (:mod:`xmed.data.datasets.registry`, the
one place a data set is named) and imported only when used, so that a user of one data set never
needs another's dependencies.

Example:
    >>> from xmed.data.datasets import get_dataset, DATASETS
    >>> "refuge" in DATASETS
    True
    >>> ds = get_dataset("refuge", root="/data/REFUGE", on_error="skip")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from xmed.data.datasets.base import (
    FundusDataset, Record, Skip, SkippedSample, collate_samples, to_tensor_sample,
)
from xmed.data.datasets.registry import DATASETS
from xmed.errors import ConfigError


def dataset_class(name: str) -> type[FundusDataset]:
    """The class registered under ``name``; an unknown name raises :class:`ConfigError`."""
    if name not in DATASETS:
        raise ConfigError("data.dataset", f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    module_name, class_name = DATASETS[name].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def get_dataset(name: str, root: Any = None, **kwargs: Any) -> FundusDataset:
    """Instantiate the data set registered under ``name`` (see :class:`FundusDataset` args). A data
    set read from a folder without ``root`` raises :class:`ConfigError` on ``data.root``; an option
    its class does not take, on ``data.dataset_options``."""
    cls = dataset_class(name)
    root_parameter = inspect.signature(cls).parameters.get("root")
    if root is None and root_parameter is not None and root_parameter.default is inspect.Parameter.empty:
        raise ConfigError("data.root", f"data set {name!r} is read from a folder; give its path")
    try:
        return cls(root, **kwargs) if root is not None else cls(**kwargs)
    except TypeError as err:  # most classes pass **kwargs on to FundusDataset: only the call can tell
        named = [key for key in kwargs if f"'{key}'" in str(err)]
        if not named:
            raise
        raise ConfigError("data.dataset_options", f"option {named[0]!r} of data set {name!r}: {err}") from None


__all__ = [
    "DATASETS", "FundusDataset", "Record", "Skip", "SkippedSample",
    "collate_samples", "dataset_class", "get_dataset", "to_tensor_sample",
]
