"""ORIGA (Online Retinal fundus Image database for Glaucoma Analysis): 650 disc-centred photographs.

Citation: Zhang et al., "ORIGA-light: An online retinal fundus image database for glaucoma
analysis and research", IEEE EMBC 2010, pp. 3065-3068.

Layout expected (as distributed in the public "glaucoma datasets" bundle; confirmed against
public loaders)::

    root/                          the ORIGA folder
      OrigaList.csv                Eye, Filename, ExpCDR, Set, Glaucoma
      Images/001.jpg
      Masks/001.png                0 = background, 1 = disc (rim), 2 = cup

Harmonisation: ``label`` = ``Glaucoma`` (0/1; anything else is reported), ``vcdr`` =
``ExpCDR`` (the expert's cup-to-disc ratio), ``eye`` = ``Eye`` (OD/OS). ``Set`` is the
published A/B partition used as training/testing set by the ORIGA baselines: A -> ``train``,
B -> ``test`` (an **assumption** about the direction; change it with ``set_splits``). Masks
decode to ``disc`` (levels 1 and 2) and ``cup`` (level 2). Findings are not published (NaN).
``id`` is the file stem (``001``).

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("origa", root="/data/ORIGA", split="train")   # doctest: +SKIP
    >>> ds.records[0].vcdr                                             # doctest: +SKIP
    0.7057
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from xmed.data.datasets.base import FundusDataset, Record
from xmed.data.datasets.common import (
    DISC_CUP_INDEX_LEVELS, normalise_split, published_eye, published_split, read_indexed_csv,
    read_level_mask,
)

class OrigaDataset(FundusDataset):
    """ORIGA as distributed (see the module docstring for the layout).

    Args:
        root: the ORIGA folder.
        labels: the label file, relative to ``root``.
        images, masks: the image and mask folders, relative to ``root``.
        set_splits: published ``Set`` value -> split name.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        labels: str = "OrigaList.csv",
        images: str = "Images",
        masks: str = "Masks",
        set_splits: Mapping[str, str] | None = None,
        **kwargs: Any,
    ):
        self.labels_file, self.images, self.masks = labels, images, masks
        self.set_splits = {k: normalise_split(v) or v
                           for k, v in (set_splits or {"A": "train", "B": "test"}).items()}
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        pairs = read_indexed_csv(self, self.root / self.labels_file, "Filename", "Glaucoma",
                                 self.root / self.images, self.root / self.masks,
                                 extra_columns={"eye": "Eye", "vcdr": "ExpCDR", "split": "Set"})

        def complete(pair) -> Record:
            row, record = pair
            record.vcdr = row.number("ExpCDR", record.id)
            record.eye = published_eye(row["Eye"])
            record.split = self.set_splits.get(row["Set"]) or published_split(row["Set"])
            return record

        return self.records_from_rows(pairs, complete)

    def decode_mask(self, name: str, path: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return read_level_mask(path, shape, DISC_CUP_INDEX_LEVELS)
