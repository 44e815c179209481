"""Objects built from a command's config: a config group's object, the Lightning ``Trainer``, a
data module prepared for a trained model.

Example::

    trainer, precision = build_trainer(cfg.trainer, auto_precision=FULL_PRECISION, logger=False)
    datamodule = datamodule_for_model(cfg.data, load_model("outputs/demo/train/model"))
"""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xmed.errors import ConfigError, XmedError
from xmed.runtime import Choice
from xmed.saved_config import buildable

log = logging.getLogger(__name__)

#: What ``trainer.precision: auto`` means when a trained model is run (evaluation, prediction,
#: explanation): full precision — predictions are reported to six decimals and maps and edits are
#: gradients, which bf16 would coarsen. A precision the user sets is used as given.
FULL_PRECISION = Choice("32-true", "a trained model is run in full precision")


def instantiate_group(node: DictConfig | dict, group: str, source: str | os.PathLike | None = None,
                      **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures name the config group (``data``, ``model``…).
    ``source``: the file ``node`` was read from, when the command did not compose it itself; it
    is then built only as :func:`xmed.saved_config.buildable` allows (xmed's own classes)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if source is not None:
        node = OmegaConf.create(buildable(node, source, group))
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, XmedError):
            raise cause from None
        raise ConfigError(group, str(cause or err)) from None


def build_trainer(trainer_cfg: DictConfig, auto_precision: Choice | None = None, **kwargs: Any):
    """The Lightning ``Trainer`` of a ``trainer`` config group, its ``precision: auto`` resolved
    for this machine (:func:`xmed.runtime.choose_precision`) or to ``auto_precision`` when given;
    returns ``(trainer, precision choice)`` and logs the choice and its reason."""
    from xmed.runtime import choose_precision, is_auto

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


def datamodule_for_model(data_cfg: DictConfig, model, source: str | os.PathLike | None = None):
    """The data module of ``data_cfg``, set up to prepare photographs the way ``model`` expects
    (its input size, normalisation, field-of-view and disc crops, contrast). ``source``: the file
    ``data_cfg`` was read from, when it was not composed by this command (see
    :func:`instantiate_group`)."""
    dc = model.data_config
    config = buildable(data_cfg, source, "data") if source is not None else \
        OmegaConf.to_container(data_cfg, resolve=True)
    config.update(image_size=dc.input_size, mean=list(dc.mean), std=list(dc.std))
    config["preprocess"] = dc.preprocess()
    datamodule = instantiate_group(OmegaConf.create(config), "data", source)
    datamodule.setup()
    return datamodule
