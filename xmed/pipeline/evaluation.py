"""Evaluating a trained model on a data set's validation and test splits (``xmed-eval``, and
``xmed-train``'s test): both splits scored through :func:`xmed.inference.score_eyes` on the
trainer's devices, the threshold chosen on validation, the test split's metrics with bootstrap
intervals, ``predictions.csv`` and the plots.

Example::

    trainer, _ = inference_trainer(cfg.trainer, "runs/eval")
    metrics = evaluate_model(model, datamodule, Path("runs/eval"), trainer)
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from xmed.data.datamodule import datamodule_for_model
from xmed.decision import is_referable
from xmed.errors import DatasetError
from xmed.findings import FINDINGS
from xmed.inference import UNREADABLE, score_eyes, single_device_trainer
from xmed.metrics import Predictions, auroc, evaluate_predictions
from xmed.models.export import load_model
from xmed.models.feature_check import UNFAMILIAR_FEATURES
from xmed.pipeline.instantiate import inference_trainer
from xmed.pipeline.reports import report_run
from xmed.runs import command_folder, write_text_atomic
from xmed.viz.plots import plot_calibration, plot_finding_auroc, plot_roc

log = logging.getLogger(__name__)

_ARRAYS = ("prob", "finding_prob", "vcdr_pred", "label", "finding_label", "vcdr_true")


def split_ids(view) -> list[str]:
    """The ids of a split's eyes, in its order."""
    return [view.base.records[i].id for i in view.indices]


def score_split(trainer, model, datamodule, split: str, parts_dir: Path,
                intervene_with_truth: bool = False) -> dict[str, Any] | None:
    """One split scored through ``trainer`` (every process takes part): :func:`to_arrays` of its
    records on process 0, None on the others. A file that could not be read is recorded in
    ``datamodule.skipped`` (once, whichever process met it)."""
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    records = score_eyes(trainer, model, loader, split_ids(datamodule.splits[split]), parts_dir,
                         intervene_with_truth=intervene_with_truth)
    if records is None:
        return None
    unreadable = [r for r in records if r["status"].startswith(UNREADABLE)]
    datamodule.record_skips([{"path": r["id"], "reason": r["status"][len(UNREADABLE) + 2:]} for r in unreadable])
    return to_arrays([r for r in records if "prob" in r])


