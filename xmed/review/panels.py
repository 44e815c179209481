"""The images of a review case's panels, at the photograph's full resolution: a heatmap as a
colour layer the page lays over the photograph (its opacity under the reader's control), and a
counterfactual edit's difference map, amplified so that the change can be seen, with the scale
that says by how much — plus the flags a reader needs before trusting an edit.

Example:
    >>> import numpy as np
    >>> photo = np.full((64, 64, 3), 120, np.uint8)
    >>> edited = photo.copy(); edited[20:40, 20:40] += 30
    >>> edit_change(photo, edited)["changed_fraction"]
    0.097656
    >>> edit_flag(steps=12, reached=True, changed_fraction=0.097656)
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

#: matplotlib/OpenCV name of the colour map of heatmaps and difference maps (perceptually uniform)
COLORMAP = "inferno"
#: a pixel counts as changed when a channel moves by at least this much (in [0, 1] units, 8 of 255
#: grey levels): smaller steps are not seen on a photograph shown at its own size
VISIBLE_CHANGE = 8 / 255
#: an edit that changes less than this share of the field of view is flagged "too small to see"
VISIBLE_SHARE = 0.005
FLAGS = {"not edited": "the eye was already past the goal; nothing was changed",
         "no flip within the budget": "the edit did not reach the goal within its budget",
         "too small to see": "the edit changes too few pixels, too little, to be seen"}


def heatmap_layer(saliency: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """An H×W×4 uint8 colour layer of a saliency map (its positive part scaled by its maximum;
    alpha grows with the value, so weak evidence stays transparent) and its colour scale.

    Example:
        >>> layer, scale = heatmap_layer(np.array([[0.0, 0.5], [1.0, 2.0]]))
        >>> layer[..., 3].tolist(), scale["high"]
        ([[0, 64], [128, 255]], 2.0)
    """
    positive = np.clip(np.nan_to_num(np.asarray(saliency, np.float32)), 0, None)
    top = float(positive.max())
    scaled = positive / top if top > 0 else positive
    colour = cv2.applyColorMap((scaled * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    alpha = (scaled * 255 + 0.5).astype(np.uint8)
    scale = {"low": 0.0, "high": round(top, 6), "colormap": COLORMAP,
             "label": "attribution, relative to this map's maximum (transparent = none)"}
    return np.dstack([colour, alpha]), scale


def blend(photo: np.ndarray, layer: np.ndarray, opacity: float = 0.6) -> np.ndarray:
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
    image = cv2.applyColorMap((scaled * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
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
