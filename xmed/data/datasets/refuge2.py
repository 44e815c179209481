"""REFUGE2 (Retinal Fundus Glaucoma Challenge, 2nd edition, MICCAI 2020): 2000 photographs.

Citation: Fang et al., "REFUGE2 Challenge: A Treasure Trove for Multi-Dimension Analysis and
Evaluation in Glaucoma Screening", arXiv:2202.08994, 2022.

Layout expected (the ``REFUGE2`` folder of the challenge download). The folder and label-file
names are taken from public loaders of the release, not from an official listing, so they are
**assumptions**, each an argument of :class:`Refuge2Dataset`::

    root/
      Train/                                   REFUGE2's training set = all of REFUGE 2018
        REFUGE1-train/Training400/{Glaucoma,Non-Glaucoma}/g0001.jpg      label from the folder
        REFUGE1-val/REFUGE-Validation400/V0001.jpg
        REFUGE1-val/Fovea_locations.xlsx                 ImgName, Glaucoma Label
        REFUGE1-test/Test400/T0001.jpg
        REFUGE1-test/Glaucoma_label_and_Fovea_location.xlsx   ImgName, Label(Glaucoma=1)
        REFUGE1-*/…/*.bmp                        disc/cup masks anywhere in the part folder
      Validation/Images/V0001.jpg
      Validation/glaucoma.csv                    FileName, Glaucoma Risk
      Test/refuge2-test/T0001.jpg
      Test/task1.xls                             no header: file name, label

Masks: any ``.bmp``/``.png`` below a part folder (outside its image folder) whose stem is an
image's stem is taken as that image's disc/cup mask, decoded like REFUGE (0 = cup,
128 = rim, 255 = background). ``task1.xls`` is a legacy Excel file: reading it needs the
optional package ``xlrd``; otherwise save it as ``task1.xlsx``/``.csv`` and pass
``test_labels=``, or leave the test part out with ``parts=("train", "val")``.

Harmonisation: ``label`` 1 = glaucoma, 0 = not; findings and vCDR are not published (NaN).
Splits: ``Train/*`` -> ``train``, ``Validation`` -> ``val``, ``Test`` -> ``test``. ``id`` is
the file stem for the REFUGE 2018 images (the same ids as :class:`RefugeDataset`) and
``refuge2-val/<stem>``, ``refuge2-test/<stem>`` for the new ones.

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("refuge2", root="/data/REFUGE2", parts=("train", "val"))  # doctest: +SKIP
    >>> sorted({r.split for r in ds.records})                                    # doctest: +SKIP
    ['train', 'val']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xmed.data.datasets.base import FundusDataset, Record
from xmed.data.datasets.common import read_level_mask
from xmed.data.datasets.refuge import DISC_CUP_LEVELS, Part, read_refuge_part
from xmed.errors import DatasetError

PARTS = ("train", "val", "test")


class Refuge2Dataset(FundusDataset):
    """REFUGE2 as downloaded (see the module docstring for the layout and its assumptions).

    Args:
        root: the ``REFUGE2`` folder.
        parts: which parts to read among ``"train"``, ``"val"``, ``"test"``; None reads every
            part whose image folder exists. A part named here must exist.
        train_dir: folder of the three REFUGE 2018 parts.
        val_images, val_labels, test_images, test_labels: REFUGE2's own parts.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        parts: Sequence[str] | None = None,
        train_dir: str = "Train",
        val_images: str = "Validation/Images",
        val_labels: str = "Validation/glaucoma.csv",
        test_images: str = "Test/refuge2-test",
        test_labels: str = "Test/task1.xls",
        **kwargs: Any,
    ):
        unknown = [p for p in (parts or ()) if p not in PARTS]
        if unknown:
            raise ValueError(f"parts must be among {PARTS}, got {unknown}")
        self.wanted = tuple(parts) if parts is not None else None
        t = train_dir
        self.parts: list[tuple[Part, str]] = [
            (Part("train", f"{t}/REFUGE1-train/Training400", f"{t}/REFUGE1-train"), ""),
            (Part("train", f"{t}/REFUGE1-val/REFUGE-Validation400", f"{t}/REFUGE1-val",
                  f"{t}/REFUGE1-val/Fovea_locations.xlsx"), ""),
            (Part("train", f"{t}/REFUGE1-test/Test400", f"{t}/REFUGE1-test",
                  f"{t}/REFUGE1-test/Glaucoma_label_and_Fovea_location.xlsx"), ""),
            (Part("val", val_images, str(Path(val_images).parent), val_labels,
                  name_column="FileName", label_columns=("Glaucoma Risk",)), "refuge2-val/"),
            (Part("test", test_images, str(Path(test_images).parent), test_labels,
                  name_column="ImgName", label_columns=("Glaucoma",), header=False),
             "refuge2-test/"),
        ]
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        records: list[Record] = []
        found = False
        for part, prefix in self.parts:
            wanted = self.wanted is None or part.split in self.wanted
            if not wanted:
                continue
            if not (self.root / part.images).is_dir():
                if self.wanted is not None and part.split != "train":
                    raise DatasetError(self.root / part.images, "image folder does not exist")
                continue
            found = True
            records.extend(read_refuge_part(self, self.root, part, id_prefix=prefix))
        if not found:
            raise DatasetError(self.root, "no REFUGE2 part found: expected "
                                          + ", ".join(f"{p.images}/" for p, _ in self.parts))
        return records

    def decode_mask(self, name: str, path: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return read_level_mask(path, shape, DISC_CUP_LEVELS)
