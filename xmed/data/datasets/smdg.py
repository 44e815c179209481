"""SMDG-19: the Standardized Multi-Channel Dataset for Glaucoma, 19 public sets in one format.

Citation: Kiefer et al., "Standardized multi-channel dataset for glaucoma (SMDG-19)", IOVS
64(8), ARVO 2023 abstract; github.com/TheBeastCoding/standardized-multichannel-dataset-glaucoma.

Layout expected (the Kaggle release; the metadata file and its columns are confirmed against
the authors' repository)::

    root/
      metadata - standardized.csv      names, types, …, patient_id, fundus, fundus_od_seg,
                                       fundus_oc_seg, …, eye, …, vcdr, …
      full-fundus/OIA-ODIR-TEST-OFFLINE-1.png      (paths in the CSV: /full-fundus/<names>.png)
      optic-disc/DRISHTI-GS1-test-49.png
      optic-cup/DRISHTI-GS1-test-49.png

The Kaggle download nests every folder twice (``full-fundus/full-fundus/…``); both forms are
accepted. Required columns: ``names``, ``types``, ``fundus``; ``eye``, ``vcdr``,
``patient_id``, ``fundus_od_seg``, ``fundus_oc_seg`` are read when present.

Harmonisation: ``types`` 1 = glaucoma -> ``label`` 1, 0 -> 0, -1 = glaucoma suspect -> NaN
(never forced to a class); other values are reported. ``vcdr`` is the ``vcdr`` column (NaN
when empty; the per-expert ``cdr_*`` columns are not mixed in). ``eye`` OD/OS. ``patient`` is
``patient_id`` scoped by the source data set (the ``names`` prefix, e.g. ``PAPILA``), since
ids repeat across the 19 sources; empty where not published. Masks: ``disc`` and ``cup`` from
the optic-disc/optic-cup files (non-zero = inside) where listed and present. SMDG publishes
no split or findings. ``id`` is ``names``.

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("smdg", root="/data/SMDG-19")              # doctest: +SKIP
    >>> int(np.isnan(ds.labels()).sum())                             # doctest: +SKIP
    133
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

from xmed.data.datasets.base import (
    FundusDataset, NAN, Record, TableRow, file_exists, read_csv_rows,
)
from xmed.data.datasets.common import label_cell, published_eye

TYPES = {0: 0.0, 1: 1.0, -1: NAN}
MASK_COLUMNS = {"disc": "fundus_od_seg", "cup": "fundus_oc_seg"}
#: record field -> column; ``patient_id`` is read too but is empty where a source publishes none
COLUMNS = {"id": "names", "label": "types", "image": "fundus", "eye": "eye", "vcdr": "vcdr",
           **MASK_COLUMNS}


class SmdgDataset(FundusDataset):
    """SMDG-19 as released (see the module docstring for the layout).

    Args:
        root: the SMDG-19 folder.
        metadata: the metadata file, relative to ``root``.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    has_patient_ids: ClassVar[bool] = True

    def __init__(
        self, root: str | os.PathLike, metadata: str = "metadata - standardized.csv",
        **kwargs: Any,
    ):
        self.metadata = metadata
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        rows = read_csv_rows(self.root / self.metadata, ["names", "types", "fundus"], delimiter=",",
                             also=("eye", "vcdr", "patient_id", *MASK_COLUMNS.values()),
                             on_bad_row=self.skip_or_raise)

        def record(row: TableRow) -> Record:
            name = row["names"]
            label = label_cell(row, "types", TYPES, "1, 0 or -1", name)
            masks = {}
            for mask_name, column in MASK_COLUMNS.items():
                value = row.get(column, "")
                if value.startswith("/") or value.lower().endswith(".png"):
                    path = self._resolve(value)
                    if file_exists(path):
                        masks[mask_name] = path
            patient = row.get("patient_id", "")
            return Record(
                id=name,
                image_path=self._resolve(row["fundus"] or f"/full-fundus/{name}.png"),
                label=label,
                vcdr=row.number("vcdr", name),
                eye=published_eye(row.get("eye")),
                patient=f"{source_of(name)}/{patient}" if patient else None,
                source=self.name,
                mask_paths=masks,
                origin=row.origin(COLUMNS),
            )

        return self.records_from_rows(rows, record)

    def _resolve(self, listed: str) -> Path:
        """A CSV path (``/full-fundus/x.png``) under root, or under Kaggle's doubled folder."""
        relative = Path(listed.lstrip("/\\"))
        path = self.root / relative
        if not file_exists(path) and len(relative.parts) > 1:
            doubled = self.root / relative.parts[0] / relative
            if file_exists(doubled):
                return doubled
        return path


def source_of(name: str) -> str:
    """The source data set of an SMDG ``names`` value: ``PAPILA-12`` -> ``PAPILA``."""
    return re.sub(r"-\d+$", "", name)
