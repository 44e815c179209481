"""``xmed-eval``: evaluate a trained model on a data set's validation and test splits.

``ckpt_path`` is a Lightning checkpoint or an exported model folder. The model's own data config
(input size, normalisation, field-of-view crop) decides how photographs are prepared.

Writes ``metrics.json``, ``predictions.csv`` and ``plots/`` into the run folder::

    xmed-eval ckpt_path=logs/train/runs/<run>/model data=phantom paths.output_dir=eval_run
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from xmed.cli.entry import command
from xmed.cli.common import CONFIG_PACKAGE, evaluate_model, evaluation_artefacts, instantiate_group
from xmed.cli.train import report_run


def datamodule_for_model(data_cfg: DictConfig, model):
    """The data module of ``data_cfg``, set up to prepare photographs the way ``model`` expects
    (its input size, normalisation, field-of-view and disc crops, contrast)."""
    dc = model.data_config
    config = OmegaConf.to_container(data_cfg, resolve=True)
    config.update(image_size=dc.input_size, mean=list(dc.mean), std=list(dc.std))
    config["preprocess"] = dc.preprocess()
    datamodule = instantiate_group(OmegaConf.create(config), "data")
    datamodule.setup()
    return datamodule

log = logging.getLogger("xmed.eval")


def evaluate(cfg: DictConfig) -> dict:
    from xmed.cli.rundir import command_folder
    from xmed.models.export import load_model

    out_dir = command_folder(cfg)
    model = load_model(cfg.ckpt_path, device=cfg.device)
    datamodule = datamodule_for_model(cfg.data, model)
    metrics = evaluate_model(model, datamodule, out_dir, threshold_rule=cfg.threshold_rule,
                             n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, device=cfg.device)
    print(f"evaluated {cfg.ckpt_path} on {datamodule.dataset_name} (test split, {metrics['n']} eyes)")
    report_run(out_dir, metrics, evaluation_artefacts(out_dir))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="eval")
@command
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg).get("auroc")


if __name__ == "__main__":
    main()
