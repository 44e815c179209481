"""REFUGE (Retinal Fundus Glaucoma Challenge, MICCAI 2018): 1200 macula-centred photographs.

Citation: Orlando et al., "REFUGE Challenge: A unified framework for evaluating automated
methods for glaucoma assessment from fundus photographs", Medical Image Analysis 59, 2020.

Layout expected (the challenge release, folder names confirmed against public loaders; every
name is an argument of :class:`RefugeDataset`)::

    root/
      Training400/{Glaucoma,Non-Glaucoma}/g0001.jpg, n0001.jpg     label from the folder
      Annotation-Training400/Disc_Cup_Masks/{Glaucoma,Non-Glaucoma}/g0001.bmp
      REFUGE-Validation400/V0001.jpg
      REFUGE-Validation400-GT/Fovea_locations.xlsx
          ID, ImgName, Fovea_X, Fovea_Y, Glaucoma Label
      REFUGE-Validation400-GT/Disc_Cup_Masks/V0001.bmp
      Test400/T0001.jpg
      REFUGE-Test-GT/Glaucoma_label_and_Fovea_location.xlsx
          ID, ImgName, Fovea_X, Fovea_Y, Label(Glaucoma=1)
      REFUGE-Test-GT/Disc_Cup_Masks/{G,N}/T0001.bmp

Each part (training, validation, test) is read when its image folder exists; at least one
must. A part whose images exist but whose label workbook is missing raises
:class:`~xmed.errors.DatasetError` naming the workbook. Either label column name is accepted
in either workbook. The training part's ``Fovea_location.xlsx`` holds no labels and is not read.

Harmonisation: ``label`` 1 = glaucoma (folder ``Glaucoma`` or label 1), 0 = non-glaucoma; the
findings and vCDR are not published (NaN). Splits: Training400 -> ``train``, Validation400 ->
``val``, Test400 -> ``test``. ``id`` is the file stem (``g0001``, ``V0001``, ``T0001``). Masks
are 8-bit BMPs with 0 = cup, 128 = rim, 255 = background; they decode to ``disc`` (levels
<= 128, the cup included) and ``cup`` (level 0).

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("refuge", root="/data/REFUGE", split="test")   # doctest: +SKIP
    >>> ds[0]["masks"]["cup"].shape                                     # doctest: +SKIP
    torch.Size([1634, 1634])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmed.data.datasets.base import FundusDataset, Origin, Record, TableRow, require_file
from xmed.data.datasets.common import (
    ZERO_ONE, cell_str, index_by_stem, label_cell, list_images, read_label_table,
    read_level_mask,
)
from xmed.errors import DatasetError

#: label columns of the two REFUGE workbooks (validation, test); either is accepted
LABEL_COLUMNS = ("Glaucoma Label", "Label(Glaucoma=1)")
#: training class folders and their labels
TRAIN_CLASSES = {"Glaucoma": 1.0, "Non-Glaucoma": 0.0}
#: 0 = cup, 128 = neuroretinal rim, 255 = background
DISC_CUP_LEVELS = {"disc": lambda m: m <= 128, "cup": lambda m: m == 0}
MASK_SUFFIXES = (".bmp", ".png")


@dataclass
class Part:
    """Where one REFUGE part lives under a root (paths relative to it)."""

    split: str
    images: str
    masks: str | None = None
    labels: str | None = None  # None: the label is the class folder of each image
    name_column: str = "ImgName"
    label_columns: tuple[str, ...] = LABEL_COLUMNS
    header: bool = True  # False: the table's first row is data (REFUGE2's task1.xls)


class RefugeDataset(FundusDataset):
    """REFUGE 2018 as released (see the module docstring for the layout).

    Args:
        root: the REFUGE folder.
        train_images, train_masks, val_images, val_labels, val_masks, test_images,
            test_labels, test_masks: the part folders / workbooks, relative to ``root``.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train_images: str = "Training400",
        train_masks: str = "Annotation-Training400/Disc_Cup_Masks",
        val_images: str = "REFUGE-Validation400",
        val_labels: str = "REFUGE-Validation400-GT/Fovea_locations.xlsx",
        val_masks: str = "REFUGE-Validation400-GT/Disc_Cup_Masks",
        test_images: str = "Test400",
        test_labels: str = "REFUGE-Test-GT/Glaucoma_label_and_Fovea_location.xlsx",
        test_masks: str = "REFUGE-Test-GT/Disc_Cup_Masks",
        **kwargs: Any,
    ):
        self.parts = [
            Part("train", train_images, train_masks),
            Part("val", val_images, val_masks, val_labels),
            Part("test", test_images, test_masks, test_labels),
        ]
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        present = [p for p in self.parts if (self.root / p.images).is_dir()]
        if not present:
            raise DatasetError(self.root, "no REFUGE part found: expected one of "
                                          + ", ".join(f"{p.images}/" for p in self.parts))
        records: list[Record] = []
        for part in present:
            records.extend(read_refuge_part(self, self.root, part))
        return records

    def decode_mask(self, name: str, path: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return read_level_mask(path, shape, DISC_CUP_LEVELS)


def read_refuge_part(
    ds: FundusDataset, base: Path, part: Part, id_prefix: str = ""
) -> list[Record]:
    """Records of one REFUGE-1 part under ``base`` (shared by REFUGE and REFUGE2)."""
    image_dir = base / part.images
    masks: dict[str, Path] = {}
    if part.masks and (base / part.masks).is_dir():  # BMP/PNG masks anywhere below, by stem
        masks = index_by_stem(p for p in list_images(base / part.masks, recursive=True)
                              if p.suffix.lower() in MASK_SUFFIXES and image_dir not in p.parents)

    def record(image_path: Path, label: float, origin: Origin | None = None) -> Record:
        stem = image_path.stem or image_path.name
        mask = masks.get(stem)
        return Record(
            id=f"{id_prefix}{stem}", image_path=image_path, label=label, split=part.split,
            source=ds.name, mask_paths={"disc_cup": mask} if mask is not None else {},
            origin=origin,
        )

    records = []
    if part.labels is None:  # training part: class folders
        for entry in sorted(p for p in image_dir.iterdir() if p.is_dir()):
            if entry.name not in TRAIN_CLASSES:
                ds.skip_or_raise(entry, f"unknown class folder {entry.name!r} "
                                        f"(expected {', '.join(TRAIN_CLASSES)})")
                continue
            records.extend(record(p, TRAIN_CLASSES[entry.name]) for p in list_images(entry))
        return records

    label_file = require_file(base / part.labels)
    if part.header:
        rows = read_label_table(label_file, [part.name_column], any_of=part.label_columns,
                                on_bad_row=ds.skip_or_raise)
    else:
        rows = read_label_table(label_file, [part.name_column, part.label_columns[0]],
                                header=False)
    column = next((c for c in part.label_columns if rows and c in rows[0]),
                  part.label_columns[0])
    columns = {"id": part.name_column, "image": part.name_column, "label": column}

    def listed(row: TableRow) -> Record:
        name = cell_str(row[part.name_column])
        if not name:
            raise DatasetError(label_file, f"{row.where(part.name_column)}: empty file name")
        label = label_cell(row, column, ZERO_ONE, "0 or 1", name)
        return record(image_dir / name, label, row.origin(columns))

    return ds.records_from_rows(rows, listed)
