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
                      "scale": {"low": 0.0, "high": float (the map's top: full colour), "max": float (its
                                maximum; absent in older sessions), "label": str, "colormap": "bluemagenta"
                                (older sessions: "inferno")},
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
            "findings_to": [floats] | null, "vcdr_to": float | null,
            "changes": [{"code": finding code | "vcdr", "from": float, "to": float}, …] | null (what the
                       edit changed, as the model reads it; may be left out)}

:class:`SessionFile` and the classes it names are this schema as types: :func:`load_session` and
:func:`write_session` check a session against them (every field, with the ranges above: threshold
in (0, 1), probabilities in [0, 1], every number finite) and name the field at fault
(``cases[3].size: expected [height, width] of positive integers, got "big"``).

``<session>/address.json`` (:class:`AddressFile`) records where ``xmed-review serve`` serves the
session, so that every link to it (:func:`session_url`) points where the page is.

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
import functools
import hashlib
import json
import math
import os
import random
import sys
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import (Annotated, Any, Iterator, Literal, Mapping, Sequence, Union, get_args, get_origin,
                    get_type_hints)

import numpy as np

from xmed.checks import PROBABILITY, Rule, integer, number, one_of, strict_json
from xmed.decision import Decision, decision
from xmed.errors import ConfigError, InputError, PathError
from xmed.runs import eye_file_stem, write_text_atomic
from xmed.saved_config import check_targets

FORMAT = 1
MODES = ("blinded", "open")
EDITS = {"toward_normal": "decrease", "toward_glaucoma": "increase"}
SESSION_FILE = "session.json"
CASES_DIR = "cases"
KEY_FILE = "key.csv"
ADDRESS_FILE = "address.json"
#: where ``xmed-review serve`` listens unless told otherwise
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


def flags_in_words(flags: Sequence[str]) -> str:
    """An eye's quality flags as a reader reads them: why its decision is not to be relied on
    (:func:`xmed.explain.rationale.reliance_warning`).

    Example:
        >>> flags_in_words(["unfamiliar_features"])
        'The model was not trained on images like this one: do not rely on this decision.'
    """
    from xmed.explain.rationale import reliance_warning  # here: the review server does not load torch to start

    return reliance_warning(list(flags))


