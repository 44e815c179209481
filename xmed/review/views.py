"""A review case as both the live page (:mod:`xmed.review.server`) and the static export
(:mod:`xmed.review.export`) show it: one view model and one template set, so that the two say the
same thing in the same words.

:func:`case_view` gives the case-level text (heading, decision line, quality warning, the model's
sentence, the findings by their short names with their contributions, the share of the evidence
they explain); :func:`panel_view` a panel's title, colour scale and edits (:func:`edit_view`: title,
how it was made, probabilities, what it changed, its flag and why). Image paths stay the session's
own: the server turns them into URLs (and adds letters, blinding and ratings), the export into
``data:`` URIs. :func:`environment` renders ``templates/``, whose ``_case.html`` holds the markup
both share (the decision head, the model's reasons, an edit's summary).

Example:
    >>> case = {"id": "case-001", "side": "right", "probability": 0.7367, "decision": "referable glaucoma",
    ...         "findings": [{"code": "ANRS", "name": "appearance of the neuroretinal rim superiorly",
    ...                       "probability": 0.9, "contribution": 0.412}]}
    >>> view = case_view({"threshold": 0.5}, case)
    >>> view["probability"], view["threshold"], view["side"], view["findings"][0]["short"]
    ('0.74', '0.50', 'right eye', 'superior rim thinning')
"""

from __future__ import annotations

import base64
import functools
import io
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2

from xmed.review.panels import COLORMAP, FLAGS, colour_table, edit_changes, known_colormap
from xmed.review.session import flags_in_words

__all__ = ["EDIT_TITLES", "TRIPTYCH", "fixed", "signed", "short_name", "change_text", "changes_text", "case_view",
           "edit_view", "panel_view", "scale_view", "colour_bar", "colour_gradient", "environment"]

TEMPLATES = Path(__file__).parent / "templates"
#: the edits in the order they are shown, around the original: ``name -> (title, how it was made)``
EDIT_TITLES = {"toward_normal": ("Less glaucomatous", "edited toward normal"),
               "toward_glaucoma": ("More glaucomatous", "edited toward glaucoma")}
#: a counterfactual panel's columns: less glaucomatous | original | more glaucomatous
TRIPTYCH = ("toward_normal", "original", "toward_glaucoma")
SIDES = {"right": "right eye", "left": "left eye"}
VCDR_NAME = "vertical cup-to-disc ratio (vCDR)"
#: what an edit changed when the model's findings after it were read but none moved
NOTHING_MOVED = "no finding and not the vCDR changed markedly"
NOT_RECORDED = "the model's findings after the edit were not recorded"


