"""The explanation study (``xmed-study``): several models explain **the same eyes** by every chosen
method, and every explanation gets **the same per-eye scores**, so heatmaps, adversarial edits,
latent shift and the finding-level rationale are compared like for like.

Per eye, method and model (the long table, ``scores.csv``):

- *location* — for a heatmap its map, for an edit its per-pixel change: the share of its energy in
  the ground-truth evidence (the disc and the masks of the findings present, as ``xmed-explain``
  scores the diagnosis), the pointing game and the map's AUROC against that region;
- *rationale* — what the explanation names as the reasons against the findings truly present:
  for the rationale, its main reasons (:func:`xmed.explain.rationale.main_reasons`); for an edit,
  the findings whose probability it moved the asked way by at least ``min_change`` (what the
  rationale's edit summary would name); precision and recall per eye, and for an edit the share
  of the present findings, and the vCDR, it moved the asked way;
- *validity* of an edit — whether it reached its goal (the review's: a step of the diagnosis logit
  from where the eye starts for the adversarial edit, P ≤ 0.05 / P ≥ 0.95 for latent shift) and
  the share of the field of view it changed.

An eye a method cannot score (an edit of an eye already at its goal, a model output that is not
finite) keeps its row, with the reason in ``note``. :func:`xmed.pipeline.study_report.summarise`
turns the table into means with case-bootstrap intervals and paired differences against a
reference method with Wilcoxon tests, Holm-corrected.

Example::

    from hydra import compose, initialize_config_module
    with initialize_config_module("xmed.configs", version_base="1.3"):
        cfg = compose("study", ["experiment=study_quick", "paths.output_dir=outputs/study_quick"])
    study_run(cfg)["differences"]
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from xmed.errors import ConfigError
from xmed.findings import FINDINGS
# SCORES, the table of the study's scores, is named here too: the scoring functions below make them
from xmed.pipeline.study_report import SCORES, read_long_table, summarise, write_long_table, write_study
from xmed.runs import write_text_atomic

log = logging.getLogger(__name__)

TARGET = "glaucoma"
DIRECTIONS = {"toward_normal": "decrease", "toward_glaucoma": "increase"}


# -- scores of one batch ---------------------------------------------------------------------------


def evidence_region(batch: Mapping[str, Any]) -> Tensor | None:
    """B×1×H×W: the disc and every present finding's mask of each eye, whatever its label (the
    study's eyes are chosen by the config's ``label``); None without masks."""
    from xmed.pipeline.explanation import ground_truth

    return ground_truth(batch, TARGET, edit=True)


def location_scores(maps: Tensor, region: Tensor | None) -> dict[str, Tensor]:
    """The location scores of B×1×H×W ``maps`` (a heatmap, or an edit's per-pixel change)
    against ``region``; none without a region."""
    from xmed.metrics.explanation import EnergyPointingGame, MapAUROC, PointingGame

    if region is None:
        return {}
    maps = maps.float()
    with torch.no_grad():
        return {"energy_in_evidence": EnergyPointingGame()(maps, region), "pointing_game": PointingGame()(maps, region),
                "map_auroc": MapAUROC()(maps, region)}


def reason_scores(named: Tensor, present: Tensor) -> dict[str, Tensor]:
    """Per eye, from B×F bool ``named`` (the findings an explanation names) and B×F ``present``
    (1 present, 0 absent, NaN unknown): the precision of the named findings and the recall of the
    present ones (NaN where nothing is named / nothing is present); unknown findings are left out.

    Example:
        >>> named = torch.tensor([[True, True, False], [False, False, False]])
        >>> present = torch.tensor([[1.0, 0.0, 1.0], [1.0, float("nan"), 0.0]])
        >>> {k: v.tolist() for k, v in reason_scores(named, present).items()}
        {'reason_precision': [0.5, nan], 'reason_recall': [0.5, 0.0]}
    """
    known = ~torch.isnan(present)
    truth, named = (present == 1) & known, named & known
    hits = (named & truth).sum(1).float()
    n_named, n_true = named.sum(1).float(), truth.sum(1).float()
    nan = torch.full_like(hits, math.nan)
    return {"reason_precision": torch.where(n_named > 0, hits / n_named.clamp_min(1), nan),
            "reason_recall": torch.where(n_true > 0, hits / n_true.clamp_min(1), nan)}


def edit_scores(cf, present: Tensor, region: Tensor | None, min_change: float) -> dict[str, Tensor]:
    """Every study score of a counterfactual edit (:class:`~xmed.explain.counterfactual.Counterfactual`)
    of a model with finding heads; NaN for an eye that was not edited (already at its goal)."""
    from xmed.metrics import Evidence
    from xmed.metrics.base import nan_unless
    from xmed.metrics.counterfactual import ChangedFraction, Validity

    sign = -1.0 if cf.direction == "decrease" else 1.0
    edited = cf.steps.to(present.device) > 0
    scores = location_scores(cf.difference, region)
    evidence = Evidence(counterfactual=cf)
    scores.update(reached_goal=Validity().score(evidence), changed_fraction=ChangedFraction().score(evidence))
    if cf.findings is not None:
        moved = sign * (cf.findings[-1] - cf.findings[0]).float().to(present.device)   # > 0: the asked way
        scores.update(reason_scores(moved >= min_change, present))
        truth = present == 1
        right = ((moved > 0) & truth).sum(1).float() / truth.sum(1).clamp_min(1).float()
        scores["findings_right_way"] = torch.where(truth.any(1), right, torch.full_like(right, math.nan))
    if cf.vcdr is not None:
        scores["vcdr_right_way"] = (sign * (cf.vcdr[-1] - cf.vcdr[0]) > 0).float().to(present.device)
    return {k: nan_unless(edited, v.to(present.device).float()) for k, v in scores.items()}


class StudyMethods:
    """The explanation methods of a study for one model: ``run(batch)`` gives
    ``{method: ({score: B values}, B notes)}``.

    Args:
        model: a trained :class:`~xmed.models.FundusClassifier`.
        saliency: saliency method names (:data:`xmed.explain.EXPLAINERS`).
        saliency_options: ``{name: options}`` of some of them (e.g. ``{"integrated_gradients": {"n_steps": 16}}``).
        adversarial: the adversarial edit's settings over the review's (an option set to None keeps
            the review's; None: no edit); it is carried to the
            review's goals (:data:`xmed.review.build.REVIEW_GOALS`).
        latent_shift: the latent shift's settings with its ``autoencoder`` (None: none).
        rationale: whether to score the finding-level rationale.
        min_change: the smallest change of a finding's probability an edit names.
    """

    def __init__(self, model, saliency: list[str], adversarial: Mapping[str, Any] | None,
                 latent_shift: Mapping[str, Any] | None, rationale: bool, min_change: float,
                 saliency_options: Mapping[str, Any] | None = None):
        from xmed.explain import get_counterfactual, get_explainer
        from xmed.review.build import COUNTERFACTUAL_DEFAULTS, FIXED_GOALS, REVIEW_GOALS

        self.model, self.min_change, self.rationale = model, float(min_change), bool(rationale)
        self.saliency = {}
        for name, options in _method_options(saliency, saliency_options).items():
            try:
                self.saliency[name] = get_explainer(name)(model, **options)
            except TypeError as err:  # an option the method does not take
                raise ConfigError(f"saliency.{name}", str(err)) from None
        self.editors = {}
        if adversarial is not None:
            self.editors["adversarial"] = get_counterfactual("adversarial")(
                model, **{**COUNTERFACTUAL_DEFAULTS, **{k: v for k, v in dict(adversarial).items() if v is not None},
                          **REVIEW_GOALS})
        if latent_shift is not None:
            self.editors["latent_shift"] = get_counterfactual("latent_shift")(
                model, **{**dict(latent_shift), "threshold": dict(FIXED_GOALS)})

    @property
    def names(self) -> list[str]:
        """Every method's name in the long table, in report order."""
        edits = [f"{editor}_{toward}" for editor in self.editors for toward in DIRECTIONS]
        return [*self.saliency, *edits, *(["rationale"] if self.rationale else [])]

    def run(self, images: Tensor, batch: Mapping[str, Any]) -> dict[str, tuple[dict[str, Tensor], list[str]]]:
        region = evidence_region(batch)
        present = batch["findings"].to(images.device).float()
        out = {}
        for name, explainer in self.saliency.items():
            with torch.enable_grad():
                maps = explainer(images, TARGET).maps
            out[name] = (location_scores(maps, region), [""] * len(images))
        for editor_name, editor in self.editors.items():
            for toward, direction in DIRECTIONS.items():
                cf = editor(images, TARGET, direction)
                notes = [unedited_note(int(s), bool(r), float(p))
                         for s, r, p in zip(cf.steps, cf.reached, cf.probability[0])]
                out[f"{editor_name}_{toward}"] = (edit_scores(cf, present, region, self.min_change), notes)
        if self.rationale:
            out["rationale"] = (self._rationale_scores(images, present), [""] * len(images))
        return out

    def _rationale_scores(self, images: Tensor, present: Tensor) -> dict[str, Tensor]:
        import warnings

        from xmed.errors import QualityWarning
        from xmed.explain.rationale import main_reasons, rationale

        with warnings.catch_warnings():  # the study scores every eye; quality is not its question
            warnings.simplefilter("ignore", QualityWarning)
            explained = rationale(self.model, images, counterfactual=None, heatmaps=False)
        named = torch.tensor([[code in main_reasons(r) for code in FINDINGS] for r in explained],
                             device=present.device)
        return reason_scores(named, present)


def unedited_note(steps: int, reached: bool, probability: float) -> str:
    """Why an edit scores nothing for an eye ("" when it was edited): it was at its goal already,
    or no step moved the decision the asked way (latent shift stops when a step does not).

    Example:
        >>> unedited_note(0, True, 0.97), unedited_note(0, False, 0.39), unedited_note(3, True, 0.02)
        ('not edited: already at the goal (P = 0.970)', 'not edited: no step moved the decision the asked way (P = 0.390)', '')
    """
    if steps > 0:
        return ""
    why = "already at the goal" if reached else "no step moved the decision the asked way"
    return f"not edited: {why} (P = {probability:.3f})"


def _method_options(saliency: Any, options: Any) -> dict[str, dict[str, Any]]:
    """``{name: options}`` of the ``saliency`` methods (a list of names), each with its entry of
    ``options`` (``{name: {option: value}}``; none by default).

    Example:
        >>> _method_options(["gradcam", "integrated_gradients"], {"integrated_gradients": {"n_steps": 16}})
        {'gradcam': {}, 'integrated_gradients': {'n_steps': 16}}
    """
    options = options or {}
    if not isinstance(saliency, (list, tuple)) or not all(isinstance(name, str) for name in saliency):
        raise ConfigError("saliency", f"must be a list of method names, got {saliency!r}")
    if not isinstance(options, Mapping) or not all(isinstance(o, (Mapping, type(None))) for o in options.values()):
        raise ConfigError("saliency_options", f"must be {{method: {{option: value}}}}, got {options!r}")
    unused = sorted(set(options) - set(saliency))
    if unused:
        raise ConfigError(f"saliency_options.{unused[0]}", f"options of a method that is not in saliency {saliency}")
    return {name: dict(options.get(name) or {}) for name in saliency}


def study_rows(model_name: str, methods: StudyMethods, loader, device: torch.device | str,
               progress: bool = True) -> list[dict[str, Any]]:
    """The long table's rows of one model over ``loader``'s eyes: one per model, method, eye and
    score (``value`` None with a ``note`` when the eye was not scored)."""
    from tqdm.auto import tqdm

    from xmed.inference import finite_outputs

    rows: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc=f"study {model_name}", unit="batch", disable=not progress):
        if batch.get("size", 1) == 0:
            continue
        images, ids = batch["image"].to(device), [str(i) for i in batch["meta"]["id"]]
        with torch.no_grad():
            finite = finite_outputs(methods.model(images)).tolist()
        keep = [i for i, ok in enumerate(finite) if ok]
        kept_at = {position: k for k, position in enumerate(keep)}   # batch position -> row of the results
        results = methods.run(images[keep], _subset(batch, keep)) if keep else {}
        for name in methods.names:
            scores, notes = results.get(name, ({}, []))
            for position, eye in enumerate(ids):
                k = kept_at.get(position)
                note = "the model's output is not finite" if k is None else notes[k]
                for score, values in scores.items() if k is not None else ():
                    value = float(values[k])
                    rows.append({"model": model_name, "method": name, "eye": eye, "score": score,
                                 "value": value if math.isfinite(value) else None,
                                 "note": note or ("" if math.isfinite(value) else "undefined for this eye")})
                if k is None or not scores:
                    rows.append({"model": model_name, "method": name, "eye": eye, "score": "", "value": None,
                                 "note": note or "no ground truth to score against"})
    return rows


def _subset(batch: Mapping[str, Any], keep: list[int]) -> dict[str, Any]:
    """The eyes ``keep`` of a collated batch (tensors and mask dicts indexed; the rest as is)."""
    index = torch.tensor(keep, dtype=torch.long)
    out = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.ndim:
            out[key] = value[index.to(value.device)]
        elif isinstance(value, dict) and key in ("masks", "mask_valid"):
            out[key] = {k: v[index.to(v.device)] for k, v in value.items()}
        else:
            out[key] = value
    return out


# -- the models ------------------------------------------------------------------------------------


def exported_folder(path: str | os.PathLike, kind: str = "model") -> Path:
    """An exported ``kind`` (``model`` or ``autoencoder``) given as itself, a Lightning checkpoint
    or the ``xmed-train`` run folder that holds it (``<run>/<kind>``)."""
    path = Path(path)
    return path / kind if (path / kind / "config.json").is_file() else path


def train_models(entries: Mapping[str, Any], folder: Path, resume: bool = False) -> dict[str, Path]:
    """Run ``xmed-train`` once per entry (``{name: [overrides]}``) into ``folder/<name>``, each in
    its own process (its own Hydra run, log and model card, as when a user runs it); returns
    ``{name: run folder}``. ``resume``: an entry whose run already exported its model is kept, one
    stopped before that is trained again from the start. A training that fails raises
    :class:`ConfigError` on ``train.<name>`` with the end of its output."""
    runs = {}
    for name, overrides in entries.items():
        if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"train.{name}", f"must be a list of xmed-train overrides, got {overrides!r}")
        run = folder / str(name)
        runs[str(name)] = run
        if resume and any((run / kind / "config.json").is_file() for kind in ("model", "autoencoder")):
            log.info("resume: %s was trained by the earlier attempt (%s)", name, run)
            continue
        command = [sys.executable, "-m", "xmed.cli.train", *overrides, f"paths.output_dir={run}",
                   f"hydra.run.dir={run}", *(["overwrite=true"] if resume and run.exists() else [])]
        log.info("training %s: %s", name, " ".join(command[2:]))
        output = folder / f"{name}.log"
        print(f"training {name} into {run} (its output: {output})", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        with open(output, "w") as handle:  # written as it goes: a long training can be followed
            done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = output.read_text(errors="replace").strip().splitlines()[-3:]
            raise ConfigError(f"train.{name}", f"xmed-train failed (exit {done.returncode}): {' | '.join(tail)} "
                                               f"(whole output: {output})")
    return runs


# -- resuming a stopped study ------------------------------------------------------------------------

#: ``<run>/scored/<model>.csv``: each model's rows of the long table, written as soon as it is scored
SCORED_DIR = "scored"
#: ``<run>/study_state.json``: the settings the run was started with and the models scored so far
STATE_FILE = "study_state.json"
#: settings that do not change a score, which a resumed study may give otherwise
_RUN_ONLY_KEYS = ("resume", "overwrite", "progress")
#: the models studied: a resumed study may add some (or leave some out); each model scored before is
#: known by its exported files' fingerprint instead
_MODEL_KEYS = ("models", "train", "select")


class StudyProgress:
    """What a study run has done so far, on disk, so that ``resume=true`` continues a study that was
    stopped (six models on a CPU take hours) where it stopped, or adds models to it, and never
    mixes two studies.

    Each model's rows are written to ``scored/<model>.csv`` once it is scored, and
    ``study_state.json`` records them with the fingerprint of the model's exported files, the
    run's settings and the seconds each attempt took. A resumed run must have the same settings
    (all but ``resume``, ``overwrite``, ``progress``, the run folder and the models listed); a model scored
    before is taken from its rows while its files are unchanged, and scored again otherwise.

    Example::

        progress = StudyProgress.start(out_dir, settings, resume=True)
        rows = progress.rows("resnet18", fingerprint)          # None: to score now
        progress.scored("resnet18", fingerprint, study_rows(...), seconds)
    """

    def __init__(self, folder: Path, state: dict[str, Any]):
        self.folder, self.state = folder, state

    @classmethod
    def start(cls, folder: Path, settings: Mapping[str, Any], resume: bool) -> "StudyProgress":
        kept = {k: v for k, v in settings.items() if k not in _RUN_ONLY_KEYS + _MODEL_KEYS}
        # the run folder itself: a study moved elsewhere is the same study
        kept["paths"] = {k: v for k, v in (kept.get("paths") or {}).items() if k != "output_dir"}
        path = folder / STATE_FILE
        if not resume:
            progress = cls(folder, {"settings": kept, "scored": {}, "attempts": []})
        else:
            if not path.is_file():
                raise ConfigError("resume", f"{folder} holds no study to resume (no {STATE_FILE}): start it without "
                                            "resume=true")
            state = json.loads(path.read_text())
            differ = _differences(state.get("settings", {}), kept)
            if differ:
                raise ConfigError("resume", f"the study in {folder} was started with other settings ({'; '.join(differ[:3])}"
                                            f"{'; …' if len(differ) > 3 else ''}): resume it with the same ones, or "
                                            "start a new run")
            progress = cls(folder, state)
        progress.state["attempts"].append(0.0)
        progress._write()
        return progress

    def rows(self, model: str, fingerprint: str) -> list[dict[str, Any]] | None:
        """The rows of ``model`` an earlier attempt scored from the same files, or None."""
        before = self.state["scored"].get(model)
        if before is None:
            return None
        if before != fingerprint:
            log.info("resume: %s was scored before, from other files; it is scored again", model)
            return None
        log.info("resume: %s was scored by an earlier attempt", model)
        return read_long_table(self.folder / SCORED_DIR / f"{model}.csv")

    def scored(self, model: str, fingerprint: str, rows: list[dict[str, Any]], seconds: float) -> None:
        """Record ``model``'s rows as done; ``seconds``: this attempt's time so far."""
        (self.folder / SCORED_DIR).mkdir(exist_ok=True)
        write_long_table(self.folder / SCORED_DIR / f"{model}.csv", rows, parquet=False)
        self.state["scored"][model] = fingerprint
        self.tick(seconds)

    def tick(self, seconds: float) -> float:
        """Record this attempt's time so far; returns the time of every attempt together."""
        self.state["attempts"][-1] = round(seconds, 1)
        self._write()
        return sum(self.state["attempts"])

    def _write(self) -> None:
        write_text_atomic(self.folder / STATE_FILE, json.dumps(self.state, indent=1, allow_nan=False))


def files_fingerprint(folder: Path) -> str:
    """SHA-256 over the names and bytes of the files in ``folder`` (an exported model), in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _differences(before: Any, now: Any, at: str = "") -> list[str]:
    """The dotted keys whose values differ between two settings trees, with both values."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [d for key in sorted(set(before) | set(now), key=str)
                for d in _differences(before.get(key, "<not set>"), now.get(key, "<not set>"),
                                      f"{at}.{key}" if at else str(key))]
    return [] if before == now else [f"{at or 'settings'}: {before!r} then, {now!r} now"]


