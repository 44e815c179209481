"""Image grids (contact sheets) with a one-line caption per tile.

Example:
    >>> import numpy as np
    >>> sheet = image_grid([np.zeros((32, 32, 3), np.uint8)] * 4, columns=2)
    >>> sheet.shape
    (64, 64, 3)
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def image_grid(images: Sequence[np.ndarray], columns: int, captions: Sequence[str] | None = None,
               caption_scale: float = 0.45) -> np.ndarray:
    """Tile equally sized H×W×3 uint8 images row by row, captions written at each top left."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (h, w):
            raise ValueError(f"image {i} is {image.shape[1]}x{image.shape[0]}, expected {w}x{h}")
        tile = np.ascontiguousarray(image).copy()
        if captions:
            for dy, line in enumerate(captions[i].split("\n")):
                org = (6, int(18 + dy * 22 * caption_scale / 0.45))
                stroke = max(1, round(caption_scale * 2))
                for colour, thickness in (((0, 0, 0), 3 * stroke), ((255, 255, 255), stroke)):
                    cv2.putText(tile, line, org, cv2.FONT_HERSHEY_SIMPLEX, caption_scale, colour,
                                thickness, cv2.LINE_AA)
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return sheet
