"""JustRAIGS: 101,423 Rotterdam EyePACS photographs with graders' referral justifications.

Citation: the JustRAIGS challenge, "Justified Referral in AI Glaucoma Screening", IEEE ISBI
2024 (justraigs.grand-challenge.org); images EyePACS, labels Rotterdam Ophthalmic Institute;
training set on Zenodo under CC BY-NC-SA.

Layout expected (the Zenodo release; the CSV and its columns are confirmed against public
loaders and the challenge page)::

    root/
      JustRAIGS_Train_labels.csv     semicolon-separated:
          Eye ID; Final Label; Fellow Eye ID; Age; Label G1; Label G2; Label G3;
          G1 ANRS … G1 LC; G2 ANRS … G2 LC; G3 ANRS … G3 LC
      0/TRAIN000000.JPG
      …
      5/…

Which numbered folder holds an image does not matter: the folders are listed once and images
are found by their ``Eye ID``.

Harmonisation:

- ``label``: ``Final Label`` RG -> 1, NRG -> 0, U (ungradable) or empty -> NaN; any other
  value is reported.
- ``findings`` (the ten codes of :data:`xmed.FINDINGS`, which are JustRAIGS's own): each image
  was graded by G1 and G2, and by the glaucoma specialist G3 when they disagreed. Where G3
  graded (``Label G3`` not empty) the findings are G3's; otherwise each finding is the value
  G1 and G2 agree on, and NaN where they disagree or either left it empty. An empty cell is
  never read as 0.
- ``patient``: eyes linked through ``Fellow Eye ID`` share one group (named by the smallest
  eye id), so both eyes of a person land in the same split.
- No eye (OD/OS), split or vCDR is published. ``id`` is the ``Eye ID``.

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("justraigs", root="/data/JustRAIGS")   # doctest: +SKIP
    >>> ds.records[0].findings                                  # doctest: +SKIP
    array([nan, nan, nan, nan, nan, nan, nan, nan, nan, nan], dtype=float32)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from xmed.data.datasets.base import NAN, FundusDataset, Record, TableRow, read_csv_rows
from xmed.data.datasets.common import (
    RG_NRG, PatientGroups, findings_vector, index_numbered_folders, label_cell,
    missing_in_folders,
)
from xmed.findings import FINDINGS

GRADERS = ("G1", "G2", "G3")
FINAL_LABELS = {**RG_NRG, "U": NAN}
REQUIRED = ["Eye ID", "Final Label", "Fellow Eye ID", *(f"Label {g}" for g in GRADERS),
            *(f"{g} {code}" for g in GRADERS for code in FINDINGS)]
COLUMNS = {"id": "Eye ID", "label": "Final Label"}


def consensus_findings(grades: dict[str, dict[str, float]], g3_graded: bool) -> np.ndarray:
    """The JustRAIGS finding consensus (see the module docstring) as a FINDINGS vector.

    Example:
        >>> g = {"G1": {"DH": 1.0, "LC": 1.0}, "G2": {"DH": 1.0, "LC": 0.0}, "G3": {}}
        >>> v = consensus_findings(g, g3_graded=False)
        >>> float(v[FINDINGS.index("DH")]), bool(np.isnan(v[FINDINGS.index("LC")]))
        (1.0, True)
    """
    if g3_graded:
        return findings_vector(grades["G3"])
    agreed = {}
    for code in FINDINGS:
        a, b = grades["G1"].get(code, NAN), grades["G2"].get(code, NAN)
        if not (math.isnan(a) or math.isnan(b)) and a == b:
            agreed[code] = a
    return findings_vector(agreed)


class JustRaigsDataset(FundusDataset):
    """JustRAIGS as released (see the module docstring for the layout and the consensus).

    Args:
        root: the folder with the label CSV and the numbered image folders.
        labels: the label file, relative to ``root``.
        folders: the image folders (default: every numbered sub-folder).
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    has_patient_ids: ClassVar[bool] = True

    def __init__(
        self,
        root: str | os.PathLike,
        labels: str = "JustRAIGS_Train_labels.csv",
        folders: Sequence[str] | None = None,
        **kwargs: Any,
    ):
        self.labels_file, self.folders = labels, folders
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        csv_path: Path = self.root / self.labels_file
        rows = read_csv_rows(csv_path, REQUIRED, delimiter=";", on_bad_row=self.skip_or_raise)
        images, folders = index_numbered_folders(self.root, self.folders)
        groups = PatientGroups()

        def listed(row: TableRow) -> Record:
            eye_id = row["Eye ID"]
            groups.link(eye_id, row["Fellow Eye ID"])
            label = label_cell(row, "Final Label", FINAL_LABELS, "RG, NRG or U", eye_id)
            # every grade is checked, also those the consensus leaves unused
            grades = {g: {code: row.grade(f"{g} {code}", eye_id) for code in FINDINGS}
                      for g in GRADERS}
            findings = consensus_findings(grades, g3_graded=bool(row["Label G3"]))
            if eye_id not in images:
                raise missing_in_folders(self.root, eye_id, row, folders)
            return Record(id=eye_id, image_path=images[eye_id], label=label, findings=findings,
                          source=self.name, origin=row.origin(COLUMNS))

        records = self.records_from_rows(rows, listed)
        for record in records:  # after every row is linked, so the group does not depend on order
            record.patient = groups.group(record.id)
        return records
