"""Photographs prepared for a model as batched tensor operations on the device it runs on
(``data.pipeline: gpu``).

The CPU pipeline prepares one photograph at a time in the loader workers
(:class:`~xmed.data.transforms.FundusTransform`: decode, field-of-view crop, disc crop, fit into the
input square, augment, normalise). Here the same steps run on a whole batch of ``3×H×W`` uint8
tensors at once, where the batch then is: :func:`decode_jpegs` (nvJPEG on CUDA, libjpeg on the CPU;
PNG, TIFF and DICOM files are decoded by the workers as before), :func:`find_fov_batch`,
:func:`find_disc_batch`, :func:`prepare_batch` (the crops and the fit: one matrix product per axis)
and :class:`DeviceAugment` (the training augmentations), then
:func:`~xmed.data.normalise.normalise_images`.

Every step is the CPU step's arithmetic, batched, and gives its result within what
``tests/test_device_pipeline.py`` checks on CPU tensors: the field of view's centre and radius to
within 1e-6 px, the crop windows exactly, the prepared uint8 pixels exactly but for a level where
OpenCV rounds a fixed-point sum (enlargements) or sums in another order. The augmentations
draw their parameters from albumentations' distributions, per eye, from the eye's seed
(:meth:`DeviceAugment.draw`), and apply them as albumentations does within a level or two.

What is written here by hand, and why:

- resizing (:func:`resampling_weights`): OpenCV's INTER_AREA, on which the CPU pipeline's crops,
  its fit and its searches rest, averages over fractional pixel areas; torch's ``area`` mode and
  torchvision's antialiased resize weigh differently, so their levels differ from the CPU
  pipeline's. The same weights as a matrix make one batched product per axis, crop and black
  padding included;
- the median filter, the connected components and the circle fit of the field-of-view search:
  neither torch nor torchvision has them;
- per-eye augmentation parameters in one batch: torchvision's v2 transforms draw one set of
  parameters per call and apply it to the whole batch; xmed draws a set per eye, so the affine
  warp is one ``affine_grid``/``grid_sample`` call over per-eye matrices and the photometric steps
  per-eye tensor arithmetic (flips go through ``torchvision.transforms.v2.functional``); OpenCV's
  8-bit HSV conversion (hue in 2° steps) has no torch counterpart either.

Example:
    >>> import numpy as np
    >>> from xmed.data.preprocess import FundusPreprocess, find_fov
    >>> image = np.zeros((100, 140, 3), np.uint8)
    >>> yy, xx = np.mgrid[:100, :140]
    >>> image[(xx - 70) ** 2 + (yy - 50) ** 2 <= 40 ** 2] = (200, 90, 40)
    >>> batch = torch.from_numpy(image).permute(2, 0, 1)[None]
    >>> fov = find_fov(image)
    >>> [round(v, 6) for v in find_fov_batch(batch)[0].tolist()] == [round(v, 6) for v in (fov.cx, fov.cy, fov.radius)]
    True
    >>> tuple(prepare_batch([batch[0]], FundusPreprocess(crop_fov=True), 64).shape)
    (1, 3, 64, 64)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmed.data.datasets.base import FundusDataset, SkippedSample
from xmed.data.datasets.phantom import PhantomDataset
from xmed.data.io import DEFAULT_MAX_PIXELS
from xmed.data.keywords import renamed_keywords
from xmed.data.normalise import normalise_images
from xmed.data.preprocess import _DISC_WORK_DIAMETER, _WORK_SIZE, FundusPreprocess
from xmed.data.sampling import SeededIndex
from xmed.data.transforms import mirror_eye
from xmed.findings import vertical_flip_permutation

# area weights below this share of a pixel are dropped, as OpenCV's computeResizeAreaTab drops them
_AREA_EPS = 1e-3
_DISC_RADIUS = 0.04 * _DISC_WORK_DIAMETER   # as find_disc: a disc's radius at the disc search's scale


# ------------------------------------------------------------------------------------- resizing
@contextlib.contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """Matrix products in full float32 inside the block (never TF32): a resize's levels are rounded
    to whole numbers, and TF32's 10-bit mantissa would move a tenth of them by one."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def resampling_weights(origin: Tensor, side: Tensor, new: Tensor, n_out: int, n_src: int, pad: Tensor | None = None,
                       low: Tensor | None = None, high: Tensor | None = None) -> Tensor:
    """B×``n_out``×``n_src`` float32 weights that resize, along one axis, the window
    ``[origin, origin + side)`` of a source ``n_src`` pixels long to ``new`` pixels, placed at
    ``pad`` in an output ``n_out`` long (zero elsewhere: black letterbox bands), as OpenCV's
    INTER_AREA does: fractional pixel areas when shrinking (``computeResizeAreaTab``), its linear
    weights in area mode when enlarging. Source pixels outside ``[low, high)`` (the image, or the
    window of an earlier crop) count as black: a crop's padding.

    Example:
        >>> w = resampling_weights(torch.tensor([0]), torch.tensor([5]), torch.tensor([2]), 2, 5)
        >>> [[round(v, 3) for v in row] for row in w[0].tolist()]
        [[0.4, 0.4, 0.2, 0.0, 0.0], [0.0, 0.0, 0.2, 0.4, 0.4]]
    """
    device = origin.device
    b = origin.shape[0]
    origin, side, new = (t.to(torch.float64) for t in (origin, side, new))
    pad = torch.zeros(b, dtype=torch.float64, device=device) if pad is None else pad.to(torch.float64)
    low = torch.zeros(b, dtype=torch.float64, device=device) if low is None else low.to(torch.float64)
    high = (torch.full((b,), float(n_src), dtype=torch.float64, device=device) if high is None
            else high.to(torch.float64))
    d = torch.arange(n_out, dtype=torch.float64, device=device)[None] - pad[:, None]   # B×n_out: output pixel
    inv = new / side                                   # OpenCV's inv_scale, and scale = 1 / inv_scale
    scale = (1.0 / inv)[:, None]
    enlarge = (new > side)[:, None]
    # shrinking: each output pixel averages the source cells it covers (at most ceil(scale) + 1)
    taps = int(math.ceil(float((side / new).max()))) + 2 if b else 2
    f1 = d * scale
    f2 = f1 + scale
    cell = torch.minimum(scale.expand_as(f1), side[:, None] - f1)
    s2 = torch.minimum(torch.floor(f2), side[:, None] - 1)
    s1 = torch.minimum(torch.ceil(f1), s2)
    k = torch.arange(taps, dtype=torch.float64, device=device)
    j = (s1 - 1)[..., None] + k                        # B×n_out×taps: window positions
    inside = (j >= s1[..., None]) & (j < s2[..., None])
    first = (j == (s1 - 1)[..., None]) & ((s1 - f1) > _AREA_EPS)[..., None]
    last = (j == s2[..., None]) & ((f2 - s2) > _AREA_EPS)[..., None]
    area = (torch.where(inside, 1.0 / cell[..., None], 0.0)
            + torch.where(first, ((s1 - f1) / cell)[..., None], 0.0)
            + torch.where(last, (torch.clamp(torch.clamp(f2 - s2, max=1.0), max=cell) / cell)[..., None], 0.0))
    # enlarging: two taps, OpenCV's area-mode linear coefficients (resize's INTER_AREA branch for scale < 1)
    sx = torch.floor(d * scale)
    fx = ((d + 1) - (sx + 1) * inv[:, None]).to(torch.float32).to(torch.float64)   # a float in OpenCV too
    fx = torch.where(fx <= 0, 0.0, fx - torch.floor(fx))
    edge = sx >= side[:, None] - 1
    fx, sx = torch.where(edge, 0.0, fx), torch.where(edge, side[:, None] - 1, sx)
    linear_j = torch.stack([sx, sx + 1], dim=-1)
    linear_w = torch.stack([1 - fx, fx], dim=-1)
    linear_j = F.pad(linear_j, (0, taps - 2), value=-1.0)
    linear_w = F.pad(linear_w, (0, taps - 2), value=0.0)
    j = torch.where(enlarge[..., None], linear_j, j)
    w = torch.where(enlarge[..., None], linear_w, area)
    # OpenCV keeps each weight as a float: round here, sum in float32 later
    w = w.to(torch.float32).to(torch.float64)
    valid = (d >= 0)[..., None] & (d < new[:, None])[..., None] & (j >= 0) & (j < side[:, None, None]) & (w != 0)
    s = j + origin[:, None, None]                      # source pixel
    valid &= (s >= low[:, None, None]) & (s < high[:, None, None]) & (s >= 0) & (s < n_src)
    weights = torch.zeros(b, n_out, n_src + 1, dtype=torch.float32, device=device)
    index = torch.where(valid, s, float(n_src)).long().view(b, n_out, taps)
    weights.scatter_add_(2, index, torch.where(valid, w, 0.0).to(torch.float32))
    return weights[..., :n_src]