def study_run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``xmed-study`` for a composed config; returns the summary written to ``metrics.json``."""
    from torch.utils.data import DataLoader

    from xmed.runs import command_folder
    from xmed.data.datasets.base import collate_samples
    from xmed.models.export import load_model
    from xmed.data.datamodule import explained_view
    from xmed.data.datamodule import datamodule_for_model

    started = time.perf_counter()
    out_dir = command_folder(cfg, resume_key="resume")
    settings = OmegaConf.to_container(cfg, resolve=True)
    progress = StudyProgress.start(out_dir, settings, resume=bool(cfg.get("resume")))
    to_train, given = _named("train", settings.get("train")), _named("models", settings.get("models"))
    chosen = _chosen(settings.get("select"), to_train, given)
    trained = train_models({k: v for k, v in to_train.items() if chosen is None or k in chosen}, out_dir / "models",
                           resume=bool(cfg.get("resume")))
    latent_shift, autoencoder = settings["latent_shift"], None
    if latent_shift is not None:  # its autoencoder: a path, or a `train` entry (not a model to study)
        autoencoder = str(latent_shift.get("autoencoder") or "")
        latent_shift = {**latent_shift,
                        "autoencoder": str(exported_folder(trained.get(autoencoder, autoencoder), "autoencoder"))}
    models = {**{name: run for name, run in trained.items() if name != autoencoder},
              **{k: v for k, v in given.items() if chosen is None or k in chosen}}
    if not models:
        raise ConfigError("models", "no model to study: give models={name: path} or train={name: [overrides]}")
    device = torch.device(cfg.device)
    rows, eyes = [], {}
    for name, path in models.items():
        torch.manual_seed(cfg.seed)
        model = load_model(exported_folder(path), device=device)
        view = explained_view(cfg, datamodule_for_model(cfg.data, model))
        eyes[name] = len(view)
        fingerprint = files_fingerprint(exported_folder(path))
        done = progress.rows(name, fingerprint)
        if done is None:
            loader = DataLoader(view, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate_samples)
            methods = StudyMethods(model, settings["saliency"], settings["adversarial"], latent_shift,
                                   bool(cfg.rationale), cfg.min_change, settings.get("saliency_options"))
            done = study_rows(name, methods, loader, device, progress=cfg.progress)
            progress.scored(name, fingerprint, done, time.perf_counter() - started)
        rows += done
    summary = summarise(rows, reference=list(cfg.reference), n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    seconds = progress.tick(time.perf_counter() - started)
    return write_study(out_dir, rows, summary, eyes=eyes, models={k: str(v) for k, v in models.items()},
                       seconds=seconds, attempts=len(progress.state["attempts"]),
                       command=" ".join(["xmed-study", *_overrides()]))


def _chosen(select: Any, train: Mapping[str, Any], models: Mapping[str, Any]) -> set[str] | None:
    """The names ``select`` keeps of ``train`` and ``models`` (None: every one); an unknown name
    raises :class:`ConfigError` on ``select``."""
    if select is None:
        return None
    if not isinstance(select, list) or not all(isinstance(name, str) for name in select):
        raise ConfigError("select", f"must be a list of names of `train` or `models` entries, got {select!r}")
    unknown = [name for name in select if name not in train and name not in models]
    if unknown:
        raise ConfigError("select", f"no entry {unknown[0]!r} in train or models ({', '.join([*train, *models])})")
    return set(select)


def _named(key: str, entries: Any) -> dict[str, Any]:
    """``entries`` (``models`` or ``train``) as ``{name: value}``; None is none."""
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise ConfigError(key, f"must be a mapping {{name: …}}, got {entries!r}")
    return {str(name): value for name, value in entries.items()}


def _overrides() -> list[str]:
    """The command line's overrides (Hydra's own record of them), for the report."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
