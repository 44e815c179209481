"""G1020: 1020 colour fundus photographs from routine glaucoma care in Germany.

Citation: Bajwa et al., "G1020: A Benchmark Retinal Fundus Image Dataset for Computer-Aided
Glaucoma Detection", IJCNN 2020 (arXiv:2006.09158).

Layout expected (as distributed in the public "glaucoma datasets" bundle, the same bundle as
ORIGA; the CSV and folder names are confirmed against public loaders, the mask levels are an
**assumption** — the bundle's ORIGA convention)::

    root/                          the G1020 folder
      G1020.csv                    imageID, binaryLabels
      Images/image_0.jpg
      Masks/image_0.png            0 = background, 1 = disc (rim), 2 = cup

Harmonisation: ``label`` = ``binaryLabels`` (1 = glaucoma, 0 = normal; anything else is
reported). G1020 publishes no split, eye or patient in the CSV, so they stay empty; findings
and vCDR are NaN. Masks decode to ``disc`` (levels 1 and 2) and ``cup`` (level 2); images
without a mask file simply have no masks. ``id`` is the file stem (``image_0``).

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("g1020", root="/data/G1020", on_error="skip")   # doctest: +SKIP
    >>> ds.labels().mean()                                                # doctest: +SKIP
    0.2960784
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from xmed.data.datasets.base import FundusDataset, Record
from xmed.data.datasets.common import (
    DISC_CUP_INDEX_LEVELS, read_indexed_csv, read_level_mask,
)


class G1020Dataset(FundusDataset):
    """G1020 as distributed (see the module docstring for the layout).

    Args:
        root: the G1020 folder.
        labels: the label file, relative to ``root``.
        images, masks: the image and mask folders, relative to ``root``.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        labels: str = "G1020.csv",
        images: str = "Images",
        masks: str = "Masks",
        **kwargs: Any,
    ):
        self.labels_file, self.images, self.masks = labels, images, masks
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        pairs = read_indexed_csv(self, self.root / self.labels_file, "imageID", "binaryLabels",
                                 self.root / self.images, self.root / self.masks)
        return [record for _, record in pairs]

    def decode_mask(self, name: str, path: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return read_level_mask(path, shape, DISC_CUP_INDEX_LEVELS)
