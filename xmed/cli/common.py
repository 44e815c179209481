"""What the Hydra commands share: config location, trainer set-up, prediction, evaluation reports.

The configs ship inside the package (``xmed/configs``) and every command reads them from there
(``pkg://xmed.configs``), so an installed wheel needs no source tree. A user's own config folder
joins them through Hydra's search path: ``xmed-train 'hydra.searchpath=[file:///my/configs]'
experiment=mine`` (its groups and files sit beside the shipped ones, which are found first).

Example:
    >>> CONFIG_PACKAGE, (CONFIG_DIR / "train.yaml").is_file()
    ('pkg://xmed.configs', True)
"""

from __future__ import annotations

import csv
import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from xmed.errors import ConfigError, DatasetError, XmedError
from xmed.findings import FINDINGS
from xmed.runs import write_text_atomic

log = logging.getLogger(__name__)

CONFIG_PACKAGE = "pkg://xmed.configs"
CONFIG_DIR = Path(str(resources.files("xmed.configs")))


def instantiate_group(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures name the config group (``data``, ``model``…)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, XmedError):
            raise cause from None
        raise ConfigError(group, str(cause or err)) from None


def build_trainer(trainer_cfg: DictConfig, auto_precision=None, **kwargs: Any):
    """The Lightning ``Trainer`` of a ``trainer`` config group, its ``precision: auto`` resolved
    for this machine (:func:`xmed.runtime.choose_precision`) or to ``auto_precision`` (a
    :class:`~xmed.runtime.Choice`) when given; returns ``(trainer, precision choice)`` and logs the
    choice and its reason."""
    from xmed.runtime import choose_precision, is_auto

    if auto_precision is not None and is_auto(trainer_cfg.get("precision")):
        precision = auto_precision
    else:
        precision = choose_precision(trainer_cfg.get("accelerator"), trainer_cfg.get("precision"))
    log.info("precision %s", precision)
    node = OmegaConf.to_container(trainer_cfg, resolve=True)
    node["precision"] = precision.value
    return instantiate_group(OmegaConf.create(node), "trainer", **kwargs), precision


def predict(model: torch.nn.Module, loader, device: str | torch.device = "cpu",
            intervene_with_truth: bool = False) -> dict[str, Any]:
    """Run ``model`` over a loader of Sample batches (:func:`xmed.inference.score_batch` on each);
    numpy arrays of predictions and truth, and per eye its ``quality`` and ``status``
    (:data:`~xmed.inference.NON_FINITE` when its output is not finite: its predictions are NaN).
    A :class:`~xmed.errors.QualityWarning` names the flagged eyes.
    """
    from xmed.data.quality import warn_flagged
    from xmed.inference import score_batch

    model.eval().to(device)
    keys = ("prob", "finding_prob", "vcdr_pred", "label", "finding_label", "vcdr_true")
    parts: dict[str, list] = {k: [] for k in (*keys, "id", "eye", "status", "quality")}
    for batch in loader:
        if batch.get("size", 1) == 0:
            continue
        scores = score_batch(model, batch, intervene_with_truth)
        for key in ("prob", "finding_prob", "vcdr_pred"):
            parts[key].append(scores[key])
        for key in ("id", "eye", "status", "quality"):
            parts[key].extend(scores[key])
        parts["label"].append(batch["label"])
        parts["finding_label"].append(batch["findings"])
        parts["vcdr_true"].append(batch["vcdr"])
    out = {k: torch.cat(parts[k]).numpy() if parts[k] else np.zeros(0) for k in keys}
    out.update({k: parts[k] for k in ("id", "eye", "status")})
    out["quality"] = [str(q) for q in parts["quality"]]
    warn_flagged(parts["quality"], parts["id"])
    failed = [eye_id for eye_id, status in zip(parts["id"], parts["status"]) if status]
    if failed:
        log.warning("%d of %d eyes have a non-finite model output and are not scored: %s",
                    len(failed), len(parts["id"]), ", ".join(failed[:10]) + (" …" if len(failed) > 10 else ""))
    return out


