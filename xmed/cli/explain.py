"""``xmed-explain``: saliency maps of a trained model, scored per method.

Explains the first ``n`` eyes of a split with one or several explainers (the ``explainer`` config group),
through Lightning's predict loop (so ``trainer=ddp`` spreads the work over GPUs), and writes::

    <run>/metrics.json          {method: {metric: mean over eyes, ...}, ...}
    <run>/comparison.md         the same as a Markdown table (direction of each metric marked)
    <run>/per_image.csv         every metric of every eye and method
    <run>/maps/<method>/<id>.npy       raw maps (float32, input resolution)
    <run>/overlays/<method>/<id>.png   map over the photograph, ground truth outlined
    <run>/overlays/comparison.png      eyes × methods contact sheet

Localisation is scored against the ground truth where the data set has masks (the phantom has
all of them): for target ``glaucoma`` the disc plus the masks of the findings present, on
glaucomatous eyes only — a healthy eye has no evidence *for* glaucoma to point at, and its disc
is evidence against; for a finding its own mask (eyes without that finding are left out); for
``vCDR`` the disc. A counterfactual edit of the diagnosis is scored against the disc of every eye
plus the findings present: an edit toward glaucoma of a healthy eye should reshape its cup and
rim, not the background. Eyes
carrying the phantom's shortcut marker also get ``shortcut_energy``: the share of the map's
energy on the marker.

Example::

    xmed-explain ckpt_path=outputs/run/model 'explainer=[gradcam,integrated_gradients]' n=16
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from xmed.cli.entry import command
from xmed.cli.common import CONFIG_PACKAGE, build_trainer, print_run_folder
from xmed.cli.eval import datamodule_for_model
from xmed.cli.rundir import command_folder
from xmed.runs import write_text_atomic
from xmed.errors import ConfigError
from xmed.findings import FINDINGS, VCDR, finding_index
from xmed.runtime import Choice

log = logging.getLogger("xmed.explain")

# what `trainer.precision: auto` means here: maps and edits are gradients, which bf16 would coarsen
FULL_PRECISION = Choice("32-true", "explanations are computed in full precision")
LOCALISATION = ("pointing_game", "energy_pointing_game", "map_auroc", "map_auprc")
FAITHFULNESS = ("deletion", "insertion", "road_morf", "road_lerf")


def ground_truth(batch: Mapping[str, Any], target: str, edit: bool = False) -> Tensor | None:
    """B×1×H×W bool region a map for ``target`` should point at (empty where unknown or absent),
    or None when the data set has no masks for it. ``edit``: the region a counterfactual edit of
    the diagnosis should change — the disc of every eye, not only of glaucomatous ones."""
    masks, valid = batch.get("masks") or {}, batch.get("mask_valid") or {}
    if "disc" not in masks and target not in masks:
        return None
    image = batch["image"]
    empty = torch.zeros(image.shape[0], *image.shape[-2:], dtype=torch.bool, device=image.device)

    def known(name: str, present: Tensor | None = None) -> Tensor:
        if name not in masks:
            return empty
        keep = valid[name].to(image.device)
        if present is not None:
            keep = keep & present
        return masks[name].to(image.device) & keep[:, None, None]

    findings = batch["findings"].to(image.device)
    if target in FINDINGS:
        region = known(target, findings[:, finding_index(target)] == 1)
    elif target == VCDR:
        region = known("disc")
    else:  # the diagnosis: the disc and every finding of a glaucomatous eye
        glaucomatous = batch["label"].to(image.device) == 1
        eyes = torch.ones_like(glaucomatous) if edit else glaucomatous
        region = known("disc", eyes)
        for j, code in enumerate(FINDINGS):
            region = region | known(code, eyes & (findings[:, j] == 1))
    return region[:, None]


class CounterfactualRun:
    """A counterfactual explainer and the directions it is run in."""

    def __init__(self, explainer: Any, directions: list[str]):
        self.explainer, self.directions = explainer, directions


class RationaleRun:
    """The finding-level rationale with its options (``xmed.rationale``)."""

    def __init__(self, options: Mapping[str, Any]):
        self.options = dict(options)


def build_explainers(model: torch.nn.Module, explainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{run name: explainer}`` from the ``explainer`` config group (one entry per method):
    saliency explainers, counterfactual runs (``adversarial``) and the ``rationale``."""
    from xmed.explain import COUNTERFACTUALS, DIRECTIONS, get_counterfactual, get_explainer

    if not explainer_cfg:
        raise ConfigError("explainer", "no explainer selected; e.g. explainer=gradcam or 'explainer=[gradcam,rise]'")
    explainers = {}
    for name, options in explainer_cfg.items():
        options = dict(options or {})
        method = options.pop("method", name)
        try:
            if method == "rationale":
                explainers[name] = RationaleRun(options)
            elif method in COUNTERFACTUALS:
                directions = list(options.pop("directions", DIRECTIONS))
                for direction in directions:
                    if direction not in DIRECTIONS:
                        raise ConfigError(f"explainer.{name}.directions", f"unknown direction {direction!r}; "
                                                                         f"use {', '.join(DIRECTIONS)}")
                explainers[name] = CounterfactualRun(get_counterfactual(method)(model, **options), directions)
            else:
                explainers[name] = get_explainer(method)(model, **options)
        except TypeError as err:
            raise ConfigError(f"explainer.{name}", str(err)) from None
        except ConfigError as err:
            if err.key.startswith("explainer."):
                raise
            # the method names its own argument; the user wrote it under explainer.<name>
            raise ConfigError(f"explainer.{name}.{err.key}", err.reason) from None
    return explainers


