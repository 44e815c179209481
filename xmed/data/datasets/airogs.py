"""Rotterdam EyePACS AIROGS: 101,442 gradable training photographs from the AIROGS challenge.

Citation: de Vente et al., "AIROGS: Artificial Intelligence for RObust Glaucoma Screening
Challenge", IEEE Transactions on Medical Imaging 43(1), 2024.

Layout expected (the Zenodo release, record 5793241: ``train_labels.csv`` and the image zips
``0.zip`` … ``5.zip`` unpacked to folders; confirmed against public loaders)::

    root/
      train_labels.csv          challenge_id, class       (TRAIN000000, RG / NRG)
      0/TRAIN000000.jpg
      1/…
      …
      5/…

Which numbered folder holds an image does not matter: the folders are listed once and images
are found by their ``challenge_id``.

Harmonisation: ``class`` RG (referable glaucoma) -> ``label`` 1, NRG -> 0; any other value is
reported. The release has no eye, patient, split, findings or vCDR (left empty / NaN).
``id`` is the ``challenge_id``.

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("airogs", root="/data/AIROGS", on_error="skip")   # doctest: +SKIP
    >>> ds.records[0].id                                                    # doctest: +SKIP
    'TRAIN000000'
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from xmed.data.datasets.base import FundusDataset, Record, TableRow, read_csv_rows
from xmed.data.datasets.common import (
    RG_NRG, index_numbered_folders, label_cell, missing_in_folders,
)

COLUMNS = {"id": "challenge_id", "label": "class"}


class AirogsDataset(FundusDataset):
    """Rotterdam EyePACS AIROGS as released (see the module docstring for the layout).

    Args:
        root: the folder with ``train_labels.csv`` and the numbered image folders.
        labels: the label file, relative to ``root``.
        folders: the image folders (default: every numbered sub-folder).
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        labels: str = "train_labels.csv",
        folders: Sequence[str] | None = None,
        **kwargs: Any,
    ):
        self.labels_file, self.folders = labels, folders
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        rows = read_csv_rows(self.root / self.labels_file, list(COLUMNS.values()),
                             on_bad_row=self.skip_or_raise)
        images, folders = index_numbered_folders(self.root, self.folders)

        def record(row: TableRow) -> Record:
            eye_id = row["challenge_id"]
            label = label_cell(row, "class", RG_NRG, "RG or NRG", eye_id)
            if eye_id not in images:
                raise missing_in_folders(self.root, eye_id, row, folders)
            return Record(id=eye_id, image_path=images[eye_id], label=label, source=self.name,
                          origin=row.origin(COLUMNS))

        return self.records_from_rows(rows, record)