def scored(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """The eyes of :func:`predict`'s output whose outputs are finite (``status`` empty), every
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
    """``[{split, id, eye, reason}]`` of the eyes of :func:`predict`'s output that were not scored."""
    return [{"split": split, "id": eye_id, "eye": eye, "reason": status}
            for eye_id, eye, status in zip(arrays["id"], arrays["eye"], arrays["status"]) if status]


def to_predictions(arrays: Mapping[str, Any]):
    """The :class:`~xmed.metrics.Predictions` of the scored eyes (those with a finite output)."""
    from xmed.metrics import Predictions

    arrays = scored(arrays) if "status" in arrays else arrays
    return Predictions(**{k: arrays[k] for k in ("prob", "label", "finding_prob", "finding_label",
                                                  "vcdr_pred", "vcdr_true")})


def oracle_auroc(dataset, arrays: Mapping[str, Any]) -> float | None:
    """AUROC of the phantom's oracle on the same eyes (None for real data sets)."""
    from xmed.metrics import auroc

    oracle = getattr(dataset, "oracle", None)
    if not oracle:
        return None
    return auroc([oracle[i] for i in arrays["id"]], arrays["label"])


def evaluate_model(model, datamodule, out_dir: Path, *, threshold_rule: str = "youden",
                   n_bootstrap: int = 1000, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Predict val and test, score the test split with the threshold chosen on val, and
    write ``metrics.json``, ``predictions.csv`` and the plots into ``out_dir``.

    An eye with a non-finite output is scored nowhere (neither the threshold nor any metric);
    ``metrics.json`` lists it under ``failed`` and counts it per split under ``excluded``, and
    counts the eyes flagged by the image-quality gate under ``quality_flagged`` (they are scored).
    """
    from xmed.metrics import evaluate_predictions
    from xmed.viz.plots import plot_calibration, plot_finding_auroc, plot_roc

    out_dir.mkdir(parents=True, exist_ok=True)
    val = predict(model, datamodule.val_dataloader(), device)
    test = predict(model, datamodule.test_dataloader(), device)
    if not test["id"]:
        raise DatasetError(datamodule.root or datamodule.dataset_name,
                           f"the test split holds no eye to evaluate ({len(datamodule.skipped)} files skipped)")
    metrics = evaluate_predictions(to_predictions(val), to_predictions(test), threshold_rule=threshold_rule,
                                   n_bootstrap=n_bootstrap, seed=seed)
    metrics["failed"] = failed_eyes(val, "val") + failed_eyes(test, "test")
    metrics["excluded"] = {split: sum(e["split"] == split for e in metrics["failed"]) for split in ("val", "test")}
    metrics["quality_flagged"] = {"val": sum(map(bool, val["quality"])), "test": sum(map(bool, test["quality"]))}
    test_scored = scored(test)
    metrics["oracle_auroc"] = oracle_auroc(datamodule.base, test_scored)
    if getattr(model, "mode", None) == "concept_bottleneck":
        true_concepts = predict(model, datamodule.test_dataloader(), device, intervene_with_truth=True)
        with_truth = evaluate_predictions(to_predictions(val), to_predictions(true_concepts),
                                          threshold_rule=threshold_rule, n_bootstrap=0, seed=seed)
        metrics["intervention"] = {"auroc_predicted_concepts": metrics["auroc"],
                                   "auroc_true_concepts": with_truth["auroc"]}
    metrics["skipped"] = datamodule.skipped
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False))
    write_predictions_csv(out_dir / "predictions.csv", test, metrics["threshold"])
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    labelled = ~np.isnan(test_scored["label"])
    if labelled.any() and len(set(test_scored["label"][labelled])) == 2:
        plot_roc(test_scored["prob"][labelled], test_scored["label"][labelled], plots / "roc.png")
        plot_calibration(test_scored["prob"][labelled], test_scored["label"][labelled], plots / "calibration.png")
    plot_finding_auroc(metrics["finding_auroc"], plots / "finding_auroc.png")
    return metrics


def evaluation_artefacts(out_dir: Path) -> dict[str, Path]:
    """The files :func:`evaluate_model` writes, by name."""
    return {"metrics": out_dir / "metrics.json", "predictions": out_dir / "predictions.csv",
            "plots": out_dir / "plots"}


def print_run_folder(out_dir: Path, artefacts: Mapping[str, Path | None]) -> None:
    """Print where a command's outputs went: the run folder, then each named output (None: skipped)."""
    print(f"run folder      {out_dir.resolve()}")
    for name, path in artefacts.items():
        if path is not None:
            print(f"  {name:<15} {Path(path).resolve()}")


def write_predictions_csv(path: Path, arrays: Mapping[str, Any], threshold: float | None) -> None:
    """One row per eye of :func:`predict`'s output: truth, predictions, the decision at
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
                pred = "" if threshold is None else int(prob >= threshold)
                prob, vcdr_pred = f"{prob:.6f}", f"{float(arrays['vcdr_pred'][i]):.4f}"
                finding_probs = [f"{float(p):.6f}" for p in arrays["finding_prob"][i]]
            row = [eye_id, arrays["eye"][i], _cell(arrays["label"][i]), prob, pred,
                   _cell(arrays["vcdr_true"][i]), vcdr_pred, *finding_probs]
            row += [_cell(v) for v in arrays["finding_label"][i]]
            writer.writerow(row + [quality[i], status[i]])


def _cell(value) -> str:
    value = float(value)
    return "" if math.isnan(value) else f"{value:g}"


def sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
