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

from xmed.data.phantom import render_phantom


def image_grid(images: Sequence[np.ndarray], columns: int, captions: Sequence[str] | None = None,
               caption_scale: float = 0.45) -> np.ndarray:
    """Tile equally sized H×W×3 uint8 images row by row, captions written at each top left
    (wrapped at spaces to the tile's width, never drawn past it)."""
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
            stroke = max(1, round(caption_scale * 2))
            lines = [part for line in captions[i].split("\n") for part in wrap_caption(line, w - 12, caption_scale, 3 * stroke)]
            for dy, line in enumerate(lines):
                org = (6, int(18 + dy * 22 * caption_scale / 0.45))
                for colour, thickness in (((0, 0, 0), 3 * stroke), ((255, 255, 255), stroke)):
                    cv2.putText(tile, line, org, cv2.FONT_HERSHEY_SIMPLEX, caption_scale, colour,
                                thickness, cv2.LINE_AA)
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return sheet


def wrap_caption(text: str, width: int, scale: float, thickness: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels in OpenCV's simplex font
    (a single word wider than that stays on a line of its own).

    Example:
        >>> wrap_caption("integrated gradients", 80, 0.35, 3)
        ['integrated', 'gradients']
    """
    lines: list[str] = []
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def phantom_sheet(seed: int = 0, n: int = 12, size: int = 256, columns: int = 4, width: int | None = None) -> np.ndarray:
    """A contact sheet of ``n`` phantom eyes rendered from consecutive seeds, each captioned with
    its seed, side, label, vCDR and findings; scaled to ``width`` pixels when given.

    Example:
        >>> phantom_sheet(n=2, size=64, columns=2).shape
        (64, 128, 3)
    """
    images, captions = [], []
    for s in range(seed, seed + n):
        eye = render_phantom(s, size)
        present = [code for code, value in eye.findings.items() if value]
        images.append(eye.image)
        captions.append(f"seed {s} {eye.eye} {'glaucoma' if eye.label else 'normal'} "
                        f"vCDR {eye.vcdr:.2f}\n{' '.join(present) or '-'}")
    sheet = image_grid(images, columns=columns, captions=captions, caption_scale=0.45 * size / 256)
    if width:
        scale = width / sheet.shape[1]
        sheet = cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return sheet