class ExplainModule(L.LightningModule):
    """Lightning's predict loop over explainers: each step explains a batch with every method,
    scores the maps and writes maps and overlays; it returns one record per eye and method."""

    def __init__(self, model: torch.nn.Module, explainers: Mapping[str, Any], target: str,
                 metrics: Mapping[str, Any], out_dir: Path, overlay_ids: set[str]):
        super().__init__()
        self.model = model
        self.explainers = dict(explainers)
        self.target = target
        self.metrics = dict(metrics)
        self.out_dir = out_dir
        self.overlay_ids = overlay_ids

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        from xmed.explain.targets import target_function
        from xmed.metrics.explanation import EnergyPointingGame

        if batch.get("size", 1) == 0:
            return []
        images, ids = batch["image"], list(batch["meta"]["id"])
        per_eye = self._eye_columns(batch)
        truth = ground_truth(batch, self.target)
        edit_truth = (ground_truth(batch, self.target, edit=True)
                      if any(isinstance(e, CounterfactualRun) for e in self.explainers.values()) else None)
        marker = None
        if "shortcut" in (batch.get("masks") or {}):
            marker = batch["masks"]["shortcut"].to(images.device) & batch["mask_valid"]["shortcut"].to(images.device)[:, None, None]
            marker = marker[:, None]
        forward = target_function(self.model, self.target, as_probability=True)
        records = []
        for name, explainer in self.explainers.items():
            if isinstance(explainer, CounterfactualRun):
                records += self._counterfactuals(name, explainer, images, ids, edit_truth)
                continue
            if isinstance(explainer, RationaleRun):
                self._rationales(name, explainer, images, ids, per_eye)
                continue
            with torch.enable_grad():
                explanation = explainer(images, self.target)
            maps = explanation.maps.float()
            scores: dict[str, Tensor] = {}
            for metric_name, metric in self.metrics.items():
                if metric_name in LOCALISATION:
                    if truth is not None:
                        scores[metric_name] = metric(maps, truth)
                elif metric_name in FAITHFULNESS:
                    with torch.no_grad():
                        scores[metric_name] = metric(forward, images, maps)
                else:
                    scores[metric_name] = metric(maps)
            if marker is not None:
                scores["shortcut_energy"] = EnergyPointingGame()(maps, marker)
            per_image = explanation.seconds / len(ids)
            for i, eye_id in enumerate(ids):
                record = {"id": eye_id, "method": name, "seconds": per_image}
                record.update({k: _number(v[i]) for k, v in scores.items()})
                records.append(record)
            self._write_maps(name, ids, maps, images, truth)
        return [_with_eye_columns(record, per_eye[record["id"]]) for record in records]

    def _eye_columns(self, batch: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """``{id: {"quality": flags joined by ";", "status": NON_FINITE or ""}}`` of the batch's
        eyes, from the scoring step ``predictions.csv`` comes from (flagged eyes are warned about)."""
        from xmed.data.quality import warn_flagged
        from xmed.inference import score_batch

        scores = score_batch(self.model, batch)
        warn_flagged(scores["quality"], scores["id"])
        return {eye_id: {"quality": str(quality), "status": status}
                for eye_id, quality, status in zip(scores["id"], scores["quality"], scores["status"])}

    def _counterfactuals(self, name: str, run: CounterfactualRun, images: Tensor, ids: list[str],
                         truth: Tensor | None) -> list[dict[str, Any]]:
        from xmed.metrics.counterfactual import evaluate_counterfactuals

        records = []
        for direction in run.directions:
            method = f"{name}_{direction}"
            cf = run.explainer(images, self.target, direction)
            scores = evaluate_counterfactuals(cf, masks=truth)
            for i, eye_id in enumerate(ids):
                record = {"id": eye_id, "method": method, "seconds": cf.seconds / len(ids),
                          "steps": int(cf.steps[i]),
                          "probability_from": _number(cf.probability[0, i]),
                          "probability_to": _number(cf.probability[-1, i])}
                if cf.vcdr is not None:
                    record.update(vcdr_from=_number(cf.vcdr[0, i]), vcdr_to=_number(cf.vcdr[-1, i]))
                record.update({k: _number(v[i]) for k, v in scores.items() if k != "seconds_per_image"})
                records.append(record)
            self._write_maps(method, ids, cf.difference.float(), images, truth)
            self._write_frames(method, ids, cf)
        return records

    def _write_frames(self, method: str, ids: list[str], cf) -> None:
        """A frame strip (PNG: input … edit, difference) and an animation (GIF) per overlay eye."""
        from PIL import Image

        from xmed.viz.overlay import overlay, to_uint8_image

        dc = self.model.data_config
        for i, eye_id in enumerate(ids):
            if eye_id not in self.overlay_ids:
                continue
            frames = [to_uint8_image(cf.frames[t, i], dc.mean, dc.std) for t in range(cf.frames.shape[0])]
            difference = overlay(frames[0], cf.difference[i, 0].float().cpu().numpy())
            folder = self.out_dir / "counterfactuals" / method
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([*frames, difference], axis=1)).save(folder / f"{eye_file_stem(eye_id)}_strip.png")
            gif = [Image.fromarray(f) for f in frames + frames[-2:0:-1]]   # there and back
            gif[0].save(folder / f"{eye_file_stem(eye_id)}.gif", save_all=True, append_images=gif[1:], duration=250, loop=0)

    def _rationales(self, name: str, run: RationaleRun, images: Tensor, ids: list[str],
                    per_eye: Mapping[str, Mapping[str, str]]) -> None:
        from xmed.errors import QualityWarning
        from xmed.explain.rationale import rationale

        folder = self.out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        decided = [i for i, eye_id in enumerate(ids) if not per_eye[eye_id]["status"]]
        with warnings.catch_warnings():  # already warned about, by eye id (_eye_columns)
            warnings.simplefilter("ignore", QualityWarning)
            explained = rationale(self.model, images[decided], heatmaps=False, **run.options) if decided else []
        contents = {ids[i]: r.to_dict() for i, r in zip(decided, explained)}
        for eye_id in ids:  # an eye without a finite output has no decision to explain: its file gives its status
            content = contents.get(eye_id, per_eye[eye_id])
            (folder / f"{eye_file_stem(eye_id)}.json").write_text(json.dumps({"id": eye_id, **content}, indent=2))

    def _write_maps(self, method: str, ids: list[str], maps: Tensor, images: Tensor, truth: Tensor | None) -> None:
        from PIL import Image

        from xmed.viz.overlay import overlay, to_uint8_image

        map_dir = self.out_dir / "maps" / method
        map_dir.mkdir(parents=True, exist_ok=True)
        dc = self.model.data_config
        for i, eye_id in enumerate(ids):
            saliency = maps[i, 0].cpu().numpy()
            np.save(map_dir / f"{eye_file_stem(eye_id)}.npy", saliency.astype(np.float32))
            if eye_id in self.overlay_ids:
                photo = to_uint8_image(images[i], dc.mean, dc.std)
                outline = truth[i, 0].cpu().numpy() if truth is not None else None
                path = self.out_dir / "overlays" / method / f"{eye_file_stem(eye_id)}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(overlay(photo, saliency, outline=outline)).save(path)