def resample(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``rows @ images @ colsᵀ`` per image: B×C×H×W (any float) by B×H'×H and B×W'×W weights
    (:func:`resampling_weights`) -> B×C×H'×W' float32, the horizontal pass first, as OpenCV sums."""
    with full_fp32_matmul():
        across = torch.matmul(images.float(), cols.transpose(1, 2)[:, None])
        return torch.matmul(rows[:, None], across)


def round_levels(values: Tensor, half_up: Tensor) -> Tensor:
    """Float levels rounded to uint8 as OpenCV rounds the resize behind them: halves up where
    ``half_up`` (B; its 2×2 fast path and fixed-point linear sums), to even elsewhere (``cvRound``,
    ``np.rint``)."""
    up = torch.floor(values + 0.5)
    even = torch.round(values)
    shape = (-1,) + (1,) * (values.ndim - 1)
    return torch.where(half_up.view(shape), up, even).clamp_(0, 255).to(torch.uint8)


def _area_half_up(side_x: Tensor, side_y: Tensor, new_x: Tensor, new_y: Tensor) -> Tensor:
    """Where :func:`~xmed.data.preprocess.area_resize` rounds halves up: OpenCV's 2×2 averaging
    and its enlargements (fixed point); elsewhere it rounds to even."""
    two = (side_x == 2 * new_x) & (side_y == 2 * new_y)
    return two | (new_x > side_x) | (new_y > side_y)


# ------------------------------------------------------------------------ the field of view
def _median5(levels: Tensor) -> Tensor:
    """OpenCV's ``medianBlur(·, 5)`` of B×H×W uint8 levels (the border replicated)."""
    h, w = levels.shape[-2:]
    padded = F.pad(levels[:, None].float(), (2, 2, 2, 2), mode="replicate")[:, 0].to(torch.uint8)
    shifted = torch.stack([padded[:, dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5)], dim=1)
    return shifted.median(dim=1).values


def _histograms(levels: Tensor, where: Tensor | None = None) -> Tensor:
    """B×256 counts of the uint8 levels of each image (only where ``where``)."""
    b = levels.shape[0]
    flat = levels.reshape(b, -1).long()
    ones = torch.ones_like(flat) if where is None else where.reshape(b, -1).long()
    return torch.zeros(b, 256, dtype=torch.long, device=levels.device).scatter_add_(1, flat, ones)


def level_percentiles(counts: Tensor, q: Sequence[float]) -> Tensor:
    """B×len(q) percentiles of whole levels given as B×256 counts, as
    :func:`~xmed.data.preprocess._level_percentiles` (numpy's linear interpolation) reads them.

    Example:
        >>> level_percentiles(torch.bincount(torch.tensor([0, 3, 3, 7, 200]), minlength=256)[None], [1, 50]).tolist()
        [[0.12, 3.0]]
    """
    cumulative = torch.cumsum(counts, dim=1).to(torch.float64)
    n = cumulative[:, -1:]
    position = (n - 1) * (torch.tensor(q, dtype=torch.float64, device=counts.device) / 100)
    below = torch.floor(position)
    a = torch.searchsorted(cumulative, below, right=True).to(torch.float64)
    b = torch.searchsorted(cumulative, torch.minimum(below + 1, n - 1), right=True).to(torch.float64)
    t = position - below
    return torch.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


def largest_component(mask: Tensor) -> tuple[Tensor, Tensor]:
    """The largest 8-connected component of each B×H×W bool mask (ties: the one whose first pixel
    comes first in raster order, as OpenCV numbers them) and whether the mask had any pixel.

    Every pixel takes the smallest pixel index of its component: the minimum over its 3×3
    neighbourhood, alternated with a jump to its label's own label (pointer jumping), until
    nothing changes.

    Example:
        >>> m = torch.zeros(1, 4, 6, dtype=torch.bool); m[0, :2, :2] = True; m[0, 1:, 3:] = True
        >>> component, found = largest_component(m)
        >>> int(component.sum()), bool(found)
        (9, True)
    """
    b, h, w = mask.shape
    n = h * w
    index = torch.arange(n, dtype=torch.float32, device=mask.device).view(1, h, w).expand(b, h, w)
    big = float(n)
    labels = torch.where(mask, index, big)
    for step in range(n + 1):
        before = labels
        smallest = -F.max_pool2d(-labels[:, None], 3, stride=1, padding=1)[:, 0]
        labels = torch.where(mask, smallest, big)
        flat = labels.reshape(b, n)
        jumped = flat.gather(1, flat.clamp(max=n - 1).long()).view(b, h, w)
        labels = torch.where(mask, torch.minimum(labels, jumped), big)
        if step % 4 == 3 and torch.equal(labels, before):
            break
    areas = torch.zeros(b, n + 1, dtype=torch.long, device=mask.device)
    areas.scatter_add_(1, labels.reshape(b, n).long(), torch.ones(b, n, dtype=torch.long, device=mask.device))
    largest = areas[:, :n].argmax(dim=1)
    return labels == largest.view(b, 1, 1).float(), mask.flatten(1).any(dim=1)


def _boundary_points(component: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x, y (B×N float64) and validity (B×N bool) of the edge points of each blob that lie inside
    the image, as :func:`~xmed.data.preprocess._boundary_points` finds them: per row the left- and
    rightmost pixels, per column the top- and bottommost, half a pixel outwards."""
    b, h, w = component.shape
    as_int = component.to(torch.uint8)
    rows = torch.arange(h, dtype=torch.float64, device=component.device).expand(b, h)
    cols = torch.arange(w, dtype=torch.float64, device=component.device).expand(b, w)
    any_row, any_col = component.any(dim=2), component.any(dim=1)
    left = as_int.argmax(dim=2).double()
    right = (w - 1) - as_int.flip(2).argmax(dim=2).double()
    top = as_int.argmax(dim=1).double()
    bottom = (h - 1) - as_int.flip(1).argmax(dim=1).double()
    x = torch.cat([left - 0.5, right + 0.5, cols, cols], dim=1)
    y = torch.cat([rows, rows, top - 0.5, bottom + 0.5], dim=1)
    valid = torch.cat([any_row & (left > 0), any_row & (right < w - 1),
                       any_col & (top > 0), any_col & (bottom < h - 1)], dim=1)
    return x, y, valid


def _fit_circles(x: Tensor, y: Tensor, use: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares (Kåsa) circles through the points ``use`` marks (B×N), as
    :func:`~xmed.data.preprocess._fit_circle` fits one: the normal equations in float64."""
    a = torch.stack([x, y, torch.ones_like(x)], dim=2) * use[..., None]
    rhs = -(x ** 2 + y ** 2) * use
    normal = a.transpose(1, 2) @ a
    normal = normal + torch.diag_embed((use.sum(dim=1) < 3).double()[:, None].expand(-1, 3))  # no fit: solvable
    d, e, f = torch.linalg.solve(normal, (a.transpose(1, 2) @ rhs[..., None])[..., 0]).unbind(1)
    cx, cy = -d / 2, -e / 2
    return cx, cy, torch.sqrt(torch.clamp(cx ** 2 + cy ** 2 - f, min=0.0))


def _masked_median(values: Tensor, use: Tensor) -> Tensor:
    """numpy's median (the mean of the two middle values of an even count) of each row's ``use`` values."""
    ordered = torch.where(use, values, torch.inf).sort(dim=1).values
    n = use.sum(dim=1, keepdim=True).clamp(min=1)
    low, high = ordered.gather(1, (n - 1) // 2), ordered.gather(1, n // 2)
    return ((low + high) / 2)[:, 0]


def find_fov_batch(images: Tensor) -> Tensor:
    """The circular field of view of each photograph of a B×C×H×W uint8 batch (one shape), as
    :func:`~xmed.data.preprocess.find_fov` finds it: B×3 float64 ``(cx, cy, radius)``, the
    inscribed circle where no dark-bordered disc is found.

    Example:
        >>> batch = torch.zeros(2, 3, 60, 80, dtype=torch.uint8)
        >>> yy, xx = torch.meshgrid(torch.arange(60), torch.arange(80), indexing="ij")
        >>> batch[0, 0][(xx - 40) ** 2 + (yy - 30) ** 2 <= 25 ** 2] = 200
        >>> [[round(v, 1) for v in row] for row in find_fov_batch(batch).tolist()]   # the second has no disc
        [[40.0, 30.0, 25.0], [39.5, 29.5, 30.0]]
    """
    b, _, h, w = images.shape
    device = images.device
    levels = images.amax(dim=1)
    scale = min(1.0, _WORK_SIZE / max(h, w))
    if scale < 1.0:
        ws, hs = max(1, round(w * scale)), max(1, round(h * scale))
        levels = _resize_whole(levels[:, None], hs, ws)[:, 0]
    levels = _median5(levels)
    hs, ws = levels.shape[-2:]
    counts = _histograms(levels)
    low, high = level_percentiles(counts, [1, 99.5]).unbind(1)
    threshold = low + 0.15 * (high - low)
    component, found = largest_component(levels.double() > threshold.view(b, 1, 1))
    inside = _histograms(levels, component)
    outside = counts - inside
    no_border = outside.sum(dim=1) < 0.01 * (hs * ws)
    medians = level_percentiles(torch.cat([outside, inside]), [50])[:, 0]
    bright_border = medians[:b] > 0.3 * medians[b:]
    x, y, valid = _boundary_points(component)
    cx, cy, r = _fit_circles(x, y, valid)
    residual = torch.abs(torch.hypot(x - cx[:, None], y - cy[:, None]) - r[:, None])
    limit = torch.clamp(3.0 * _masked_median(residual, valid) * 1.4826, min=1.5)
    keep = valid & (residual <= limit[:, None])
    refit = keep.sum(dim=1) >= 20
    cx2, cy2, r2 = _fit_circles(x, y, keep)
    cx, cy, r = (torch.where(refit, second, first) for first, second in ((cx, cx2), (cy, cy2), (r, r2)))
    yy = torch.arange(hs, dtype=torch.float64, device=device).view(1, hs, 1)
    xx = torch.arange(ws, dtype=torch.float64, device=device).view(1, 1, ws)
    circle = (xx - cx.view(b, 1, 1)) ** 2 + (yy - cy.view(b, 1, 1)) ** 2 <= r.view(b, 1, 1) ** 2
    iou = (circle & component).flatten(1).sum(1) / (circle | component).flatten(1).sum(1).clamp(min=1)
    inscribed = (~found | no_border | bright_border | (valid.sum(dim=1) < 20)
                 | (iou < 0.8) | (r < 0.1 * min(hs, ws)))
    if scale < 1.0:
        factor = 1.0 / scale
        cx, cy, r = (cx + 0.5) * factor - 0.5, (cy + 0.5) * factor - 0.5, r * factor
    fallback = torch.tensor([(w - 1) / 2, (h - 1) / 2, min(h, w) / 2], dtype=torch.float64, device=device)
    return torch.where(inscribed[:, None], fallback, torch.stack([cx, cy, r], dim=1))


def _resize_whole(images: Tensor, hs: int, ws: int) -> Tensor:
    """B×C×H×W uint8 images resized whole to ``hs``×``ws`` as :func:`~xmed.data.preprocess.area_resize` does."""
    b, _, h, w = images.shape
    device = images.device

    def full(value: float) -> Tensor:
        return torch.full((b,), float(value), dtype=torch.float64, device=device)

    zero = full(0)
    rows = resampling_weights(zero, full(h), full(hs), hs, h)
    cols = resampling_weights(zero, full(w), full(ws), ws, w)
    return round_levels(resample(images, rows, cols), _area_half_up(full(w), full(h), full(ws), full(hs)))


# -------------------------------------------------------------------------------- the disc
@dataclass
class Windows:
    """Square-or-not windows of a batch in the photographs' pixel coordinates (B each, float64):
    ``x0, y0`` the top-left pixel, ``width, height`` the sides, and the region that holds pixels
    (``x_low`` … ``y_high``: the photograph, or an earlier crop's window; black elsewhere)."""

    x0: Tensor
    y0: Tensor
    width: Tensor
    height: Tensor
    x_low: Tensor
    x_high: Tensor
    y_low: Tensor
    y_high: Tensor

    @classmethod
    def whole(cls, b: int, h: int, w: int, device: torch.device) -> "Windows":
        zero = torch.zeros(b, dtype=torch.float64, device=device)
        return cls(zero, zero, zero + w, zero + h, zero, zero + w, zero, zero + h)

    def crop(self, cx: Tensor, cy: Tensor, side: Tensor) -> "Windows":
        """The ``side``-square centred on ``(cx, cy)`` (in this window's coordinates), as
        :func:`~xmed.data.preprocess.crop_around` places it; pixels outside this window are black."""
        x0 = torch.floor(cx - (side - 1) / 2 + 0.5) + self.x0
        y0 = torch.floor(cy - (side - 1) / 2 + 0.5) + self.y0
        return Windows(x0, y0, side, side, torch.maximum(self.x_low, self.x0),
                       torch.minimum(self.x_high, self.x0 + self.width), torch.maximum(self.y_low, self.y0),
                       torch.minimum(self.y_high, self.y0 + self.height))

    def weights(self, new_h: Tensor, new_w: Tensor, out_h: int, out_w: int, h: int, w: int,
                pad_top: Tensor | None = None, pad_left: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Row and column weights (:func:`resampling_weights`) resizing each window to
        ``new_h``×``new_w`` at ``(pad_top, pad_left)`` of an ``out_h``×``out_w`` output."""
        rows = resampling_weights(self.y0, self.height, new_h, out_h, h, pad_top, self.y_low, self.y_high)
        cols = resampling_weights(self.x0, self.width, new_w, out_w, w, pad_left, self.x_low, self.x_high)
        return rows, cols

    def select(self, index: Tensor) -> "Windows":
        return Windows(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def _reflect101(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a line of ``n`` pixels padded by ``pad`` on each side, reflected as OpenCV's
    BORDER_REFLECT_101 reflects (again and again where ``pad`` exceeds ``n``)."""
    p = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(p)
    period = 2 * n - 2
    p = torch.remainder(p, period)
    return torch.where(p >= n, period - p, p)


def gaussian_kernel(sigma: float, size: int | None = None) -> Tensor:
    """OpenCV's ``getGaussianKernel`` for a float32 image: ``size`` from ``sigma`` as
    ``GaussianBlur`` chooses it (``round(8σ + 1) | 1``), computed in float64, kept as float32."""
    size = (int(np.rint(sigma * 4 * 2 + 1)) | 1) if size is None else size
    x = torch.arange(size, dtype=torch.float64) - (size - 1) * 0.5
    kernel = torch.exp(-0.5 / (sigma * sigma) * x * x)
    return (kernel / kernel.sum()).to(torch.float32)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """``cv2.GaussianBlur(·, (0, 0), sigma)`` of B×H×W float32 images (BORDER_REFLECT_101)."""
    kernel = gaussian_kernel(sigma).to(images.device)
    pad = kernel.numel() // 2
    h, w = images.shape[-2:]
    rows = images[:, :, _reflect101(w, pad, images.device)]
    rows = F.conv1d(rows.reshape(-1, 1, w + 2 * pad), kernel.view(1, 1, -1)).view(images.shape)
    cols = rows[:, _reflect101(h, pad, images.device)].transpose(1, 2)
    return F.conv1d(cols.reshape(-1, 1, h + 2 * pad), kernel.view(1, 1, -1)).view(images.shape[0], w, h).transpose(1, 2)


def find_disc_batch(images: Tensor, windows: Windows, fov: Tensor) -> tuple[Tensor, Tensor]:
    """The optic disc's centre ``(x, y)`` (B each, float64, in each window's coordinates) in the
    ``windows`` of a B×C×H×W uint8 batch whose fields of view there are ``fov`` (B×3), as
    :func:`~xmed.data.preprocess.find_disc` finds it in the cropped photograph."""
    b, _, h, w = images.shape
    device = images.device
    mean = images[:, 0].float()
    for c in range(1, images.shape[1]):  # summed channel by channel, as preprocess._channel_mean sums
        mean = mean + images[:, c]
    mean = mean / images.shape[1]
    cx, cy, radius = fov.unbind(1)
    scale = _DISC_WORK_DIAMETER / torch.clamp(2 * radius, min=1.0)
    small_w = torch.clamp(torch.round(windows.width * scale), min=1)
    small_h = torch.clamp(torch.round(windows.height * scale), min=1)
    out_x, out_y = cx.clone(), cy.clone()
    sizes = torch.stack([small_h, small_w], dim=1).long().tolist()
    for (hs, ws), index in _groups(sizes, device):
        part = windows.select(index)
        rows, cols = part.weights(small_h[index], small_w[index], hs, ws, h, w)
        small = resample(mean[index][:, None], rows, cols)[:, 0]
        s = scale[index]
        icx, icy = (cx[index] + 0.5) * s - 0.5, (cy[index] + 0.5) * s - 0.5
        ir = 0.92 * radius[index] * s
        yy = torch.arange(hs, dtype=torch.float64, device=device).view(1, hs, 1)
        xx = torch.arange(ws, dtype=torch.float64, device=device).view(1, 1, ws)
        inside = (xx - icx.view(-1, 1, 1)) ** 2 + (yy - icy.view(-1, 1, 1)) ** 2 <= ir.view(-1, 1, 1) ** 2
        count = inside.flatten(1).sum(1)
        fill = (torch.where(inside, small, 0.0).flatten(1).sum(1) / count.clamp(min=1)).view(-1, 1, 1)
        small = torch.where(inside, small, fill)
        response = gaussian_blur(small, 0.7 * _DISC_RADIUS) - gaussian_blur(small, 3.0 * _DISC_RADIUS)
        response = torch.where(inside, response, -torch.inf)
        peak = response.flatten(1).argmax(dim=1)
        y, x = (peak // ws).double(), (peak % ws).double()
        found = count > 0
        out_x[index] = torch.where(found, (x + 0.5) / s - 0.5, cx[index])
        out_y[index] = torch.where(found, (y + 0.5) / s - 0.5, cy[index])
    return out_x, out_y


def _groups(keys: list, device: torch.device) -> Iterator[tuple[tuple, Tensor]]:
    """``(key, indices)`` of the batch items that share each key (a shape), in first-seen order."""
    members: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(tuple(key), []).append(i)
    for key, index in members.items():
        yield key, torch.tensor(index, device=device)


# ----------------------------------------------------------------------------- preparing
def crop_windows(images: Tensor, preprocess: FundusPreprocess) -> Windows:
    """The window of each photograph of a B×C×H×W uint8 batch (one shape) that ``preprocess``
    keeps — the field-of-view square, the disc square in it, or the whole photograph — as
    :class:`~xmed.data.preprocess.FundusPreprocess` crops (its contrast step and ``size`` are not
    done here: :func:`unsupported` says so)."""
    b, _, h, w = images.shape
    windows = Windows.whole(b, h, w, images.device)
    if not (preprocess.crop_fov or preprocess.crop_disc):
        return windows
    fov = find_fov_batch(images)
    cx, cy, radius = fov.unbind(1)
    if preprocess.crop_fov:
        side = torch.clamp(torch.round(2 * radius * (1 + preprocess.margin)), min=1)
        windows = windows.crop(cx, cy, side)
        centre = (side - 1) / 2
        fov = torch.stack([centre, centre, radius], dim=1)
    if preprocess.crop_disc:
        x, y = find_disc_batch(images, windows, fov)
        side = torch.clamp(torch.round(2 * fov[:, 2] * preprocess.crop_disc), min=1)
        windows = windows.crop(x, y, side)
    return windows


def unsupported(preprocess: FundusPreprocess) -> str | None:
    """Why ``preprocess`` cannot run on the device (None when it can): contrast normalisation and a
    preprocessing ``size`` of its own are done by the CPU pipeline only."""
    if preprocess.contrast is not None:
        return f"contrast normalisation ({preprocess.contrast}) runs in the CPU pipeline only"
    if preprocess.size is not None:
        return "a preprocessing size of its own (data.preprocess.size) runs in the CPU pipeline only"
    return None


def fit_batch(images: Tensor, windows: Windows, input_size: int) -> Tensor:
    """The ``windows`` of a B×C×H×W uint8 batch fitted into ``input_size``×``input_size`` as the
    transforms' ``fit`` does (longer side resized with INTER_AREA, black bands centred where not
    square): B×C×input_size×input_size uint8."""
    h, w = images.shape[-2:]
    scale = input_size / torch.maximum(windows.width, windows.height)
    new_w = torch.clamp(torch.round(windows.width * scale), min=1)
    new_h = torch.clamp(torch.round(windows.height * scale), min=1)
    pad_top, pad_left = torch.floor((input_size - new_h) / 2.0), torch.floor((input_size - new_w) / 2.0)
    rows, cols = windows.weights(new_h, new_w, input_size, input_size, h, w, pad_top, pad_left)
    half_up = _area_half_up(windows.width, windows.height, new_w, new_h)
    return round_levels(resample(images, rows, cols), half_up)


def prepare_batch(images: Sequence[Tensor], preprocess: FundusPreprocess, input_size: int) -> Tensor:
    """Photographs (``3×H×W`` uint8 tensors of any sizes, on one device) prepared as
    :meth:`~xmed.data.transforms.FundusTransform.prepare` prepares each: B×3×input_size×input_size
    uint8.
    Photographs of one shape are searched and resized together.

    Example:
        >>> photos = [torch.zeros(3, 40, 60, dtype=torch.uint8), torch.full((3, 30, 30), 9, dtype=torch.uint8)]
        >>> out = prepare_batch(photos, FundusPreprocess(crop_fov=False), 20)
        >>> tuple(out.shape), int(out[0].sum()), int(out[1, 0, 0, 0])
        ((2, 3, 20, 20), 0, 9)
    """
    if not images:
        raise ValueError("prepare_batch needs at least one photograph")
    device = images[0].device
    out = torch.empty(len(images), images[0].shape[0], input_size, input_size, dtype=torch.uint8, device=device)
    for _, index in _groups([tuple(image.shape) for image in images], device):
        batch = torch.stack([images[i] for i in index.tolist()])
        out[index] = fit_batch(batch, crop_windows(batch, preprocess), input_size)
    return out


# ------------------------------------------------------------------------------- decoding
def decode_jpegs(data: Sequence[Tensor], device: torch.device | str) -> list[Tensor]:
    """JPEG files (their bytes as 1-D uint8 CPU tensors) decoded to ``3×H×W`` uint8 RGB on ``device``:
    in one batch by nvJPEG on CUDA, by libjpeg on the CPU (``torchvision.io.decode_jpeg``).

    torchvision marks its image decoders deprecated in favour of TorchCodec, which xmed does not
    depend on; the warning is silenced here.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities")
        return list(decode_jpeg(list(data), mode=ImageReadMode.RGB, device=torch.device(device)))


# --------------------------------------------------------------------------- augmentations
#: the columns of :meth:`DeviceAugment.draw`'s parameters, one row per eye
AUGMENT_PARAMS = ("hflip", "vflip", "affine", "scale", "angle", "brightness_contrast", "alpha", "beta",
                  "gamma_on", "gamma", "hsv", "hue_shift", "sat_shift", "blur", "kernel", "sigma",
                  "noise", "noise_std", "noise_seed")
_COLUMN = {name: i for i, name in enumerate(AUGMENT_PARAMS)}


class DeviceAugment:
    """The training augmentations of :func:`~xmed.data.transforms.build_transforms` on a batch of
    ``3×S×S`` uint8 eyes, each with its own parameters: flips, isotropic scale and small rotation
    (``Affine``, p 0.7), and with ``colour`` brightness/contrast (p 0.5), gamma (p 0.3),
    hue/saturation (p 0.3), Gaussian blur (p 0.2) and Gaussian noise (p 0.2) — albumentations'
    ranges and order. :meth:`draw` draws an eye's parameters from its seed (on the CPU, in a loader
    worker); calling the object applies them (anywhere); :meth:`fix_labels` then mirrors the eye
    (OD↔OS) and swaps superior and inferior findings where a flip fired, as
    :func:`~xmed.data.transforms.apply_anatomy_of_flips` does.

    Example:
        >>> augment = DeviceAugment(hflip=1.0, rotate=0.0, scale=0.0, colour=False)
        >>> params = torch.from_numpy(np.stack([augment.draw(0), augment.draw(1)]))
        >>> images = torch.arange(8, dtype=torch.uint8).view(1, 1, 2, 4).expand(2, 3, 2, 4)
        >>> augment(images, params)[0, 0, 0].tolist()
        [3, 2, 1, 0]
    """

    @renamed_keywords(color="colour")
    def __init__(self, hflip: float = 0.5, vflip: float = 0.0, rotate: float = 15.0, colour: bool = True,
                 scale: float = 0.1):
        self.hflip, self.vflip, self.rotate, self.colour, self.scale = hflip, vflip, rotate, colour, scale
        self.affine = 0.7 if (rotate > 0 or scale > 0) else 0.0

    def draw(self, seed: int | None) -> np.ndarray:
        """One eye's parameters (a row of :data:`AUGMENT_PARAMS`), from ``seed`` (None: fresh entropy);
        every value is drawn whether its step fires or not, so that a step's draws never depend on
        another's."""
        rng = np.random.default_rng(seed)
        u = rng.random(8)
        colour = self.colour
        return np.array([
            u[0] < self.hflip, u[1] < self.vflip,
            u[2] < self.affine, rng.uniform(1 - self.scale, 1 + self.scale), rng.uniform(-self.rotate, self.rotate),
            colour and u[3] < 0.5, 1.0 + rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2) * 255.0,
            colour and u[4] < 0.3, rng.uniform(80, 120) / 100.0,
            colour and u[5] < 0.3, rng.uniform(-5, 5), rng.uniform(-10, 10),
            colour and u[6] < 0.2, [3, 5, 5][rng.integers(0, 3)], rng.uniform(0.1, 1.0),  # randint(3, 5), even + 1
            colour and u[7] < 0.2, rng.uniform(0.01, 0.04) * 255.0, rng.integers(0, 2**31),
        ], dtype=np.float64)

    def __call__(self, images: Tensor, params: Tensor) -> Tensor:
        """B×3×S×S uint8 eyes augmented with their B×:data:`AUGMENT_PARAMS` parameters (uint8).

        Which eyes a step takes and what it takes them with are worked out on the CPU from the
        parameters and sent ahead: nothing here waits for the device, so the augmentations queue up
        behind the training step still running there."""
        from torchvision.transforms.v2 import functional as TF

        params = params.detach().to("cpu", torch.float64)

        def on_some(name: str, step) -> None:
            nonlocal images
            chosen = (params[:, _COLUMN[name]] > 0.5).nonzero().flatten()
            if chosen.numel():
                index = to_device(chosen, images.device)
                images = images.index_copy(0, index, step(images.index_select(0, index), params[chosen]))

        on_some("hflip", lambda x, p: TF.horizontal_flip(x))
        on_some("vflip", lambda x, p: TF.vertical_flip(x))
        on_some("affine", _affine)
        on_some("brightness_contrast", _brightness_contrast)
        on_some("gamma_on", _gamma)
        on_some("hsv", _hue_saturation)
        on_some("blur", _blur)
        on_some("noise", _noise)
        return images

    @staticmethod
    def fix_labels(batch: dict, params: Tensor) -> dict:
        """``batch`` with ``meta["eye"]`` mirrored where the horizontal flip fired and ``findings``
        permuted where the vertical flip fired (:func:`~xmed.findings.vertical_flip_permutation`)."""
        hflip = (params[:, _COLUMN["hflip"]] > 0.5).tolist()
        vflip = (params[:, _COLUMN["vflip"]] > 0.5).to(batch["findings"].device)
        meta = dict(batch["meta"])
        meta["eye"] = [mirror_eye(eye) if flip else eye for eye, flip in zip(meta["eye"], hflip)]
        findings = batch["findings"]
        permuted = findings[:, torch.as_tensor(vertical_flip_permutation(), device=findings.device)]
        return {**batch, "meta": meta, "findings": torch.where(vflip[:, None], permuted, findings)}


def _param(params: Tensor, name: str) -> Tensor:
    return params[:, _COLUMN[name]]


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """A small CPU tensor on ``device`` without the host waiting for it (through pinned memory)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _affine(images: Tensor, params: Tensor) -> Tensor:
    """``A.Affine`` (scale, rotation about the centre, bilinear, black outside) per eye: the inverse of
    albumentations' matrix as one ``affine_grid`` over the batch. Its forward matrix is
    ``s·[[cos, sin], [-sin, cos]]`` about the centre (``w/2 - 0.5, h/2 - 0.5``); its inverse
    ``[[cos, -sin], [sin, cos]] / s``, in ``grid_sample``'s units ``D⁻¹·A·D`` (D: half the sides)."""
    b, _, h, w = images.shape
    angle = torch.deg2rad(torch.remainder(_param(params, "angle"), 360))
    scale = _param(params, "scale")
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    half = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
    theta = torch.cat([inverse * half[None, None, :] / half[None, :, None],
                       torch.zeros(b, 2, 1, dtype=torch.float64)], dim=2)
    grid = F.affine_grid(to_device(theta.float(), images.device), [b, 3, h, w], align_corners=False)
    warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.round_().clamp_(0, 255).to(torch.uint8)


def _per_eye(values: Tensor, device: torch.device) -> Tensor:
    """B values as a B×1×1×1 float32 tensor on ``device``."""
    return to_device(values.float().view(-1, 1, 1, 1), device)


def _brightness_contrast(images: Tensor, params: Tensor) -> Tensor:
    """``A.RandomBrightnessContrast`` (brightness by the maximum): ``x·alpha + beta``, clipped and cut to
    whole levels, as albumentations' lookup table is."""
    alpha, beta = (_per_eye(_param(params, name), images.device) for name in ("alpha", "beta"))
    return (images.float() * alpha + beta).clamp_(0, 255).to(torch.uint8)


def _gamma(images: Tensor, params: Tensor) -> Tensor:
    """``A.RandomGamma``: albumentations' table ``(k/255)^γ · 255``, cut to whole levels, per eye."""
    levels = torch.arange(256, dtype=torch.float64) * (1.0 / 255)
    tables = to_device((levels[None] ** _param(params, "gamma")[:, None] * 255).to(torch.uint8), images.device)
    b = images.shape[0]
    return tables.gather(1, images.reshape(b, -1).long()).view(images.shape)


def _hue_saturation(images: Tensor, params: Tensor) -> Tensor:
    """``A.HueSaturationValue`` (no value shift): OpenCV's 8-bit HSV (hue in 2° steps), hue turned by
    ``hue_shift`` (mod 180, cut to whole steps), saturation raised by ``int(sat_shift)`` except on grey
    pixels, and back."""
    h, s, v = rgb_to_hsv8(images)
    hue_shift = to_device(_param(params, "hue_shift").view(-1, 1, 1), images.device)
    sat_shift = to_device(torch.trunc(_param(params, "sat_shift")).long().view(-1, 1, 1), images.device)
    h = torch.where(hue_shift != 0, torch.remainder(h.double() + hue_shift, 180).long(), h)
    s = torch.where(s == 0, s, (s + sat_shift).clamp(0, 255))
    return hsv8_to_rgb(h, s, v)


def rgb_to_hsv8(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """OpenCV's ``COLOR_RGB2HSV`` of B×3×H×W uint8 images, in its own integer arithmetic (hue 0-179,
    saturation and value 0-255): three B×H×W int64 tensors."""
    r, g, b = (images[:, i].long() for i in range(3))
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    k = torch.arange(256, dtype=torch.float64, device=images.device).clamp(min=1)
    sdiv = torch.round((255 << 12) / k).long()
    hdiv = torch.round((180 << 12) / (6.0 * k)).long()
    sdiv[0] = hdiv[0] = 0
    s = (diff * sdiv[v] + (1 << 11)) >> 12
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + (1 << 11)) >> 12
    return torch.where(h < 0, h + 180, h), s, v


def hsv8_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """OpenCV's ``COLOR_HSV2RGB`` of 8-bit HSV (:func:`rgb_to_hsv8`): B×3×H×W uint8, within one level."""
    hue = torch.remainder(h.float() * (6.0 / 180), 6.0)
    sf, vf = s.float() * (1 / 255.0), v.float() * (1 / 255.0)
    sector = torch.floor(hue)
    frac = hue - sector
    table = torch.stack([vf, vf * (1 - sf), vf * (1 - sf * frac), vf * (1 - sf * (1 - frac))])
    order = torch.tensor([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]], device=h.device)
    chosen = order[sector.long().clamp(0, 5)]                        # …×3: the table rows of b, g, r
    b, g, r = (torch.where(s == 0, vf, table.gather(0, chosen[..., k][None])[0]) for k in range(3))
    return torch.stack([r, g, b], dim=1).mul_(255).trunc_().clamp_(0, 255).to(torch.uint8)


def _blur(images: Tensor, params: Tensor) -> Tensor:
    """``A.GaussianBlur``: albumentations' kernel (size 3 or 5, σ drawn) as one separable depthwise
    convolution over the batch (BORDER_REFLECT_101), rounded."""
    b, c, h, w = images.shape
    x = torch.arange(-2, 3, dtype=torch.float64)[None]
    taps = x.abs() <= _param(params, "kernel")[:, None] // 2           # 3 of the 5 for a kernel of 3
    kernel = torch.exp(-0.5 * (x / _param(params, "sigma")[:, None]) ** 2) * taps
    kernel = to_device((kernel / kernel.sum(dim=1, keepdim=True)).float().repeat_interleave(c, dim=0), images.device)
    flat = F.pad(images.float().view(1, b * c, h, w), (2, 2, 2, 2), mode="reflect")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, 5), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, 5, 1), groups=b * c)
    return flat.view(b, c, h, w).round_().clamp_(0, 255).to(torch.uint8)