def to_arrays(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-eye records (:func:`xmed.inference.eye_records`) as numpy arrays (NaN for None) —
    ``prob``, ``finding_prob`` (N×10), ``vcdr_pred``, ``label``, ``finding_label`` (N×10), ``vcdr_true``
    — and lists ``id``, ``eye``, ``quality``, ``status``; eyes without a finite output are logged.

    Example:
        >>> to_arrays([{"id": "a", "eye": "OD", "prob": 0.25, "finding_prob": [None] * 10, "vcdr_pred": 0.5,
        ...             "label": 1.0, "finding_label": [0.0] * 10, "vcdr_true": None, "quality": "",
        ...             "status": ""}])["prob"].tolist()
        [0.25]
    """
    def column(key: str, width: int | None = None) -> np.ndarray:
        rows = [[math.nan if v is None else v for v in r[key]] if width else
                (math.nan if r[key] is None else r[key]) for r in records]
        return np.asarray(rows, dtype=np.float32).reshape(len(records), *([width] if width else []))

    out = {key: column(key, len(FINDINGS) if key in ("finding_prob", "finding_label") else None) for key in _ARRAYS}
    out.update({key: [r[key] for r in records] for key in ("id", "eye", "quality", "status")})
    failed = [eye_id for eye_id, status in zip(out["id"], out["status"]) if status]
    if failed:
        log.warning("%d of %d eyes have a non-finite model output and are not scored: %s",
                    len(failed), len(out["id"]), ", ".join(failed[:10]) + (" …" if len(failed) > 10 else ""))
    return out


def scored(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """The eyes of :func:`to_arrays`'s output whose outputs are finite (``status`` empty), every
    array and list cut to them.

    Example:
        >>> arrays = {"prob": np.array([0.2, np.nan]), "id": ["a", "b"], "status": ["", "non-finite output"]}
        >>> scored(arrays)["id"], scored(arrays)["prob"].tolist()
        (['a'], [0.2])
    """
    keep = np.array([not status for status in arrays["status"]], dtype=bool)
    return {k: v[keep] if isinstance(v, np.ndarray) else [x for x, kept in zip(v, keep) if kept]
            for k, v in arrays.items()}


def failed_eyes(arrays: Mapping[str, Any], split: str) -> list[dict[str, str]]:
    """``[{split, id, eye, reason}]`` of the eyes of :func:`to_arrays`'s output that were not scored."""
    return [{"split": split, "id": eye_id, "eye": eye, "reason": status}
            for eye_id, eye, status in zip(arrays["id"], arrays["eye"], arrays["status"]) if status]


def to_predictions(arrays: Mapping[str, Any]):
    """The :class:`~xmed.metrics.Predictions` of the scored eyes (those with a finite output)."""
    arrays = scored(arrays) if "status" in arrays else arrays
    return Predictions(**{k: arrays[k] for k in _ARRAYS})


def oracle_auroc(dataset, arrays: Mapping[str, Any]) -> float | None:
    """AUROC of the phantom's oracle on the same eyes (None for real data sets)."""
    oracle = getattr(dataset, "oracle", None)
    if not oracle:
        return None
    return auroc([oracle[i] for i in arrays["id"]], arrays["label"])


def evaluate_model(model, datamodule, out_dir: Path, trainer=None, *, threshold_rule: str = "youden",
                   n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """Score val and test through ``trainer`` (every process calls this; None: one CPU process,
    :func:`~xmed.inference.single_device_trainer`), score the test split
    with the threshold chosen on val, and write ``metrics.json``, ``predictions.csv`` and the plots
    into ``out_dir``; returns the metrics on process 0, None on the others.

    An eye with a non-finite output is scored nowhere (neither the threshold nor any metric);
    ``metrics.json`` lists it under ``failed`` and counts it per split under ``excluded``, and
    counts the eyes flagged by the image-quality gate or the model's feature check under
    ``quality_flagged`` (they are scored), those the feature check flagged under ``unfamiliar_features``.
    """
    trainer = trainer or single_device_trainer()
    parts = out_dir / ".parts"
    val = score_split(trainer, model, datamodule, "val", parts)
    test = score_split(trainer, model, datamodule, "test", parts)
    true_concepts = None
    if getattr(model, "mode", None) == "concept_bottleneck":
        true_concepts = score_split(trainer, model, datamodule, "test", parts, intervene_with_truth=True)
    if not trainer.is_global_zero:
        return None
    if not test["id"]:
        raise DatasetError(datamodule.root or datamodule.dataset_name,
                           f"the test split holds no eye to evaluate ({len(datamodule.skipped)} files skipped)")
    metrics = evaluate_predictions(to_predictions(val), to_predictions(test), threshold_rule=threshold_rule,
                                   n_bootstrap=n_bootstrap, seed=seed)
    metrics["failed"] = failed_eyes(val, "val") + failed_eyes(test, "test")
    metrics["excluded"] = {split: sum(e["split"] == split for e in metrics["failed"]) for split in ("val", "test")}
    metrics["quality_flagged"] = {"val": sum(map(bool, val["quality"])), "test": sum(map(bool, test["quality"]))}
    metrics["unfamiliar_features"] = {"val": count_flag(val["quality"], UNFAMILIAR_FEATURES),
                                      "test": count_flag(test["quality"], UNFAMILIAR_FEATURES)}
    metrics["oracle_auroc"] = oracle_auroc(datamodule.base, scored(test))
    if true_concepts is not None:
        with_truth = evaluate_predictions(to_predictions(val), to_predictions(true_concepts),
                                          threshold_rule=threshold_rule, n_bootstrap=0, seed=seed)
        metrics["intervention"] = {"auroc_predicted_concepts": metrics["auroc"],
                                   "auroc_true_concepts": with_truth["auroc"]}
    metrics["skipped"] = datamodule.skipped
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False))
    write_predictions_csv(out_dir / "predictions.csv", test, metrics["threshold"])
    write_plots(out_dir / "plots", scored(test), metrics)
    return metrics


