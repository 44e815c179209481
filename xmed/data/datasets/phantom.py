"""The fundus phantom as a data set: read from disk (as written by ``xmed-data phantom``) or
rendered on the fly.

On disk the phantom is read like any published data set (``labels.csv`` + ``images/`` +
``masks/<id>/<name>.png``); the phantom knows every finding, so a finding without a mask file
is *known absent* and gets an empty mask (unlike real data sets, where a missing mask means
unknown).

Example:
    >>> from xmed.data.datasets.phantom import PhantomRenderDataset
    >>> ds = PhantomRenderDataset(n=4, size=64, seed=0)
    >>> sample = ds[0]; tuple(sample["image"].shape), sorted(sample["masks"])[:2]
    ((3, 64, 64), ['ANRI', 'ANRS'])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xmed.data.datasets.base import (
    FundusDataset, Record, Skip, TableRow, check_on_error, read_csv_rows, require_file,
)
from xmed.data.datasets.common import published_eye, published_split
from xmed.data.phantom import draw_phantom_cause, render_phantom
from xmed.data.phantom.writer import LABEL_COLUMNS, assign_splits, eye_seeds
from xmed.errors import DatasetError
from xmed.findings import FINDINGS

if TYPE_CHECKING:
    from xmed.data.preprocess import PixelNeed


#: record field -> labels.csv column (every eye has a split)
COLUMNS = {"id": "id", "image": "image", "label": "label", "vcdr": "vcdr", "eye": "eye",
           "split": "split", **{code: code for code in FINDINGS}}


def _with_known_absent_masks(sample: dict) -> dict:
    shape = sample["image"].shape[:2]
    for code in FINDINGS:
        sample["masks"].setdefault(code, np.zeros(shape, bool))
    return sample


class PhantomDataset(FundusDataset):
    """A phantom data set on disk (see :mod:`xmed.data.phantom.writer` for the layout)."""

    def __init__(self, root: str | os.PathLike, **kwargs):
        if not Path(root).exists():
            raise DatasetError(root, f"no phantom data set here; render one with "
                                     f"`xmed-data phantom --out {root} --n 2000 --size 256`")
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        require_file(self.root / "phantom.json", "phantom.json")
        labels_csv = self.root / "labels.csv"
        rows = read_csv_rows(labels_csv, required=[c for c in LABEL_COLUMNS if c not in ("seed", "shortcut")],
                             on_bad_row=self.skip_or_raise)
        self.oracle: dict[str, float] = {}   # id -> true P(glaucoma | findings, vCDR)

        def record(row: TableRow) -> Record:
            rid = row["id"]
            label = row.number("label", rid)
            if label not in (0.0, 1.0):   # the phantom grades every eye
                raise DatasetError(labels_csv, f"{row.where('label', rid)}: must be 0 or 1, got {row['label']!r}")
            self.oracle[rid] = row.number("oracle", rid)
            mask_dir = self.root / "masks" / rid
            mask_paths = {p.stem: p for p in sorted(mask_dir.glob("*.png"))} if rid and mask_dir.is_dir() else {}
            return Record(
                id=rid,
                image_path=self.root / row["image"],
                label=label,
                findings=np.array([row.grade(c, rid) for c in FINDINGS], np.float32),
                vcdr=row.number("vcdr", rid),
                eye=published_eye(row["eye"]),
                split=published_split(row["split"]),
                source=self.name,
                mask_paths=mask_paths,
                origin=row.origin(COLUMNS),
            )

        return self.records_from_rows(rows, record)

    def load_sample(self, record: Record, pixel_need: PixelNeed | None = None) -> dict:
        sample = super().load_sample(record, pixel_need)
        return _with_known_absent_masks(sample) if self.load_masks else sample


class PhantomRenderDataset(FundusDataset):
    """Phantom eyes rendered on the fly: ``n`` eyes from data-set seed ``seed``.

    The same ``seed`` and ``n`` give the same eyes as ``xmed-data phantom`` writes (same
    per-eye seeds and splits), without touching the disk.

    Args:
        n: number of eyes; size: image side; seed: data-set seed.
        split: keep only "train", "val" or "test" (stratified 70/15/15 as the writer does).
        **options: phantom options (``prevalence``, ``shortcut``, ...).
    """

    def __init__(self, n: int = 256, size: int = 256, seed: int = 0, split: str | None = None,
                 transform=None, on_error: str = "raise", load_masks: bool = True,
                 splits=(0.7, 0.15, 0.15), **options):
        self.root = Path("<rendered>")
        self.on_error = check_on_error(on_error)
        self.transform = transform
        self.load_masks = load_masks
        self.skipped: list[Skip] = []
        self.size = int(size)
        self.options = options
        seeds = eye_seeds(seed, n)
        drawn = [draw_phantom_cause(s, **options) for s in seeds]
        split_of = assign_splits([c.label for c, _, _ in drawn], splits, seed)
        self.records = [
            Record(id=f"phantom_{i:06d}", image_path=Path(f"<seed {s}>"), label=float(c.label),
                   findings=np.array([c.findings[k] for k in FINDINGS], np.float32), vcdr=c.vcdr,
                   eye=eye, split=sp, source=self.name)
            for i, (s, (c, eye, _), sp) in enumerate(zip(seeds, drawn, split_of))
        ]
        self._seeds = {r.id: s for r, s in zip(self.records, seeds)}
        self.oracle = {r.id: c.oracle for r, (c, _, _) in zip(self.records, drawn)}
        if split is not None:
            self.records = [r for r in self.records if r.split == split]

    def load_sample(self, record: Record, pixel_need: PixelNeed | None = None) -> dict:
        """Render the eye (at ``size``: a rendered eye is never decoded, so ``pixel_need`` is
        not used)."""
        options = dict(self.options)
        if options.get("shortcut") is not None and record.split != "train":
            options["shortcut"] = 0.0
        eye = render_phantom(self._seeds[record.id], self.size, **options)
        sample = {
            "image": eye.image, "label": record.label, "findings": record.findings.copy(),
            "vcdr": record.vcdr, "masks": dict(eye.masks) if self.load_masks else {},
            "meta": {"id": record.id, "eye": eye.eye, "source": self.name},
        }
        return _with_known_absent_masks(sample) if self.load_masks else sample
