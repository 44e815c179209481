"""PAPILA: both eyes of 244 patients, with clinical data and two experts' disc/cup contours.

Citation: Kovalyk et al., "PAPILA: Dataset with fundus images and clinical data of both eyes of
the same patient for glaucoma assessment", Scientific Data 9, 291 (2022).

Layout expected (the figshare release; confirmed against the authors' ``HelpCode/utils.py``
and public loaders)::

    root/                                   PapilaDB-PAPILA-<hash>/
      FundusImages/RET002OD.jpg, RET002OS.jpg
      ClinicalData/patient_data_od.xlsx     one row per patient, right eyes
      ClinicalData/patient_data_os.xlsx     one row per patient, left eyes
      ExpertsSegmentations/Contours/RET002OD_disc_exp1.txt, RET002OD_cup_exp1.txt, … _exp2

The clinical workbooks carry title rows above their header; the header is the first row that
holds ``ID`` (or ``Patient ID``) and ``Diagnosis`` (found automatically), and a patient row
has an ``ID`` such as ``#002``. Contours are text files of ``x y`` points, one per line,
filled into a polygon when a sample is decoded.

Harmonisation: ``Diagnosis`` 0 = healthy -> ``label`` 0, 1 = glaucoma -> 1, 2 = suspect ->
NaN (ungraded, never forced to a class); other values are reported. The eye (OD/OS) comes from
the workbook and the file name, and ``patient`` from the file name (``RET002OD.jpg`` ->
``RET002``), so both eyes of a patient share it. PAPILA publishes no split, findings or vCDR
(NaN). Masks ``disc`` and ``cup`` come from expert 1 (``expert=2`` for the other expert).
``id`` is the file stem (``RET002OD``).

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("papila", root="/data/PAPILA")              # doctest: +SKIP
    >>> len(set(ds.groups())), len(ds)                               # doctest: +SKIP
    (244, 488)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from xmed.data.datasets.base import FundusDataset, NAN, Record, TableRow, require_file
from xmed.data.datasets.common import cell_str, label_cell, read_xlsx_rows
from xmed.errors import DatasetError

#: PAPILA's Diagnosis coding
DIAGNOSIS = {0: 0.0, 1: 1.0, 2: NAN}
#: the patient column of the clinical workbooks (``ID``; ``Patient ID`` in some copies)
ID_COLUMNS = ("ID", "Patient ID")


class PapilaDataset(FundusDataset):
    """PAPILA as released (see the module docstring for the layout).

    Args:
        root: the PAPILA folder.
        images: the image folder, relative to ``root``.
        clinical: folder of the two clinical workbooks, relative to ``root``.
        contours: folder of the contour files, relative to ``root``.
        expert: whose contours become the ``disc``/``cup`` masks (1 or 2).
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    has_patient_ids: ClassVar[bool] = True

    def __init__(
        self,
        root: str | os.PathLike,
        images: str = "FundusImages",
        clinical: str = "ClinicalData",
        contours: str = "ExpertsSegmentations/Contours",
        expert: int = 1,
        **kwargs: Any,
    ):
        if expert not in (1, 2):
            raise ValueError(f"expert must be 1 or 2, got {expert!r}")
        self.images, self.clinical, self.contours, self.expert = images, clinical, contours, expert
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        clinical = self.root / self.clinical
        workbooks = {eye: require_file(clinical / f"patient_data_{eye.lower()}.xlsx")
                     for eye in ("OD", "OS")}
        records = []
        for eye, workbook in workbooks.items():
            rows = read_xlsx_rows(workbook, ["Diagnosis"], any_of=ID_COLUMNS)
            id_column = next((c for c in ID_COLUMNS if rows and c in rows[0]), "ID")
            columns = {"id": id_column, "label": "Diagnosis"}

            def record(row: TableRow, eye: str = eye) -> Record | None:
                raw_id = cell_str(row[id_column])
                if not raw_id:
                    return None  # a sub-header or spacer row below the header, not a patient
                digits = re.search(r"\d+", raw_id)
                if digits is None or len(digits.group().lstrip("0")) > 6:
                    raise DatasetError(workbook, f"{row.where(id_column, raw_id)}: cannot read a "
                                                 "patient number (such as #002)")
                stem = f"RET{int(digits.group()):03d}{eye}"
                label = label_cell(row, "Diagnosis", DIAGNOSIS, "0, 1 or 2", raw_id)
                return Record(
                    id=stem, image_path=self.root / self.images / f"{stem}.jpg", label=label,
                    eye=eye, patient=patient_from_name(stem), source=self.name,
                    mask_paths=self._contours(stem), origin=row.origin(columns),
                )

            records.extend(self.records_from_rows(rows, record))
        return records

    def _contours(self, stem: str) -> dict[str, Path]:
        folder = self.root / self.contours
        paths = {part: folder / f"{stem}_{part}_exp{self.expert}.txt" for part in ("disc", "cup")}
        return {part: p for part, p in paths.items() if p.is_file()}

    def decode_mask(self, name: str, path: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        if path.suffix.lower() != ".txt":
            return super().decode_mask(name, path, shape)
        return {name: contour_mask(path, shape)}


def patient_from_name(stem: str) -> str:
    """``RET002OD`` -> ``RET002``: the patient part of a PAPILA file name."""
    return re.sub(r"(OD|OS)$", "", stem, flags=re.IGNORECASE)


def contour_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Fill a PAPILA contour file (``x y`` per line) into an ``H×W`` boolean mask."""
    from PIL import Image, ImageDraw

    try:
        points = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as err:
        raise DatasetError(path, f"cannot read contour points: {err}") from None
    if points.ndim != 2 or points.shape[1] < 2 or len(points) < 3:
        raise DatasetError(path, f"a contour needs at least 3 points of 2 coordinates, "
                                 f"got an array of shape {points.shape}")
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points[:, :2]],
                                   fill=1, outline=1)
    return np.array(canvas, dtype=bool)