def _noise(images: Tensor, params: Tensor) -> Tensor:
    """``A.GaussNoise``: per-pixel, per-channel normal noise of the drawn standard deviation, rounded."""
    generator = torch.Generator(device=images.device).manual_seed(int(_param(params, "noise_seed")[0]))
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    noise = noise * _per_eye(_param(params, "noise_std"), images.device)
    return (images.float() + noise).round_().clamp_(0, 255).to(torch.uint8)


# ------------------------------------------------------------------ what the workers hand over
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
#: the batch keys :func:`collate_encoded` adds and :class:`DevicePipeline` consumes
HANDOVER_KEYS = ("encoded", "pixels", "position", "index", "area", "params")
#: photographs are decoded and prepared in groups of at most this many pixels (about 25 bytes of
#: device memory each at the peak), whatever the batch size
PIXEL_BUDGET = 2**26


def bytes_obstacle(dataset) -> str | None:
    """Why the workers cannot hand ``dataset``'s photographs over as file bytes, or None when they
    can: its eyes are not read from files as they are (the phantom rendered on the fly), or their
    masks are read (the device pipeline prepares images only)."""
    if type(dataset).load_sample not in (FundusDataset.load_sample, PhantomDataset.load_sample):
        return f"data set {type(dataset).name or type(dataset).__name__!r} makes its eyes rather than reading files"
    if getattr(dataset, "load_masks", False) and any(r.mask_paths for r in dataset.records):
        return "the data set's masks are read, and the device pipeline prepares images only"
    return None


