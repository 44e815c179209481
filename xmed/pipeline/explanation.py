"""Explaining a trained model over a data set (``xmed-explain``): saliency maps, counterfactual
edits and finding-level rationales of the first ``n`` eyes of a split, scored per method, through
Lightning's predict loop (``trainer=ddp`` spreads the eyes over processes; every process writes
its eyes' maps and overlays, and :class:`~xmed.inference.RecordWriter` gathers their scores).

Localisation is scored against the ground truth where the data set has masks (the phantom has
all of them): for target ``glaucoma`` the disc plus the masks of the findings present, on
glaucomatous eyes only — a healthy eye has no evidence *for* glaucoma to point at, and its disc
is evidence against; for a finding its own mask (eyes without that finding are left out); for
the vCDR the disc. A counterfactual edit of the diagnosis is scored against the disc of every eye
plus the findings present: an edit toward glaucoma of a healthy eye should reshape its cup and
rim, not the background. Eyes carrying the phantom's shortcut marker also get
``shortcut_energy``: the share of the map's energy on the marker.

Example::

    from omegaconf import OmegaConf
    explain_run(OmegaConf.load("outputs/demo/explain/.hydra/config.yaml"))["methods"]["gradcam"]
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from xmed.data.datamodule import SplitView, datamodule_for_model, eval_loader, explained_view, pipeline_obstacle
from xmed.data.datasets.base import collate_samples
from xmed.data.quality import warn_flagged
from xmed.errors import ConfigError, QualityWarning
from xmed.explain import DIRECTIONS, EXPLAINERS, METHODS, get_explainer
from xmed.explain.targets import target_function
from xmed.findings import FINDINGS, VCDR, canonical_target, finding_index
from xmed.inference import RecordWriter, score_batch
from xmed.metrics import METRICS, Evidence, create_metric
from xmed.metrics.counterfactual import evaluate_counterfactuals
from xmed.metrics.explanation import EnergyPointingGame, ModelParameterRandomisation
from xmed.models.export import load_model
from xmed.pipeline.explanation_report import (comparison_sheet, comparison_table, run_comparison, summarise,
                                              update_model_card, write_per_image)
from xmed.pipeline.instantiate import inference_trainer
from xmed.pipeline.reports import print_run_folder
from xmed.runs import command_folder, eye_file_stem, write_text_atomic
from xmed.runtime import choose_autocast, choose_batch_size, choose_pipeline, eye_cost
from xmed.viz.overlay import overlay, to_uint8_image



def ground_truth(batch: Mapping[str, Any], target: str, edit: bool = False) -> Tensor | None:
    """B×1×H×W bool region a map for ``target`` should point at (empty where unknown or absent),
    or None when the data set has no masks for it. ``edit``: the region a counterfactual edit of
    the diagnosis should change — the disc of every eye, not only of glaucomatous ones."""
    target = canonical_target(target)
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
    """An edit method and the directions it is run in."""

    kind = "edit"

    def __init__(self, explainer: Any, directions: list[str]):
        self.explainer, self.directions = explainer, directions


def build_explainers(model: torch.nn.Module, explainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{run name: explainer}`` from the ``explainer`` config group (one entry per method, of any
    registered kind: :data:`xmed.explain.METHODS`): saliency explainers, edit methods with the
    directions they run in (:class:`CounterfactualRun`) and rationales."""
    if not explainer_cfg:
        raise ConfigError("explainer", "no explainer selected; e.g. explainer=gradcam or 'explainer=[gradcam,rise]'")
    explainers = {}
    for name, options in explainer_cfg.items():
        options = dict(options or {})
        try:
            cls = METHODS.lookup(options.pop("method", name))
            if cls.kind == "edit":
                directions = list(options.pop("directions", DIRECTIONS))
                for direction in directions:
                    if direction not in DIRECTIONS:
                        raise ConfigError(f"explainer.{name}.directions", f"unknown direction {direction!r}; "
                                                                         f"use {', '.join(DIRECTIONS)}")
                explainers[name] = CounterfactualRun(cls(model, **options), directions)
            elif cls.kind == "rationale":
                explainers[name] = cls(model, **options, heatmaps=False)  # its JSON holds no maps
            else:
                explainers[name] = cls(model, **options)
        except TypeError as err:
            raise ConfigError(f"explainer.{name}", str(err)) from None
        except ConfigError as err:
            if err.key.startswith("explainer."):
                raise
            # the method names its own argument; the user wrote it under explainer.<name>
            raise ConfigError(f"explainer.{name}.{err.key}", err.reason) from None
    return explainers


