"""Albumentations pipelines for fundus samples that honour anatomy.

Flips know anatomy: a horizontal flip turns a right eye (OD) into a left eye (OS) and
back; a vertical flip moves superior to inferior, so every superior/inferior finding pair
(ANRS↔ANRI, RNFLDS↔RNFLDI, BCLVS↔BCLVI) is swapped, in ``findings`` and in the names of their
masks. Albumentations moves the image and all masks together; which flips fired is read back from
``Compose(save_applied_params=True)``'s ``applied_transforms`` list and the labels are fixed
to match.

Augmentations that cannot honour a label are not offered: no ``Transpose`` or
``RandomRotate90`` (they turn superior into temporal/nasal, which no finding label can follow),
no large rotations, and no anisotropic scaling, stretching, shear or elastic warps (a vertical-only
stretch changes the vertical cup-to-disc ratio). Scaling is isotropic, rotations are small
(±``rotate`` degrees), non-square inputs are letterboxed, never squashed.

Example:
    >>> import numpy as np
    >>> from xmed.findings import FINDINGS
    >>> sample = {"image": np.zeros((80, 100, 3), np.uint8), "label": 1.0,
    ...           "findings": np.zeros(len(FINDINGS), np.float32), "vcdr": 0.7,
    ...           "masks": {"disc": np.zeros((80, 100), bool)},
    ...           "meta": {"id": "a", "eye": "OD", "source": "x"}}
    >>> out = build_transforms("train", 64, hflip=1.0, seed=0)(sample)
    >>> out["image"].shape, out["image"].dtype.name, out["masks"]["disc"].shape, out["meta"]["eye"]
    ((64, 64, 3), 'float32', (64, 64), 'OS')
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Literal, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from xmed.data.keywords import renamed_keywords
from xmed.data.normalise import IMAGENET_MEAN, IMAGENET_STD, normalise_images
from xmed.data.preprocess import FundusPreprocess, area_resize
from xmed.errors import ConfigError
from xmed.findings import vertical_flip_partner, vertical_flip_permutation

Stage = Literal["train", "eval"]

_EYE_MIRROR = {"OD": "OS", "OS": "OD"}
_NO_PREPROCESS = FundusPreprocess(crop_fov=False)


def mirror_eye(eye: str) -> str:
    """The laterality after a horizontal flip: OD↔OS; anything else (``""``) is kept."""
    return _EYE_MIRROR.get(eye, eye)


def apply_anatomy_of_flips(sample: dict, hflip: bool, vflip: bool) -> dict:
    """Fix the labels of a sample whose image and masks were flipped (the pixels already are).

    Horizontal: ``meta["eye"]`` OD↔OS. Vertical: ``findings`` permuted by
    :func:`xmed.findings.vertical_flip_permutation` (NaNs move with their finding) and finding
    masks renamed to their partners (``ANRS`` → ``ANRI`` …); other masks keep their names.
    ``label`` and ``vcdr`` are unchanged by either flip.
    """
    out = dict(sample)
    if hflip:
        meta = dict(out.get("meta") or {})
        meta["eye"] = mirror_eye(meta.get("eye", "") or "")
        out["meta"] = meta
    if vflip:
        findings = np.asarray(out["findings"], dtype=np.float32)
        out["findings"] = findings[vertical_flip_permutation()]
        out["masks"] = {vertical_flip_partner(k): v for k, v in (out.get("masks") or {}).items()}
    return out


class FundusTransform:
    """A sample-dict transform: :meth:`prepare` (preprocessing, fit into the input square), then
    :meth:`augment` (an albumentations ``Compose``, labels, normalisation).

    Built by :func:`build_transforms`. ``prepare`` is deterministic, so a loader may keep its
    output and only ``augment`` again (see :class:`~xmed.data.datamodule.SplitView`'s cache).
    ``fit`` and ``compose`` are the two albumentations pipelines (for inspection or ``A.save``).
    Calling it returns a new sample dict: ``image`` float32 ``input_size×input_size×3`` normalised
    by :func:`~xmed.data.normalise.normalise_images` with ``mean``/``std`` (uint8 pixels when built
    with ``normalise=False``: :attr:`normalised` says which), ``masks`` bool
    ``input_size×input_size`` under the same names (renamed by vertical flips). ``pixel_need`` says
    how small a photograph may be decoded for this transform (:meth:`FundusPreprocess.pixel_need`).
    """

    def __init__(self, fit: A.Compose, compose: A.Compose, preprocess: FundusPreprocess | None = None,
                 seed: int | None = None, input_size: int | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, normalise: bool = True):
        self.fit = fit
        self.compose = compose
        self.mean, self.std, self.normalised = tuple(mean), tuple(std), bool(normalise)
        self.input_size = input_size
        self.preprocess = preprocess
        self.pixel_need = None if input_size is None else (preprocess or _NO_PREPROCESS).pixel_need(input_size)
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        """Seed the augmentations; None draws fresh entropy.

        All transforms share one generator pair. ``A.Compose(seed=s)`` in albumentations 2.0.8
        instead gives *every* transform its own ``Random(s)``, so their coin flips coincide (a
        horizontal and a vertical flip of equal probability would always fire together). Reseed
        with e.g. ``seed + worker_id`` in a DataLoader ``worker_init_fn``: albumentations does not
        vary a seeded pipeline across workers by itself.
        """
        self.seed = seed
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, sample: dict) -> dict:
        return self.augment(self.prepare(sample))

    def prepare(self, sample: dict, decode_whole: Callable[[], dict] | None = None) -> dict:
        """The deterministic part: preprocessing, then the image fitted into the input square
        (``uint8`` image, bool masks).

        A sample decoded smaller than stored (``meta["decode_reduction"]`` > 1) whose crop comes
        out smaller than :attr:`pixel_need` asks (its field of view spans less of the photograph
        than the reduction assumed) is prepared again from ``decode_whole()``, the photograph
        decoded whole (anything but a sample dict it returns, such as a skipped sample, is
        returned as it is).
        """
        cropped = self.preprocess(sample) if self.preprocess is not None else sample
        if (decode_whole is not None and self.pixel_need is not None
                and sample["meta"].get("decode_reduction", 1) > 1
                and max(cropped["image"].shape[:2]) < self.pixel_need.crop):
            whole = decode_whole()
            return self.prepare(whole) if isinstance(whole, dict) else whole
        return self._apply(self.fit, cropped)[0]

    def augment(self, sample: dict) -> dict:
        """The random part (train: flips, affine, colour) and normalisation (unless built without);
        flips fix the labels."""
        out, fired = self._apply(self.compose, sample)
        if self.normalised:
            out["image"] = self.normalise(out["image"])
        return apply_anatomy_of_flips(out, hflip="HorizontalFlip" in fired, vflip="VerticalFlip" in fired)

    def normalise(self, image: np.ndarray) -> np.ndarray:
        """An ``H×W×3`` uint8 image normalised as the training loader's batches are, by
        :func:`~xmed.data.normalise.normalise_images` (the one definition of the normalisation), as
        ``H×W×3`` float32."""
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return np.ascontiguousarray(normalise_images(chw, self.mean, self.std).permute(1, 2, 0).numpy())

    @staticmethod
    def _apply(compose: A.Compose, sample: dict) -> tuple[dict, set[str]]:
        """A new sample with ``compose`` applied to its image and masks, and the names of the
        top-level transforms that fired (``Compose(save_applied_params=True)`` lists them).

        Empty masks (the phantom's findings known absent) skip the pipeline: every geometric
        step fills with False, so they stay empty at the output's size."""
        masks = sample.get("masks") or {}
        names = [n for n in masks if np.any(masks[n])]
        data: dict[str, Any] = {"image": np.asarray(sample["image"])}
        if names:
            data["masks"] = [np.asarray(masks[n], dtype=np.uint8) for n in names]
        result = compose(**data)
        fired = {name for name, _ in result.get("applied_transforms", [])}
        moved = {n: np.asarray(m) > 0 for n, m in zip(names, result.get("masks", []))}
        shape = result["image"].shape[:2]
        out = {**sample, "image": result["image"],
               "masks": {n: moved[n] if n in moved else np.zeros(shape, bool) for n in masks}}
        return out, fired

    def __repr__(self) -> str:
        normalise = f"mean={self.mean}, std={self.std}" if self.normalised else "normalise=False"
        return (f"FundusTransform(preprocess={self.preprocess!r}, fit={self.fit!r}, compose={self.compose!r}, "
                f"{normalise})")


class _LongestMaxSize(A.LongestMaxSize):
    """``A.LongestMaxSize`` whose area-averaged shrinking is :func:`~xmed.data.preprocess.area_resize`:
    the same levels, sooner."""

    def apply(self, img: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        if scale >= 1.0 or self.interpolation != cv2.INTER_AREA:
            return super().apply(img, scale, **params)
        height, width = img.shape[:2]  # the output size as albumentations computes it
        return area_resize(img, (max(1, round(width * scale)), max(1, round(height * scale))))


def _photometric() -> list[A.BasicTransform]:
    """Colour/exposure/sharpness jitter of fundus cameras; image-only, so masks are untouched."""
    return [
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.RandomGamma(gamma_limit=(80, 120), p=0.3),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=10, val_shift_limit=0, p=0.3),
        A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, 1.0), p=0.2),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
    ]