def clean_jpeg(path) -> tuple[bytes, int] | None:
    """The bytes and pixel count of a JPEG photograph that nvJPEG decodes as
    :func:`~xmed.data.io.read_image` would (colour or grey, whole, no EXIF turn, within the size
    limits), or None for any other file: the loader worker decodes that one on the CPU, which also
    names what is wrong with it."""
    import io

    from PIL import Image

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if not data.startswith(_JPEG_MAGIC) or not data.rstrip(b"\0").endswith(_JPEG_END):
        return None  # not a JPEG, or one cut short (no end marker): nvJPEG may decode what is left without a word
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                limit = min(DEFAULT_MAX_PIXELS, Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS)
                if (image.format != "JPEG" or image.mode not in ("RGB", "L") or width * height > limit
                        or image.getexif().get(0x0112, 1) != 1):
                    return None
    except Exception:  # noqa: BLE001 - the CPU decoder reads it again and says what is wrong
        return None
    return data, width * height


def record_fields(dataset, index: int) -> dict:
    """An eye's label, findings, vCDR and meta as :meth:`~xmed.data.datasets.base.FundusDataset.load_sample`
    gives them, read from its record (nothing decoded)."""
    record = dataset.records[index]
    return {"label": record.label, "findings": record.findings.copy(), "vcdr": record.vcdr,
            "meta": {"id": record.id, "eye": record.eye or "", "source": record.source or dataset.name}}