def gradient_method(explainer: Any) -> bool:
    """Whether ``autocast`` runs ``explainer`` in bf16: the saliency methods whose cost is a backward pass,
    as their class says (``backward_pass``: the CAMs, Integrated Gradients, SmoothGrad, input×gradient,
    guided Grad-CAM), not occlusion and RISE, which read small differences of the model's scores that
    bf16 would round away.

    Example:
        >>> [name for name, cls in EXPLAINERS.items() if not gradient_method(cls.__new__(cls))]
        ['occlusion', 'rise']
    """
    return bool(getattr(explainer, "backward_pass", False))


class ExplainModule(L.LightningModule):
    """Lightning's predict loop over explainers: each step explains a batch with every method and
    scores the maps; it returns the per-eye records (one per eye and method) and what
    :class:`ExplanationWriter` writes to files — the maps, the counterfactual paths of the eyes in
    ``overlay_ids`` and the rationales."""

    def __init__(self, model: torch.nn.Module, explainers: Mapping[str, Any], target: str,
                 metrics: Mapping[str, Any], overlay_ids: set[str] = frozenset(), autocast: bool = False):
        super().__init__()
        self.model = model
        self.explainers = dict(explainers)
        self.target = target
        self.metrics = dict(metrics)
        self.overlay_ids = overlay_ids
        #: the gradient methods' passes in bf16 autocast (:func:`xmed.runtime.choose_autocast`); their
        #: maps, the metrics and the eyes' scores stay in fp32
        self.autocast = autocast

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        out: dict[str, Any] = {"records": [], "maps": [], "paths": [], "rationales": {}}
        if batch.get("size", 1) == 0:
            return out
        images, ids = batch["image"], list(batch["meta"]["id"])
        out.update(ids=ids, images=images.detach().cpu())
        per_eye = self._eye_columns(batch)
        truth = ground_truth(batch, self.target)
        edit_truth = (ground_truth(batch, self.target, edit=True)
                      if any(e.kind == "edit" for e in self.explainers.values()) else None)
        marker = None
        if "shortcut" in (batch.get("masks") or {}):
            marker = batch["masks"]["shortcut"].to(images.device) & batch["mask_valid"]["shortcut"].to(images.device)[:, None, None]
            marker = marker[:, None]
        forward = target_function(self.model, self.target, as_probability=True)
        records = []
        for name, explainer in self.explainers.items():
            if explainer.kind == "edit":
                records += self._counterfactuals(name, explainer, images, ids, edit_truth, out)
                continue
            if explainer.kind == "rationale":
                out["rationales"][name] = self._rationales(explainer, images, ids, per_eye)
                continue
            bf16 = self.autocast and gradient_method(explainer)
            with torch.enable_grad(), torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
                explanation = explainer(images, self.target)
            maps = explanation.maps.float()
            evidence = Evidence(maps=maps, masks=truth, forward=forward, images=images)
            scores: dict[str, Tensor] = {}
            for metric_name, metric in self.metrics.items():
                if not evidence.missing(metric.requires):  # no masks for this target: no localisation
                    with torch.no_grad():
                        scores[metric_name] = metric.score(evidence)
            if marker is not None:
                scores["shortcut_energy"] = EnergyPointingGame()(maps, marker)
            per_image = explanation.seconds / len(ids)
            for i, eye_id in enumerate(ids):
                record = {"id": eye_id, "method": name, "seconds": per_image}
                record.update({k: _number(v[i]) for k, v in scores.items()})
                records.append(record)
            out["maps"].append((name, maps.cpu(), _cpu(truth)))
        out["records"] = [_with_eye_columns(record, per_eye[record["id"]]) for record in records]
        return out

    def _eye_columns(self, batch: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """``{id: {"quality": flags joined by ";", "status": NON_FINITE or ""}}`` of the batch's
        eyes, from the scoring step ``predictions.csv`` comes from (flagged eyes are warned about)."""
        scores = score_batch(self.model, batch)
        warn_flagged(scores["quality"], scores["id"])
        return {eye_id: {"quality": str(quality), "status": status}
                for eye_id, quality, status in zip(scores["id"], scores["quality"], scores["status"])}

    def _counterfactuals(self, name: str, run: CounterfactualRun, images: Tensor, ids: list[str],
                         truth: Tensor | None, out: dict[str, Any]) -> list[dict[str, Any]]:
        records = []
        for direction in run.directions:
            method = f"{name}_{direction}"
            cf = run.explainer(images, self.target, direction)
            # an eye already at the goal was not edited: a path of identical frames would only mislead
            shown = [i for i, eye_id in enumerate(ids) if eye_id in self.overlay_ids and int(cf.steps[i]) > 0]
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
            difference = cf.difference.float().cpu()
            out["maps"].append((method, difference, _cpu(truth)))
            out["paths"].append((method, [ids[i] for i in shown], cf.frames[:, shown].float().cpu(), difference[shown]))
        return records

    def _rationales(self, explainer: Any, images: Tensor, ids: list[str],
                    per_eye: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, Any]]:
        """``{id: rationale as a dict}``; an eye without a finite output has no decision to explain:
        its entry gives its status."""
        decided = [i for i, eye_id in enumerate(ids) if not per_eye[eye_id]["status"]]
        with warnings.catch_warnings():  # already warned about, by eye id (_eye_columns)
            warnings.simplefilter("ignore", QualityWarning)
            explained = explainer(images[decided]) if decided else []
        contents = {ids[i]: r.to_dict() for i, r in zip(decided, explained)}
        return {eye_id: {"id": eye_id, **contents.get(eye_id, per_eye[eye_id])} for eye_id in ids}


