"""``xmed-predict``: screen a folder of photographs or DICOM files with a trained model.

Writes ``predictions.csv`` into the run folder — per eye its id (a DICOM file's salted pseudonym,
never a patient identifier), laterality, P(glaucoma), the decision at the model's operating
threshold (``referable`` 1/0), the vCDR, each finding's probability, the distance of its features
from the training eyes' (``feature_distance``), the image-quality flags (``unfamiliar_features``
among them when that distance is above the model's threshold) and a status (an unreadable file, or
a model output that is not finite, gets no prediction) — and ``summary.json``. Runs on the CPU, a GPU (``trainer=gpu``) or several (``trainer=ddp``).

Examples::

    xmed-predict ckpt_path=outputs/demo/train/model input=/data/clinic paths.output_dir=screened/clinic
    xmed-predict ckpt_path=outputs/demo/train/model input=/pacs/export format=dicom trainer=gpu
"""


from __future__ import annotations

import hydra
from omegaconf import DictConfig

from xmed.cli.common import CONFIG_PACKAGE
from xmed.cli.entry import command, read_command_line


@read_command_line
@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="predict")
@command
def main(cfg: DictConfig) -> None:
    # here: Lightning and timm load once the config is checked (--help and a bad override answer at once)
    from xmed.pipeline.prediction import predict_run

    predict_run(cfg)


if __name__ == "__main__":
    main()
