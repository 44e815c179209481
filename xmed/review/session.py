"""A review session on disk: the cases (eyes) readers rate and the panels of each, as
``<session>/session.json`` plus the images under ``<session>/cases/``.

``session.json`` (``format`` 1)::

    {"format": 1, "title": str, "created": ISO time, "mode": "blinded" | "open", "seed": int,
     "target": "glaucoma", "threshold": float (the model's operating threshold),
     "model": {"name": str, "mode": "multitask" | "concept_bottleneck"},
     "bottleneck": null | {"concepts": [10 finding codes…, "vcdr"], "weights": [11 floats], "bias": float},
     "methods": [{"name": "gradcam", "kind": "saliency" | "counterfactual", "title": "Grad-CAM"}, …],
     "cases": [case, …], "skipped": [{"path", "reason"}, …] (source files that could not be read)}

    case = {"id": "case-001" (a pseudonym), "side": "right" | "left" | null,
            "probability": float, "decision": "referable glaucoma" | "no referable glaucoma",
            "photo": "cases/case-001/photo.png", "size": [height, width],
            "findings": [{"code", "name", "probability", "contribution"}, …], "vcdr": float,
            "vcdr_contribution": float, "bias": float, "unexplained": float, "explained_share": float,
            "contributions_exact": bool, "sentence": str, "quality": [flag, …],
            "concepts": [11 floats] | null (the bottleneck's inputs, for test-time intervention),
            "truth": {"label": 0 | 1 | null, "findings": [codes present]} | null,
            "panels": {method name: panel}}

    saliency panel = {"kind": "saliency", "overlay": path, "heatmap": path,
                      "scale": {"low": 0.0, "high": float (the map's maximum), "label": str, "colormap": "inferno"},
                      "automatic": {metric: value}}
    counterfactual panel = {"kind": "counterfactual",
                            "edits": {"toward_normal" | "toward_glaucoma": edit},
                            "automatic": {metric: value}}
    edit = {"image": path | null, "difference": path | null,
            "difference_scale": null (no edit) | {"low": 0.0, "high": float (pixel change at full colour,
                                 in [0, 1] units), "gain": float (how much the change is amplified),
                                 "label": str, "colormap": "inferno"},
            "goal": float, "probability_from": float, "probability_to": float, "reached": bool,
            "steps": int, "changed_fraction": float, "max_change": float,
            "flag": null | "not edited" | "too small to see" | "no flip within the budget",
            "findings_to": [floats] | null, "vcdr_to": float | null}

Every path is relative to the session folder and lies under ``cases/``; :func:`case_file` resolves
one and refuses anything else. Case ids are pseudonyms; the link to the source eyes is kept
apart in ``<session>/key.csv`` (never served or exported).

The blinded study protocol lives here too, so the server, the export and the analysis agree on
it: :func:`reader_order` (each reader's own seeded case order) and :func:`panel_labels` (the A/B
letters of a case's panels, a seeded random assignment per reader and case).

Example:
    >>> reader_order(["case-001", "case-002", "case-003"], seed=0, reader="ben")
    ['case-002', 'case-001', 'case-003']
    >>> panel_labels(["adversarial", "gradcam"], seed=0, reader="ana", case="case-001")
    {'A': 'adversarial', 'B': 'gradcam'}
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from xmed.errors import ConfigError, InputError, PathError
from xmed.runs import eye_file_stem, write_text_atomic

FORMAT = 1
MODES = ("blinded", "open")
EDITS = {"toward_normal": "decrease", "toward_glaucoma": "increase"}
SESSION_FILE = "session.json"
CASES_DIR = "cases"
KEY_FILE = "key.csv"


def load_session(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``<folder>/session.json``; raises :class:`~xmed.errors.PathError` naming the
    file when it is missing or malformed, or names a file that is not there."""
    path = Path(folder) / SESSION_FILE
    if not path.is_file():
        raise PathError(path, "no review session here (session.json missing); build one with `xmed-review build`")
    try:
        session = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PathError(path, f"is not valid JSON: {err}") from None
    problems = _check(session, Path(folder))
    if problems:
        raise PathError(path, "; ".join(problems[:5]))
    return session


