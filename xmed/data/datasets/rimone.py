"""RIM-ONE DL: 485 disc-centred photographs (313 normal, 172 glaucoma) from three Spanish hospitals.

Citation: Fumero Batista et al., "RIM-ONE DL: A Unified Retinal Image Database for Assessing
Glaucoma Using Deep Learning", Image Analysis & Stereology 39(3), 2020.

Layout expected (the two zips of the release, unpacked side by side; folder and file names
confirmed against the authors' repository ``miag-ull/rim-one-dl`` and public loaders)::

    root/
      RIM-ONE_DL_images/
        partitioned_by_hospital/{training_set,test_set}/{glaucoma,normal}/r1_Im069.png
        partitioned_randomly/{training_set,test_set}/{glaucoma,normal}/r1_Im069.png
      RIM-ONE_DL_reference_segmentations/            optional
        {glaucoma,normal}/r1_Im069-1-Disc-T.png, r1_Im069-1-Cup-T.png

``root`` may also be the ``RIM-ONE_DL_images`` folder itself. The two partitions hold the same
485 images split differently; choose one with ``partition="by_hospital"`` (training = HUC,
test = HUMS and HCSC: the out-of-distribution protocol) or ``partition="randomly"``.

Harmonisation: ``label`` 1 = folder ``glaucoma``, 0 = ``normal``; ``training_set`` ->
``train``, ``test_set`` -> ``test``. Masks ``disc`` and ``cup`` are the binary reference
segmentations (non-zero = inside). No eye, patient, findings or vCDR are published.
``id`` is the file stem (``r1_Im069``).

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("rimone_dl", root="/data/RIM-ONE_DL", partition="by_hospital",
    ...                  split="test")                                   # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from xmed.data.datasets.base import FundusDataset, Record, require_dir
from xmed.data.datasets.common import list_images, normalise_split
from xmed.errors import DatasetError

CLASSES = {"glaucoma": 1.0, "normal": 0.0}
PARTITIONS = {"by_hospital": "partitioned_by_hospital", "randomly": "partitioned_randomly"}
_MASK = re.compile(r"^(?P<stem>.+)-\d+-(?P<part>Disc|Cup)-T$", re.IGNORECASE)


class RimOneDLDataset(FundusDataset):
    """RIM-ONE DL as released (see the module docstring for the layout).

    Args:
        root: the folder holding ``RIM-ONE_DL_images`` (or that folder itself).
        partition: ``"by_hospital"`` or ``"randomly"``.
        images, segmentations: folder names, relative to ``root``.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        partition: Literal["by_hospital", "randomly"] = "by_hospital",
        images: str = "RIM-ONE_DL_images",
        segmentations: str = "RIM-ONE_DL_reference_segmentations",
        **kwargs: Any,
    ):
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {list(PARTITIONS)}, got {partition!r}")
        self.partition, self.images, self.segmentations = partition, images, segmentations
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        image_root = self.root / self.images
        if not image_root.is_dir() and (self.root / PARTITIONS[self.partition]).is_dir():
            image_root = self.root  # root is RIM-ONE_DL_images itself
        partition_dir = require_dir(image_root / PARTITIONS[self.partition], "partition folder")
        masks = self._mask_index(image_root.parent / self.segmentations
                                 if image_root == self.root else self.root / self.segmentations)
        records = []
        for split_dir in sorted(p for p in partition_dir.iterdir() if p.is_dir()):
            split = normalise_split(split_dir.name)
            if split is None:
                self.skip_or_raise(split_dir, f"unknown set folder {split_dir.name!r} "
                                              "(expected training_set, test_set)")
                continue
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                label = CLASSES.get(class_dir.name.lower())
                if label is None:
                    self.skip_or_raise(class_dir, f"unknown class folder {class_dir.name!r} "
                                                  f"(expected {', '.join(CLASSES)})")
                    continue
                for path in list_images(class_dir):
                    records.append(Record(id=path.stem, image_path=path, label=label, split=split,
                                          source=self.name, mask_paths=masks.get(path.stem, {})))
        if not records and not self.skipped:
            raise DatasetError(partition_dir, "no images found in "
                                              "{training_set,test_set}/{glaucoma,normal}/")
        return records

    @staticmethod
    def _mask_index(folder: Path) -> dict[str, dict[str, Path]]:
        """``{image stem: {"disc": path, "cup": path}}`` from the segmentation file names."""
        index: dict[str, dict[str, Path]] = {}
        if not folder.is_dir():
            return index
        for path in list_images(folder, recursive=True):
            match = _MASK.match(path.stem)
            if match:
                index.setdefault(match["stem"], {}).setdefault(match["part"].lower(), path)
        return index
