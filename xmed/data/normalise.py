"""Normalisation of uint8 pixels into a model's input space, on whatever device they are, and back.

:func:`normalise_images` is the one definition of the normalisation: the training loader's
batches (normalised on the device), the evaluation transform (:meth:`FundusTransform.normalise
<xmed.data.transforms.FundusTransform.normalise>`, which ``model.prepare`` and the val/test loaders
use) and the device pipeline all call it, so a photograph gives the same tensor in training and in
evaluation.

Kept apart from :mod:`xmed.data.transforms` (albumentations, OpenCV) so that models import it
without the image-processing stack.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise_images(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 pixels (``…×3×H×W``) as a model takes them: ``(x/255 − mean)/std`` in float32, computed
    where the tensor is (on the GPU after the batch has moved there); a floating tensor is taken as
    normalised already and returned as it is.

    The training loader hands its images over as uint8 (``build_transforms(normalise=False)``): a
    quarter of the bytes through shared memory, pinning and the copy to the device, and no
    normalising in the workers. Equal to albumentations' ``Normalize`` (``max_pixel_value=255``)
    to float32 rounding (``tests/test_transforms.py``).

    Example:
        >>> x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2)
        >>> [round(v, 4) for v in normalise_images(x)[0, 0].tolist()]   # (0 - 0.485)/0.229, (1 - 0.485)/0.229
        [-2.1179, 2.2489]
        >>> y = torch.zeros(3, 1, 2); normalise_images(y) is y
        True
    """
    if images.is_floating_point():
        return images
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 pixels or normalised floats, got {images.dtype}")
    channels = images.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} must have one value per channel ({channels})")
    scale, shift = _scale_and_shift(tuple(mean), tuple(std), images.device)
    return torch.addcmul(shift, images.float(), scale)


def to_uint8_image(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised 3×H×W tensor back to an H×W×3 uint8 photograph: what a reader is shown of an
    image in the model's input space (an overlay's photograph, a counterfactual edit).

    Example:
        >>> x = normalise_images(torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 3).expand(3, 1, 3))
        >>> to_uint8_image(x, IMAGENET_MEAN, IMAGENET_STD)[0, :, 0].tolist()
        [0, 128, 255]
    """
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    rgb = (image.detach().float().cpu() * std_t + mean_t).clamp(0, 1)
    return (rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _scale_and_shift(mean: tuple[float, ...], std: tuple[float, ...],
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x/255 − mean)/std as one multiply-add: scale 1/(255·std), shift −mean/std (in float64, then
    rounded), made once per device: a copy to the GPU for every batch would wait for its queue."""
    mean64, std64 = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    scale, shift = (torch.stack([1.0 / (255.0 * std64), -mean64 / std64])
                    .to(device=device, dtype=torch.float32).view(2, len(mean), 1, 1))
    return scale, shift