def _check(session: Any, folder: Path) -> list[str]:
    if not isinstance(session, dict):
        return ["the top level must be an object"]
    problems = []
    if session.get("format") != FORMAT:
        problems.append(f"format must be {FORMAT}, got {session.get('format')!r}")
    if session.get("mode") not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, got {session.get('mode')!r}")
    methods = [m.get("name") for m in session.get("methods") or [] if isinstance(m, dict)]
    if not methods:
        problems.append("no methods")
    cases = session.get("cases")
    if not isinstance(cases, list) or not cases:
        return problems + ["no cases"]
    ids = [c.get("id") for c in cases if isinstance(c, dict)]
    if len(set(ids)) != len(cases) or not all(isinstance(i, str) and i for i in ids):
        problems.append("case ids must be distinct, non-empty strings")
    for case in cases:
        if not isinstance(case, dict):
            continue
        for relative in case_images(case):
            try:
                if not case_file(folder, relative).is_file():
                    problems.append(f"case {case.get('id')!r}: missing image {relative}")
            except InputError as err:
                problems.append(f"case {case.get('id')!r}: {err.reason}")
        for name in case.get("panels") or {}:
            if name not in methods:
                problems.append(f"case {case.get('id')!r}: panel of unknown method {name!r}")
    return problems


def case_images(case: Mapping[str, Any]) -> list[str]:
    """Every image path a case names (photo, overlays, heatmaps, edits, difference maps)."""
    paths = [case.get("photo")]
    for panel in (case.get("panels") or {}).values():
        paths += [panel.get("overlay"), panel.get("heatmap")]
        for edit in (panel.get("edits") or {}).values():
            paths += [edit.get("image"), edit.get("difference")]
    return [p for p in paths if p]