def build_metrics(names: list[str], faithfulness: Mapping[str, Any]) -> dict[str, Any]:
    from xmed.metrics.explanation import EXPLANATION_METRICS

    metrics = {}
    for name in names:
        if name not in EXPLANATION_METRICS or name.startswith("randomisation"):
            known = sorted(k for k in EXPLANATION_METRICS if not k.startswith("randomisation"))
            raise ConfigError("metrics", f"unknown per-image metric {name!r}; known: {', '.join(known)} "
                                         "(randomisation has its own `randomisation` settings)")
        cls = EXPLANATION_METRICS[name]
        if name in ("deletion", "insertion"):
            metrics[name] = cls(n_steps=faithfulness["n_steps"], baseline=faithfulness["baseline"])
        elif name.startswith("road"):
            metrics[name] = cls(percentages=tuple(faithfulness["road_percentages"]))
        else:
            metrics[name] = cls()
    return metrics


def summarise(records: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Mean of every metric per method over the eyes where it is defined, and how many those were."""
    summary: dict[str, dict[str, Any]] = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        keys = [k for k in rows[0] if k not in ("id", "method", *EYE_COLUMNS)] if rows else []
        entry: dict[str, Any] = {"n": len(rows)}
        for key in keys:
            values = [r[key] for r in rows if r.get(key) is not None]
            entry[key] = round(float(np.mean(values)), 6) if values else None
            if key not in ("seconds",) and len(values) != len(rows):
                entry[f"{key}_n"] = len(values)
        summary[method] = entry
    return summary


#: The metric whose count of defined eyes the table shows: localisation for saliency maps (on the
#: phantom only glaucomatous eyes have a region for `glaucoma`), validity for counterfactuals (only
#: eyes that were not already at the goal were edited).
HEADLINE_METRICS = ("energy_pointing_game", "validity")


def eyes_scored(entry: Mapping[str, Any]) -> str:
    """``"k of n"``: of the ``n`` eyes a method ran on, the ``k`` its headline metric is defined on.

    Example:
        >>> eyes_scored({"n": 32, "validity": 1.0, "validity_n": 11}), eyes_scored({"n": 8, "deletion": 0.1})
        ('11 of 32', '8')
    """
    for key in HEADLINE_METRICS:
        if key in entry:
            return f"{entry.get(f'{key}_n', entry['n'])} of {entry['n']}"
    return str(entry["n"])


def comparison_table(summary: Mapping[str, Mapping[str, Any]], target: str) -> str:
    """Markdown: one row per method, one column per metric, arrows for the better direction."""
    from xmed.metrics.explanation import EXPLANATION_METRICS

    columns: list[str] = ["eyes"]
    for entry in summary.values():
        for key in entry:
            if key not in columns and key not in ("n", "seconds") and not key.endswith("_n") \
                    and not key.startswith("randomisation_curve"):
                columns.append(key)
    columns.append("seconds")

    def header(key: str) -> str:
        metric = EXPLANATION_METRICS.get(key)
        if key == "shortcut_energy":
            return "shortcut energy"
        if key == "seconds":
            return "s / image"
        if key == "eyes":
            return "eyes"
        arrow = {"higher": " ↑", "lower": " ↓"}.get(getattr(metric, "direction", ""), "")
        return key.replace("_", " ") + arrow

    lines = [f"Target `{target}`; ↑ higher is better, ↓ lower is better.", "",
             "| method | " + " | ".join(header(c) for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for method, entry in summary.items():
        cells = []
        for key in columns:
            if key == "eyes":
                cells.append(eyes_scored(entry))
                continue
            value = entry.get(key)
            cells.append("–" if value is None else (f"{value:.3f}" if key != "seconds" else f"{value:.3g}"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The metrics put side by side with an earlier run (``compare_run=``), where a method has them.
COMPARED_METRICS = ("shortcut_energy", "energy_pointing_game", "validity", "energy_in_mask", "l1_in_mask",
                    "vcdr_falls", "proximity_l2")


def run_comparison(summary: Mapping[str, Mapping[str, Any]], other_run: Path, out_dir: Path | None = None,
                   records: list[dict[str, Any]] | None = None) -> str:
    """Markdown: per method, the :data:`COMPARED_METRICS` of this run's model next to those of the
    model of an earlier run on the same eyes (e.g. a standard vs an adversarially trained model,
    or a model trained with the shortcut marker vs one without). With this run's per-eye
    ``records`` and the earlier run's ``per_image.csv``, a last column pairs the eyes: on how many
    of the eyes both scored this model's value is the higher. With ``out_dir``, also writes
    ``compare/<method>/<id>.png``: this run's overlay (left) and the earlier run's (right) of
    every eye both have.

    Example:
        >>> run_comparison({}, Path("/nowhere"))
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'compare_run': no metrics.json in /nowhere (give an xmed-explain run folder)
    """
    path = other_run / "metrics.json"
    if not path.is_file():
        raise ConfigError("compare_run", f"no metrics.json in {other_run} (give an xmed-explain run folder)")
    other = json.loads(path.read_text())["methods"]
    paired = _paired_counts(records, other_run / "per_image.csv") if records is not None else None
    lines = [f"This model vs the model of `{other_run}`, on the same eyes.", "",
             "| method | metric | this model | comparison model |" + (" this model higher |" if paired else ""),
             "|---|---|---|---|" + ("---|" if paired else "")]
    for method, entry in summary.items():
        for key in COMPARED_METRICS:
            mine, theirs = entry.get(key), other.get(method, {}).get(key)
            if mine is None and theirs is None:
                continue
            cells = ["–" if v is None else f"{v:.3f}" for v in (mine, theirs)]
            if paired:
                higher, equal, both = paired.get((method, key), (0, 0, 0))
                cells.append("–" if not both else f"{higher} of {both} eyes" + (f" ({equal} equal)" if equal else ""))
            lines.append(f"| {method} | {key.replace('_', ' ')} | " + " | ".join(cells) + " |")
    if out_dir is not None:
        pictures = _side_by_side(out_dir, other_run, [m for m in summary if m in other])
        if pictures:
            lines += ["", f"Side by side (this model left): `compare/<method>/<eye>.png` in the run folder "
                          f"({pictures} pictures)."]
    return "\n".join(lines)


def _paired_counts(records: list[dict[str, Any]], other_csv: Path) -> dict[tuple[str, str], tuple[int, int, int]] | None:
    """``{(method, metric): (eyes where this run's value is higher, eyes where both are equal, eyes
    both runs scored)}`` from this run's records and the earlier run's ``per_image.csv`` (None when
    that file is missing)."""
    if not other_csv.is_file():
        return None
    with open(other_csv, newline="") as fh:
        theirs = {(row["id"], row["method"]): row for row in csv.DictReader(fh)}
    counts: dict[tuple[str, str], list[int]] = {}
    for record in records:
        row = theirs.get((record["id"], record["method"]))
        if row is None:
            continue
        for key in COMPARED_METRICS:
            mine, other = record.get(key), row.get(key) or None
            if mine is None or other is None:
                continue
            count = counts.setdefault((record["method"], key), [0, 0, 0])
            count[0] += int(float(mine) > float(other))
            count[1] += int(float(mine) == float(other))
            count[2] += 1
    return {k: tuple(v) for k, v in counts.items()}


def _side_by_side(out_dir: Path, other_run: Path, methods: list[str]) -> int:
    """``compare/<method>/<id>.png`` for every overlay both runs wrote; returns how many."""
    from PIL import Image

    written = 0
    for method in methods:
        for mine in sorted((out_dir / "overlays" / method).glob("*.png")):
            theirs = other_run / "overlays" / method / mine.name
            if not theirs.is_file():
                continue
            left, right = np.asarray(Image.open(mine).convert("RGB")), np.asarray(Image.open(theirs).convert("RGB"))
            height = max(left.shape[0], right.shape[0])
            pad = [np.pad(x, ((0, height - x.shape[0]), (0, 0), (0, 0)), constant_values=255) for x in (left, right)]
            gap = np.full((height, 6, 3), 255, np.uint8)
            folder = out_dir / "compare" / method
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([pad[0], gap, pad[1]], axis=1)).save(folder / mine.name)
            written += 1
    return written


def randomisation_check(model, explainer_cfg: Mapping[str, Any], images: Tensor, target: str,
                        skip: list[str]) -> dict[str, dict[str, Any]]:
    """Cascading parameter randomisation per method: Spearman between the maps of the trained
    model and of copies randomised from the output layer down; the last value has every layer
    randomised."""
    from xmed.explain import EXPLAINERS, get_explainer
    from xmed.metrics.explanation import ModelParameterRandomisation

    out = {}
    test = ModelParameterRandomisation(similarity="spearman")
    for name, options in explainer_cfg.items():
        options = dict(options or {})
        method = options.pop("method", name)
        if name in skip or method in skip or method not in EXPLAINERS:  # saliency maps only
            continue
        cls = get_explainer(method)

        def explain_fn(net, x, cls=cls, options=options):
            with torch.enable_grad():
                return cls(net, **options)(x, target).maps

        curve = test(model, explain_fn, images)
        # a map that is constant (e.g. a CAM that is zero everywhere) has no rank order: NaN, left out
        out[name] = {"randomisation_spearman": _mean_defined(list(curve.values())[-1]),
                     "randomisation_curve": {k: _mean_defined(v) for k, v in curve.items()}}
    return out


def _mean_defined(values: Tensor) -> float | None:
    """Mean over the finite values; None when there is none."""
    values = values.detach().float().cpu()
    values = values[torch.isfinite(values)]
    return round(float(values.mean()), 6) if values.numel() else None


def explain_run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``xmed-explain`` for a composed config; returns the summary written to metrics.json."""
    from torch.utils.data import DataLoader

    from xmed.data.datamodule import SplitView
    from xmed.data.datasets.base import collate_samples
    from xmed.models.classifier import TARGETS
    from xmed.models.export import load_model

    out_dir = command_folder(cfg)
    if cfg.target not in TARGETS:
        raise ConfigError("target", f"unknown target {cfg.target!r}; use one of {', '.join(TARGETS)}")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = load_model(cfg.ckpt_path)
    datamodule = datamodule_for_model(cfg.data, model)
    if cfg.split not in datamodule.splits:
        raise ConfigError("split", f"no split {cfg.split!r}; the data set has {', '.join(datamodule.splits)}")
    view = datamodule.splits[cfg.split]
    indices = view.indices
    if cfg.get("label") is not None:  # e.g. label=1: explain glaucomatous eyes only
        indices = [i for i in indices if view.base.records[i].label == float(cfg.label)]
    view = SplitView(view.base, indices[:int(cfg.n)], view.transform)
    if len(view) == 0:
        raise ConfigError("n", f"no eyes to explain in split {cfg.split!r}"
                               + (f" with label {cfg.label}" if cfg.get("label") is not None else ""))
    loader = DataLoader(view, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate_samples,
                        num_workers=datamodule.num_workers)
    explainer_cfg = OmegaConf.to_container(cfg.explainer, resolve=True)
    explainers = build_explainers(model, explainer_cfg)
    metrics = build_metrics(list(cfg.metrics), cfg.faithfulness)
    overlay_ids = {view.base.records[i].id for i in view.indices[:int(cfg.overlays)]}
    module = ExplainModule(model, explainers, cfg.target, metrics, out_dir, overlay_ids)
    trainer, _ = build_trainer(cfg.trainer, auto_precision=FULL_PRECISION, inference_mode=False, logger=False,
                               enable_checkpointing=False, default_root_dir=str(out_dir))
    batches = trainer.predict(module, dataloaders=loader)
    records = [r for batch in batches or [] for r in batch]
    parts = out_dir / "parts"
    parts.mkdir(exist_ok=True)
    (parts / f"rank{trainer.global_rank}.json").write_text(json.dumps(records))
    trainer.strategy.barrier()
    if trainer.global_rank != 0:
        return {}
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for rank in range(trainer.world_size):  # only this run's ranks: a folder may hold older parts
        for record in json.loads((parts / f"rank{rank}.json").read_text()):
            # a distributed sampler pads the ranks to equal length by repeating eyes: keep each once
            merged.setdefault((record["id"], record["method"]), record)
    records = list(merged.values())
    methods = list(dict.fromkeys(r["method"] for r in records))
    summary = summarise(records, methods)
    if cfg.randomisation.n_images > 0:
        first = SplitView(view.base, view.indices[:int(cfg.randomisation.n_images)], view.transform)
        images = collate_samples([first[i] for i in range(len(first))])["image"]
        for name, result in randomisation_check(model, explainer_cfg, images, cfg.target,
                                                list(cfg.randomisation.skip)).items():
            summary[name].update(result)
    eyes = {r["id"]: r for r in records}  # one record per eye and method; the eye columns agree
    result = {"target": cfg.target, "split": cfg.split, "n": len(view), "ckpt_path": str(cfg.ckpt_path),
              "failed": sorted(i for i, r in eyes.items() if r.get("status")),
              "quality_flagged": sorted(i for i, r in eyes.items() if r.get("quality")),
              "methods": summary}
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=2, allow_nan=False))
    table = comparison_table(summary, cfg.target)
    if cfg.get("compare_run"):
        table += "\n\n" + run_comparison(summary, Path(cfg.compare_run), out_dir, records)
    write_text_atomic(out_dir / "comparison.md", table + "\n")
    _write_per_image(out_dir / "per_image.csv", records)
    _comparison_sheet(out_dir, [m for m in methods if (out_dir / "overlays" / m).is_dir()], sorted(overlay_ids))
    if cfg.model_card:
        update_model_card(Path(cfg.model_card), table, cfg)
    print(table)
    print_run_folder(out_dir, {name: out_dir / name
                               for name in ("metrics.json", "comparison.md", "per_image.csv", "maps", "overlays")})
    return result


