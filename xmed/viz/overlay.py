"""Saliency overlays: a map blended over its photograph, with ground-truth outlines.

Example:
    >>> import numpy as np, torch
    >>> image = to_uint8_image(torch.zeros(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> overlay(image, np.eye(8, dtype=np.float32)).shape
    (8, 8, 3)
"""

from __future__ import annotations

import cv2
import numpy as np

from xmed.data.normalise import to_uint8_image  # noqa: F401  (the photograph an overlay is drawn on, published here)


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5,
            outline: np.ndarray | None = None) -> np.ndarray:
    """Blend ``saliency`` (H×W; its positive part scaled to [0, 1]) over ``image`` with the
    inferno colour map, transparent where the map is zero; ``outline`` (H×W bool) is drawn
    in cyan — the ground-truth region the map is scored against."""
    positive = np.clip(np.nan_to_num(saliency.astype(np.float32)), 0, None)
    top = positive.max()
    scaled = positive / top if top > 0 else positive
    heat = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    weight = (alpha * scaled)[..., None]
    out = (image.astype(np.float32) * (1 - weight) + heat.astype(np.float32) * weight).astype(np.uint8)
    if outline is not None and outline.any():
        contours, _ = cv2.findContours(outline.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        out = np.ascontiguousarray(out)
        cv2.drawContours(out, contours, -1, (0, 255, 255), 1, cv2.LINE_AA)
    return out
