"""The values users type on a command line, checked before anything loads: one table of config
keys (:data:`CONFIG_RULES`) and the devices a config asks for.

Example:
    >>> from omegaconf import OmegaConf
    >>> check_config(OmegaConf.create({"data": {"batch_size": "abc"}}))
    Traceback (most recent call last):
    ...
    xmed.errors.ConfigError: config key 'data.batch_size': expected an integer ≥ 1, got 'abc'
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from xmed.checks import BOOLEAN, PROBABILITY, Rule, integer, number, one_of
from xmed.errors import ConfigError
from xmed.models.baselines import BASELINES
from xmed.metrics.classification import THRESHOLD_RULES

_ABSENT = object()


#: The values users type on the command line, by full key (``a.b.*``: every entry of ``a.b``); keys
#: a command's config lacks are not checked. Settings that their own class checks as it is built,
#: before any data loads (``model.class_balance``, ``model.net.mode``, ``data.dataset``…), are left to it.
CONFIG_RULES: dict[str, Rule] = {
    "seed": integer(),
    "deterministic": BOOLEAN,
    "data.batch_size": integer(minimum=1),
    "data.image_size": integer(minimum=16),
    "data.num_workers": integer(minimum=0) | one_of("auto"),
    "data.pin_memory": BOOLEAN,
    "data.use_published_splits": BOOLEAN,
    "data.seed": integer(),
    "data.cache_mb": number(minimum=0),
    "data.normalise_on_device": BOOLEAN,
    "data.pipeline": one_of("auto", "cpu", "gpu"),
    "data.on_error": one_of("raise", "skip"),
    "data.augment.hflip": PROBABILITY,
    "data.augment.vflip": PROBABILITY,
    "data.augment.rotate": number(minimum=0),
    "model.lr": number(above=0),
    "model.weight_decay": number(minimum=0),
    "model.warmup_epochs": integer(minimum=0),
    "model.sequential_epochs": integer(minimum=0),
    "model.loss_weights.*": number(minimum=0),
    "model.compile": BOOLEAN,
    "model.channels_last": BOOLEAN | one_of("auto"),
    "model.net.pretrained": BOOLEAN,
    "model.net.drop_rate": number(minimum=0, below=1),
    "trainer.max_epochs": integer(minimum=1),
    "trainer.min_epochs": integer(minimum=0),
    "test": BOOLEAN,
    "overwrite": BOOLEAN,
    "allow_remote_checkpoint": BOOLEAN,
    "n_bootstrap": integer(minimum=0),
    "threshold_rule": one_of(*THRESHOLD_RULES),
    # xmed-predict
    "threshold": PROBABILITY | one_of(None),
    "format": one_of("auto", "photos", "dicom"),
    "on_error": one_of("raise", "skip"),
    "num_workers": integer(minimum=0) | one_of("auto"),
    "pipeline": one_of("auto", "cpu", "gpu"),
    # xmed-explain
    "n": integer(minimum=1),
    "batch_size": integer(minimum=1) | one_of("auto"),
    "autocast": BOOLEAN | one_of("auto"),
    "split": one_of("train", "val", "test"),  # FundusDataModule's splits
    "label": one_of(None, 0, 1),
    "overlays": integer(minimum=0),
    "randomisation.n_images": integer(minimum=0),
    "faithfulness.n_steps": integer(minimum=1),
    "faithfulness.baseline": one_of(*BASELINES),
    # xmed-study
    "progress": BOOLEAN,
    "resume": BOOLEAN,
    "rationale": BOOLEAN,
    "min_change": number(above=0, below=1),
    "adversarial.max_steps": integer(minimum=1) | one_of(None),   # xmed-study: None keeps the review's
}


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError`, naming the full key, for the first required value left unset
    (``???``), the first value outside :data:`CONFIG_RULES`, or a device this machine lacks
    (:func:`check_devices`).

    Example:
        >>> check_config(OmegaConf.create({"model": {"lr": 0.01}, "n_bootstrap": 100}))
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], f"has no value; give it on the command line, e.g. {missing[0]}=…")
    for pattern, rule in CONFIG_RULES.items():
        for key, value in _values(cfg, pattern):
            if not rule.accepts(value):
                shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
                raise ConfigError(key, f"expected {rule.expected}, got {shown!r}")
    check_devices(cfg)


def _values(cfg: DictConfig, pattern: str) -> Iterator[tuple[str, Any]]:
    """``(full key, value)`` of each key ``pattern`` names in ``cfg`` (none where it is absent)."""
    parent, _, last = pattern.rpartition(".")
    if last != "*":
        value = OmegaConf.select(cfg, pattern, default=_ABSENT)
        if value is not _ABSENT:
            yield pattern, value
        return
    node = OmegaConf.select(cfg, parent, default=None)
    if isinstance(node, DictConfig):
        for name in node:
            yield f"{parent}.{name}", node[name]


def check_devices(cfg: DictConfig) -> None:
    """The devices a config's ``trainer.accelerator`` asks for exist here."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default=None)
    if accelerator in ("gpu", "cuda", "mps"):
        check_device("trainer.accelerator", "cuda" if accelerator == "gpu" else accelerator, "use trainer=cpu")


def check_device(key: str, value: Any, hint: str) -> None:
    """Raise :class:`ConfigError` on ``key`` unless ``value`` names a torch device this machine
    has (``cpu``, ``cuda``, ``cuda:1``, ``mps``); ``hint`` says what to use instead.

    Example:
        >>> check_device("device", "cpu", "use device=cpu")
    """
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ConfigError(key, f"expected a torch device such as cpu, cuda or cuda:1, got {value!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(key, f"CUDA was asked for but torch sees no GPU (torch.cuda.is_available() is False); "
                                   f"{hint}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(key, f"{device} was asked for but torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(key, f"MPS was asked for but torch sees none (torch.backends.mps.is_available() is False); "
                               f"{hint}")