class DeviceEyeCache:
    """Prepared eyes (``3×side×side`` uint8) kept on the device between epochs, by their position in
    the split: the GPU's counterpart of :class:`~xmed.data.cache.SharedEyeStore`. The device memory
    is taken at the first eye stored. A byte per slot in memory shared with the loader workers
    forked after it (:meth:`holds`) tells them which eyes need no file read; a worker started afresh
    (spawn) reads every file, and the eye is still taken from here.

    Example:
        >>> cache = DeviceEyeCache(slots=3, side=2)
        >>> cache.put([1], torch.full((1, 3, 2, 2), 7, dtype=torch.uint8))
        >>> cache.holds(1), cache.holds(0), int(cache.get([1, 0])[0][0, 0, 0]), cache.get([1, 0])[1] is None
        (True, False, 7, True)
    """

    def __init__(self, slots: int, side: int):
        import mmap

        self.slots, self.side = int(slots), int(side)
        self._flags: "mmap.mmap | None" = mmap.mmap(-1, max(1, self.slots))
        self._images: Tensor | None = None

    @classmethod
    def for_budget(cls, eyes: int, side: int, budget_bytes: int) -> "DeviceEyeCache | None":
        """A cache for as many of ``eyes`` as ``budget_bytes`` holds; None when not one fits."""
        slots = min(eyes, budget_bytes // (3 * side * side))
        return cls(slots, side) if slots > 0 else None

    def holds(self, position: int) -> bool:
        return self._flags is not None and 0 <= position < self.slots and self._flags[position] == 1

    def get(self, positions: Sequence[int]) -> list[Tensor | None]:
        """The stored eye at each position (a view of the device memory), or None."""
        return [self._images[p] if self._images is not None and self._stored(p) else None for p in positions]

    def gather(self, positions: Sequence[int]) -> Tensor | None:
        """The stored eyes at ``positions`` as one B×3×side×side tensor (one gather on the device, the
        host never waiting), or None unless every one is stored."""
        if self._images is None or not all(self._stored(p) for p in positions):
            return None
        return self._images.index_select(0, to_device(torch.tensor(list(positions)), self._images.device))

    def put(self, positions: Sequence[int], images: Tensor) -> None:
        """Store B prepared eyes at their positions (those beyond the slots are not kept)."""
        if self._images is None:
            self._images = torch.empty(self.slots, 3, self.side, self.side, dtype=torch.uint8, device=images.device)
            self._written = torch.zeros(self.slots, dtype=torch.bool)
        keep = [(i, p) for i, p in enumerate(positions) if 0 <= p < self.slots and images.shape[-1] == self.side]
        if not keep:
            return
        rows, slots = zip(*keep)
        self._images[torch.tensor(slots, device=images.device)] = images[torch.tensor(rows, device=images.device)]
        self._written[list(slots)] = True
        if self._flags is not None:
            for slot in slots:  # published after the eye is written
                self._flags[slot] = 1

    def _stored(self, position: int) -> bool:
        return 0 <= position < self.slots and bool(self._written[position])

    def __getstate__(self) -> dict:
        # a worker started afresh gets neither the device memory nor the shared flags
        return {"slots": self.slots, "side": self.side, "_flags": None, "_images": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class EncodedView(torch.utils.data.Dataset):
    """A split's eyes as the loader workers hand them to :class:`DevicePipeline`: a JPEG
    photograph's file bytes (:func:`clean_jpeg`), any other photograph decoded on the CPU as the
    CPU pipeline decodes it (PNG, TIFF, DICOM: ``pixels``), nothing for an eye the device already
    holds prepared; with the eye's position in the split, its index in the data set, its fields,
    and its augmentation parameters drawn from its seed (:meth:`DeviceAugment.draw`).

    ``view`` is a :class:`~xmed.data.datamodule.SplitView` (its data set and indices are read).
    """

    def __init__(self, view, augment: DeviceAugment | None = None, cache: DeviceEyeCache | None = None):
        self.view, self.augment, self.cache = view, augment, cache

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, i):
        seed = None
        if isinstance(i, SeededIndex):
            i, seed = i.index, i.seed
        dataset, index = self.view.base, self.view.indices[i]
        item = record_fields(dataset, index)
        item.update(position=i, index=index, area=0)
        if self.cache is None or not self.cache.holds(i):
            jpeg = clean_jpeg(dataset.records[index].image_path)
            if jpeg is not None:
                item["encoded"] = torch.frombuffer(bytearray(jpeg[0]), dtype=torch.uint8)
                item["area"] = jpeg[1]
            else:
                sample = dataset.load(index)
                if isinstance(sample, SkippedSample):
                    return sample
                item["pixels"] = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1).contiguous()
                item["area"] = item["pixels"][0].numel()
        if self.augment is not None:
            item["params"] = self.augment.draw(seed)
        return item


