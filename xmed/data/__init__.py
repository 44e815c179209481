"""The data layer: image and DICOM reading, the fundus phantom, data sets, transforms.

Example:
    >>> from xmed.data import render_phantom
    >>> eye = render_phantom(seed=0, size=128)
    >>> eye.image.shape, eye.eye in ("OD", "OS")
    ((128, 128, 3), True)
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it; imported on first use so `import xmed` stays light
_EXPORTS = {
    "read_image": "xmed.data.io",
    "read_image_reduced": "xmed.data.io",
    "read_dicom": "xmed.data.io",
    "read_mask": "xmed.data.io",
    "walk_folder": "xmed.data.folders",
    "render_phantom": "xmed.data.phantom",
    "PhantomSample": "xmed.data.phantom",
    "write_phantom_dataset": "xmed.data.phantom",
    "find_fov": "xmed.data.preprocess",
    "FundusPreprocess": "xmed.data.preprocess",
    "build_transforms": "xmed.data.transforms",
    "eval_transform": "xmed.data.transforms",
    "normalise_images": "xmed.data.normalise",
    "get_dataset": "xmed.data.datasets",
    "collate_samples": "xmed.data.datasets",
    "FundusDataModule": "xmed.data.datamodule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xmed.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
