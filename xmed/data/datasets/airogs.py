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
from typing import Any, ClassVar, Sequence

from xmed.data.datasets.base import FundusDataset, Record, read_csv_rows
from xmed.data.datasets.common import (
    RG_NRG, binary_label, index_numbered_folders, missing_in_folders,
)


class AirogsDataset(FundusDataset):
    """Rotterdam EyePACS AIROGS as released (see the module docstring for the layout).

    Args:
        root: the folder with ``train_labels.csv`` and the numbered image folders.
        labels: the label file, relative to ``root``.
        folders: the image folders (default: every numbered sub-folder).
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    name: ClassVar[str] = "airogs"

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
        csv_path = self.root / self.labels_file
        rows = read_csv_rows(csv_path, ["challenge_id", "class"])
        images, folders = index_numbered_folders(self.root, self.folders)
        records = []
        for row in rows:
            eye_id = row["challenge_id"]
            label = binary_label(row["class"], RG_NRG)
            if label is None:
                self.skip_or_raise(csv_path, f"column 'class', row {eye_id!r}: unknown class "
                                             f"value {row['class']!r} (expected RG or NRG)")
                continue
            if eye_id not in images:
                missing_in_folders(self, eye_id, csv_path, folders)
                continue
            records.append(Record(id=eye_id, image_path=images[eye_id], label=label,
                                  source=self.name))
        return records