def load_session(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``<folder>/session.json`` (:func:`session_problems`); raises
    :class:`~xmed.errors.PathError` naming the file, and the field at fault, when it is missing,
    is not valid JSON, breaks the schema or names an image that is not there."""
    path = Path(folder) / SESSION_FILE
    if not path.is_file():
        raise PathError(path, "no review session here (session.json missing); build one with `xmed-review build`")
    try:
        session = strict_json(path.read_bytes())
    except OSError as err:
        raise PathError(path, f"cannot be read ({err.strerror})") from None
    except ValueError as err:
        raise PathError(path, f"is not valid JSON: {err}") from None
    check_targets(session, path, allowed=frozenset())  # a session names no class to build: data only
    problems = session_problems(session, folder)
    if problems:
        raise PathError(path, _listed(problems))
    return session


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as JSON for an error message, cut to ``limit`` characters.

    Example:
        >>> shown("big"), shown(None), shown(list(range(100)))[-5:]
        ('"big"', 'null', '16, …')
    """
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _listed(problems: Sequence[str], most: int = 5) -> str:
    more = len(problems) - most
    return "; ".join(problems[:most]) + (f" (and {more} more)" if more > 0 else "")


# -- the schema of session.json (the module's docstring, as types) -------------------------------


def _is_id(value: str) -> bool:
    return bool(value) and value.strip() == value and value.isprintable() and len(value) <= 200


def _is_size(value: list) -> bool:
    return len(value) == 2 and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_changes(value: list) -> bool:
    return all(isinstance(change, dict) and isinstance(change.get("code"), str)
               and _is_number(change.get("from")) and _is_number(change.get("to")) for change in value)


Id = Annotated[str, Rule("a non-empty printable text without surrounding spaces, at most 200 characters", _is_id)]
Probability = Annotated[float, PROBABILITY]
Size = Annotated[list, Rule("[height, width] of positive integers", _is_size)]
NonNegative = Annotated[float, number(minimum=0)]
NonEmpty = Rule("a non-empty list", bool)


@dataclass(frozen=True, kw_only=True)
class ColourScale:
    """The colour scale of a heatmap or a difference map (``low`` and ``colormap`` may be left
    out: sessions from before they were recorded are drawn from 0 with ``inferno``)."""

    low: float = 0.0
    high: NonNegative
    max: NonNegative | None = None
    label: str
    colormap: str = "inferno"
    gain: Annotated[float, number(above=0)] = 1.0


@dataclass(frozen=True, kw_only=True)
class EditEntry:
    image: str | None
    difference: str | None
    difference_scale: ColourScale | None
    goal: Probability
    probability_from: Probability
    probability_to: Probability
    reached: bool
    steps: Annotated[int, integer(0)]
    changed_fraction: Probability
    max_change: Probability
    flag: Literal[None, "not edited", "too small to see", "no flip within the budget"]
    findings_to: list[Probability] | None
    vcdr_to: Probability | None
    changes: Annotated[list, Rule("a list of {code, from, to} with numbers from and to", _is_changes)] | None = None


@dataclass(frozen=True, kw_only=True)
class SaliencyPanel:
    kind: Literal["saliency"]
    overlay: str
    heatmap: str
    scale: ColourScale
    automatic: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class CounterfactualPanel:
    kind: Literal["counterfactual"]
    edits: dict[Literal["toward_normal", "toward_glaucoma"], EditEntry]
    automatic: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class FindingEntry:
    code: str
    name: str
    probability: Probability
    contribution: float


@dataclass(frozen=True, kw_only=True)
class Truth:
    label: Literal[0, 1, None]
    findings: list[str]


@dataclass(frozen=True, kw_only=True)
class CaseEntry:
    id: Id
    side: Literal["right", "left", None]
    probability: Probability
    decision: Decision
    photo: str
    size: Size
    findings: list[FindingEntry]
    vcdr: Probability
    vcdr_contribution: float
    bias: float
    unexplained: float
    explained_share: Probability
    contributions_exact: bool
    sentence: str
    quality: list[str]
    concepts: list[float] | None
    truth: Truth | None
    panels: dict[Id, SaliencyPanel | CounterfactualPanel]
    # [height, width] of the model's input where the photograph is shown larger, at the source's
    # resolution (None: the photograph is the model's input)
    model_input: Size | None = None


@dataclass(frozen=True, kw_only=True)
class Method:
    name: Id
    kind: Literal["saliency", "counterfactual"]
    title: str


@dataclass(frozen=True, kw_only=True)
class Model:
    name: str
    mode: Literal["multitask", "concept_bottleneck"]


@dataclass(frozen=True, kw_only=True)
class Bottleneck:
    concepts: Annotated[list[str], NonEmpty]
    weights: list[float]
    bias: float


@dataclass(frozen=True, kw_only=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class SessionFile:
    """``session.json``. Keys beyond these are kept and not checked."""

    format: Literal[1]
    title: str
    created: str
    mode: Literal["blinded", "open"]
    seed: Annotated[int, integer(0)]
    target: str
    threshold: Annotated[float, number(above=0, below=1)]
    model: Model
    bottleneck: Bottleneck | None
    methods: Annotated[list[Method], NonEmpty]
    cases: Annotated[list[CaseEntry], NonEmpty]
    skipped: list[Skipped]


@dataclass(frozen=True, kw_only=True)
class AddressFile:
    """``address.json``: the address ``xmed-review serve`` last served the session at, and since when."""

    host: Id
    port: Annotated[int, Rule("a port number from 1 to 65535", lambda value: 1 <= value <= 65535)]
    recorded: str


def base_url(host: str, port: int) -> str:
    """The URL of the page served at ``host`` and ``port``.

    Example:
        >>> base_url("127.0.0.1", 8765), base_url("fd00::20", 9000)
        ('http://127.0.0.1:8765', 'http://[fd00::20]:9000')
    """
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def record_address(folder: str | os.PathLike, host: str, port: int) -> str:
    """Record in ``<folder>/address.json`` that the session is served at ``host:port``; returns its URL."""
    record = {"host": host, "port": port, "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    problems = list(_type_problems(record, AddressFile, ()))
    if problems:
        raise InputError("address", _listed(problems))
    write_text_atomic(Path(folder) / ADDRESS_FILE, json.dumps(record, indent=1))
    return base_url(host, port)


def session_url(folder: str | os.PathLike) -> str | None:
    """The URL ``<folder>/address.json`` records, or None when the session has not been served yet;
    a damaged file raises :class:`~xmed.errors.PathError` naming it.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> session_url(folder), record_address(folder, "127.0.0.1", 9001), session_url(folder)
        (None, 'http://127.0.0.1:9001', 'http://127.0.0.1:9001')
    """
    path = Path(folder) / ADDRESS_FILE
    if not path.is_file():
        return None
    try:
        record = strict_json(path.read_bytes())
    except (OSError, ValueError) as err:
        raise PathError(path, f"cannot be read: {err}; run `xmed-review serve` again to rewrite it") from None
    problems = list(_type_problems(record, AddressFile, ()))
    if problems:
        raise PathError(path, f"{_listed(problems)}; run `xmed-review serve` again to rewrite it")
    return base_url(record["host"], record["port"])


def session_problems(session: Any, folder: str | os.PathLike) -> list[str]:
    """Every way ``session`` (``session.json`` as read) breaks :class:`SessionFile`, each naming the
    field; when the types are right, the rules across fields (distinct ids, panels of known methods,
    one weight per concept) and the images on disk.

    Example:
        >>> session_problems({"format": 1, "title": 7}, ".")[:2]
        ['title: expected text, got 7', 'created: missing']
    """
    problems = list(_type_problems(session, SessionFile, ()))
    return problems or [*_consistency_problems(session), *_image_problems(session, Path(folder))]


@dataclass(frozen=True)
class _Plan:
    """How to check a value against one type of the schema (worked out once per type)."""

    shape: str  # str, bool, int, float, literal, list, dict, class or union (of classes told apart by kind)
    expected: str  # what the type is, in the words of an error message
    nullable: bool = False
    rules: tuple[Rule, ...] = ()
    args: tuple = ()  # a literal's rule; a list's item type; a dict's key and item types; a union's classes


@functools.lru_cache(maxsize=None)
def _plan(hint: Any) -> _Plan:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in args:
        inner = _plan(Union[tuple(arg for arg in args if arg is not type(None))])
        return _Plan(inner.shape, f"{inner.expected} or null", True, inner.rules, inner.args)
    if origin is Annotated:
        inner = _plan(args[0])
        return _Plan(inner.shape, args[1].expected, inner.nullable, tuple(args[1:]), inner.args)
    if origin in (Union, types.UnionType):
        return _Plan("union", "an object", args=args)
    if origin is Literal:
        return _Plan("literal", one_of(*args).expected, args=(one_of(*args),))
    if origin is list or hint is list:
        return _Plan("list", "a list", args=args)
    if origin is dict:
        return _Plan("dict", "an object", args=args)
    if is_dataclass(hint):
        return _Plan("class", "an object", args=(hint,))
    return _Plan(hint.__name__, {str: "text", bool: "true or false", int: "an integer", float: "a number"}[hint])


_SHAPES = {
    "str": lambda value: isinstance(value, str),
    "bool": lambda value: isinstance(value, bool),
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    # a number a float can hold: none of NaN, ±inf or an integer beyond 1.8e308
    "float": lambda value: (isinstance(value, (int, float)) and not isinstance(value, bool)
                            and abs(value) <= sys.float_info.max),
    "list": lambda value: isinstance(value, list),
    **dict.fromkeys(("dict", "class", "union"), lambda value: isinstance(value, dict)),
    "literal": None,  # the plan's own rule
}


def _type_problems(value: Any, hint: Any, at: tuple) -> Iterator[str]:
    """``field: expected …, got …`` for each part of ``value`` (at the keys ``at`` of the session)
    that is not of type ``hint``."""
    plan = _plan(hint)
    if value is None and plan.nullable:
        return
    if not (_SHAPES[plan.shape] or plan.args[0].accepts)(value):
        yield f"{_path(at)}: expected {plan.expected}, got {shown(value)}"
        return
    if plan.shape == "union" and value.get("kind") not in _kinds(plan.args):
        yield f"{_path((*at, 'kind'))}: expected one of {', '.join(_kinds(plan.args))}, got {shown(value.get('kind'))}"
    elif plan.shape in ("class", "union"):
        cls = _kinds(plan.args)[value["kind"]] if plan.shape == "union" else plan.args[0]
        for name, (field_hint, required) in _fields(cls).items():
            if name in value:
                yield from _type_problems(value[name], field_hint, (*at, name))
            elif required:
                yield f"{_path((*at, name))}: missing"
    elif plan.shape == "list" and plan.args:
        for index, item in enumerate(value):
            yield from _type_problems(item, plan.args[0], (*at, index))
    elif plan.shape == "dict":
        key_hint, item_hint = plan.args
        for key, item in value.items():
            wrong_key = list(_type_problems(key, key_hint, (*at, key)))
            yield from wrong_key or _type_problems(item, item_hint, (*at, key))
    if not all(rule.accepts(value) for rule in plan.rules):
        yield f"{_path(at)}: expected {plan.expected}, got {shown(value)}"


@functools.lru_cache(maxsize=None)
def _kinds(classes: tuple[type, ...]) -> dict[Any, type]:
    """``{kind: class}`` of classes told apart by their ``kind`` field."""
    return {get_args(_fields(cls)["kind"][0])[0]: cls for cls in classes}


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> dict[str, tuple[Any, bool]]:
    """``{field: (type, required)}`` of a schema class (a field with a default may be left out)."""
    hints = get_type_hints(cls, include_extras=True)
    return {f.name: (hints[f.name], f.default is MISSING) for f in fields(cls)}


def _path(at: Sequence[Any]) -> str:
    """The keys ``at`` as a field of the session: ``cases[0].panels.gradcam``, ``panels["grad cam"]``.

    Example:
        >>> _path(("cases", 0, "panels", "grad cam")), _path(())
        ('cases[0].panels["grad cam"]', 'the top level')
    """
    text = ""
    for key in at:
        if isinstance(key, int):
            text += f"[{key}]"
        elif isinstance(key, str) and key.isidentifier():
            text += f".{key}" if text else key
        else:
            text += f"[{shown(key)}]"
    return text or "the top level"


def _consistency_problems(session: Mapping[str, Any]) -> Iterator[str]:
    kinds: dict[str, str] = {}
    for index, method in enumerate(session["methods"]):
        if method["name"] in kinds:
            yield f"methods[{index}].name: {shown(method['name'])} is listed twice"
        kinds[method["name"]] = method["kind"]
    head, ids = session["bottleneck"], set()
    if head and len(head["weights"]) != len(head["concepts"]):
        yield f"bottleneck.weights: expected one per concept ({len(head['concepts'])}), got {len(head['weights'])}"
    for index, case in enumerate(session["cases"]):
        if case["id"] in ids:
            yield f"cases[{index}].id: {shown(case['id'])} is the id of an earlier case; case ids must be distinct"
        ids.add(case["id"])
        for name, panel in case["panels"].items():
            where = _path(("cases", index, "panels", name))
            if kinds.get(name, panel["kind"]) != panel["kind"]:
                yield f"{where}.kind: method {shown(name)} is a {kinds[name]} method"
            elif name not in kinds:
                yield f"{where}: panel of unknown method {shown(name)} (not in methods)"
        if head and case["concepts"] is not None and len(case["concepts"]) != len(head["concepts"]):
            yield (f"cases[{index}].concepts: expected one value per bottleneck concept ({len(head['concepts'])}), "
                   f"got {len(case['concepts'])}")


def _image_problems(session: Mapping[str, Any], folder: Path) -> Iterator[str]:
    for index, case in enumerate(session["cases"]):
        for at, relative in _image_fields(case, ("cases", index)):
            if relative is None:
                continue
            try:
                path = case_file(folder, relative)
            except InputError as err:
                yield f"{_path(at)}: {err.reason}"
                continue
            if not _is_file(path):
                yield f"{_path(at)}: missing image {relative}"


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a folder on the way that may not be searched
        return False


def _image_fields(case: Mapping[str, Any], at: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """``(keys, path)`` of every image a case names."""
    yield (*at, "photo"), case.get("photo")
    for name, panel in (case.get("panels") or {}).items():
        yield (*at, "panels", name, "overlay"), panel.get("overlay")
        yield (*at, "panels", name, "heatmap"), panel.get("heatmap")
        for direction, edit in (panel.get("edits") or {}).items():
            yield (*at, "panels", name, "edits", direction, "image"), edit.get("image")
            yield (*at, "panels", name, "edits", direction, "difference"), edit.get("difference")


def case_images(case: Mapping[str, Any]) -> list[str]:
    """Every image path a case names (photo, overlays, heatmaps, edits, difference maps)."""
    return [relative for _, relative in _image_fields(case) if relative]


def case_file(folder: str | os.PathLike, relative: str) -> Path:
    """The file ``relative`` names inside ``<folder>/cases``; anything that would leave it (``..``,
    an absolute path, a link out) raises :class:`~xmed.errors.InputError`.

    Example:
        >>> case_file("/s", "../etc/passwd")
        Traceback (most recent call last):
        ...
        xmed.errors.InputError: path: '../etc/passwd' is not a file of this session's cases
    """
    if not isinstance(relative, str) or "\x00" in relative or os.path.isabs(relative):
        raise InputError("path", f"{relative!r} is not a file of this session's cases")
    try:
        root, target = (Path(folder) / CASES_DIR).resolve(), (Path(folder) / relative).resolve()
    except RuntimeError:  # what Python before 3.13 raises for a symbolic link loop
        raise InputError("path", f"{relative!r} is a symbolic link loop") from None
    except OSError as err:
        raise InputError("path", f"{relative!r} cannot be resolved ({err.strerror})") from None
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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise InputError("intervene", f"{key} must be a number in [0, 1], got {shown(value)}")
        concepts[key] = float(value)
    logit = head["bias"] + sum(w * concepts[c] for c, w in zip(head["concepts"], head["weights"]))
    probability = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
    return {"probability": round(probability, 6), "decision": decision(probability, session["threshold"]),
            "concepts": concepts}


# -- writing -------------------------------------------------------------------------------------


@dataclass
class Edit:
    """One counterfactual edit of a case's photograph (toward normal or toward glaucoma).

    ``image`` is the edited photograph (H×W×3 uint8; None when the edit failed outright), ``goal``
    the probability it aimed past, ``steps`` the gradient steps taken (0: not edited),
    ``changes`` what the edit changed in the model's words, largest first
    (:func:`xmed.explain.counterfactual.edit_changes`: ``[{"code": "vcdr", "from": 0.74, "to": 0.48}, …]``)."""

    image: np.ndarray | None
    goal: float
    probability_from: float
    probability_to: float
    reached: bool
    steps: int
    findings_to: list[float] | None = None
    vcdr_to: float | None = None
    changes: list[dict] = field(default_factory=list)


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
            if edit.findings_to is not None or edit.vcdr_to is not None:  # the model's findings were read
                record["changes"] = [dict(change) for change in getattr(edit, "changes", None) or []]
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
    problems = session_problems(session, folder)
    if problems:
        raise InputError("session", _listed(problems))
    if key:
        with open(Path(folder) / KEY_FILE, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "source_id"])
            writer.writerows(key.items())
    write_text_atomic(Path(folder) / SESSION_FILE, json.dumps(session, indent=1, allow_nan=False))
    return Path(folder)
