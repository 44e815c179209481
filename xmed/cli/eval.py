"""``xmed-eval``: evaluate a trained model on a data set's validation and test splits.

``ckpt_path`` is a Lightning checkpoint or an exported model folder. The model's own data config
(input size, normalisation, field-of-view crop) decides how photographs are prepared; the
``trainer`` group where it runs (``trainer=gpu``, ``trainer=ddp``). Writes ``metrics.json``,
``predictions.csv`` and ``plots/`` into the run folder (:func:`xmed.pipeline.evaluation.evaluate`
does the work)::

    xmed-eval ckpt_path=logs/train/runs/<run>/model data=phantom paths.output_dir=eval_run
    xmed-eval ckpt_path=runs/effb0/model data=refuge data.root=/data/REFUGE trainer=gpu
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from xmed.cli.common import CONFIG_PACKAGE
from xmed.cli.entry import command, read_command_line


@read_command_line
@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="eval")
@command
def main(cfg: DictConfig) -> float | None:
    # here: Lightning and timm load once the config is checked (--help and a bad override answer at once)
    from xmed.pipeline.evaluation import evaluate

    return evaluate(cfg).get("auroc")


if __name__ == "__main__":
    main()
