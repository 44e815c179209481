"""Building a review session (``xmed-review build``) from an ``xmed-explain`` run folder, or from a
model and a folder of photographs or DICOM files.

For each eye the session holds the photograph as the model saw it, a panel per explanation
method, the model's probability and decision at its own operating threshold, and the
finding-level rationale. Saliency maps an ``xmed-explain`` run already wrote are reused
(``maps/<method>/<eye>.npy``); missing ones are computed. The counterfactual panel is always made
here, because a reader needs both edits of every eye, each carried a fixed step of the diagnosis
logit from where the eye starts (3: P 0.5 → 0.047 / 0.953, P 0.97 → 0.80 / 0.9985,
:data:`REVIEW_GOALS`), so an eye the model is already sure of is still edited both ways; changing
lightness only and smoothed, so that it reads as anatomy rather than as colour artefacts or
speckle (:data:`COUNTERFACTUAL_DEFAULTS`). Each edit says what it changed in the model's words
(``Edit.changes``) and is flagged when it did not reach its goal or is too small to see
(:func:`xmed.review.panels.edit_flag`).

Case ids are pseudonyms (``case-001`` …, in source order); ``key.csv`` links them to the source
ids and is never served or exported.

Example::

    build_session("outputs/review", explain_dir="outputs/demo/explain", mode="blinded")
    build_session("outputs/clinic_review", model="runs/demo/model", images="/data/clinic", methods=["gradcam"])
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from xmed.checks import Rule, integer, one_of
from xmed.data.datasets import SkippedSample, get_dataset
from xmed.data.transforms import DISPLAY_SIDE, display_photograph, eval_transform
from xmed.decision import operating_threshold
from xmed.errors import ConfigError, PathError
from xmed.findings import FINDINGS, VCDR
from xmed.models.export import load_model
from xmed.review.session import EDITS, Edit, write_case, write_session
from xmed.runs import claim_run_folder, eye_file_stem, read_per_image

#: how far each edit goes, one rule for the review and the study's adversarial pair
#: (:mod:`xmed.pipeline.study`): each eye's goal is a step of 3 of the diagnosis logit from where it
#: starts (P 0.5 → 0.047 / 0.953, P 0.97 → 0.80 / 0.9985: :func:`xmed.explain.counterfactual.step_goals`),
#: so every eye gets both edits however sure the model was of it
REVIEW_GOALS = {"logit_step": 3.0}
#: fixed goals for an edit method without a per-eye step (the study's latent shift): where the step
#: takes an eye the model is unsure of (P ≤ 0.05 toward normal, P ≥ 0.95 toward glaucoma)
FIXED_GOALS = {"decrease": 0.05, "increase": 0.95}
#: the adversarial edit's settings for readers: lightness changes only (unconstrained, the edits put
#: cyan, blue and red blobs at the cup margin that readers take for colour artefacts: 0.97 of the
#: change's energy in CIELAB is hue, against 0.06), a budget that reaches the goal in grey for most
#: edits (91 % at 0.12; 75 % at the 0.08 the colour edits needed), and a smoothed gradient so that
#: the edit changes structures, not single pixels (``benchmarks/results/edit_anatomy``)
COUNTERFACTUAL_DEFAULTS = {"relative_epsilon": 0.12, "max_steps": 100, "smooth": 2.0, "colour": "lightness"}
#: the session's panel kind of each kind of explanation method (``session.json`` says "counterfactual"
#: for an edit); a panel's title is its method's own (:data:`xmed.explain.METHODS`)
PANEL_KINDS = {"saliency": "saliency", "edit": "counterfactual"}
SIDES = {"OD": "right", "OS": "left"}


def build_session(out: str | os.PathLike, *, explain_dir: str | os.PathLike | None = None,
                  model: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
                  methods: Sequence[str] | None = None, counterfactual: bool = True, mode: str = "blinded",
                  seed: int = 0, n: int | None = None, batch_size: int = 8, overwrite: bool = False,
                  counterfactual_options: Mapping[str, Any] | None = None, title: str | None = None,
                  progress: bool = True, normal: int | None = None, display_side: int | None = None) -> Path:
    """Write a review session into ``out`` (a fresh folder; ``overwrite`` replaces an earlier one)
    and return it. Give ``explain_dir`` (an ``xmed-explain`` run: its model, eyes and maps), or
    ``model`` and ``images`` (a folder of photographs or DICOM files, searched recursively; an
    unreadable file is skipped and listed in ``session.json``'s ``skipped``). ``methods``: the
    saliency methods (default: the explain run's, or Grad-CAM); ``counterfactual``: add the
    adversarial edit pair; ``n``: the first ``n`` eyes only; ``normal``: also the first ``normal``
    eyes without glaucoma (label 0) of the explain run's split, explained here (a run that
    explained glaucomatous eyes only, ``label=1``, leaves readers nothing to call normal); the
    session holds the eyes in the split's order. ``display_side``: the longest side a photograph
    is shown at where the model saw a reduced copy (:func:`xmed.data.transforms.display_photograph`;
    None: :data:`~xmed.data.transforms.DISPLAY_SIDE`, 896)."""
    if (explain_dir is not None and (model is not None or images is not None)) or \
            (explain_dir is None and (model is None or images is None)):
        raise ConfigError("source", "give an xmed-explain run folder (--explain), or a model and an image folder "
                                    "(--model and --images), not both")
    if explain_dir is not None:
        from xmed.data.datamodule import datamodule_for_model, explained_view   # loads Lightning (2 s)

        config, config_path, maps_dir, automatic = _explain_source(Path(explain_dir))
        net = load_model(config.ckpt_path)
        datamodule = datamodule_for_model(config.data, net, source=config_path)
        view, skipped = explained_view(config, datamodule), []
        methods = list(methods) if methods is not None else _explained_methods(config)
        source = "xmed-explain run"
    else:
        net = load_model(model)
        view, skipped = _image_folder(Path(images), net)
        maps_dir, automatic = None, {}
        methods = list(methods) if methods is not None else ["gradcam"]
        source = "image folder"
    if n is not None:
        view = type(view)(view.base, view.indices[:int(n)], view.transform)
    if normal:
        if explain_dir is None:
            raise ConfigError("normal", "eyes without glaucoma are added from an xmed-explain run's split (--explain)")
        view = _with_normal_eyes(view, datamodule.splits[config.split], int(normal))
    if len(view) == 0:
        raise ConfigError("images" if explain_dir is None else "explain", "no eyes to review")
    if (Path(out) / "ratings.sqlite").exists():  # never deleted by a rebuild: ratings are never lost
        raise ConfigError("out", f"{out} holds readers' ratings (ratings.sqlite), which a new session must not "
                                 f"replace: export them (xmed-review export {out} --out …) and move ratings.sqlite "
                                 f"away, or build into a new folder")
    folder = claim_run_folder(out, overwrite=overwrite, key="out", holds="a review session")
    explainers = _saliency_explainers(net, methods, config.explainer if explain_dir is not None else None)
    editor = _editor(net, counterfactual_options) if counterfactual else None
    cases, key = [], {}
    position = {view.base.records[index].id: index for index in view.indices}
    for batch in _batches(view, batch_size, progress):
        for case, photo, maps, edits, fov in _explain_batch(net, batch, explainers, editor, maps_dir):
            photo, edits, fov, case["model_input"] = _as_shown(view, position[case["source_id"]], photo, edits, fov,
                                                               display_side or DISPLAY_SIDE)
            case_id = f"case-{len(cases) + 1:03d}"
            key[case_id] = case.pop("source_id")
            case["id"] = case_id
            scores = automatic.get(key[case_id], {})
            cases.append(write_case(folder, case, photo, maps, edits, scores, fov))
    shown = {**explainers, **({"adversarial": editor} if editor is not None else {})}
    method_list = [{"name": m, "kind": PANEL_KINDS[e.kind], "title": e.title} for m, e in shown.items()]
    head = _bottleneck(net)
    # no source path in the session: a folder name may name a patient; key.csv keeps the link
    write_session(folder, title=title or f"Review of {_model_name(net)}", mode=mode, seed=seed,
                  threshold=operating_threshold(net), model={"name": _model_name(net), "mode": net.mode, "source": source},
                  methods=method_list, cases=cases, bottleneck=head, key=key, skipped=skipped)
    return folder


# -- sources -------------------------------------------------------------------------------------


def _explain_source(folder: Path):
    """The config (checked: :func:`explain_run_config`), its file, the maps folder and the
    automatic scores (``{eye id: {method: {metric: value}}}``) of an ``xmed-explain`` run."""
    config_path = folder / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise PathError(folder, "is not an xmed-explain run folder (no .hydra/config.yaml)")
    config = explain_run_config(config_path)
    per_image = folder / "per_image.csv"
    automatic: dict[str, dict[str, dict[str, float]]] = {}
    for (eye, method), scores in (read_per_image(per_image) if per_image.is_file() else {}).items():
        automatic.setdefault(eye, {})[method] = {k: v for k, v in scores.items() if k != "seconds"}
    return config, config_path, folder / "maps", automatic


#: what each setting of an ``xmed-explain`` run's config that a review reads back must be
EXPLAIN_RUN_SETTINGS = {"ckpt_path": Rule("a path", lambda v: isinstance(v, str) and bool(v)),
                        "split": Rule("a split name", lambda v: isinstance(v, str) and bool(v)),
                        "label": one_of(None, 0, 1), "n": integer(1),
                        "explainer": Rule("a mapping of method names to their options",
                                          lambda v: isinstance(v, dict) and all(
                                              isinstance(k, str) and (o is None or isinstance(o, dict))
                                              for k, o in v.items()))}


def explain_run_config(path: Path):
    """An ``xmed-explain`` run's saved config, read as data (:func:`xmed.saved_config.load_saved_config`:
    every ``_target_`` one of xmed's own) with the settings a review reads back checked
    (:data:`EXPLAIN_RUN_SETTINGS`); raises :class:`~xmed.errors.PathError` naming the file and key."""
    from omegaconf import OmegaConf

    from xmed.saved_config import load_saved_config

    config = load_saved_config(path)
    for key, rule in EXPLAIN_RUN_SETTINGS.items():
        try:
            value = OmegaConf.select(config, key, throw_on_missing=True)
            value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except Exception as err:  # omegaconf's interpolation and missing-value errors
            raise PathError(path, f"key {key!r} cannot be read: {err}") from None
        if not rule.accepts(value):
            raise PathError(path, f"key {key!r} must be {rule.expected}, got {value!r}")
    return config


def _image_folder(folder: Path, net):
    """The eyes of a folder of photographs and DICOM files that can be read, through the model's
    eval transform, and every other entry as ``{"path", "reason"}`` in folder order: those the
    listing left out and those that fail to decode (every eye is decoded once here to find them,
    so that none drops out of the session unsaid). ``path`` is relative to the folder, or a DICOM
    file's label (:attr:`xmed.data.folders.FolderEntry.label`), never its name."""
    from xmed.data.datamodule import SplitView   # loads Lightning (2 s)

    if not folder.is_dir():
        raise PathError(folder, "no such folder of images")
    dataset = get_dataset("photo_folder", folder, on_error="skip")
    left_out = [(s.path, s.reason) for s in dataset.skipped]
    readable = []
    for index, record in enumerate(dataset.records):
        sample = dataset.load(index)
        if isinstance(sample, SkippedSample):
            left_out.append((record.image_path, sample.reason))
        else:
            readable.append(index)
    position = {entry.label: entry.position for entry in dataset.entries}
    skipped = sorted(({"path": dataset.entry_label(path), "reason": reason} for path, reason in left_out),
                     key=lambda skip: position.get(skip["path"], len(position) + 1))
    return SplitView(dataset, readable, eval_transform(net.data_config)), skipped


def _with_normal_eyes(view, split, count: int):
    """``view`` with the first ``count`` eyes of ``split`` labelled 0 (no glaucoma) it lacks, all
    in the split's order (so that the session does not list one kind of eye first)."""
    explained = set(view.indices)
    normal = [i for i in split.indices if view.base.records[i].label == 0.0 and i not in explained][:count]
    if len(normal) < count:
        raise ConfigError("normal", f"the split holds {len(normal)} eyes without glaucoma to add, not {count}")
    order = {index: position for position, index in enumerate(split.indices)}
    return type(view)(view.base, sorted([*view.indices, *normal], key=order.get), view.transform)


def _explained_methods(config) -> list[str]:
    from xmed.explain import EXPLAINERS

    names = [name for name, options in config.explainer.items()
             if (options or {}).get("method", name) in EXPLAINERS]
    return names or ["gradcam"]


# -- explaining ----------------------------------------------------------------------------------


def _saliency_explainers(net, methods: Iterable[str], settings=None) -> dict[str, Any]:
    """The explainer of each method, with the explain run's ``settings`` (its ``explainer`` config)
    where it has them: a map computed here for an eye the run did not explain is then made as the
    run's own maps were."""
    from omegaconf import OmegaConf

    from xmed.explain import get_explainer

    explainers = {}
    for name in methods:
        options = (settings or {}).get(name) or {}
        options = dict(OmegaConf.to_container(options, resolve=True) if OmegaConf.is_config(options) else options)
        explainers[name] = get_explainer(options.pop("method", name))(net, **options)
    return explainers


def _editor(net, options: Mapping[str, Any] | None):
    from xmed.explain.counterfactual.adversarial import AdversarialExplainer

    settings = {**COUNTERFACTUAL_DEFAULTS, **dict(options or {}), **REVIEW_GOALS}
    return AdversarialExplainer(net, **settings)


def _batches(view, batch_size: int, progress: bool):
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from xmed.data.datasets.base import collate_samples

    loader = DataLoader(view, batch_size=batch_size, shuffle=False, collate_fn=collate_samples)
    return tqdm(loader, desc="explaining eyes", unit="batch", disable=not progress)


def _explain_batch(net, batch: Mapping[str, Any], explainers: Mapping[str, Any], editor, maps_dir: Path | None):
    """Per eye of one batch: (case fields, photograph, ``{method: map}``, ``{"adversarial": edits}``, fov)."""
    from xmed.explain.rationale import explained_share, rationale
    from xmed.data.normalise import to_uint8_image

    if batch.get("size", 1) == 0:
        return []
    images, ids = batch["image"], list(batch["meta"]["id"])
    dc = net.data_config
    explained = rationale(net, images, counterfactual=None, heatmaps=False)
    concepts = _concepts(net, images)
    maps = {name: _maps(name, explainer, images, ids, maps_dir) for name, explainer in explainers.items()}
    edits, fov = _edits(editor, images, dc) if editor is not None else ({}, None)
    out = []
    for i, eye_id in enumerate(ids):
        r = explained[i]
        case = {"source_id": eye_id, "side": SIDES.get(batch["meta"]["eye"][i]), "probability": r.probability,
                "decision": r.decision, "findings": [vars(f) for f in r.findings], "vcdr": r.vcdr,
                "vcdr_contribution": r.vcdr_contribution, "bias": r.bias, "unexplained": r.unexplained,
                "explained_share": round(explained_share(r), 4), "contributions_exact": r.contributions_exact,
                "sentence": r.sentence, "quality": r.quality,
                "concepts": None if concepts is None else [round(float(v), 6) for v in concepts[i]],
                "truth": _truth(batch, i)}
        eye_edits = {"adversarial": {name: e[i] for name, e in edits.items()}} if edits else {}
        out.append((case, to_uint8_image(images[i], dc.mean, dc.std), {m: v[i] for m, v in maps.items()},
                    eye_edits, None if fov is None else fov[i]))
    return out


def _as_shown(view, index: int, photo: np.ndarray, edits: Mapping[str, Mapping[str, Edit]], fov: np.ndarray | None,
              display_side: int) -> tuple[np.ndarray, dict, np.ndarray | None, list[int] | None]:
    """The photograph, edits and field of view of eye ``index`` as a reader is shown them, and the
    [height, width] the model saw (None: the same). Where the model saw a reduced copy, the
    photograph is decoded again, whole, and framed as the model frames it at its own resolution
    (:func:`display_photograph`); each edit's change, made at the model's input, is enlarged onto
    it (bilinear: the edits are smoothed, so no detail is lost that the edit had), and the maps
    are enlarged by :func:`write_case` as they always are."""
    sample = view.base.load(index)
    shown = None if isinstance(sample, SkippedSample) else display_photograph(sample, view.transform, display_side)
    if shown is None:
        return photo, dict(edits), fov, None
    size = (shown.shape[1], shown.shape[0])
    enlarged = {}
    for method, by_goal in edits.items():
        enlarged[method] = {}
        for name, edit in by_goal.items():
            if edit.image is not None:
                change = cv2.resize(edit.image.astype(np.float32) - photo.astype(np.float32), size,
                                    interpolation=cv2.INTER_LINEAR)
                edit = dataclasses.replace(edit, image=np.clip(np.rint(shown + change), 0, 255).astype(np.uint8))
            enlarged[method][name] = edit
    if fov is not None:
        fov = cv2.resize(np.asarray(fov, np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return shown, enlarged, fov, list(photo.shape[:2])


def _maps(name: str, explainer, images: Tensor, ids: list[str], maps_dir: Path | None) -> list[np.ndarray]:
    """The saliency maps of a batch: those the explain run wrote read from it, the others computed."""
    files = [None if maps_dir is None else maps_dir / name / f"{eye_file_stem(i)}.npy" for i in ids]
    missing = [i for i, f in enumerate(files) if f is None or not f.is_file()]
    computed = {}
    if missing:
        with torch.enable_grad():
            maps = explainer(images[missing], "glaucoma").maps.detach().float().cpu()
        computed = {i: m[0].numpy() for i, m in zip(missing, maps)}
    return [computed[i] if i in computed else np.load(f, allow_pickle=False) for i, f in enumerate(files)]


def _edits(editor, images: Tensor, dc) -> tuple[dict[str, list[Edit]], np.ndarray]:
    """``{"toward_normal": [Edit per eye], "toward_glaucoma": […]}`` and the B×H×W fields of view;
    each edit with its own goal and what it changed in the model's words."""
    from xmed.explain.counterfactual import edit_changes
    from xmed.data.normalise import to_uint8_image

    fov = editor.field_of_view(images)[:, 0].cpu().numpy()
    edits = {}
    for name, direction in EDITS.items():
        cf = editor(images, "glaucoma", direction)
        goals = torch.as_tensor(cf.threshold).float().cpu().expand(images.shape[0])   # one goal, or one per eye
        findings = None if cf.findings is None else cf.findings[-1].float().cpu()
        vcdr = None if cf.vcdr is None else cf.vcdr[-1].float().cpu()
        edits[name] = [Edit(image=to_uint8_image(cf.images[i], dc.mean, dc.std), goal=round(float(goals[i]), 6),
                            probability_from=round(float(cf.probability[0, i]), 4),
                            probability_to=round(float(cf.probability[-1, i]), 4), reached=bool(cf.reached[i]),
                            steps=int(cf.steps[i]),
                            findings_to=None if findings is None else [round(float(v), 4) for v in findings[i]],
                            vcdr_to=None if vcdr is None else round(float(vcdr[i]), 4), changes=edit_changes(cf, i))
                       for i in range(images.shape[0])]
    return edits, fov


def _concepts(net, images: Tensor) -> Tensor | None:
    """B×11 bottleneck inputs (finding probabilities, vCDR) of a concept-bottleneck model, else None."""
    if getattr(net, "mode", None) != "concept_bottleneck":
        return None
    with torch.no_grad():
        return net(images)["concepts"].float().cpu()


def _bottleneck(net) -> dict[str, Any] | None:
    if getattr(net, "mode", None) != "concept_bottleneck":
        return None
    head = net.glaucoma_head
    return {"concepts": [*FINDINGS, VCDR], "weights": [float(w) for w in head.weight[0].detach().cpu()],
            "bias": float(head.bias[0].detach().cpu())}


def _truth(batch: Mapping[str, Any], i: int) -> dict[str, Any] | None:
    label = float(batch["label"][i])
    if np.isnan(label):
        return None
    findings = batch["findings"][i]
    return {"label": int(label), "findings": [c for j, c in enumerate(FINDINGS) if float(findings[j]) == 1]}


def _model_name(net) -> str:
    return f"{net.config['backbone']} ({net.mode})"
