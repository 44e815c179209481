"""The panel images of a review case: a sparse heatmap (Integrated Gradients' kind: a few extreme
pixels) still shows its strong part over the photograph at the page's default opacity, in colours no
fundus structure has; and an edit's changes read from what it recorded or from the model's findings."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import deltaE_cie76, rgb2lab

from xmed.data import render_phantom
from xmed.review.panels import (DEFAULT_OPACITY, HEATMAP_COLORMAP, STRONG, blend, colour_table, edit_changes,
                                heatmap_layer)

#: a colour difference (CIE76 ΔE*ab) that nobody misses: 2.3 is just noticeable, 10 a clearly other colour
VISIBLE = 20.0
#: fundus colours a heatmap's top must not be taken for: a pale cup, a yellow rim, the orange retina, a vessel
FUNDUS = {"cup": (250, 245, 225), "rim": (245, 215, 150), "retina": (190, 95, 45), "vessel": (120, 30, 20)}


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference of two uint8 RGB images (or colours)."""
    return deltaE_cie76(rgb2lab(np.asarray(a, np.float64) / 255), rgb2lab(np.asarray(b, np.float64) / 255))


def sparse_map(size: int, seed: int = 0) -> np.ndarray:
    """An attribution map like Integrated Gradients' on a fundus: most pixels near zero, the disc's
    pixels heavy-tailed (Pareto), a handful of extreme outliers dwarfing them."""
    rng = np.random.default_rng(seed)
    values = np.abs(rng.normal(0, 0.002, (size, size)))
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size * 0.5) ** 2 + (xx - size * 0.7) ** 2 < (size * 0.1) ** 2
    values[disc] += rng.pareto(1.5, disc.sum()) * 0.01
    values.flat[rng.choice(size * size, 5, replace=False)] = 5.0
    return values


def test_a_sparse_maps_strong_pixels_are_visibly_coloured_at_the_default_opacity():
    eye = render_phantom(3, 128)
    values = sparse_map(128)
    assert np.percentile(values, 99) < 0.05 * values.max()  # scaled by its maximum, the map would vanish
    layer, scale = heatmap_layer(values)
    shown = blend(eye.image, layer, DEFAULT_OPACITY)
    strong = values >= np.percentile(values, 99)             # the map's strongest 1 %: 164 pixels, not 5
    assert np.all(delta_e(shown[strong], eye.image[strong]) > VISIBLE)
    assert np.all(layer[values >= STRONG * scale["high"], 3] == 255)
    weak = values < 0.01 * scale["high"]
    assert np.all(delta_e(shown[weak], eye.image[weak]) < 2.3)  # no evidence: the photograph as it is


@pytest.mark.parametrize("where", list(FUNDUS))
def test_the_heatmaps_colours_cannot_be_taken_for_the_fundus(where):
    colours = colour_table(HEATMAP_COLORMAP)[128:]  # the map's stronger half, up to its top
    assert delta_e(colours, np.tile(FUNDUS[where], (len(colours), 1))).min() > 3 * VISIBLE


def test_an_edits_changes_are_its_own_when_recorded_else_read_from_the_findings():
    case = {"vcdr": 0.7367, "findings": [{"code": "LC", "probability": 0.9}, {"code": "DH", "probability": 0.1},
                                         {"code": "LD", "probability": 0.5}]}
    derived = edit_changes(case, {"findings_to": [0.05, 0.15, 0.8], "vcdr_to": 0.4759})
    assert [(c["name"], c["from"], c["to"]) for c in derived] == [
        ("vCDR", 0.7367, 0.4759), ("large cup", 0.9, 0.05), ("laminar dots", 0.5, 0.8)]  # DH moved 0.05: left out
    recorded = [{"code": "DH", "from": 0.1, "to": 0.16}, {"code": "vcdr", "from": 0.74, "to": 0.48}]
    assert [c["name"] for c in edit_changes(case, {"changes": recorded, "findings_to": [0.05, 0.15, 0.8]})] == [
        "disc haemorrhage", "vCDR"]                         # as the editor ordered them, nothing added
    assert edit_changes(case, {"findings_to": None, "vcdr_to": None}) == []
