"""``xmed-study``: which explanations of a glaucoma decision point at the evidence, measured on ground truth.

Several models (given, or trained first) explain the same eyes by every chosen method; every
explanation gets the same per-eye scores, and the run folder gets (:func:`xmed.pipeline.study.study_run`
does the work)::

    <run>/scores.csv          the long table: model, method, eye, score, value, note
    <run>/means.csv           per model, method and score: the mean and its case-bootstrap interval
    <run>/differences.csv     each method less the reference on the same eyes: interval, Wilcoxon p, Holm p
    <run>/forest_<score>.png  those differences, one line per model and method
    <run>/report.md           all of it in words and tables
    <run>/models/<name>/      the models it trained (xmed-train run folders)

Examples::

    xmed-study experiment=study_quick
    xmed-study 'models={standard: runs/r18/model, robust: runs/r18_pgd/model}' n=200
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from xmed.cli.common import CONFIG_PACKAGE
from xmed.cli.entry import command, read_command_line


@read_command_line
@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="study")
@command
def main(cfg: DictConfig) -> None:
    # here: Lightning and timm load once the config is checked (--help and a bad override answer at once)
    from xmed.pipeline.study import study_run

    study_run(cfg)


if __name__ == "__main__":
    main()