CARD_LEGEND = (
    "Each run of `xmed-explain … model_card=<this card>` keeps its own subsection below (a rerun with the "
    "same methods, target, split and eyes replaces it). Localisation is scored against the data set's "
    "masks — for `glaucoma` the disc plus the masks of the findings present, on glaucomatous eyes only "
    "(`eyes` says how many; for counterfactuals, how many were edited: an eye already at the goal is "
    "not; an edit is scored against the disc of every eye plus the findings present); faithfulness: deletion/insertion AUC of the target's probability and ROAD "
    "(noisy linear imputation); randomisation: Spearman between the maps of the trained model and of a "
    "copy with every layer re-initialised (near 0 is good; Adebayo et al., 2018); counterfactuals: flip "
    "rate, proximity, sparsity, the shares of the change inside the masks — of its energy (Σδ², what the "
    "L2 budget bounds) and of its absolute size (L1) — and the vCDR's movement."
)


def run_heading(cfg: DictConfig) -> str:
    """The card subsection heading of a run: the command that reproduces it (model aside).

    Example:
        >>> run_heading(OmegaConf.create({"explainer": {"gradcam": {}}, "target": "glaucoma",
        ...                               "split": "test", "n": 8, "label": None}))
        "### `xmed-explain 'explainer=[gradcam]' target=glaucoma split=test n=8`"
    """
    command = f"xmed-explain 'explainer=[{','.join(cfg.explainer)}]' target={cfg.target} split={cfg.split} n={cfg.n}"
    if cfg.get("label") is not None:
        command += f" label={cfg.label}"
    return f"### `{command}`"