def case_file(folder: str | os.PathLike, relative: str) -> Path:
    """The file ``relative`` names inside ``<folder>/cases``; anything that would leave it (``..``,
    an absolute path, a link out) raises :class:`~xmed.errors.InputError`.

    Example:
        >>> case_file("/s", "../etc/passwd")
        Traceback (most recent call last):
        ...
        xmed.errors.InputError: path: '../etc/passwd' is not a file of this session's cases
    """
    root = (Path(folder) / CASES_DIR).resolve()
    if not isinstance(relative, str) or "\x00" in relative or os.path.isabs(relative):
        raise InputError("path", f"{relative!r} is not a file of this session's cases")
    target = (Path(folder) / relative).resolve()
    if root not in target.parents:
        raise InputError("path", f"{relative!r} is not a file of this session's cases")
    return target


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by a stable hash of ``parts`` (Python's ``hash`` of a str varies per run)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def reader_order(case_ids: Sequence[str], seed: int, reader: str) -> list[str]:
    """The order in which ``reader`` sees the cases: a permutation seeded by the session's seed
    and the reader's name (the same on every visit, different between readers)."""
    order = list(case_ids)
    _rng(seed, "order", reader).shuffle(order)
    return order


def panel_labels(methods: Sequence[str], seed: int, reader: str, case: str) -> dict[str, str]:
    """``{letter: method}``: the letters A, B, … a blinded reader sees for a case's panels,
    assigned at random per reader and case (seeded: the same on every visit)."""
    shuffled = sorted(methods)
    _rng(seed, "panels", reader, case).shuffle(shuffled)
    return {chr(ord("A") + i): method for i, method in enumerate(shuffled)}


def intervene(session: Mapping[str, Any], case: Mapping[str, Any], values: Mapping[str, float]) -> dict[str, Any]:
    """Test-time intervention on a concept-bottleneck model: the probability and decision when the
    reader sets concepts (finding codes or ``vcdr``) by hand, from the model's own linear head over
    the case's concepts (``logit = bias + Σ weight × concept``, as the model computes it).

    Example:
        >>> session = {"threshold": 0.5, "bottleneck": {"concepts": ["LC", "vcdr"], "weights": [2.0, 4.0], "bias": -3.0}}
        >>> intervene(session, {"concepts": [0.0, 0.5]}, {"LC": 1.0})
        {'probability': 0.731059, 'decision': 'referable glaucoma', 'concepts': {'LC': 1.0, 'vcdr': 0.5}}
    """
    head = session.get("bottleneck")
    if not head or case.get("concepts") is None:
        raise ConfigError("intervene", "test-time intervention needs a concept-bottleneck model")
    concepts = dict(zip(head["concepts"], case["concepts"]))
    for key, value in values.items():
        if key not in concepts:
            raise InputError("intervene", f"unknown concept {key!r}; use one of {', '.join(concepts)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise InputError("intervene", f"{key} must be a number in [0, 1], got {value!r}")
        concepts[key] = float(value)
    logit = head["bias"] + sum(w * concepts[c] for c, w in zip(head["concepts"], head["weights"]))
    probability = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
    decision = "referable glaucoma" if probability >= session["threshold"] else "no referable glaucoma"
    return {"probability": round(probability, 6), "decision": decision, "concepts": concepts}


# -- writing -------------------------------------------------------------------------------------


@dataclass
class Edit:
    """One counterfactual edit of a case's photograph (toward normal or toward glaucoma).

    ``image`` is the edited photograph (H×W×3 uint8; None when the edit failed outright), ``goal``
    the probability it aimed past, ``steps`` the gradient steps taken (0: not edited)."""

    image: np.ndarray | None
    goal: float
    probability_from: float
    probability_to: float
    reached: bool
    steps: int
    findings_to: list[float] | None = None
    vcdr_to: float | None = None


def write_case(folder: str | os.PathLike, case: Mapping[str, Any], photo: np.ndarray,
               saliency: Mapping[str, np.ndarray] = {}, edits: Mapping[str, Mapping[str, Edit]] = {},
               automatic: Mapping[str, Mapping[str, float]] = {}, fov: np.ndarray | None = None) -> dict[str, Any]:
    """Write one case's images under ``<folder>/cases/<case id>/`` and return its ``session.json``
    entry: ``case`` (id, side, probability, decision, findings, …) with ``photo``, ``size`` and
    ``panels`` filled in. ``saliency``: ``{method: H×W map}`` (any resolution; resized to the
    photograph's), ``edits``: ``{method: {"toward_normal" | "toward_glaucoma": Edit}}``,
    ``automatic``: ``{method: {metric: value}}``, ``fov``: H×W bool field of view, where an edit's
    changed share is counted."""
    import cv2
    from PIL import Image

    from xmed.review.panels import blend, difference_map, edit_change, edit_flag, heatmap_layer

    stem = eye_file_stem(str(case["id"]))
    relative = f"{CASES_DIR}/{stem}"
    (Path(folder) / relative).mkdir(parents=True, exist_ok=True)

    def save(name: str, image: np.ndarray) -> str:
        Image.fromarray(image).save(Path(folder) / relative / name, optimize=False, compress_level=1)
        return f"{relative}/{name}"

    height, width = photo.shape[:2]
    entry = {**case, "photo": save("photo.png", photo), "size": [height, width], "panels": {}}
    for method, values in saliency.items():
        values = cv2.resize(np.asarray(values, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        layer, scale = heatmap_layer(values)
        entry["panels"][method] = {"kind": "saliency", "overlay": save(f"{method}_overlay.png", blend(photo, layer)),
                                   "heatmap": save(f"{method}_heatmap.png", layer), "scale": scale,
                                   "automatic": dict(automatic.get(method, {}))}
    for method, by_goal in edits.items():
        panel = {"kind": "counterfactual", "edits": {}, "automatic": dict(automatic.get(method, {}))}
        for name, edit in by_goal.items():
            if name not in EDITS:
                raise InputError("edits", f"unknown edit {name!r}; use {', '.join(EDITS)}")
            record = {"image": None, "difference": None, "difference_scale": None, "goal": edit.goal,
                      "probability_from": edit.probability_from, "probability_to": edit.probability_to,
                      "reached": bool(edit.reached), "steps": int(edit.steps), "changed_fraction": 0.0,
                      "max_change": 0.0, "findings_to": edit.findings_to, "vcdr_to": edit.vcdr_to}
            if edit.image is not None and edit.steps > 0:
                difference, scale = difference_map(photo, edit.image)
                record.update(edit_change(photo, edit.image, fov), image=save(f"{method}_{name}.png", edit.image),
                              difference=save(f"{method}_{name}_difference.png", difference),
                              difference_scale=scale)
            record["flag"] = edit_flag(record["steps"], record["reached"], record["changed_fraction"])
            panel["edits"][name] = record
        entry["panels"][method] = panel
    return entry


def write_session(folder: str | os.PathLike, *, title: str, mode: str, seed: int, threshold: float,
                  model: Mapping[str, Any], methods: Sequence[Mapping[str, str]], cases: Sequence[Mapping[str, Any]],
                  bottleneck: Mapping[str, Any] | None = None, target: str = "glaucoma",
                  key: Mapping[str, str] | None = None, skipped: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Write ``<folder>/session.json`` (after the cases' images, :func:`write_case`) and, when
    ``key`` (``{case id: source eye id}``) is given, ``<folder>/key.csv``; returns the folder.
    ``skipped``: the source files left out (unreadable), listed in the session.
    The session is checked as :func:`load_session` would read it."""
    if mode not in MODES:
        raise ConfigError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    session = {"format": FORMAT, "title": title, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "mode": mode, "seed": int(seed), "target": target, "threshold": float(threshold),
               "model": dict(model), "bottleneck": dict(bottleneck) if bottleneck else None,
               "methods": [dict(m) for m in methods], "cases": list(cases), "skipped": [dict(s) for s in skipped]}
    problems = _check(session, Path(folder))
    if problems:
        raise InputError("session", "; ".join(problems[:5]))
    if key:
        with open(Path(folder) / KEY_FILE, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "source_id"])
            writer.writerows(key.items())
    write_text_atomic(Path(folder) / SESSION_FILE, json.dumps(session, indent=1, allow_nan=False))
    return Path(folder)