def collate_encoded(items: Sequence) -> dict:
    """What :class:`EncodedView` hands over, as one batch: ``encoded`` and ``pixels`` (lists, None
    where an eye has none), ``position``, ``index``, ``area`` (pixels of the photograph; 0 for an eye
    the device holds), ``params`` (B×:data:`AUGMENT_PARAMS`) and the
    fields :func:`~xmed.data.datasets.base.collate_samples` gives; skipped files in ``skipped``."""
    samples = [s for s in items if not isinstance(s, SkippedSample)]
    out: dict = {"skipped": [{"path": s.path, "reason": s.reason} for s in items if isinstance(s, SkippedSample)],
                 "size": len(samples)}
    if not samples:
        return out
    out["encoded"] = [s.get("encoded") for s in samples]
    out["pixels"] = [s.get("pixels") for s in samples]
    out["position"] = torch.tensor([s["position"] for s in samples])
    out["index"] = [s["index"] for s in samples]
    out["area"] = [s["area"] for s in samples]
    if samples[0].get("params") is not None:
        out["params"] = torch.from_numpy(np.stack([s["params"] for s in samples]))
    out["label"] = torch.tensor([float(s["label"]) for s in samples], dtype=torch.float32)
    out["findings"] = torch.from_numpy(np.stack([np.asarray(s["findings"], np.float32) for s in samples]))
    out["vcdr"] = torch.tensor([float(s["vcdr"]) for s in samples], dtype=torch.float32)
    out["meta"] = {k: [s["meta"].get(k, "") for s in samples] for k in ("id", "eye", "source")}
    return out


