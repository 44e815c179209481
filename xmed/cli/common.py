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

from xmed.errors import ConfigError, XmedError
from xmed.findings import FINDINGS, VCDR

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


@torch.inference_mode()
def predict(model: torch.nn.Module, loader, device: str | torch.device = "cpu",
            intervene_with_truth: bool = False) -> dict[str, Any]:
    """Run ``model`` over a loader of Sample batches; numpy arrays of predictions and truth.

    ``intervene_with_truth`` (concept-bottleneck models) replaces the predicted findings and vCDR
    with the known true values (unknown ones stay predicted) before the diagnosis.
    """
    model.eval().to(device)
    keys = ("prob", "finding_prob", "vcdr_pred", "label", "finding_label", "vcdr_true")
    parts: dict[str, list] = {k: [] for k in (*keys, "id", "eye")}
    for batch in loader:
        if batch.get("size", 1) == 0:
            continue
        intervene = None
        if intervene_with_truth:
            intervene = {code: batch["findings"][:, j] for j, code in enumerate(FINDINGS)}
            intervene[VCDR] = batch["vcdr"]
        out = model(batch["image"].to(device), intervene=intervene)
        parts["prob"].append(torch.sigmoid(out["logits"]).float().cpu())
        parts["finding_prob"].append(torch.sigmoid(out["finding_logits"]).float().cpu())
        parts["vcdr_pred"].append(out["vcdr"].float().cpu())
        parts["label"].append(batch["label"])
        parts["finding_label"].append(batch["findings"])
        parts["vcdr_true"].append(batch["vcdr"])
        parts["id"].extend(batch["meta"]["id"])
        parts["eye"].extend(batch["meta"]["eye"])
    out = {k: torch.cat(parts[k]).numpy() if parts[k] else np.zeros(0) for k in keys}
    out["id"], out["eye"] = parts["id"], parts["eye"]
    return out


def to_predictions(arrays: Mapping[str, Any]):
    from xmed.metrics import Predictions

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
    write ``metrics.json``, ``predictions.csv`` and the plots into ``out_dir``."""
    from xmed.metrics import evaluate_predictions
    from xmed.viz.plots import plot_calibration, plot_finding_auroc, plot_roc

    out_dir.mkdir(parents=True, exist_ok=True)
    val = predict(model, datamodule.val_dataloader(), device)
    test = predict(model, datamodule.test_dataloader(), device)
    metrics = evaluate_predictions(to_predictions(val), to_predictions(test), threshold_rule=threshold_rule,
                                   n_bootstrap=n_bootstrap, seed=seed)
    metrics["oracle_auroc"] = oracle_auroc(datamodule.base, test)
    if getattr(model, "mode", None) == "concept_bottleneck":
        true_concepts = predict(model, datamodule.test_dataloader(), device, intervene_with_truth=True)
        scored = evaluate_predictions(to_predictions(val), to_predictions(true_concepts),
                                      threshold_rule=threshold_rule, n_bootstrap=0, seed=seed)
        metrics["intervention"] = {"auroc_predicted_concepts": metrics["auroc"],
                                   "auroc_true_concepts": scored["auroc"]}
    metrics["skipped"] = datamodule.skipped
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    write_predictions_csv(out_dir / "predictions.csv", test, metrics["threshold"])
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    labelled = ~np.isnan(test["label"])
    if labelled.any() and len(set(test["label"][labelled])) == 2:
        plot_roc(test["prob"][labelled], test["label"][labelled], plots / "roc.png")
        plot_calibration(test["prob"][labelled], test["label"][labelled], plots / "calibration.png")
    plot_finding_auroc(metrics["finding_auroc"], plots / "finding_auroc.png")
    return metrics


def evaluation_artefacts(out_dir: Path) -> dict[str, Path]:
    """The files :func:`evaluate_model` writes, by name."""
    return {"metrics": out_dir / "metrics.json", "predictions": out_dir / "predictions.csv",
            "plots": out_dir / "plots"}


def write_predictions_csv(path: Path, arrays: Mapping[str, Any], threshold: float | None) -> None:
    columns = ["id", "eye", "label", "prob", "pred", "vcdr_true", "vcdr_pred",
               *(f"p_{c}" for c in FINDINGS), *FINDINGS]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, eye_id in enumerate(arrays["id"]):
            prob = float(arrays["prob"][i])
            pred = "" if threshold is None else int(prob >= threshold)
            row = [eye_id, arrays["eye"][i], _cell(arrays["label"][i]), f"{prob:.6f}", pred,
                   _cell(arrays["vcdr_true"][i]), f"{float(arrays['vcdr_pred'][i]):.4f}"]
            row += [f"{float(p):.6f}" for p in arrays["finding_prob"][i]]
            row += [_cell(v) for v in arrays["finding_label"][i]]
            writer.writerow(row)


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
