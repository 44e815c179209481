"""``xmed-train``: train a FundusClassifier with Lightning, configured by Hydra.

A run writes, into its folder (``paths.output_dir=DIR`` to choose it): ``checkpoints/``,
``model/`` (safetensors + JSON, for :func:`xmed.load_model`), ``metrics.json`` (test split),
``predictions.csv``, ``plots/``, ``model_card.md`` and the composed config in ``.hydra/``
(:func:`xmed.pipeline.training.train` does the work).

Examples::

    xmed-train experiment=phantom_smoke
    xmed-train model=efficientnet_b0 trainer.max_epochs=30 paths.output_dir=runs/effb0
    xmed-train -m model=resnet18,convnext_nano
    xmed-train trainer=ddp_cpu                  # two processes on the CPU
    xmed-train ckpt_path=runs/effb0/checkpoints/last.ckpt   # resume (read weights-only; local files unless
                                                           # allow_remote_checkpoint=true)
    xmed-train init_from=runs/effb0/model 'model.adversarial_training={method: pgd, epsilon: 4.0}'  # fine-tune
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from xmed.cli.common import CONFIG_PACKAGE
from xmed.cli.entry import command, read_command_line


@read_command_line
@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="train")
@command
def main(cfg: DictConfig) -> float | None:
    # here: Lightning and timm load once the config is checked (--help and a bad override answer at once)
    from xmed.pipeline.training import train

    return train(cfg).get("auroc")


if __name__ == "__main__":
    main()