class DevicePipeline:
    """What a split's batches (:func:`collate_encoded`) go through on ``device``, in the loader's own
    process: JPEG files decoded together (:func:`decode_jpegs`), eyes the cache holds taken from it,
    the rest prepared (:func:`prepare_batch`) and stored, then, for training, augmented
    (:class:`DeviceAugment`, labels fixed for the flips), and normalised unless ``normalise`` is
    False (the training hand-over: uint8, normalised by the data module's hook). The batch that
    comes out is the CPU pipeline's (:func:`~xmed.data.datasets.base.collate_samples`), its images
    on ``device``. A JPEG file nvJPEG cannot decode is read by the CPU decoder, which decodes it or
    says why not (``dataset.on_error``: raised, or listed in the batch's ``skipped``).
    """

    def __init__(self, dataset, preprocess: FundusPreprocess, input_size: int, device: torch.device | str,
                 mean: Sequence[float], std: Sequence[float], normalise: bool = True,
                 augment: DeviceAugment | None = None, cache: DeviceEyeCache | None = None):
        self.dataset, self.preprocess, self.input_size = dataset, preprocess, int(input_size)
        self.device = torch.device(device)
        self.mean, self.std, self.normalise = tuple(mean), tuple(std), normalise
        self.augment, self.cache = augment, cache

    def __call__(self, batch: dict) -> dict:
        out = {k: v for k, v in batch.items() if k not in HANDOVER_KEYS}
        n = int(batch.get("size", 0))
        if not n:
            return out
        positions = batch["position"].tolist()
        stored = self.cache.gather(positions) if self.cache is not None else None
        if stored is not None:  # every eye on the device already: only the augmentations are left
            return self._finish(out, batch, list(range(n)), stored, [])
        images = self.cache.get(positions) if self.cache is not None else [None] * n
        skipped: list[dict] = []
        for group in _by_area([i for i in range(n) if images[i] is None], batch["area"]):
            photos, unread = self._photographs(batch, group)
            skipped += unread
            fresh = sorted(photos)
            if not fresh:
                continue
            prepared = prepare_batch([photos.pop(i) for i in fresh], self.preprocess, self.input_size)
            if self.cache is not None:
                self.cache.put([positions[i] for i in fresh], prepared)
            for row, i in enumerate(fresh):
                images[i] = prepared[row]
        keep = [i for i in range(n) if images[i] is not None]
        return self._finish(out, batch, keep, torch.stack([images[i] for i in keep]) if keep else None, skipped)

    def _finish(self, out: dict, batch: dict, keep: list[int], stacked: Tensor | None, skipped: list[dict]) -> dict:
        """The batch of the eyes ``keep`` (their prepared images ``stacked``), augmented and normalised."""
        out = _select(out, keep)
        out.update(skipped=list(batch.get("skipped", [])) + skipped, size=len(keep), masks={}, mask_valid={})
        if not keep:  # every file of the batch skipped: what collate_samples gives for such a batch
            return {"skipped": out["skipped"], "size": 0}
        if self.augment is not None:
            params = batch["params"][keep]
            stacked = self.augment(stacked, params)
            out = DeviceAugment.fix_labels(out, params)
        out["image"] = normalise_images(stacked, self.mean, self.std) if self.normalise else stacked
        return out

    def _photographs(self, batch: dict, wanted: list[int]) -> tuple[dict[int, Tensor], list[dict]]:
        """The decoded photographs (``3×H×W`` uint8 on the device) of the batch items ``wanted``, and
        the files that could not be read."""
        jpegs = [i for i in wanted if batch["encoded"][i] is not None]
        photos = dict(zip(jpegs, self._decode([batch["encoded"][i] for i in jpegs])))
        for i in wanted:
            if batch["pixels"][i] is not None:
                photos[i] = batch["pixels"][i].to(self.device, non_blocking=True)
        skipped = []
        for i in [i for i, photo in photos.items() if photo is None]:
            sample = self.dataset.load(batch["index"][i])  # the CPU decoder: decodes it, or says why not
            if isinstance(sample, SkippedSample):
                skipped.append({"path": sample.path, "reason": sample.reason})
                del photos[i]
            else:
                photos[i] = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1).to(self.device)
        return photos, skipped

    def _decode(self, data: list[Tensor]) -> list[Tensor | None]:
        """``data`` decoded in one call; where that fails, one by one (None for a file that fails)."""
        if not data:
            return []
        try:
            return decode_jpegs(data, self.device)
        except RuntimeError:
            decoded: list[Tensor | None] = []
            for one in data:
                try:
                    decoded += decode_jpegs([one], self.device)
                except RuntimeError:
                    decoded.append(None)
            return decoded


def _by_area(items: list[int], area: Sequence[int]) -> Iterator[list[int]]:
    """``items`` in consecutive groups of at most :data:`PIXEL_BUDGET` pixels (one photograph at least)."""
    group: list[int] = []
    total = 0
    for i in items:
        if group and total + area[i] > PIXEL_BUDGET:
            yield group
            group, total = [], 0
        group.append(i)
        total += area[i]
    if group:
        yield group


def _select(batch: dict, keep: list[int]) -> dict:
    """The per-eye fields of a batch for the items ``keep`` only."""
    out = dict(batch)
    if len(keep) == batch.get("size", len(keep)):
        return out
    for key in ("label", "findings", "vcdr"):
        if key in out:
            out[key] = out[key][keep]
    if "meta" in out:
        out["meta"] = {k: [v[i] for i in keep] for k, v in out["meta"].items()}
    return out