@renamed_keywords(size="input_size", color="colour")
def build_transforms(
    stage: Stage,
    input_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    preprocess: FundusPreprocess | dict | None = None,
    hflip: float = 0.5,
    vflip: float = 0.0,
    rotate: float = 15.0,
    colour: bool = True,
    scale: float = 0.1,
    seed: int | None = None,
    normalise: bool = True,
) -> FundusTransform:
    """The train or eval transform of numpy sample dicts (see :mod:`xmed.data.datasets.base`);
    a model's own is :func:`eval_transform`.

    Pipeline: ``preprocess`` (e.g. FOV crop; None = none) → fit into ``input_size×input_size``
    (longer side resized with INTER_AREA, masks nearest, black/False letterbox padding when not
    square) → [train: flips, isotropic scale ±``scale`` and rotation ±``rotate``° via ``Affine``
    with black fill, photometric jitter if ``colour``] → normalise ``(x/255 − mean)/std`` by
    :func:`~xmed.data.normalise.normalise_images` (unless ``normalise=False``).
    Flips update ``meta["eye"]`` / swap superior–inferior findings and masks (module docstring);
    transforms that would break a label (Transpose, RandomRotate90, anisotropic scaling) are
    deliberately not available. The eval pipeline is deterministic.

    Args:
        stage: ``"train"`` (augment) or ``"eval"`` (resize + normalise only).
        input_size: output side in pixels (the model's input size; formerly ``size``, still read).
        mean, std: per-channel normalisation, in [0, 1] units.
        preprocess: a :class:`FundusPreprocess` or its ``to_dict()``; applied first.
        hflip, vflip: flip probabilities (train only).
        rotate: maximum rotation in degrees (train only; 0 disables).
        colour: photometric jitter — brightness/contrast, gamma, hue/saturation, blur, noise
            (formerly ``color``, still read with a :class:`DeprecationWarning`).
        scale: maximum relative isotropic zoom (train only; 0 disables).
        seed: seed of the augmentations (reproducible; see :meth:`FundusTransform.set_random_seed`).
        normalise: False leaves the image uint8 (``input_size×input_size×3``) for
            :func:`~xmed.data.normalise.normalise_images` to normalise later, on the device (the
            training loader's hand-over): the same function, so the same numbers.

    Returns:
        A :class:`FundusTransform` (``sample dict -> sample dict``).

    Example:
        >>> import numpy as np
        >>> t = build_transforms("eval", 32)
        >>> s = {"image": np.full((40, 40, 3), 255, np.uint8), "label": 0.0,
        ...      "findings": np.zeros(10, np.float32), "vcdr": 0.3, "masks": {},
        ...      "meta": {"id": "x", "eye": "OS", "source": ""}}
        >>> round(float(t(s)["image"][0, 0, 0]), 4)   # (1 - 0.485) / 0.229
        2.2489
    """
    if stage not in ("train", "eval"):
        raise ValueError(f"stage must be 'train' or 'eval', got {stage!r}")
    if isinstance(preprocess, dict):
        preprocess = FundusPreprocess.from_dict(preprocess)
    fit = A.Compose([
        _LongestMaxSize(max_size=input_size, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST),
        A.PadIfNeeded(min_height=input_size, min_width=input_size, position="center",
                      border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
    ])
    steps: list[A.BasicTransform] = []
    if stage == "train":
        if hflip > 0:
            steps.append(A.HorizontalFlip(p=hflip))
        if vflip > 0:
            steps.append(A.VerticalFlip(p=vflip))
        if rotate > 0 or scale > 0:
            steps.append(A.Affine(scale=(1 - scale, 1 + scale), keep_ratio=True,
                                  rotate=(-rotate, rotate), interpolation=cv2.INTER_LINEAR,
                                  mask_interpolation=cv2.INTER_NEAREST,
                                  border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.7))
        if colour:
            steps.extend(_photometric())
    compose = A.Compose(steps, save_applied_params=True)
    return FundusTransform(fit, compose, preprocess, seed=seed, input_size=input_size, mean=mean, std=std,
                           normalise=normalise)


def eval_transform(data_config: Any) -> FundusTransform:
    """The transform a model's photographs go through before it sees them, built from its data
    config: a :class:`~xmed.models.DataConfig` (``model.data_config``) or its dict (the one a
    :class:`~xmed.data.datamodule.FundusDataModule` gives, :meth:`~FundusDataModule.data_config`).
    The one place the evaluation transform is built: ``model.prepare``, ``xmed-predict``, the
    review's folders of photographs and the data module's val/test loaders all use it.

    The input size on its way: ``data.image_size`` in a data config (the
    :class:`~xmed.data.datamodule.FundusDataModule` argument of that name) is the side of the
    square every photograph is fitted into; the data module hands it to the model it trains as
    ``input_size`` (:meth:`FundusDataModule.data_config`), the model keeps it as
    ``data_config.input_size`` (also ``FundusClassifier(input_size=)``, ``"input_size"`` in an
    exported ``config.json``), and the transforms and the device pipeline take it as
    ``input_size`` (:func:`build_transforms`, :attr:`FundusTransform.input_size`,
    :class:`~xmed.data.device_pipeline.DevicePipeline`).

    Example:
        >>> import numpy as np
        >>> t = eval_transform({"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "crop_fov": False})
        >>> photo = {"image": np.full((48, 48, 3), 255, np.uint8), "masks": {}, "meta": {}}
        >>> t.input_size, round(float(t(photo)["image"][0, 0, 0]), 5)   # (1 - 0.5) / 0.25
        (32, 2.0)
    """
    return build_transforms("eval", **transform_settings(data_config))


def transform_settings(data_config: Any) -> dict[str, Any]:
    """:func:`build_transforms`' ``input_size``, ``mean``, ``std`` and ``preprocess`` from a model's
    data config (see :func:`eval_transform`); a key neither a data config's nor preprocessing's
    raises :class:`~xmed.errors.ConfigError` naming it.

    Example:
        >>> transform_settings({"input_size": 64, "mean": [0.5] * 3, "std": [0.2] * 3, "crop_fov": False,
        ...                     "preprocess_size": 512, "quality_checks": None})["preprocess"]
        FundusPreprocess(size=512, crop_fov=False, margin=0.02, contrast=None, crop_disc=None)
    """
    config = dict(data_config.as_dict() if hasattr(data_config, "as_dict") else data_config)
    if config.get("input_size") is None:
        raise ConfigError("data_config.input_size", "missing: the side of the square the model takes, in pixels")
    settings = {"input_size": int(config.pop("input_size")), "mean": tuple(config.pop("mean", IMAGENET_MEAN)),
                "std": tuple(config.pop("std", IMAGENET_STD))}
    config.pop("quality_checks", None)  # the quality gate's, not the transform's
    if "preprocess_size" in config:
        config["size"] = config.pop("preprocess_size")
    settings["preprocess"] = FundusPreprocess.from_dict(config)  # the rest: field-of-view and disc crops, contrast
    return settings


#: the longest side a photograph is shown at to a reader (:func:`display_photograph`): twice the
#: review page's 448 px photograph, sharp on a high-density screen
DISPLAY_SIDE = 896


def display_photograph(sample: dict, transform: FundusTransform, most: int = DISPLAY_SIDE) -> np.ndarray | None:
    """``sample`` (a photograph decoded whole) framed as ``transform`` frames it for the model — the
    same field-of-view or disc crop, contrast and letterbox — but at the photograph's own
    resolution, up to ``most`` pixels a side: what a reader is shown where the model saw a reduced
    copy (a 128 px disc crop of a 2,000 px photograph, enlarged for the page, is blurry). None where
    the crop is no larger than the model's input, which is then the photograph to show.

    Example:
        >>> import numpy as np
        >>> photo = {"image": np.full((600, 600, 3), 120, np.uint8), "masks": {}, "meta": {}}
        >>> model = build_transforms("eval", 128, preprocess=FundusPreprocess(crop_fov=False))
        >>> display_photograph(photo, model).shape
        (600, 600, 3)
        >>> display_photograph(photo, model, most=300).shape, display_photograph(photo, build_transforms("eval", 600))
        ((300, 300, 3), None)
    """
    preprocess = transform.preprocess
    native = dataclasses.replace(preprocess, size=None) if preprocess is not None else None
    cropped = native({**sample, "masks": {}}) if native is not None else {**sample, "masks": {}}
    side = min(max(cropped["image"].shape[:2]), int(most))
    if side <= transform.input_size:
        return None
    return build_transforms("eval", side, normalise=False).prepare(cropped)["image"]
