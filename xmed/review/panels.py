"""The images of a review case's panels, at the photograph's full resolution: a heatmap as a
colour layer the page lays over the photograph (its opacity under the reader's control), and a
counterfactual edit's difference map, amplified so that the change can be seen, with the scale
that says by how much — plus what an edit changed in the model's own words and the flags a reader
needs before trusting it.

A heatmap is drawn in :data:`HEATMAP_COLORMAP` (blue to magenta: its top can be mistaken neither
for the pale disc and cup nor for the orange retina) and scaled to its *top*, the value 1 % of its
positive pixels exceed (:data:`TOP_PERCENTILE`; Integrated Gradients' own
visualisation clips at the 99th percentile too), so that a sparse map, whose few extreme pixels
dwarf the rest, still shows its strong part; from :data:`STRONG` of the top up the layer is opaque.

Example:
    >>> import numpy as np
    >>> photo = np.full((64, 64, 3), 120, np.uint8)
    >>> edited = photo.copy(); edited[20:40, 20:40] += 30
    >>> edit_change(photo, edited)["changed_fraction"]
    0.097656
    >>> edit_flag(steps=12, reached=True, changed_fraction=0.097656)
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

#: the colour map of difference maps (perceptually uniform; shown on their own, on black)
COLORMAP = "inferno"
#: the colour map of heatmaps laid over a photograph: blue (weak) through violet to magenta (the
#: top), every colour far from fundus tones (CIE76 colour difference above 70 from a pale cup, a
#: yellow disc rim, the orange retina and a vessel)
HEATMAP_COLORMAP = "bluemagenta"
_STOPS = {HEATMAP_COLORMAP: ((0.0, (30, 70, 240)), (0.5, (150, 40, 235)), (1.0, (240, 0, 170)))}
#: a heatmap's top, full colour, is this percentile of its positive values: on the demo's Integrated
#: Gradients maps the largest value is 20-100 times it, and scaled by that the map is invisible
TOP_PERCENTILE = 99
#: from this share of the top up a heatmap's layer is opaque; below it, it fades out linearly
STRONG = 0.5
#: the page's heatmap opacity until the reader moves its slider
DEFAULT_OPACITY = 0.6
#: a pixel counts as changed when a channel moves by at least this much (in [0, 1] units, 8 of 255
#: grey levels): smaller steps are not seen on a photograph shown at its own size
VISIBLE_CHANGE = 8 / 255
#: an edit that changes less than this share of the field of view is flagged "too small to see"
VISIBLE_SHARE = 0.005
#: a finding an edit moves by at least this much (probability) is named among its changes
MOVED = 0.2
FLAGS = {"not edited": "the eye was already past the goal; nothing was changed",
         "no flip within the budget": "the edit did not reach the goal within its budget",
         "too small to see": "the edit changes too few pixels, too little, to be seen"}


@functools.lru_cache(maxsize=8)
def colour_table(name: str) -> np.ndarray:
    """The 256 × 3 uint8 RGB colours of colour map ``name``: :data:`HEATMAP_COLORMAP`, or any
    matplotlib map (``inferno``, the difference maps' and older sessions' heatmaps). An unknown
    name raises ``KeyError``.

    Example:
        >>> colour_table("bluemagenta")[[0, 255]].tolist(), colour_table("inferno")[255].tolist()
        ([[30, 70, 240], [240, 0, 170]], [252, 255, 164])
    """
    if name in _STOPS:
        positions, colours = zip(*_STOPS[name])
        ramp = np.linspace(0, 1, 256)
        table = np.stack([np.interp(ramp, positions, [c[k] for c in colours]) for k in range(3)], axis=1)
    else:
        import matplotlib

        if name not in matplotlib.colormaps:
            raise KeyError(f"unknown colour map {name!r}")
        table = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255
    table = (table + 0.5).astype(np.uint8)
    table.flags.writeable = False
    return table


def known_colormap(name: Any) -> bool:
    """Whether :func:`colour_table` can draw ``name``.

    Example:
        >>> known_colormap("bluemagenta"), known_colormap("inferno"), known_colormap("rainbow-unicorn")
        (True, True, False)
    """
    try:
        colour_table(str(name))
    except KeyError:
        return False
    return True


def _coloured(scaled: np.ndarray, name: str) -> np.ndarray:
    """``scaled`` (values in [0, 1]) in the colours of colour map ``name``, H×W×3 uint8."""
    return colour_table(name)[(np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)]


def heatmap_top(positive: np.ndarray) -> float:
    """The value a heatmap's colours are scaled to: the :data:`TOP_PERCENTILE` th percentile of its
    positive values (0 for a map with none), so that a few extreme pixels do not hide the rest.

    Example:
        >>> heatmap_top(np.array([0.0] * 50 + [1.0] * 99 + [100.0])), heatmap_top(np.zeros(4))
        (1.0, 0.0)
    """
    values = positive[positive > 0]
    return float(np.percentile(values, TOP_PERCENTILE, method="lower")) if values.size else 0.0


def heatmap_layer(saliency: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """An H×W×4 uint8 colour layer of a saliency map and its colour scale: the positive part scaled
    by its top (:func:`heatmap_top`) in :data:`HEATMAP_COLORMAP`; alpha grows with the value up to
    opaque at :data:`STRONG` of the top, so weak evidence stays transparent and the strong part
    shows however sparse the map.

    Example:
        >>> layer, scale = heatmap_layer(np.linspace(0, 1, 101).reshape(1, -1))
        >>> layer[0, [0, 25, 50, 100], 3].tolist(), scale["high"], scale["max"]
        ([0, 129, 255, 255], 0.99, 1.0)
    """
    positive = np.clip(np.nan_to_num(np.asarray(saliency, np.float32)), 0, None)
    top = heatmap_top(positive)
    scaled = np.clip(positive / top, 0, 1) if top > 0 else positive
    alpha = (np.clip(scaled / STRONG, 0, 1) * 255 + 0.5).astype(np.uint8)
    scale = {"low": 0.0, "high": round(top, 6), "max": round(float(positive.max(initial=0.0)), 6),
             "colormap": HEATMAP_COLORMAP,
             "label": f"attribution relative to this map's top (the value {100 - TOP_PERCENTILE}% of its positive "
                      f"pixels exceed): transparent = none, opaque from {STRONG:.0%} of the top"}
    return np.dstack([_coloured(scaled, HEATMAP_COLORMAP), alpha]), scale


def blend(photo: np.ndarray, layer: np.ndarray, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
    """The photograph with a colour layer (:func:`heatmap_layer`) laid over it at ``opacity``.

    Example:
        >>> blend(np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 4), 255, np.uint8), 0.5).tolist()
        [[[128, 128, 128]]]
    """
    weight = layer[..., 3:].astype(np.float32) / 255 * opacity
    out = photo.astype(np.float32) * (1 - weight) + layer[..., :3].astype(np.float32) * weight
    return (out + 0.5).astype(np.uint8)


def edit_change(photo: np.ndarray, edited: np.ndarray, fov: np.ndarray | None = None) -> dict[str, float]:
    """How much an edit changed the photograph (both H×W×3 uint8): the largest channel change per
    pixel in [0, 1] units, its maximum, and the share of the field of view (``fov``, H×W bool;
    None: the whole image) changed by at least :data:`VISIBLE_CHANGE`."""
    change = _pixel_change(photo, edited)
    region = change if fov is None else change[fov]
    share = float((region >= VISIBLE_CHANGE).mean()) if region.size else 0.0
    return {"changed_fraction": round(share, 6), "max_change": round(float(change.max(initial=0.0)), 6)}


def _pixel_change(photo: np.ndarray, edited: np.ndarray) -> np.ndarray:
    return np.abs(edited.astype(np.int16) - photo.astype(np.int16)).max(axis=2).astype(np.float32) / 255


def difference_map(photo: np.ndarray, edited: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """An H×W×3 uint8 image of where and how much an edit changed the photograph, amplified so
    that the largest change (its 99.9th percentile, so a few outliers do not hide the rest) is in
    full colour, and its scale: ``high`` is the change, in [0, 1] pixel units, shown in full
    colour and ``gain`` how many times the change was amplified.

    Example:
        >>> photo = np.zeros((4, 4, 3), np.uint8); edited = photo.copy(); edited[0, 0] = 51
        >>> image, scale = difference_map(photo, edited)
        >>> scale["high"], scale["gain"], image[0, 0].tolist() == image.max(axis=(0, 1)).tolist()
        (0.2, 5.0, True)
    """
    change = _pixel_change(photo, edited)
    high = float(np.percentile(change, 99.9, method="higher")) if change.any() else 0.0
    high = high if high > 0 else float(change.max(initial=0.0))
    scaled = np.clip(change / high, 0, 1) if high > 0 else change
    image = _coloured(scaled, COLORMAP)
    gain = round(1.0 / high, 2) if high > 0 else 1.0
    scale = {"low": 0.0, "high": round(high, 6), "gain": gain, "colormap": COLORMAP,
             "label": f"pixel change, amplified {gain:g}×: full colour = {high * 255:.0f} of 255 grey levels"}
    return np.ascontiguousarray(image), scale


def edit_flag(steps: int, reached: bool, changed_fraction: float) -> str | None:
    """What a reader must know before reading an edit (a key of :data:`FLAGS`), or None.

    Example:
        >>> edit_flag(steps=0, reached=True, changed_fraction=0.0), edit_flag(50, False, 0.2)
        ('not edited', 'no flip within the budget')
    """
    if steps == 0:
        return "not edited"
    if not reached:
        return "no flip within the budget"
    if changed_fraction < VISIBLE_SHARE:
        return "too small to see"
    return None


def edit_changes(case: Mapping[str, Any], edit: Mapping[str, Any], most: int = 3) -> list[dict[str, Any]]:
    """What an edit changed in the model's own words: ``[{"code", "name", "from", "to"}, …]``, at
    most ``most`` findings besides the vCDR. The edit's own ``changes`` when it recorded them (in
    their order), else worked out from its ``findings_to`` and ``vcdr_to`` against the case's
    findings and vCDR by the editor's own rule (:func:`xmed.explain.counterfactual.moved_concepts`)
    with :data:`MOVED` as the smallest move, largest move first.

    Example:
        >>> case = {"vcdr": 0.74, "findings": [{"code": "LC", "probability": 0.9}, {"code": "DH", "probability": 0.1}]}
        >>> [(c["name"], c["from"], c["to"]) for c in edit_changes(case, {"findings_to": [0.2, 0.15], "vcdr_to": 0.48})]
        [('vCDR', 0.74, 0.48), ('large cup', 0.9, 0.2)]
    """
    from xmed.explain.counterfactual import moved_concepts
    from xmed.findings import FINDING_NAMES, VCDR

    changes = edit.get("changes")
    if changes is None:
        findings = case.get("findings") or []
        before = {f["code"]: f["probability"] for f in findings}
        after = {f["code"]: to for f, to in zip(findings, edit.get("findings_to") or [])}
        if edit.get("vcdr_to") is not None and case.get("vcdr") is not None:
            before[VCDR], after[VCDR] = case["vcdr"], edit["vcdr_to"]
        changes = moved_concepts(before, after, MOVED)
    findings = [c for c in changes if c["code"] != VCDR][:most]
    names = {code: name.short for code, name in FINDING_NAMES.items()}
    return [{"code": c["code"], "name": "vCDR" if c["code"] == VCDR else names.get(c["code"], c["code"]),
             "from": c["from"], "to": c["to"]} for c in changes if c["code"] == VCDR or c in findings]
