"""The image-quality gate: is this a fundus photograph a model's output can be read from?

A model scores whatever it is given: an all-white frame, a lens cap, a holiday photograph. The
gate is a few cheap measurements of the image, each a named flag:

* ``no_field_of_view`` — no bright, round fundus against a dark border. The field of view is
  found as :func:`xmed.data.preprocess.find_fov` finds it for cropping; the image passes when at
  most 15 % of that circle is darker than 30 % of its median brightness (the threshold
  ``find_fov`` itself uses to tell a border from a fundus) and at most 25 % of the rest of the
  image is brighter than that. A photograph cropped inside its field of view (a disc-centred
  crop) has no border and is flagged — unless the model was trained on such photographs: a model
  is held only to the checks its validation photographs pass (:func:`calibrate_checks`, run by
  ``xmed-train`` and kept in the model's data config as ``quality_checks``).
* ``nearly_uniform`` — inside the field of view (or the circle inscribed in the image when
  there is none; its inner 90 %, away from the edge that resizing blends with the border), the
  interquartile range of every colour channel is below 4 grey levels (0–255): a blank, capped or
  fully saturated exposure.
* ``out_of_distribution`` — the colour of the field of view is not that of a colour fundus
  photograph: its mean colour lies more than ``tolerance`` (2) standard deviations of the model's
  normalisation (``data_config.std``) from its mean (``data_config.mean``) in some channel — with
  the ImageNet statistics most models use, a near-black or near-white exposure — or its red
  channel is not clearly the brightest (mean red below 1.15 × mean green: the choroid makes a
  colour fundus red; grey, red-free, noise and BGR-swapped images fail).

Thresholds were set on the rendered phantom (every eye passes, at 32 to 512 px) and on the
photograph ``skimage.data.retina()`` (passes), against an all-white, an all-black and a grey
frame, uniform noise, a checkerboard and natural photographs (``skimage.data`` astronaut,
chelsea, coffee, camera, moon — each flagged); ``tests/faults/test_fault_quality.py`` keeps
them. The image is measured on a copy at most 64 px across (a field of view is still found in a
32 px phantom): about a millisecond per image.

A flag warns (:class:`xmed.errors.QualityWarning`) and travels with the eye's outputs — the
``quality`` column of ``predictions.csv`` and of an explain run's ``per_image.csv``, and
:attr:`xmed.explain.rationale.Rationale.quality` — it never stops a run.

Example:
    >>> import numpy as np
    >>> from skimage import data
    >>> assess_quality(data.retina()).ok
    True
    >>> assess_quality(np.full((512, 512, 3), 255, np.uint8)).flags
    ('no_field_of_view', 'nearly_uniform', 'out_of_distribution')
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import cv2
import numpy as np

from xmed.data.io import grey_to_rgb, onto_black
from xmed.data.preprocess import FieldOfView, find_fov
from xmed.errors import InputError, QualityWarning

if TYPE_CHECKING:
    from torch import Tensor

NO_FIELD_OF_VIEW = "no_field_of_view"
NEARLY_UNIFORM = "nearly_uniform"
OUT_OF_DISTRIBUTION = "out_of_distribution"
CHECKS: tuple[str, ...] = (NO_FIELD_OF_VIEW, NEARLY_UNIFORM, OUT_OF_DISTRIBUTION)
DESCRIPTIONS = {
    NO_FIELD_OF_VIEW: "no fundus field of view against a dark border",
    NEARLY_UNIFORM: "a nearly uniform image",
    OUT_OF_DISTRIBUTION: "colour or exposure unlike a colour fundus photograph",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The shortest side a photograph may have: below it no optic disc (about 8 % of the field of
#: view across) is resolved, and the field of view cannot be found.
MIN_SIDE = 32
#: What :func:`as_photograph` tells the caller to pass.
PHOTOGRAPH = "an H×W×3 uint8 RGB photograph (or float in [0, 1])"

_WORK_SIDE = 64             # measured on a copy whose longer side is at most this
_DARK = 0.3                 # a border pixel is dark below this share of the FOV's median brightness
_MAX_DARK_IN_FOV = 0.15     # share of the field of view allowed to be that dark (vessels, fovea, vignetting)
_MAX_BRIGHT_BORDER = 0.25   # share of the border allowed to be brighter (text, a camera's notch)
_MIN_FOV_LEVEL = 20.0       # median brightness (0-255) below which nothing is lit
_MIN_SPREAD = 4             # grey levels: a channel whose interquartile range is smaller is "uniform"
_MIN_RED_OVER_GREEN = 1.15
TOLERANCE = 2.0


@dataclass(frozen=True)
class Quality:
    """The outcome of :func:`assess_quality` for one image.

    Attributes:
        flags: the checks the image failed, in the order of :data:`CHECKS` (empty: it passed),
            then ``unfamiliar_features`` where a model's feature check added it
            (:func:`xmed.models.feature_check.with_feature_flags`).
        judged: the checks that were made (a prepared tensor cannot always be judged on all:
            see :func:`assess_prepared`).
        measures: the numbers the flags were decided on (brightness 0–255, colour 0–1).
    """

    flags: tuple[str, ...] = ()
    judged: tuple[str, ...] = CHECKS
    measures: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return not self.flags

    def __str__(self) -> str:
        """The flags joined by ``;`` (empty when the image passed): a CSV cell."""
        return ";".join(self.flags)

    def describe(self) -> str:
        """The flags in words.

        Example:
            >>> Quality((NEARLY_UNIFORM, OUT_OF_DISTRIBUTION)).describe()
            'a nearly uniform image; colour or exposure unlike a colour fundus photograph'
        """
        return "; ".join(DESCRIPTIONS[flag] for flag in self.flags)


def as_photograph(image: Any, index: int | None = None, name: str = "images") -> np.ndarray:
    """``image`` as the ``H×W×3`` uint8 RGB array a photograph is, or :class:`InputError` naming
    ``index`` and what to pass instead.

    Converted explicitly, as :func:`xmed.data.read_image` converts files: float pixels in [0, 1]
    are scaled by 255 and rounded; greyscale (``H×W`` or ``H×W×1``) is repeated on three
    channels; RGBA (``H×W×4``) is composited onto black. Refused: other pixel types (uint16 —
    its bit depth is not in the array —, signed integers, bool), float pixels outside [0, 1] or
    not finite, channels-first arrays, other shapes, and a shorter side below :data:`MIN_SIDE`.

    Example:
        >>> as_photograph(np.full((40, 50), 0.5)).shape, as_photograph(np.full((40, 50), 0.5))[0, 0, 0]
        ((40, 50, 3), np.uint8(128))
        >>> as_photograph(np.zeros((40, 50, 3), np.uint16), index=2)
        Traceback (most recent call last):
        ...
        xmed.errors.InputError: images: image 2 has uint16 pixels, whose bit depth (8 to 16) the array does not say; convert it to uint8 (e.g. (image >> 8).astype(np.uint8) for 16-bit data), or read the file with xmed.data.read_image, which knows its depth
    """
    which = "the image" if index is None else f"image {index}"

    def refuse(reason: str) -> InputError:
        return InputError(name, f"{which} {reason}")

    if not isinstance(image, np.ndarray):
        raise refuse(f"is a {type(image).__module__}.{type(image).__name__}, not a numpy array; pass "
                     f"{PHOTOGRAPH}{_hint_for(image)}")
    shape = tuple(image.shape)
    if image.ndim == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        raise refuse(f"has shape {shape}, which looks channels-first (C×H×W); pass image.transpose(1, 2, 0)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and shape[2] not in (1, 3, 4)):
        raise refuse(f"has shape {shape}; pass {PHOTOGRAPH}")
    if min(shape[:2]) < MIN_SIDE:
        raise refuse(f"is {shape[1]}×{shape[0]} pixels; a fundus photograph needs at least "
                     f"{MIN_SIDE} pixels on its shorter side")
    if image.dtype == np.uint16:
        raise refuse("has uint16 pixels, whose bit depth (8 to 16) the array does not say; convert it to uint8 "
                     "(e.g. (image >> 8).astype(np.uint8) for 16-bit data), or read the file with "
                     "xmed.data.read_image, which knows its depth")
    if np.issubdtype(image.dtype, np.floating):
        finite = np.isfinite(image)
        if not finite.all():
            raise refuse(f"holds {int((~finite).sum())} NaN or infinite pixel values; a photograph has none")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise refuse(f"has float pixels in [{low:g}, {high:g}]; float pixels must lie in [0, 1] "
                         f"(0-255 values? pass image.astype(np.uint8))")
        image = np.round(image.astype(np.float32) * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise refuse(f"has {image.dtype} pixels; pass uint8 (0-255) or float in [0, 1] "
                     f"(e.g. image.astype(np.uint8) if its values are 0-255)")
    if image.ndim == 2 or shape[2] == 1:
        return grey_to_rgb(image.reshape(shape[:2]))
    if shape[2] == 4:
        return onto_black(image[..., :3], image[..., 3])
    return image


def _hint_for(item: Any) -> str:
    kind = f"{type(item).__module__}.{type(item).__name__}"
    if isinstance(item, (str, bytes)) or kind.startswith("pathlib."):
        return " (read the file first: xmed.data.read_image(path))"
    if kind.startswith("PIL."):
        return " (np.asarray(image.convert('RGB')))"
    if kind.startswith("torch."):
        return " (a tensor already prepared for the model goes to the model directly)"
    return ""


def assess_quality(image: Any, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   tolerance: float = TOLERANCE, checks: Iterable[str] = CHECKS) -> Quality:
    """Flag an image that is no fundus photograph a model's output can be read from (see the
    module docstring for each check and its threshold).

    Args:
        image: a photograph as :func:`as_photograph` takes it (``H×W×3`` uint8, or float in [0, 1]).
        mean, std: the model's normalisation (``model.data_config``), in [0, 1] units.
        tolerance: how many ``std`` the mean colour of the field of view may lie from ``mean``.
        checks: which of :data:`CHECKS` to make.

    Example:
        >>> from skimage import data
        >>> assess_quality(data.astronaut()).flags
        ('no_field_of_view',)
        >>> assess_quality(np.zeros((64, 64, 3), np.uint8), checks=[NEARLY_UNIFORM]).flags
        ('nearly_uniform',)
    """
    checks = tuple(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise InputError("checks", f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    return _assess(_work_copy(as_photograph(image, name="image")), mean, std, tolerance, checks)


def _assess(photo: np.ndarray, mean: Sequence[float], std: Sequence[float], tolerance: float,
            checks: tuple[str, ...]) -> Quality:
    """:func:`assess_quality` of a valid ``H×W×3`` uint8 photograph, already shrunk to work size."""
    brightness = np.maximum(np.maximum(photo[..., 0], photo[..., 1]), photo[..., 2])  # as find_fov measures it
    fov = find_fov(brightness)
    inside = fov.mask(photo.shape)
    # colour and spread away from the edge of the field of view, which resizing blends with the border
    core = FieldOfView(fov.cx, fov.cy, 0.9 * fov.radius).mask(photo.shape)
    core_pixels = photo[core if core.any() else inside]
    colour = core_pixels.mean(axis=0) / 255.0
    level = float(np.median(brightness[inside]))
    dark = _DARK * level
    border = brightness[~inside]
    measures = {
        "fov_brightness": round(level, 1),
        "dark_in_fov": round(float((brightness[inside] <= dark).mean()), 3),
        "border_share": round(float(border.size / brightness.size), 3),
        "bright_border": round(float((border > dark).mean()), 3) if border.size else None,
        "spread": _interquartile_range(core_pixels),
        "colour": [round(float(c), 3) for c in colour],
        "colour_z": [round((float(c) - m) / s, 2) for c, m, s in zip(colour, mean, std)],
        "red_over_green": round(float(colour[0] / max(float(colour[1]), 1 / 255)), 2),
    }
    failed = {
        NO_FIELD_OF_VIEW: (level < _MIN_FOV_LEVEL or border.size < 0.01 * brightness.size
                           or measures["dark_in_fov"] > _MAX_DARK_IN_FOV
                           or measures["bright_border"] > _MAX_BRIGHT_BORDER),
        NEARLY_UNIFORM: measures["spread"] < _MIN_SPREAD,
        OUT_OF_DISTRIBUTION: (max(abs(z) for z in measures["colour_z"]) > tolerance
                              or measures["red_over_green"] < _MIN_RED_OVER_GREEN),
    }
    return Quality(tuple(c for c in CHECKS if c in checks and failed[c]), checks, measures)


def _interquartile_range(pixels: np.ndarray) -> int:
    """The largest interquartile range of the channels of N×3 pixels (robust to a rim of border
    pixels that a resized field of view's edge leaves inside it)."""
    low, high = len(pixels) // 4, (3 * len(pixels)) // 4
    quartiles = np.partition(pixels, (low, high), axis=0)
    return int((quartiles[high].astype(np.int16) - quartiles[low]).max())


def _work_copy(photo: np.ndarray) -> np.ndarray:
    h, w = photo.shape[:2]
    scale = _WORK_SIDE / max(h, w)
    if scale >= 1.0:
        return photo
    return cv2.resize(photo, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def prepared_checks(data_config: Any) -> tuple[str, ...]:
    """The checks that can be judged on images prepared by ``data_config`` (a model's
    :class:`~xmed.models.classifier.DataConfig`): a disc-centred crop (``crop_disc``) has no field
    of view by design, nor has an input below :data:`MIN_SIDE` one that can be found; contrast
    normalisation (``clahe``, ``graham``) blackens the border outside the field of view it found
    and changes the colour, so only ``nearly_uniform`` is judged there. Of those, only the ones
    the model is held to (``data_config.quality_checks``, when it says) are made.

    Example:
        >>> from types import SimpleNamespace
        >>> prepared_checks(SimpleNamespace(crop_disc=0.5, contrast=None))
        ('nearly_uniform', 'out_of_distribution')
    """
    held_to = getattr(data_config, "quality_checks", None) or CHECKS
    if getattr(data_config, "contrast", None):
        possible = (NEARLY_UNIFORM,)
    elif getattr(data_config, "crop_disc", None) or getattr(data_config, "input_size", MIN_SIDE) < MIN_SIDE:
        possible = (NEARLY_UNIFORM, OUT_OF_DISTRIBUTION)
    else:
        possible = CHECKS
    return tuple(c for c in possible if c in held_to)


def calibrate_checks(batches: Iterable[Tensor], data_config: Any, *, limit: int = 256,
                     max_failing: float = 0.05) -> tuple[tuple[str, ...], dict[str, float]]:
    """The checks a model is to hold its inputs to: of those :func:`prepared_checks` allows, each
    that at most ``max_failing`` of its own validation photographs (the first ``limit`` eyes of
    ``batches``, prepared batches as the model sees them) fail. A data set of disc-centred crops
    has no dark border around a field of view: a check every one of its eyes fails would flag
    every eye a clinician sends, and say nothing. Returns ``(checks, share of eyes failing each)``.

    Example::

        checks, failing = calibrate_checks((b["image"] for b in datamodule.val_dataloader()), data_config)
    """
    possible = prepared_checks(data_config)
    qualities: list[Quality] = []
    for images in batches:
        qualities += assess_prepared(images, data_config)
        if len(qualities) >= limit:
            break
    qualities = qualities[:limit]
    if not qualities:
        return possible, {}
    failing = {c: round(sum(c in q.flags for q in qualities) / len(qualities), 4) for c in possible}
    return tuple(c for c in possible if failing[c] <= max_failing), failing


def assess_prepared(images: Tensor, data_config: Any) -> list[Quality]:
    """:func:`assess_quality` of every image of a B×3×H×W batch prepared for a model
    (normalised with ``data_config.mean``/``std``; de-normalised here), judging what
    :func:`prepared_checks` allows.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> dc = SimpleNamespace(mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=48, crop_disc=None, contrast=None)
        >>> white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        >>> str(assess_prepared(white.view(1, 3, 1, 1).expand(1, 3, 48, 48), dc)[0])
        'no_field_of_view;nearly_uniform;out_of_distribution'
    """
    import torch
    import torch.nn.functional as F

    images = images.detach().float().cpu()
    scale = _WORK_SIDE / max(images.shape[-2:])
    if scale < 1.0:  # shrunk first, as assess_quality would (area averaging commutes with normalising)
        images = F.adaptive_avg_pool2d(images, [max(1, round(side * scale)) for side in images.shape[-2:]])
    mean = torch.tensor(data_config.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(data_config.std, dtype=torch.float32).view(1, 3, 1, 1)
    # x·std + mean in 0-255, rounded (+0.5, then truncated by the cast)
    pixels = torch.addcmul(mean * 255 + 0.5, images, std * 255).clamp_(0, 255).to(torch.uint8)
    checks = prepared_checks(data_config)
    return [_assess(photo, data_config.mean, data_config.std, TOLERANCE, checks)
            for photo in pixels.permute(0, 2, 3, 1).numpy()]


def warn_flagged(qualities: Sequence[Quality], names: Sequence[str] | None = None) -> None:
    """One :class:`~xmed.errors.QualityWarning` naming every image that failed the gate (by
    ``names``, e.g. eye ids; else by index), and its flags; silent when all passed.

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_flagged([Quality(), Quality((NEARLY_UNIFORM,))], ["eye_a", "eye_b"])
        >>> print(caught[0].message)
        1 of 2 images failed the image-quality check, and their outputs are not to be relied on: eye_b (nearly_uniform)
    """
    flagged = [(names[i] if names is not None else f"image {i}", q) for i, q in enumerate(qualities) if q.flags]
    if not flagged:
        return
    listed = ", ".join(f"{name} ({quality})" for name, quality in flagged[:10])
    more = f" and {len(flagged) - 10} more" if len(flagged) > 10 else ""
    warnings.warn(QualityWarning(f"{len(flagged)} of {len(qualities)} images failed the image-quality check, and "
                                 f"their outputs are not to be relied on: {listed}{more}"), stacklevel=3)
