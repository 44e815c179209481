"""The Lightning ``Trainer`` of a command's config (a config group's object is
:func:`xmed.saved_config.instantiate_group`; a data module prepared for a trained model,
:func:`xmed.data.datamodule.datamodule_for_model`).

Example::

    trainer, precision = build_trainer(cfg.trainer, auto_precision=FULL_PRECISION, logger=False)
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xmed.runtime import Choice, choose_precision, is_auto
from xmed.saved_config import instantiate_group

log = logging.getLogger(__name__)

#: What ``trainer.precision: auto`` means when a trained model is run (evaluation, prediction,
#: explanation): full precision — predictions are reported to six decimals and maps and edits are
#: gradients, which bf16 would coarsen. A precision the user sets is used as given.
FULL_PRECISION = Choice("32-true", "a trained model is run in full precision")


def build_trainer(trainer_cfg: DictConfig, auto_precision: Choice | None = None, **kwargs: Any):
    """The Lightning ``Trainer`` of a ``trainer`` config group, its ``precision: auto`` resolved
    for this machine (:func:`xmed.runtime.choose_precision`) or to ``auto_precision`` when given;
    returns ``(trainer, precision choice)`` and logs the choice and its reason."""
    if auto_precision is not None and is_auto(trainer_cfg.get("precision")):
        precision = auto_precision
    else:
        precision = choose_precision(trainer_cfg.get("accelerator"), trainer_cfg.get("precision"))
    log.info("precision %s", precision)
    node = OmegaConf.to_container(trainer_cfg, resolve=True)
    node["precision"] = precision.value
    return instantiate_group(OmegaConf.create(node), "trainer", **kwargs), precision


def inference_trainer(trainer_cfg: DictConfig, out_dir, **kwargs: Any):
    """:func:`build_trainer` for running a trained model: full precision unless set, no logger,
    no checkpoints, Lightning's files under ``out_dir``."""
    return build_trainer(trainer_cfg, auto_precision=FULL_PRECISION, logger=False, enable_checkpointing=False,
                         default_root_dir=str(out_dir), **kwargs)
