"""Fundus preprocessing: find the field of view, crop to it, normalise contrast.

A colour fundus photograph is a bright disc (the field of view, FOV) on a black background;
cameras differ in where the disc sits, how large it is and whether it is cut off at the top and
bottom. Cropping every image to a square around its FOV makes images from different cameras
comparable, and :class:`FundusPreprocess` bundles these steps into a JSON-able data config that
a trained model carries with it, so that a photograph is prepared for a model exactly as its
training images were.

Example:
    >>> import numpy as np
    >>> image = np.zeros((100, 140, 3), np.uint8)
    >>> yy, xx = np.mgrid[:100, :140]
    >>> image[(xx - 70) ** 2 + (yy - 50) ** 2 <= 40 ** 2] = (200, 90, 40)
    >>> fov = find_fov(image)
    >>> round(fov.cx), round(fov.cy), round(fov.radius)
    (70, 50, 40)
    >>> crop, _ = crop_to_fov(image, fov=fov)
    >>> crop.shape
    (82, 82, 3)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Sequence

import cv2
import numpy as np

from xmed.errors import ConfigError

Contrast = Literal["clahe", "graham"]
CONTRAST_METHODS: tuple[str, ...] = ("clahe", "graham")

# The FOV is searched on a copy whose longer side is at most this many pixels: the circle fit over
# hundreds of boundary points stays sub-pixel at this scale (against a search at 1024 px: centres
# within 0.12 px, radii within 0.71 px of a 697 px one on 40 phantom eyes at 512 px and skimage's
# retina), and the search is then a third of a loader worker's time on a 512 px JPEG, not two thirds.
_WORK_SIZE = 256
# The disc is searched at this FOV diameter: a disc is then ~10 px across, plenty to find its centre.
_DISC_WORK_DIAMETER = 128
# A reduced decode is chosen before the field of view is found, on the assumption that it spans at
# least this share of the photograph's shorter side (0.88-0.96 on phantom eyes; a circle cut off at
# the top and bottom spans more). A smaller one leaves the crop short of pixels, which preparing
# notices: the photograph is then decoded whole (PixelNeed.crop).
_FOV_SHARE = 0.8


@dataclass(frozen=True)
class FieldOfView:
    """A circular field of view in pixel coordinates (pixel centres at integer positions).

    ``cx, cy`` may lie outside the image and ``radius`` may exceed half its height (the circle of
    many cameras is cut off at the top and bottom).
    """

    cx: float
    cy: float
    radius: float

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """Boolean ``H×W`` mask of the pixels inside the circle (``shape`` may be ``H×W×C``)."""
        h, w = shape[:2]
        yy, xx = np.ogrid[:h, :w]
        return (xx - self.cx) ** 2 + (yy - self.cy) ** 2 <= self.radius**2

    def scaled(self, factor: float) -> FieldOfView:
        """The same circle after resizing the image by ``factor`` (pixel-centre convention)."""
        return FieldOfView((self.cx + 0.5) * factor - 0.5, (self.cy + 0.5) * factor - 0.5,
                           self.radius * factor)


@dataclass(frozen=True)
class PixelNeed:
    """How many pixels preparing a photograph needs: a photograph stored larger may be decoded
    smaller (:func:`xmed.data.io.read_image_reduced`), by what :meth:`reduction` allows.

    ``shorter`` and ``longer`` are the least its shorter and longer side may keep, judged from
    the stored size before decoding; ``crop`` is the least side the preprocessed image (the crop,
    before it is fitted into the input square) may keep, which depends on the field of view
    found and so is checked after preprocessing. Built by :meth:`FundusPreprocess.pixel_need`.

    Example:
        >>> PixelNeed(shorter=314, longer=256, crop=256).reduction(2048, 1536)
        4
    """

    shorter: int = 1
    longer: int = 1
    crop: int = 1

    def reduction(self, width: int, height: int) -> int:
        """The largest of 1, 2, 4 and 8 by which a ``width×height`` photograph can be decoded
        smaller (each side divided, rounded up) keeping both sides this need asks for."""
        short, long = sorted((width, height))
        for factor in (8, 4, 2):
            if -(-short // factor) >= self.shorter and -(-long // factor) >= self.longer:
                return factor
        return 1


def _brightness(image: np.ndarray) -> np.ndarray:
    """Per-pixel brightness in whole levels 0–255 (uint8): the max over channels (≈ the red
    channel of a fundus).

    The max rather than the luminance, because a fundus periphery is red with almost no green
    or blue: its luminance can fall to the level of the black border while its red stays well
    above it. Float images in [0, 1] are scaled to 0–255, images with levels above 255 (16-bit)
    to a maximum of 255, and both rounded: the search is relative to the image's own levels.
    """
    image = np.asarray(image)
    if image.ndim == 3:  # channel by channel: numpy's max over a last axis of 3 is ~30x slower
        v = image[..., 0]
        for c in range(1, image.shape[2]):
            v = np.maximum(v, image[..., c])
    else:
        v = image
    if v.dtype == np.uint8:
        return v
    v = v.astype(np.float32)
    top = float(v.max()) if v.size else 0.0
    if top <= 1.0 or top > 255.0:
        v *= 255.0 / max(top, 1.0)
    return np.rint(np.clip(v, 0, 255)).astype(np.uint8)


def _level_percentiles(counts: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(values, q)`` (linear interpolation) of whole levels given as their counts
    (``counts[k]`` values at level ``k``), computed as numpy does: a histogram of 256 levels is
    read instead of the pixels being sorted.

    Example:
        >>> values = np.array([0, 3, 3, 7, 200])
        >>> _level_percentiles(np.bincount(values), [1, 50]).tolist(), np.percentile(values, [1, 50]).tolist()
        ([0.12, 3.0], [0.12, 3.0])
    """
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    position = (n - 1) * (np.asarray(q, np.float64) / 100)
    below = np.floor(position)
    a = np.searchsorted(cumulative, below, side="right").astype(np.float64)   # the order statistic #below
    b = np.searchsorted(cumulative, np.minimum(below + 1, n - 1), side="right").astype(np.float64)
    t = position - below
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)  # numpy's _lerp


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(image, size, interpolation=cv2.INTER_AREA)`` (``size`` is width, height), the
    same levels sooner: a uint8 image shrunk by a factor that is not a whole number is averaged in
    float32 by OpenCV either way, and its float32 path is ~30 % faster; the result is rounded as
    its uint8 path rounds. Whole factors (OpenCV's fast path, which rounds halves up) and
    enlargements go to OpenCV as they are.

    Example:
        >>> image = np.random.default_rng(0).integers(0, 256, (484, 484, 3), dtype=np.uint8)
        >>> bool((area_resize(image, (256, 256)) == cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)).all())
        True
    """
    width, height = size
    h, w = image.shape[:2]
    if image.dtype != np.uint8 or width > w or height > h or (w % width == 0 and h % height == 0):
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    shrunk = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return np.rint(shrunk, out=shrunk).astype(np.uint8)


def _inscribed(h: int, w: int) -> FieldOfView:
    return FieldOfView((w - 1) / 2, (h - 1) / 2, min(h, w) / 2)


def _fit_circle(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (Kåsa) circle through points: solve x²+y² + Dx + Ey + F = 0."""
    a = np.stack([x, y, np.ones_like(x)], axis=1)
    b = -(x**2 + y**2)
    (d, e, f), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = -d / 2, -e / 2
    return float(cx), float(cy), float(math.sqrt(max(cx**2 + cy**2 - f, 0.0)))