def update_model_card(card: Path, table: str, cfg: DictConfig) -> None:
    """Put this run's table into the card's "Explanation checks" section, in a subsection of its own.

    Free text at the top of the section is kept; the subsection of an earlier run with the same
    heading (:func:`run_heading`) is replaced, other runs' subsections are kept.
    """
    from xmed.models.card import NO_EXPLANATION_CHECKS

    if not card.is_file():
        raise ConfigError("model_card", f"no such file: {card}")
    text = card.read_text()
    heading = "## Explanation checks"
    found = re.search(rf"{re.escape(heading)}\n(.*?)(?=\n## |\Z)", text, flags=re.S)
    if found is None:
        raise ConfigError("model_card", f"{card} has no '{heading}' section")
    body = found.group(1).replace(NO_EXPLANATION_CHECKS, "").strip()
    # the legend of whichever xmed version wrote the card is replaced by this one's
    legend_start = CARD_LEGEND[:CARD_LEGEND.index("(")]
    body = re.sub(rf"^{re.escape(legend_start)}.*?(?:\n\n|\Z)", "", body, flags=re.S | re.M).strip()
    body = f"{CARD_LEGEND}\n\n{body}".strip()
    title = run_heading(cfg)
    subsection = f"{title}\n\nModel `{cfg.ckpt_path}`.\n\n{table.strip()}"
    earlier = re.search(rf"^{re.escape(title)}\n.*?(?=^### |\Z)", body, flags=re.S | re.M)
    if earlier:
        body = body[:earlier.start()] + subsection + "\n\n" + body[earlier.end():].lstrip()
    else:
        body = f"{body}\n\n{subsection}"
    section = f"{heading}\n\n{body.strip()}\n"
    write_text_atomic(card, text[:found.start()] + section + text[found.end():])
    print(f"model card      {card.resolve()} (explanation checks: {title[4:]})")