def _cpu(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.cpu()


class ExplanationWriter(RecordWriter):
    """Writes what every process's :class:`ExplainModule` steps return, as each batch ends: the
    records (gathered as :class:`~xmed.inference.RecordWriter` does, one per eye and method), and
    into ``out_dir`` the raw maps ``maps/<method>/<eye>.npy``, the overlays of the eyes in
    ``overlay_ids`` (``overlays/<method>/<eye>.png``, ground truth outlined), the counterfactual
    paths of those the edit changed (``counterfactuals/<method>/<eye>_strip.png`` and ``.gif``; an
    eye already at the goal has none) and the rationales
    (``<name>/<eye>.json``).

    Example::

        writer = ExplanationWriter(out_dir, eye_ids, model.data_config, overlay_ids=set(eye_ids[:8]))
        trainer = L.Trainer(callbacks=[writer], inference_mode=False, logger=False)
        trainer.predict(ExplainModule(model, explainers, "glaucoma", metrics), loader, return_predictions=False)
    """

    def __init__(self, out_dir: Path, order: list[str], data_config, overlay_ids: set[str] = frozenset()):
        super().__init__(Path(out_dir) / ".parts", order, key=("id", "method"))
        self.out_dir, self.data_config, self.overlay_ids = Path(out_dir), data_config, overlay_ids

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        self.write_files(prediction)
        super().write_on_batch_end(trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx)

    def write_files(self, prediction: Mapping[str, Any]) -> None:
        """Write the maps, overlays, counterfactual paths and rationales of one step's output."""
        for method, maps, truth in prediction["maps"]:
            self._write_maps(method, prediction["ids"], maps, prediction["images"], truth)
        for method, ids, frames, difference in prediction["paths"]:
            self._write_path(method, ids, frames, difference)
        for name, contents in prediction["rationales"].items():
            folder = self.out_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            for eye_id, content in contents.items():
                (folder / f"{eye_file_stem(eye_id)}.json").write_text(json.dumps(content, indent=2))

    def _write_maps(self, method: str, ids: list[str], maps: Tensor, images: Tensor, truth: Tensor | None) -> None:
        from PIL import Image

        map_dir = self.out_dir / "maps" / method
        map_dir.mkdir(parents=True, exist_ok=True)
        dc = self.data_config
        for i, eye_id in enumerate(ids):
            saliency = maps[i, 0].numpy()
            np.save(map_dir / f"{eye_file_stem(eye_id)}.npy", saliency.astype(np.float32))
            if eye_id in self.overlay_ids:
                photo = to_uint8_image(images[i], dc.mean, dc.std)
                outline = truth[i, 0].numpy() if truth is not None else None
                path = self.out_dir / "overlays" / method / f"{eye_file_stem(eye_id)}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(overlay(photo, saliency, outline=outline)).save(path)

    def _write_path(self, method: str, ids: list[str], frames: Tensor, difference: Tensor) -> None:
        """A frame strip (PNG: input … edit, difference) and an animation (GIF) per eye."""
        from PIL import Image

        dc = self.data_config
        folder = self.out_dir / "counterfactuals" / method
        folder.mkdir(parents=True, exist_ok=True)
        for i, eye_id in enumerate(ids):
            path = [to_uint8_image(frames[t, i], dc.mean, dc.std) for t in range(frames.shape[0])]
            change = overlay(path[0], difference[i, 0].numpy())
            Image.fromarray(np.concatenate([*path, change], axis=1)).save(folder / f"{eye_file_stem(eye_id)}_strip.png")
            gif = [Image.fromarray(f) for f in path + path[-2:0:-1]]   # there and back
            gif[0].save(folder / f"{eye_file_stem(eye_id)}.gif", save_all=True, append_images=gif[1:], duration=250, loop=0)


def build_metrics(names: list[str], faithfulness: Mapping[str, Any]) -> dict[str, Any]:
    """The per-image saliency metrics named in the ``metrics`` config key, built from the registry
    (:data:`xmed.metrics.METRICS`) with the ``faithfulness`` settings where they apply.

    Example:
        >>> sorted(build_metrics(["pointing_game", "deletion"], {"n_steps": 8, "baseline": "blur"}))
        ['deletion', 'pointing_game']
    """
    per_image = ("localisation", "faithfulness", "complexity")
    known = sorted(name for name, cls in METRICS.items() if cls.category in per_image)
    curve = {"n_steps": faithfulness.get("n_steps"), "baseline": faithfulness.get("baseline")}
    road = {"percentages": tuple(faithfulness.get("road_percentages") or ())}
    options = {"deletion": curve, "insertion": curve, "road_morf": road, "road_lerf": road}
    metrics = {}
    for name in names:
        if name not in known:
            raise ConfigError("metrics", f"unknown per-image metric {name!r}; known: {', '.join(known)} "
                                         "(randomisation has its own `randomisation` settings)")
        metrics[name] = create_metric(name, **{k: v for k, v in options.get(name, {}).items() if v not in (None, ())})
    return metrics


def randomisation_check(model, explainer_cfg: Mapping[str, Any], images: Tensor, target: str,
                        skip: list[str]) -> dict[str, dict[str, Any]]:
    """Cascading parameter randomisation per method: Spearman between the maps of the trained
    model and of copies randomised from the output layer down; the last value has every layer
    randomised."""
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


def explanation_eye_bytes(model, explainer_cfg: Mapping[str, Any], device) -> float:
    """Device memory one eye takes in an ``xmed-explain`` step (the cost model of ``batch_size:
    auto``), from :func:`xmed.runtime.eye_cost` measured on ``device``: the graphs of its forward
    pass the most demanding method keeps for its backward pass (one; guided Grad-CAM two;
    SmoothGrad one per noisy copy it runs at once: each class's ``held_graphs``), or the passes
    without gradients of the faithfulness metrics (four eyes' worth at once), whichever is larger;
    plus the eye itself and the frames the edits' paths record (``recorded_frames``)."""
    cost = eye_cost(model.to(device), model.data_config.input_size, device)
    graphs, frames = 1, 1
    for name, options in explainer_cfg.items():
        options = dict(options or {})
        cls = METHODS.lookup(options.pop("method", name))
        graphs = max(graphs, int(cls.held_graphs(options)))
        frames += int(cls.recorded_frames(options))
    return max(graphs * cost.graph, 4 * cost.transient) + frames * cost.input


def explanation_loader(cfg: DictConfig, view, datamodule, model, device, explainer_cfg: Mapping[str, Any]):
    """The loader ``xmed-explain`` reads ``view`` through, and the choices behind it: where the
    photographs are prepared (``data.pipeline``), how many eyes a batch holds (``batch_size``: 8 on a
    CPU) and whether the methods run in bf16 autocast (``autocast``)."""
    from torch.utils.data import DataLoader

    pipeline = choose_pipeline(datamodule.pipeline, device.type, pipeline_obstacle(view))
    batch = choose_batch_size(cfg.batch_size, device, lambda: explanation_eye_bytes(model, explainer_cfg, device),
                              cpu_default=8)
    autocast = choose_autocast(cfg.get("autocast", False), device)
    if pipeline.value == "gpu":
        loader = eval_loader(view, batch.value, datamodule.num_workers, device)
    else:
        loader = DataLoader(view, batch_size=batch.value, shuffle=False, collate_fn=collate_samples,
                            num_workers=datamodule.num_workers)
    return loader, {"pipeline": pipeline, "batch_size": batch, "autocast": autocast}


def explain_run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``xmed-explain`` for a composed config; returns the summary written to metrics.json."""
    import logging

    out_dir = command_folder(cfg)
    target = canonical_target(cfg.target)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = load_model(cfg.ckpt_path)
    datamodule = datamodule_for_model(cfg.data, model)
    view = explained_view(cfg, datamodule)
    explainer_cfg = OmegaConf.to_container(cfg.explainer, resolve=True)
    explainers = build_explainers(model, explainer_cfg)
    metrics = build_metrics(list(cfg.metrics), cfg.faithfulness)
    eye_ids = [view.base.records[i].id for i in view.indices]
    overlay_ids = set(eye_ids[:int(cfg.overlays)])
    writer = ExplanationWriter(out_dir, eye_ids, model.data_config, overlay_ids)
    trainer, _ = inference_trainer(cfg.trainer, out_dir, inference_mode=False, callbacks=[writer])
    loader, choices = explanation_loader(cfg, view, datamodule, model, trainer.strategy.root_device, explainer_cfg)
    for name, choice in choices.items():
        logging.getLogger(__name__).info("%s %s", name, choice)
    module = ExplainModule(model, explainers, target, metrics, overlay_ids, autocast=choices["autocast"].value)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    if not trainer.is_global_zero:
        return {}
    records = writer.records
    methods = list(dict.fromkeys(r["method"] for r in records))
    summary = summarise(records, methods)
    if cfg.randomisation.n_images > 0:
        first = SplitView(view.base, view.indices[:int(cfg.randomisation.n_images)], view.transform)
        images = collate_samples([first[i] for i in range(len(first))])["image"]
        for name, result in randomisation_check(model, explainer_cfg, images, target,
                                                list(cfg.randomisation.skip)).items():
            summary[name].update(result)
    eyes = {r["id"]: r for r in records}  # one record per eye and method; the eye columns agree
    result = {"target": target, "split": cfg.split, "n": len(view), "ckpt_path": str(cfg.ckpt_path),
              "failed": sorted(i for i, r in eyes.items() if r.get("status")),
              "quality_flagged": sorted(i for i, r in eyes.items() if r.get("quality")),
              "settings": {name: str(choice) for name, choice in choices.items()},
              "methods": summary}
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=2, allow_nan=False))
    table = comparison_table(summary, target)
    if cfg.get("compare_run"):
        table += "\n\n" + run_comparison(summary, Path(cfg.compare_run), out_dir, records)
    write_text_atomic(out_dir / "comparison.md", table + "\n")
    write_per_image(out_dir / "per_image.csv", records)
    comparison_sheet(out_dir, [m for m in methods if (out_dir / "overlays" / m).is_dir()], sorted(overlay_ids))
    if cfg.model_card:
        update_model_card(Path(cfg.model_card), table, cfg)
    print(table)
    print_run_folder(out_dir, {name: out_dir / name
                               for name in ("metrics.json", "comparison.md", "per_image.csv", "maps", "overlays")})
    return result


def _with_eye_columns(record: dict[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """``record`` with its eye's :data:`EYE_COLUMNS`; every score emptied when the eye failed."""
    if columns["status"]:
        record = {k: v if k in ("id", "method", "seconds") else None for k, v in record.items()}
    return {**record, **columns}


def _number(value: Tensor) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)
