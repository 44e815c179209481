"""``xmed-predict``: screen a folder of photographs or DICOM files with a trained model.

Writes ``predictions.csv`` into the run folder — per eye its id (a DICOM file's salted pseudonym,
never a patient identifier), laterality, P(glaucoma), the decision at the model's operating
threshold (``referable`` 1/0), the vCDR, each finding's probability, the image-quality flags and a
status (an unreadable file, or a model output that is not finite, gets no prediction) — and
``summary.json``. Runs on the CPU, a GPU (``trainer=gpu``) or several (``trainer=ddp``).

Examples::

    xmed-predict ckpt_path=outputs/demo/train/model input=/data/clinic paths.output_dir=screened/clinic
    xmed-predict ckpt_path=outputs/demo/train/model input=/pacs/export format=dicom trainer=gpu
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from xmed.cli.common import CONFIG_PACKAGE, build_trainer, print_run_folder
from xmed.cli.entry import command
from xmed.errors import ConfigError

log = logging.getLogger("xmed.predict")

FORMATS = {"photos": "photo_folder", "dicom": "dicom_folder"}


def input_dataset(folder: str | Path, format: str, on_error: str):
    """The data set of a folder to screen: DICOM files (``format=dicom``, or ``auto`` when the
    folder holds any ``.dcm``/``.dicom`` file) or photographs."""
    from xmed.data.datasets import get_dataset
    from xmed.data.datasets.generic import DicomFolderDataset

    if format == "auto":
        folder_path = Path(folder)
        dicom = folder_path.is_dir() and any(p.suffix.lower() in DicomFolderDataset.SUFFIXES
                                             for p in folder_path.rglob("*") if p.is_file())
        format = "dicom" if dicom else "photos"
    if format not in FORMATS:
        raise ConfigError("format", f"expected auto, photos or dicom, got {format!r}")
    try:
        return get_dataset(FORMATS[format], folder, on_error=on_error)
    except ConfigError as err:  # get_dataset names data.* keys; here the folder is `input`
        raise ConfigError("input" if err.key == "data.root" else err.key, err.reason) from None


def predict_run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``xmed-predict`` for a composed config; returns the summary written to summary.json."""
    from torch.utils.data import DataLoader

    from xmed.cli.rundir import command_folder
    from xmed.data.datamodule import SplitView
    from xmed.data.datasets.base import collate_samples
    from xmed.data.transforms import build_transforms
    from xmed.inference import EyeScorer, PredictionWriter
    from xmed.models.classifier import check_threshold
    from xmed.models.export import load_model
    from xmed.runs import write_text_atomic
    from xmed.runtime import Choice, choose_num_workers

    out_dir = command_folder(cfg)
    model = load_model(cfg.ckpt_path)
    threshold = check_threshold(cfg.threshold) if cfg.threshold is not None else model.threshold
    if threshold is None:
        raise ConfigError("threshold", f"{cfg.ckpt_path} carries no operating threshold (exported before models "
                                       "kept one); pass threshold=<P(glaucoma)>, e.g. the one in its model card")
    dataset = input_dataset(cfg.input, cfg.format, cfg.on_error)
    dc = model.data_config
    view = SplitView(dataset, range(len(dataset)),
                     build_transforms("eval", dc.input_size, dc.mean, dc.std, preprocess=dc.preprocess()))
    workers = choose_num_workers(cfg.num_workers)
    loader = DataLoader(view, batch_size=int(cfg.batch_size), num_workers=workers.value,
                        collate_fn=collate_samples)
    writer = PredictionWriter(out_dir, [(r.id, r.image_path) for r in dataset.records], threshold)
    full = Choice("32-true", "predictions are computed in full precision, as xmed-eval computes them")
    trainer, precision = build_trainer(cfg.trainer, auto_precision=full, logger=False,
                                       callbacks=[writer])
    trainer.predict(EyeScorer(model), loader, return_predictions=False)
    if not trainer.is_global_zero:
        return {}
    summary = {"input": str(cfg.input), "ckpt_path": str(cfg.ckpt_path), **writer.summary,
               "skipped_at_listing": [s.as_dict() for s in dataset.skipped], "precision": str(precision)}
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False))
    if summary["quality_flagged"]:
        flagged = summary["quality_flagged"]
        log.warning("%d eyes failed the image-quality check (their decisions are not to be relied on; the "
                    "quality column of predictions.csv says why): %s", len(flagged),
                    ", ".join(flagged[:10]) + (" …" if len(flagged) > 10 else ""))
    print(f"screened {summary['n']} eyes: {summary['referable']} referable at P(glaucoma) >= {threshold:.3f}, "
          f"{len(summary['quality_flagged'])} failed the image-quality check, "
          f"{len(summary['failed']) + len(summary['unreadable'])} without a prediction")
    print_run_folder(out_dir, {name: out_dir / name for name in ("predictions.csv", "summary.json")})
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="predict")
@command
def main(cfg: DictConfig) -> None:
    predict_run(cfg)


if __name__ == "__main__":
    main()