def count_flag(qualities: Sequence[str], flag: str) -> int:
    """How many of the ``;``-joined flag lists ``qualities`` hold ``flag``.

    Example:
        >>> count_flag(["", "nearly_uniform;unfamiliar_features", "unfamiliar_features"], "unfamiliar_features")
        2
    """
    return sum(flag in q.split(";") for q in qualities)


def write_plots(folder: Path, test: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    """ROC and calibration of the labelled test eyes (when both classes are there) and the
    finding AUROCs."""
    folder.mkdir(parents=True, exist_ok=True)
    labelled = ~np.isnan(test["label"])
    if labelled.any() and len(set(test["label"][labelled])) == 2:
        plot_roc(test["prob"][labelled], test["label"][labelled], folder / "roc.png")
        plot_calibration(test["prob"][labelled], test["label"][labelled], folder / "calibration.png")
    plot_finding_auroc(metrics["finding_auroc"], folder / "finding_auroc.png")


def evaluation_artefacts(out_dir: Path) -> dict[str, Path]:
    """The files :func:`evaluate_model` writes, by name."""
    return {"metrics": out_dir / "metrics.json", "predictions": out_dir / "predictions.csv",
            "plots": out_dir / "plots"}


def write_predictions_csv(path: Path, arrays: Mapping[str, Any], threshold: float | None) -> None:
    """One row per eye of :func:`to_arrays`'s output: truth, predictions, the decision at
    ``threshold``, then ``quality`` (the image-quality flags, ``;``-joined; empty when the image
    passed) and ``status`` (:data:`~xmed.inference.NON_FINITE` for an eye whose output was not finite: its
    predictions and decision are left empty)."""
    columns = ["id", "eye", "label", "prob", "pred", "vcdr_true", "vcdr_pred",
               *(f"p_{c}" for c in FINDINGS), *FINDINGS, "quality", "status"]
    n = len(arrays["id"])
    quality, status = arrays.get("quality", [""] * n), arrays.get("status", [""] * n)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, eye_id in enumerate(arrays["id"]):
            if status[i]:
                prob = pred = vcdr_pred = ""
                finding_probs = [""] * len(FINDINGS)
            else:
                prob = float(arrays["prob"][i])
                pred = "" if threshold is None else int(is_referable(prob, threshold))
                prob, vcdr_pred = f"{prob:.6f}", f"{float(arrays['vcdr_pred'][i]):.4f}"
                finding_probs = [f"{float(p):.6f}" for p in arrays["finding_prob"][i]]
            row = [eye_id, arrays["eye"][i], _cell(arrays["label"][i]), prob, pred,
                   _cell(arrays["vcdr_true"][i]), vcdr_pred, *finding_probs]
            row += [_cell(v) for v in arrays["finding_label"][i]]
            writer.writerow(row + [quality[i], status[i]])


def _cell(value) -> str:
    value = float(value)
    return "" if math.isnan(value) else f"{value:g}"


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """``xmed-eval``: evaluate the model at ``cfg.ckpt_path`` on ``cfg.data`` with ``cfg.trainer``;
    returns the metrics (an empty dict on processes other than 0)."""
    out_dir = command_folder(cfg)
    model = load_model(cfg.ckpt_path)
    datamodule = datamodule_for_model(cfg.data, model)
    trainer, _ = inference_trainer(cfg.trainer, out_dir)
    metrics = evaluate_model(model, datamodule, out_dir, trainer, threshold_rule=cfg.threshold_rule,
                             n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    if metrics is None:
        return {}
    print(f"evaluated {cfg.ckpt_path} on {datamodule.dataset_name} (test split, {metrics['n']} eyes)")
    report_run(out_dir, metrics, evaluation_artefacts(out_dir))
    return metrics
