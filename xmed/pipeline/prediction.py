"""Screening photographs without labels (``xmed-predict``): a folder of JPEGs, a PACS export of
DICOM files or both together, scored through :func:`xmed.inference.score_eyes`, written as
``predictions.csv`` — one row per entry of the folder: per eye its id (a DICOM file's salted
pseudonym, never a patient identifier), laterality, P(glaucoma), the decision at the model's
operating threshold, the vCDR, each finding's probability, the distance of its features from the
training eyes' (``feature_distance``, for a model exported with a feature check), the image-quality
flags (``unfamiliar_features`` among them where that distance is above the model's threshold) and a
status; per entry that is not scored the reason — and ``summary.json``.

Example::

    from omegaconf import OmegaConf
    predict_run(OmegaConf.load("screened/clinic/.hydra/config.yaml"))["referable"]
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig

from xmed.data.datamodule import SplitView, eval_loader, pipeline_obstacle
from xmed.data.datasets import get_dataset
from xmed.data.datasets.base import collate_samples
from xmed.data.transforms import eval_transform
from xmed.errors import ConfigError
from xmed.findings import FINDINGS
from xmed.inference import NON_FINITE, UNREADABLE, score_eyes
from xmed.decision import is_referable, operating_threshold
from xmed.models.export import load_model
from xmed.models.feature_check import UNFAMILIAR_FEATURES
from xmed.pipeline.instantiate import inference_trainer
from xmed.pipeline.reports import print_run_folder
from xmed.runs import command_folder, write_text_atomic
from xmed.runtime import choose_batch_size, choose_num_workers, choose_pipeline, eye_cost

#: ``format`` -> the data set that reads the folder, and its options
FORMATS = {"auto": ("photo_folder", {}), "photos": ("photo_folder", {"kinds": ("photo",)}),
           "dicom": ("dicom_folder", {})}

#: The columns of ``xmed-predict``'s ``predictions.csv``.
PREDICTION_COLUMNS = ("id", "eye", "prob", "referable", "vcdr", *(f"p_{c}" for c in FINDINGS), "feature_distance",
                      "quality", "status")


def input_dataset(folder: str | Path, format: str, on_error: str):
    """The data set of a folder to screen (:class:`~xmed.data.datasets.generic.FolderDataset`):
    ``format=auto`` reads its photographs and DICOM files together, ``photos`` and ``dicom`` one
    kind; every other entry is skipped saying why (or raises, ``on_error=raise``)."""
    if format not in FORMATS:
        raise ConfigError("format", f"expected auto, photos or dicom, got {format!r}")
    name, options = FORMATS[format]
    try:
        return get_dataset(name, folder, on_error=on_error, **options)
    except ConfigError as err:  # get_dataset names data.* keys; here the folder is `input`
        raise ConfigError("input" if err.key == "data.root" else err.key, err.reason) from None


def entry_order(dataset) -> list[str]:
    """The row id of every entry of a folder data set, in folder order: the id of its record, or
    the label of an entry left out while listing (:meth:`~xmed.data.datasets.generic.FolderDataset.entry_label`)."""
    record_ids = {str(r.image_path): r.id for r in dataset.records}
    return [record_ids.get(str(entry.path), entry.label) for entry in dataset.entries]


def listing_records(dataset) -> list[dict[str, str]]:
    """A ``{id, status}`` record (:data:`~xmed.inference.UNREADABLE`) of each entry the data set
    left out while listing the folder: not an image, a folder that cannot be listed, a link loop…"""
    return [{"id": dataset.entry_label(skip.path), "status": f"{UNREADABLE}: {skip.reason}"}
            for skip in dataset.skipped]


def in_order(records: Sequence[Mapping[str, Any]], order: Sequence[str]) -> list[Mapping[str, Any]]:
    """``records`` sorted by the place of their id in ``order`` (others last, in their order)."""
    position = {eye_id: i for i, eye_id in enumerate(order)}
    return sorted(records, key=lambda r: position.get(r["id"], len(position)))


def prediction_row(record: Mapping[str, Any], threshold: float) -> dict[str, str]:
    """One ``predictions.csv`` row of an eye record (:func:`xmed.inference.eye_records`, or an
    unreadable file's ``{id, status}``): ``referable`` 1/0 at ``threshold``, empty without a prediction;
    ``feature_distance`` empty for a model without a feature check.

    Example:
        >>> row = prediction_row({"id": "a", "eye": "OD", "prob": 0.7, "vcdr_pred": 0.61, "finding_prob": [0.5] * 10,
        ...                       "feature_distance": 31.25, "quality": "", "status": ""}, threshold=0.42)
        >>> row["prob"], row["referable"], row["vcdr"], row["feature_distance"]
        ('0.700000', '1', '0.6100', '31.250')
    """
    if record["status"]:
        return {"id": record["id"], "eye": record.get("eye", ""), "quality": record.get("quality", ""),
                "status": record["status"]}
    distance = record.get("feature_distance")
    row = {"id": record["id"], "eye": record["eye"], "prob": f"{record['prob']:.6f}",
           "referable": str(int(is_referable(record["prob"], threshold))), "vcdr": f"{record['vcdr_pred']:.4f}",
           "feature_distance": "" if distance is None else f"{distance:.3f}", "quality": record["quality"],
           "status": ""}
    row.update({f"p_{code}": f"{p:.6f}" for code, p in zip(FINDINGS, record["finding_prob"])})
    return row


def predictions_table(records: Sequence[Mapping[str, Any]], threshold: float) -> str:
    """``predictions.csv`` (:data:`PREDICTION_COLUMNS`) of the eye records, as text."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=PREDICTION_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(prediction_row(r, threshold) for r in records)
    return table.getvalue()


def screening_summary(records: Sequence[Mapping[str, Any]], threshold: float) -> dict[str, Any]:
    """How many rows (``n``: one per entry of the folder) there are, how many were scored and
    referable, and which failed (non-finite output), were unreadable (every entry not scored for
    what it is: ``scored + len(failed) + len(unreadable) == n``), were flagged by the
    image-quality gate or the model's feature check (``quality_flagged``), and of those which by
    the feature check (``unfamiliar_features``)."""
    return {
        "n": len(records), "scored": sum(not r["status"] for r in records),
        "referable": sum(not r["status"] and is_referable(r["prob"], threshold) for r in records),
        "failed": [r["id"] for r in records if r["status"] == NON_FINITE],
        "unreadable": [r["id"] for r in records if r["status"].startswith(UNREADABLE)],
        "quality_flagged": [r["id"] for r in records if r.get("quality")],
        "unfamiliar_features": [r["id"] for r in records if UNFAMILIAR_FEATURES in r.get("quality", "").split(";")],
        "threshold": threshold,
    }


def screening_eye_bytes(model, device) -> float:
    """Device memory one screened eye takes (the cost model of ``batch_size: auto``): a forward pass
    without gradients (:attr:`~xmed.runtime.EyeCost.transient`), the eye as the model takes it, and
    its prepared uint8 copy (:func:`xmed.runtime.eye_cost`, measured on ``device``)."""
    size = model.data_config.input_size
    cost = eye_cost(model.to(device), size, device)
    return cost.transient + cost.input + 3 * size * size


def screening_loader(view, cfg: DictConfig, model, device):
    """The loader ``xmed-predict`` reads ``view`` through, and the choices behind it: where the
    photographs are prepared (``pipeline``, :func:`xmed.runtime.choose_pipeline`) and how many eyes a
    batch holds (``batch_size``, :func:`xmed.runtime.choose_batch_size`: 16 on a CPU)."""
    from torch.utils.data import DataLoader

    pipeline = choose_pipeline(cfg.get("pipeline", "auto"), device.type, pipeline_obstacle(view), key="pipeline")
    batch = choose_batch_size(cfg.batch_size, device, lambda: screening_eye_bytes(model, device), cpu_default=16)
    workers = choose_num_workers(cfg.num_workers).value
    if pipeline.value == "gpu":
        loader = eval_loader(view, batch.value, workers, device)
    else:
        loader = DataLoader(view, batch_size=batch.value, num_workers=workers, collate_fn=collate_samples)
    return loader, {"pipeline": str(pipeline), "batch_size": str(batch)}


def predict_run(cfg: DictConfig) -> dict[str, Any]:
    """``xmed-predict`` for a composed config; returns the summary written to summary.json (an
    empty dict on processes other than 0)."""
    import logging

    out_dir = command_folder(cfg)
    model = load_model(cfg.ckpt_path)
    threshold = operating_threshold(model, cfg.threshold, fallback=None, source=str(cfg.ckpt_path))
    dataset = input_dataset(cfg.input, cfg.format, cfg.on_error)
    view = SplitView(dataset, range(len(dataset)), eval_transform(model.data_config))
    trainer, precision = inference_trainer(cfg.trainer, out_dir)
    loader, choices = screening_loader(view, cfg, model, trainer.strategy.root_device)
    for name, choice in choices.items():
        logging.getLogger(__name__).info("%s %s", name, choice)
    order = entry_order(dataset)
    scored = score_eyes(trainer, model, loader, order, out_dir / ".parts",
                        id_of_file={str(dataset.reported_path(r.image_path)): r.id for r in dataset.records})
    if scored is None:
        return {}
    records = in_order([*scored, *listing_records(dataset)], order)
    write_text_atomic(out_dir / "predictions.csv", predictions_table(records, threshold))
    summary = {"input": str(cfg.input), "ckpt_path": str(cfg.ckpt_path), **screening_summary(records, threshold),
               "feature_check": model.feature_check.settings() if model.feature_check is not None else None,
               "precision": str(precision), **choices}
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False))
    unfamiliar = (f"{len(summary['unfamiliar_features'])} of them with features unlike the training eyes'"
                  if model.feature_check is not None else "the model carries no feature check")
    print(f"screened {summary['n']} eyes: {summary['referable']} referable at P(glaucoma) >= {threshold:.3f}, "
          f"{len(summary['quality_flagged'])} failed the image-quality check ({unfamiliar}), "
          f"{len(summary['failed']) + len(summary['unreadable'])} without a prediction")
    print_run_folder(out_dir, {name: out_dir / name for name in ("predictions.csv", "summary.json")})
    return summary