def _write_per_image(path: Path, records: list[dict[str, Any]]) -> None:
    columns = ["id", "method", *EYE_COLUMNS]
    for record in records:
        columns += [k for k in record if k not in columns]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if v is None else v) for k, v in record.items()})


def _comparison_sheet(out_dir: Path, methods: list[str], ids: list[str]) -> None:
    """overlays/comparison.png: one row per eye, one column per method."""
    from PIL import Image

    from xmed.viz.grid import image_grid

    tiles, captions = [], []
    for eye_id in ids:
        for method in methods:
            path = out_dir / "overlays" / method / f"{eye_file_stem(eye_id)}.png"
            if path.is_file():
                tiles.append(np.asarray(Image.open(path).convert("RGB")))
                captions.append(method)
    if tiles:
        Image.fromarray(image_grid(tiles, columns=len(methods), captions=captions, caption_scale=0.35)).save(
            out_dir / "overlays" / "comparison.png")


#: What every per-image record says of its eye besides the scores: the image-quality flags (``;``-joined,
#: empty when the image passed) and the status (``non-finite output`` when the model's output for
#: the eye is NaN or infinite: its scores are then left empty).
EYE_COLUMNS = ("quality", "status")


def _with_eye_columns(record: dict[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """``record`` with its eye's :data:`EYE_COLUMNS`; every score emptied when the eye failed."""
    if columns["status"]:
        record = {k: v if k in ("id", "method", "seconds") else None for k, v in record.items()}
    return {**record, **columns}


def _number(value: Tensor) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def eye_file_stem(eye_id: str) -> str:
    """The file name (without suffix) of an eye's outputs, distinct for distinct ids: an id that is
    already a plain file name is kept; any other (``images/a/b``, ``a b``) has its other characters
    replaced (and a very long one shortened) and a short hash of the whole id appended, so
    ``images/a_b`` and ``images/a/b`` never write the same file.

    Example:
        >>> eye_file_stem("g0001"), eye_file_stem("images/a_b"), eye_file_stem("images/a/b")
        ('g0001', 'images_a_b-e2d12e3254', 'images_a_b-469f7e75ba')
    """
    import hashlib

    eye_id = str(eye_id)
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", eye_id)
    if (plain == eye_id and len(eye_id) <= MAX_STEM and not HASHED_STEM.fullmatch(eye_id)
            and eye_id.strip(".")):
        return eye_id
    return f"{plain[:MAX_STEM]}-{hashlib.sha256(eye_id.encode()).hexdigest()[:10]}"


#: file names stay well under the 255 bytes file systems allow, with room for a suffix
MAX_STEM = 120


#: the shape of a hashed stem; a plain id of this shape is hashed too, so it cannot meet one
HASHED_STEM = re.compile(r".*-[0-9a-f]{10}")


@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="explain")
@command
def main(cfg: DictConfig) -> None:
    explain_run(cfg)


if __name__ == "__main__":
    main()