def fixed(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or a dash for anything else (missing, not finite, a bool).

    Example:
        >>> fixed(0.7367), fixed(0.7367, 3), fixed(None), fixed(True), fixed(float("nan"))
        ('0.74', '0.737', '—', '—', '—')
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return "—"
    return f"{float(value):.{digits}f}"


def signed(value: Any, digits: int = 2) -> str:
    """A number with its sign and ``digits`` decimals, or a dash.

    Example:
        >>> signed(0.412), signed(-0.05), signed(None)
        ('+0.41', '-0.05', '—')
    """
    return "—" if fixed(value) == "—" else f"{float(value):+.{digits}f}"


def _interval(values: Sequence[Any] | None, digits: int = 2) -> str:
    """``[low, high]`` with ``digits`` decimals, or a dash.

    Example:
        >>> _interval([0.1234, 0.5]), _interval(None)
        ('[0.12, 0.50]', '—')
    """
    if not values or any(fixed(v) == "—" for v in values):
        return "—"
    return f"[{float(values[0]):.{digits}f}, {float(values[1]):.{digits}f}]"


def _p_value(value: Any) -> str:
    """A p-value as a report writes it (``< 0.001`` below that).

    Example:
        >>> _p_value(0.03125), _p_value(0.00001), _p_value(None)
        ('0.031', '< 0.001', '—')
    """
    if fixed(value) == "—":
        return "—"
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def short_name(finding: Mapping[str, Any]) -> str:
    """A finding's name in a few words (:data:`xmed.findings.FINDING_NAMES`), else as the session gives it.

    Example:
        >>> short_name({"code": "ANRS", "name": "appearance of the neuroretinal rim superiorly"})
        'superior rim thinning'
    """
    from xmed.findings import FINDING_NAMES

    known = FINDING_NAMES.get(finding.get("code"))
    return known.short if known else str(finding.get("name", ""))


def change_text(change: Mapping[str, Any]) -> str:
    """One change of an edit (:func:`xmed.review.panels.edit_changes`) in words.

    Example:
        >>> change_text({"name": "vCDR", "from": 0.7367, "to": 0.4759})
        'vCDR 0.74 → 0.48'
    """
    return f"{change['name']} {change['from']:.2f} → {change['to']:.2f}"


def changes_text(case: Mapping[str, Any], edit: Mapping[str, Any]) -> str:
    """What an edit changed, in one line: its changes (:func:`xmed.review.panels.edit_changes`),
    or that none moved, or that the model's findings after it were not recorded.

    Example:
        >>> case = {"vcdr": 0.74, "findings": [{"code": "LC", "probability": 0.9}]}
        >>> changes_text(case, {"findings_to": [0.2], "vcdr_to": 0.48})
        'vCDR 0.74 → 0.48 · large cup 0.90 → 0.20'
        >>> changes_text(case, {"findings_to": [0.85], "vcdr_to": 0.73}), changes_text(case, {})
        ('no finding and not the vCDR changed markedly', "the model's findings after the edit were not recorded")
    """
    changes = edit_changes(case, edit)
    if changes:
        return " · ".join(change_text(change) for change in changes)
    recorded = any(edit.get(key) is not None for key in ("changes", "findings_to", "vcdr_to"))
    return NOTHING_MOVED if recorded else NOT_RECORDED


def case_view(session: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """A case's text as both views show it: ``id``, ``side`` (in words), ``probability``,
    ``decision`` and ``threshold`` (the decision line), ``quality`` (the warning in words, or
    None), ``sentence``, ``findings`` (rows ``{"code", "name", "short", "probability",
    "contribution"}``, the vCDR's last), ``explained`` (the share of the evidence they explain,
    ``"74%"``) and ``approximate`` (whether the contributions are)."""
    findings = [{"code": finding.get("code"), "name": finding.get("name", ""), "short": short_name(finding),
                 "probability": fixed(finding.get("probability")), "contribution": signed(finding.get("contribution"))}
                for finding in case.get("findings") or []]
    if fixed(case.get("vcdr")) != "—":
        findings.append({"code": "vcdr", "name": VCDR_NAME, "short": VCDR_NAME, "probability": fixed(case["vcdr"]),
                         "contribution": signed(case.get("vcdr_contribution"))})
    share = case.get("explained_share")
    return {"id": case["id"], "side": SIDES.get(case.get("side"), "eye side not recorded"),
            "probability": fixed(case.get("probability")), "decision": case.get("decision", ""),
            "threshold": fixed(session.get("threshold")),
            "quality": flags_in_words(case["quality"]) if case.get("quality") else None,
            "sentence": case.get("sentence", ""), "findings": findings,
            "explained": f"{fixed(100 * share, 0)}%" if fixed(share) != "—" else "an unknown share",
            "approximate": case.get("contributions_exact") is False}


def scale_view(scale: Mapping[str, Any] | None) -> dict[str, Any]:
    """A colour scale's ends (three decimals), label and colour map (a session from before the colour
    map was recorded is read with the one :mod:`xmed.review.panels` drew then).

    Example:
        >>> scale_view({"low": 0.0, "high": 0.3217, "label": "attribution"})
        {'low': '0.000', 'high': '0.322', 'label': 'attribution', 'colormap': 'inferno'}
    """
    scale = scale or {}
    return {"low": fixed(scale.get("low", 0.0), 3), "high": fixed(scale.get("high"), 3),
            "label": scale.get("label", ""), "colormap": scale.get("colormap", COLORMAP)}


def edit_view(case: Mapping[str, Any], name: str, edit: Mapping[str, Any]) -> dict[str, Any]:
    """An edit (``name``: a key of :data:`EDIT_TITLES`) as both views show it: ``title``, ``made``,
    the probabilities before and after and the goal, what it ``changes`` (:func:`changes_text`),
    its ``flag`` and ``flag_reason``, whether it ``reached`` the goal in how many ``steps`` and the
    ``changed`` share of the eye; its ``image``, ``difference`` (session paths) and the
    difference's ``scale`` (:func:`scale_view`)."""
    title, made = EDIT_TITLES[name]
    return {"name": name, "title": title, "made": made, "probability_from": fixed(edit.get("probability_from")),
            "probability_to": fixed(edit.get("probability_to")), "goal": fixed(edit.get("goal")),
            "changes": changes_text(case, edit), "flag": edit.get("flag"),
            "flag_reason": FLAGS.get(edit.get("flag"), ""), "reached": edit.get("reached"),
            "steps": edit.get("steps"), "changed": f"{fixed(100 * edit['changed_fraction'], 1)}%"
            if fixed(edit.get("changed_fraction")) != "—" else "—",
            "image": edit.get("image"), "difference": edit.get("difference"),
            "scale": scale_view(edit.get("difference_scale"))}


def panel_view(method: Mapping[str, Any], case: Mapping[str, Any], panel: Mapping[str, Any]) -> dict[str, Any]:
    """A panel of ``case`` by ``method`` (a session's ``methods`` entry) as both views show it:
    ``method``, ``kind``, ``title``, ``automatic`` scores; a saliency panel's ``overlay``,
    ``heatmap`` (session paths) and ``scale``; a counterfactual panel's ``edits`` in
    :data:`EDIT_TITLES` order (:func:`edit_view`)."""
    view = {"method": method["name"], "kind": panel["kind"], "title": method.get("title") or method["name"],
            "automatic": panel.get("automatic") or {}}
    if panel["kind"] == "saliency":
        view.update(overlay=panel.get("overlay"), heatmap=panel.get("heatmap"), scale=scale_view(panel.get("scale")))
    else:
        edits = panel.get("edits") or {}
        view["edits"] = {name: edit_view(case, name, edits[name]) for name in EDIT_TITLES if name in edits}
    return view


@functools.lru_cache(maxsize=8)
def colour_bar(colormap: str) -> str | None:
    """A ``data:`` PNG of ``colormap`` (:func:`xmed.review.panels.colour_table`) from low to high,
    or None for a name it does not know.

    Example:
        >>> colour_bar("inferno").startswith("data:image/png;base64,"), colour_bar("rainbow-unicorn")
        (True, None)
    """
    import numpy as np
    from PIL import Image

    if not known_colormap(colormap):
        return None
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(colour_table(str(colormap))[None], 12, axis=0)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@functools.lru_cache(maxsize=8)
def colour_gradient(colormap: str) -> str:
    """A CSS left-to-right gradient of a colour map (:func:`xmed.review.panels.colour_table`): the
    colour bar without an image.

    Example:
        >>> colour_gradient("bluemagenta")[:45]
        'linear-gradient(to right, #1e46f0 0%, #3640ef'
    """
    import numpy as np

    colours = colour_table(colormap)[np.linspace(0, 255, 11).round().astype(int)]
    stops = ", ".join(f"#{r:02x}{g:02x}{b:02x} {i * 10}%" for i, (r, g, b) in enumerate(colours.tolist()))
    return f"linear-gradient(to right, {stops})"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates of ``templates/`` (HTML escaped, an undefined name an error), with the filters
    ``fixed``, ``signed``, ``in_words`` (:func:`~xmed.review.session.flags_in_words`), ``interval``
    and ``p_value``, and :data:`TRIPTYCH` as ``triptych``.

    Example:
        >>> environment().from_string("{{ 0.7367 | fixed }} {{ [0.1, 0.2] | interval }}").render()
        '0.74 [0.10, 0.20]'
    """
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(fixed=fixed, signed=signed, in_words=flags_in_words, interval=_interval, p_value=_p_value)
    env.globals.update(triptych=TRIPTYCH)
    return env
