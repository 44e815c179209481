"""The front door of the Hydra commands (``xmed-train``, ``xmed-eval``, ``xmed-explain``).

:func:`command` wraps a command's task function: the values users type are checked against one
table (:data:`CONFIG_RULES`) before anything loads, and an :class:`~xmed.errors.XmedError` ends
the run as one line, ``error: <message>``, on stderr and in the run's log file, with exit status
1. Any other exception keeps its traceback (Hydra prints it); ``HYDRA_FULL_ERROR=1`` shows one for
xmed's own errors too. In a sweep (``-m``) a failed job reports its error as it ends and the
sweep goes on; Hydra then names the first failed job's overrides and exits with status 1.

Example:
    >>> from omegaconf import OmegaConf
    >>> check_config(OmegaConf.create({"data": {"batch_size": "abc"}}))
    Traceback (most recent call last):
    ...
    xmed.errors.ConfigError: config key 'data.batch_size': expected an integer ≥ 1, got 'abc'
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from xmed.errors import ConfigError, XmedError
from xmed.explain.baselines import BASELINES
from xmed.metrics.classification import THRESHOLD_RULES

log = logging.getLogger(__name__)
Result = TypeVar("Result")
_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """What one config value must be: ``accepts(value)`` says whether it is; ``expected`` says
    what it should be, in the words of the error message."""

    expected: str
    accepts: Callable[[Any], bool]

    def __or__(self, other: "Rule") -> "Rule":
        return Rule(f"{self.expected} or {other.expected}", lambda v: self.accepts(v) or other.accepts(v))


def _is_number(value: Any) -> bool:
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
                lambda v: _is_number(v) and (minimum is None or v >= minimum) and (above is None or v > above)
                and (below is None or v < below))


def one_of(*choices: Any) -> Rule:
    """Exactly one of ``choices`` (``1`` is not ``True``)."""
    names = ["null" if c is None else str(c) for c in choices]
    return Rule(names[0] if len(names) == 1 else "one of " + ", ".join(names),
                lambda v: any(v == c and type(v) is type(c) for c in choices))


BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
PROBABILITY = Rule("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)


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
    # xmed-explain
    "n": integer(minimum=1),
    "batch_size": integer(minimum=1),
    "split": one_of("train", "val", "test"),  # FundusDataModule's splits
    "label": one_of(None, 0, 1),
    "overlays": integer(minimum=0),
    "randomisation.n_images": integer(minimum=0),
    "faithfulness.n_steps": integer(minimum=1),
    "faithfulness.baseline": one_of(*BASELINES),
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
    """The devices a config asks for (xmed-eval's ``device``, ``trainer.accelerator``) exist here."""
    device = OmegaConf.select(cfg, "device", default=None)
    if device is not None:
        check_device("device", device, "use device=cpu")
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


class JobFailed(CompactHydraException):
    """A sweep job that ended on an :class:`~xmed.errors.XmedError`: Hydra prints it without a
    traceback once the sweep is over."""


def command(task: Callable[[DictConfig], Result]) -> Callable[[DictConfig], Result]:
    """The task function of a Hydra command, placed under ``@hydra.main``: the config is checked
    (:func:`check_config`) before the task runs, and an :class:`~xmed.errors.XmedError` is
    reported as described in this module's docstring.

    Example::

        @hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="eval")
        @command
        def main(cfg: DictConfig) -> float | None:
            return evaluate(cfg).get("auroc")
    """

    @functools.wraps(task)  # Hydra names the job (and its log file) after the wrapped function's module
    def run(cfg: DictConfig) -> Result:
        try:
            check_config(cfg)
            return task(cfg)
        except XmedError as err:
            log.error("%s", err)  # Hydra's file handler writes it into <run>/<job>.log
            print(f"error: {err}", file=sys.stderr, flush=True)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if _in_sweep():  # SystemExit would end the whole sweep; Hydra goes on past an Exception
                raise JobFailed(f"error: {err}") from None
            sys.exit(1)

    return run


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