def _boundary_points(component: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge points of a blob that lie *inside* the image (not where the image cuts it off).

    For every row, the left- and rightmost pixels; for every column, the top- and bottommost
    ones — each moved half a pixel outwards onto the blob's edge. Points on the image border are
    dropped: there the blob is cut by the frame, not by the FOV circle. This is what makes the
    fit robust to a circle cut off at the top and bottom: the chords of the cut rows still end on
    the circle, only the flat cut edges are ignored.
    """
    h, w = component.shape
    xs, ys = [], []
    rows = np.flatnonzero(component.any(axis=1))
    if rows.size:
        sub = component[rows]
        left = sub.argmax(axis=1)
        right = w - 1 - sub[:, ::-1].argmax(axis=1)
        keep = left > 0
        xs.append(left[keep] - 0.5); ys.append(rows[keep].astype(float))
        keep = right < w - 1
        xs.append(right[keep] + 0.5); ys.append(rows[keep].astype(float))
    cols = np.flatnonzero(component.any(axis=0))
    if cols.size:
        sub = component[:, cols]
        top = sub.argmax(axis=0)
        bottom = h - 1 - sub[::-1].argmax(axis=0)
        keep = top > 0
        xs.append(cols[keep].astype(float)); ys.append(top[keep] - 0.5)
        keep = bottom < h - 1
        xs.append(cols[keep].astype(float)); ys.append(bottom[keep] + 0.5)
    if not xs:
        return np.empty(0), np.empty(0)
    return np.concatenate(xs).astype(float), np.concatenate(ys).astype(float)


def find_fov(image: np.ndarray, threshold: float | None = None) -> FieldOfView:
    """Find the circular field of view of a fundus photograph.

    The brightness (max over channels, 0–255) is smoothed against noise and thresholded; the
    largest connected bright region is the FOV, and a circle is least-squares fitted to its edge
    points that lie inside the image, twice, dropping outlying points (the notch or tab many
    cameras print on the FOV edge) before the second fit.

    Robust to: a circle cut off at the top and bottom (or sides), dark fundi (the threshold is
    relative to the background level and a high percentile), sensor/JPEG noise. When the image
    has no dark border (not a fundus photograph, or one cropped inside its FOV), or no circle
    fits the bright region, the FOV is the **inscribed circle of the image**.

    Args:
        image: ``H×W×3`` (or ``H×W``) uint8, or float in [0, 1].
        threshold: brightness (0–255) separating the FOV from the border; estimated when None.

    Returns:
        The :class:`FieldOfView` in the pixel coordinates of ``image``.

    Example:
        >>> from skimage import data
        >>> fov = find_fov(data.retina())
        >>> 690 < fov.radius < 702
        True
    """
    v = _brightness(image)
    h, w = v.shape
    scale = min(1.0, _WORK_SIZE / max(h, w))
    if scale < 1.0:
        v = area_resize(v, (max(1, round(w * scale)), max(1, round(h * scale))))
    # A median filter removes noise and JPEG specks but, unlike a Gaussian blur, does not move
    # a low threshold's crossing outwards on a blurred edge (that would bias the radius up).
    v = cv2.medianBlur(v, 5)
    levels = np.bincount(v.ravel(), minlength=256)  # percentiles and medians are read from it
    if threshold is None:
        # Relative to the darkest level (the border, when there is one) and a high percentile,
        # not an absolute value: a dark fundus may peak at 60 where a bright one peaks at 250, and
        # a noisy border sits above 0. 15% of the way up still lies below a vignetted periphery.
        low, high = _level_percentiles(levels, [1, 99.5])
        threshold = low + 0.15 * (high - low)
    else:
        threshold = float(threshold)
    bright = (v > threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    hs, ws = v.shape
    if n < 2:
        return _inscribed(h, w)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    component = labels == largest
    # A FOV needs a border that is dark next to it; otherwise (no border, or a bright image
    # split by the threshold) this is not a fundus FOV.
    inside = np.bincount(v[component], minlength=256)
    outside = levels - inside
    if (outside.sum() < 0.01 * v.size
            or _level_percentiles(outside, [50])[0] > 0.3 * _level_percentiles(inside, [50])[0]):
        return _inscribed(h, w)
    x, y = _boundary_points(component)
    if x.size < 20:
        return _inscribed(h, w)
    cx, cy, r = _fit_circle(x, y)
    residual = np.abs(np.hypot(x - cx, y - cy) - r)
    keep = residual <= max(1.5, 3.0 * float(np.median(residual)) * 1.4826)
    if keep.sum() >= 20:
        cx, cy, r = _fit_circle(x[keep], y[keep])
    fov = FieldOfView(cx, cy, r)
    # Sanity: the circle (clipped to the image) must describe the bright region.
    circle = fov.mask((hs, ws))
    iou = (circle & component).sum() / max(1, (circle | component).sum())
    if iou < 0.8 or r < 0.1 * min(hs, ws):
        return _inscribed(h, w)
    return fov.scaled(1.0 / scale) if scale < 1.0 else fov


def _crop_pad(array: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The ``side×side`` window at (x0, y0) of ``array``; zero (black/False) outside it."""
    h, w = array.shape[:2]
    out = np.zeros((side, side) + array.shape[2:], dtype=array.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def crop_to_fov(
    image: np.ndarray,
    masks: dict[str, np.ndarray] | None = None,
    fov: FieldOfView | None = None,
    margin: float = 0.02,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Crop (and black-pad where needed) to a square centred on the field of view.

    The side is ``2·radius·(1 + margin)``; a FOV cut off at the top and bottom gets black bands
    there, so every output has the whole circle centred. Masks get exactly the same window,
    padded with False.

    Args:
        image: ``H×W×C`` (or ``H×W``) array.
        masks: name -> ``H×W`` array aligned with ``image``.
        fov: the field of view; found with :func:`find_fov` when None.
        margin: relative border around the circle.

    Returns:
        ``(cropped image, cropped masks)``.

    Example:
        >>> image = np.zeros((50, 80, 3), np.uint8)
        >>> crop, masks = crop_to_fov(image, {"disc": np.zeros((50, 80), bool)},
        ...                           fov=FieldOfView(40, 25, 30), margin=0.0)
        >>> crop.shape, masks["disc"].shape
        ((60, 60, 3), (60, 60))
    """
    fov = find_fov(image) if fov is None else fov
    side = max(1, int(round(2 * fov.radius * (1 + margin))))
    return crop_around(image, masks, fov.cx, fov.cy, side)


def find_disc(image: np.ndarray, fov: FieldOfView | None = None) -> tuple[float, float]:
    """Locate the optic disc: the centre ``(x, y)``, in the pixel coordinates of ``image``.

    The disc is the brightest blob of its size in a fundus photograph. The mean over channels is
    resampled to a FOV diameter of 128 px, the border and the outer 8 % of the FOV (where glare
    and vignetting edges sit) are filled with the FOV's mean, and the maximum of a
    difference of Gaussians tuned to a disc's size (its radius is ~4 % of the FOV diameter)
    is taken. The band-pass ignores slow illumination gradients (vignetting) and specks smaller
    than a disc (drusen, dust). Hand-written because none of the libraries xmed builds on ships
    a disc locator; on rendered phantom eyes (OD and OS) it lands inside the disc, with a median
    offset under 0.6 disc radius (``tests/test_preprocess.py``, 24 eyes). Bright lesions of disc size (large exudates, flash
    reflexes) can mislead it: check crops of a new data set.

    Args:
        image: ``H×W×3`` (or ``H×W``) uint8, or float in [0, 1].
        fov: its field of view; found with :func:`find_fov` when None.

    Example:
        >>> image = np.zeros((200, 200, 3), np.uint8)
        >>> yy, xx = np.mgrid[:200, :200]
        >>> image[(xx - 100) ** 2 + (yy - 100) ** 2 <= 90 ** 2] = (150, 60, 30)
        >>> image[(xx - 140) ** 2 + (yy - 90) ** 2 <= 8 ** 2] = (250, 220, 160)
        >>> x, y = find_disc(image)
        >>> bool(abs(x - 140) <= 1.5 and abs(y - 90) <= 1.5)
        True
    """
    fov = find_fov(image) if fov is None else fov
    v = _channel_mean(image)
    scale = _DISC_WORK_DIAMETER / max(2 * fov.radius, 1.0)
    small = cv2.resize(v, (max(1, round(v.shape[1] * scale)), max(1, round(v.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    inner = FieldOfView(*[(c + 0.5) * scale - 0.5 for c in (fov.cx, fov.cy)], 0.92 * fov.radius * scale)
    inside = inner.mask(small.shape)
    if not inside.any():
        return fov.cx, fov.cy
    small = np.where(inside, small, small[inside].mean())
    disc_radius = 0.04 * _DISC_WORK_DIAMETER
    response = (cv2.GaussianBlur(small, (0, 0), 0.7 * disc_radius)
                - cv2.GaussianBlur(small, (0, 0), 3.0 * disc_radius))
    response[~inside] = -np.inf
    y, x = np.unravel_index(int(np.argmax(response)), response.shape)
    return float((x + 0.5) / scale - 0.5), float((y + 0.5) / scale - 0.5)


def _channel_mean(image: np.ndarray) -> np.ndarray:
    """The mean over channels in float32, as ``image.astype(np.float32).mean(axis=2)`` gives it
    (the same sums in the same order), channel by channel: ~4x faster (see :func:`_brightness`)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32)
    total = image[..., 0].astype(np.float32)
    for c in range(1, image.shape[2]):
        np.add(total, image[..., c], out=total, dtype=np.float32)
    total /= np.float32(image.shape[2])
    return total


def window_origin(cx: float, cy: float, side: int) -> tuple[int, int]:
    """Top-left pixel of the ``side×side`` window centred on ``(cx, cy)``.

    Example:
        >>> window_origin(5.0, 5.0, 4), window_origin(5.5, 5.5, 4)
        ((4, 4), (4, 4))
    """
    # pixel centres at integers: the centre of a side-S window is (S - 1) / 2 from its origin;
    # floor(v + 0.5) rounds halves the same way everywhere (round() goes to the even integer)
    return math.floor(cx - (side - 1) / 2 + 0.5), math.floor(cy - (side - 1) / 2 + 0.5)


def crop_around(image: np.ndarray, masks: dict[str, np.ndarray] | None, cx: float, cy: float,
                side: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ``side×side`` square centred on ``(cx, cy)`` of an image and its masks, black/False
    where it leaves the image.

    Example:
        >>> crop, masks = crop_around(np.ones((10, 10), np.uint8), {"disc": np.ones((10, 10), bool)}, 0, 0, 4)
        >>> int(crop.sum()), int(masks["disc"].sum())   # a 3×3 corner of the image, the rest black
        (9, 9)
    """
    x0, y0 = window_origin(cx, cy, side)
    cropped = {name: _crop_pad(np.asarray(m), x0, y0, side) for name, m in (masks or {}).items()}
    return _crop_pad(image, x0, y0, side), cropped


def _fov_radius(fov_mask: np.ndarray) -> float:
    """Radius from a (possibly top/bottom cut) FOV mask: half its widest row."""
    widths = fov_mask.sum(axis=1)
    return max(1.0, float(widths.max()) / 2) if widths.size else 1.0


def contrast_normalise(
    image: np.ndarray,
    method: Contrast,
    fov_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise local contrast inside the field of view; outside it the image is black.

    - ``"clahe"``: contrast-limited adaptive histogram equalisation of the L channel of LAB
      (clip limit 2, 8×8 tiles), so hue is kept.
    - ``"graham"``: Ben Graham's "subtract local average colour" (Kaggle diabetic retinopathy
      2015): ``4·img − 4·GaussianBlur(img, σ = radius/30) + 128``.

    Args:
        image: ``H×W×3`` uint8 RGB.
        method: ``"clahe"`` or ``"graham"``.
        fov_mask: boolean ``H×W`` FOV; found with :func:`find_fov` when None.

    Returns:
        ``H×W×3`` uint8.

    Example:
        >>> from skimage import data
        >>> out = contrast_normalise(data.retina(), "clahe")
        >>> out.shape, out.dtype.name, int(out[0, 0].max())
        ((1411, 1411, 3), 'uint8', 0)
    """
    if method not in CONTRAST_METHODS:
        raise ValueError(f"contrast method must be one of {CONTRAST_METHODS}, got {method!r}")
    image = np.asarray(image)
    if fov_mask is None:
        fov_mask = find_fov(image).mask(image.shape)
    fov_mask = np.asarray(fov_mask, dtype=bool)
    if method == "clahe":
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
        out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    else:
        sigma = _fov_radius(fov_mask) / 30
        img = image.astype(np.float32)
        weight = fov_mask.astype(np.float32)
        # The local average over FOV pixels only (blur(img·m) / blur(m)): a plain blur would
        # mix in the black border and paint a bright ring along the FOV edge.
        num = cv2.GaussianBlur(img * weight[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(weight, (0, 0), sigma)[..., None]
        local = num / np.maximum(den, 1e-6)
        out = np.clip(4 * img - 4 * local + 128, 0, 255).astype(np.uint8)
    out[~fov_mask] = 0
    return out


@dataclass
class FundusPreprocess:
    """The deterministic preprocessing of a fundus sample — a model's data config.

    Steps, in order: crop to a square around the field of view (``crop_fov``, with ``margin``),
    crop to a square around the optic disc (``crop_disc``: its side as a share of the FOV
    diameter, e.g. 0.5 — the disc-centred view of many glaucoma data sets; the disc is found in
    the image by :func:`find_disc`, never read from a mask, so a photograph without annotations
    is cropped the same way), resize to ``size × size`` (image with INTER_AREA, masks nearest; without ``crop_fov`` the
    longer side becomes ``size``, keeping the aspect ratio), contrast normalisation
    (``contrast``: None, ``"clahe"`` or ``"graham"``). Called on a numpy sample dict (see
    :mod:`xmed.data.datasets.base`); returns a new dict, the input is not modified.

    Example:
        >>> pre = FundusPreprocess(size=256, contrast="clahe")
        >>> FundusPreprocess.from_dict(pre.to_dict()) == pre
        True
        >>> FundusPreprocess.from_dict({"sise": 256})
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'sise': unknown preprocessing key; known: size, crop_fov, margin, contrast, crop_disc
    """

    size: int | None = None
    crop_fov: bool = True
    margin: float = 0.02
    contrast: Contrast | None = None
    crop_disc: float | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (isinstance(self.size, bool) or int(self.size) != self.size
                                      or self.size < 1):
            raise ConfigError("size", f"must be a positive integer or None, got {self.size!r}")
        if not isinstance(self.crop_fov, bool):
            raise ConfigError("crop_fov", f"must be true or false, got {self.crop_fov!r}")
        if not isinstance(self.margin, (int, float)) or not 0 <= self.margin < 1:
            raise ConfigError("margin", f"must be a number in [0, 1), got {self.margin!r}")
        if self.crop_disc is not None and (isinstance(self.crop_disc, bool)
                                           or not isinstance(self.crop_disc, (int, float))
                                           or not 0 < self.crop_disc <= 1):
            raise ConfigError("crop_disc", f"must be null or a share of the FOV diameter in (0, 1], "
                                           f"got {self.crop_disc!r}")
        if self.contrast is not None and self.contrast not in CONTRAST_METHODS:
            raise ConfigError("contrast", f"must be null or one of {CONTRAST_METHODS}, "
                                          f"got {self.contrast!r}")

    def pixel_need(self, input_size: int) -> PixelNeed:
        """What a photograph must keep, decoded smaller than stored, for this preprocessing to
        give an ``input_size`` square as from the whole photograph, to within resampling.

        The crop keeps at least the input's side (and ``size``'s), so it is never enlarged
        where the whole photograph would not be; the field-of-view search keeps its 256 px
        working copy and the disc search a field of view 128 px across. The crop's side is
        ``2·radius·(1 + margin)``, or ``2·radius·crop_disc``: the reduction is chosen assuming
        the field of view spans 80 % of the shorter side, and :attr:`PixelNeed.crop` checked once
        it is found. Without a crop, the longer side must keep the input's side.

        Example:
            >>> FundusPreprocess(crop_fov=True).pixel_need(256)
            PixelNeed(shorter=314, longer=256, crop=256)
            >>> FundusPreprocess(crop_fov=False, crop_disc=0.5).pixel_need(128)
            PixelNeed(shorter=320, longer=256, crop=128)
        """
        side = max(input_size, self.size or 0)
        searched = self.crop_fov or self.crop_disc or self.contrast is not None
        longer = max(side, _WORK_SIZE) if searched else side
        if self.crop_disc:
            crop = max(side, math.ceil(_DISC_WORK_DIAMETER * self.crop_disc))
            return PixelNeed(math.ceil(crop / (self.crop_disc * _FOV_SHARE)), longer, crop)
        if self.crop_fov:
            return PixelNeed(math.ceil(side / ((1 + self.margin) * _FOV_SHARE)), longer, side)
        return PixelNeed(1, longer, side)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able config; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> FundusPreprocess:
        """Build from a config dict; an unknown key raises :class:`ConfigError` naming it."""
        known = [f.name for f in fields(cls)]
        for key in config:
            if key not in known:
                raise ConfigError(key, f"unknown preprocessing key; known: {', '.join(known)}")
        return cls(**config)

    def __call__(self, sample: dict) -> dict:
        image = np.asarray(sample["image"])
        masks = dict(sample.get("masks") or {})
        fov = find_fov(image) if (self.crop_fov or self.contrast or self.crop_disc) else None
        if self.crop_fov:
            image, masks = crop_to_fov(image, masks, fov=fov, margin=self.margin)
            side = image.shape[0]
            fov = FieldOfView((side - 1) / 2, (side - 1) / 2, fov.radius)
        if self.crop_disc:
            cx, cy = find_disc(image, fov)
            side = max(1, int(round(2 * fov.radius * self.crop_disc)))
            image, masks = crop_around(image, masks, cx, cy, side)
            x0, y0 = window_origin(cx, cy, side)
            fov = FieldOfView(fov.cx - x0, fov.cy - y0, fov.radius)
        if self.size is not None:
            h, w = image.shape[:2]
            factor = self.size / max(h, w)
            new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
            if (new_h, new_w) != (h, w):
                image = area_resize(image, (new_w, new_h))
                masks = {k: cv2.resize(np.asarray(m, np.uint8), (new_w, new_h),
                                       interpolation=cv2.INTER_NEAREST) > 0 for k, m in masks.items()}
                fov = fov.scaled(factor) if fov is not None else None
        if self.contrast is not None:
            image = contrast_normalise(image, self.contrast, fov.mask(image.shape))
        return {**sample, "image": image, "masks": masks}
