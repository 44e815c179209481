"""The common shape of every data set: records read from labels, samples decoded on demand.

A data set module turns a published folder into a list of :class:`Record` (reading only label
files and directory listings, never decoding an image) and :class:`FundusDataset` turns a record
into DESIGN's Sample dict. Bad files either raise an :mod:`xmed.errors` exception naming the file,
or, with ``on_error="skip"``, are skipped *and recorded* in :attr:`FundusDataset.skipped` (at
load time) or as a :class:`SkippedSample` that :func:`collate_samples` reports in the batch.

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("phantom", root="data/phantom")           # doctest: +SKIP
    >>> sample = ds[0]; sample["image"].shape                      # doctest: +SKIP
    torch.Size([3, 512, 512])
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from xmed.errors import DatasetError, ImageReadError
from xmed.findings import FINDINGS

OnError = Literal["raise", "skip"]
NAN = float("nan")


@dataclass
class Record:
    """One eye as listed by a data set's label files (nothing decoded yet).

    ``findings`` has one float per code of :data:`xmed.FINDINGS` (NaN where unknown);
    ``label`` is 0/1 or NaN when ungraded; ``patient`` groups eyes of one person for
    patient-level splits (None when the data set does not say); ``split`` is the published
    split when there is one; ``mask_paths`` maps mask names to files.
    """

    id: str
    image_path: Path
    label: float = NAN
    findings: np.ndarray = field(default_factory=lambda: np.full(len(FINDINGS), NAN, np.float32))
    vcdr: float = NAN
    eye: str | None = None
    patient: str | None = None
    split: str | None = None
    source: str = ""
    mask_paths: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self):
        self.image_path = Path(self.image_path)
        self.findings = np.asarray(self.findings, dtype=np.float32)
        if self.findings.shape != (len(FINDINGS),):
            raise ValueError(f"record {self.id}: findings must have {len(FINDINGS)} entries")


@dataclass
class Skip:
    """A file that was skipped, and why (what ``inspect`` and the training log report)."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class SkippedSample:
    """Returned by ``dataset[i]`` in place of a sample when ``on_error="skip"`` and it failed."""

    path: str
    reason: str


def check_on_error(on_error: str) -> OnError:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error  # type: ignore[return-value]


def require_dir(path: str | os.PathLike, what: str = "data set root") -> Path:
    """Return ``path`` as a Path, raising :class:`DatasetError` naming it if it is not a folder."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, f"{what} does not exist")
    if not path.is_dir():
        raise DatasetError(path, f"{what} is not a folder")
    return path


def require_file(path: str | os.PathLike, what: str = "label file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, f"{what} does not exist")
    return path


def read_csv_rows(
    path: str | os.PathLike, required: Sequence[str], delimiter: str | None = None
) -> list[dict[str, str]]:
    """Read a CSV into dicts, checking that every ``required`` column is present.

    The delimiter is sniffed (comma or semicolon) unless given. A missing column raises
    :class:`DatasetError` naming the column and the file.
    """
    path = require_file(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    if delimiter is None:
        first = text.splitlines()[0] if text else ""
        delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DatasetError(path, f"missing column(s) {', '.join(repr(c) for c in missing)}; "
                                 f"found {columns}")
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def parse_float(value: Any, path: str | os.PathLike, column: str, row_id: str) -> float:
    """A float from a label cell; empty cells become NaN, garbage raises naming file/column/row."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN", "NA")):
        return NAN
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DatasetError(path, f"column {column!r}, row {row_id!r}: "
                                 f"cannot read {value!r} as a number") from None


class FundusDataset(Dataset):
    """Base class: subclasses implement :meth:`load_records`; this class does the rest.

    Args:
        root: the data set folder, as published.
        split: keep only records of this published split (None keeps all).
        transform: callable ``(sample_dict) -> sample_dict`` applied to numpy samples
            (see :mod:`xmed.data.transforms`); None converts to tensors unchanged.
        on_error: ``"raise"`` (default) or ``"skip"`` — skip and record unreadable files.
        load_masks: decode the mask files listed by the data set.

    Subclass contract: ``name`` (registry key), ``load_records(self) -> list[Record]`` using
    ``self.root``; call :meth:`skip_or_raise` for problems found while listing.
    """

    name: ClassVar[str] = ""
    has_patient_ids: ClassVar[bool] = False

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        transform: Callable[[dict], dict] | None = None,
        on_error: OnError = "raise",
        load_masks: bool = True,
    ):
        self.root = require_dir(root)
        self.on_error = check_on_error(on_error)
        self.transform = transform
        self.load_masks = load_masks
        self.skipped: list[Skip] = []
        records = self.load_records()
        if split is not None:
            records = [r for r in records if r.split == split]
        self.records: list[Record] = self._drop_missing_images(records)

    # ----------------------------------------------------------------- subclass API
    def load_records(self) -> list[Record]:
        raise NotImplementedError

    def skip_or_raise(self, path: str | os.PathLike, reason: str) -> None:
        """Record a skip when ``on_error="skip"``, else raise :class:`DatasetError`."""
        if self.on_error == "skip":
            self.skipped.append(Skip(str(path), reason))
        else:
            raise DatasetError(path, reason)

    # ----------------------------------------------------------------- Dataset API
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict | SkippedSample:
        return self.get(index, self.transform)

    def get(self, index: int, transform: Callable[[dict], dict] | None = None) -> dict | SkippedSample:
        """Sample ``index`` through ``transform`` (so that splits can share one listing)."""
        sample = self.load(index)
        if isinstance(sample, SkippedSample):
            return sample
        if transform is not None:
            sample = transform(sample)
        return to_tensor_sample(sample)

    def load(self, index: int) -> dict | SkippedSample:
        """The decoded numpy sample ``index``, or a :class:`SkippedSample` when it cannot be read
        and ``on_error="skip"``."""
        try:
            return self.load_sample(self.records[index])
        except (ImageReadError, DatasetError) as err:
            if self.on_error == "skip":
                return SkippedSample(err.path, err.reason)
            raise

    def load_sample(self, record: Record) -> dict:
        """Decode one record into a numpy sample (image H×W×3 uint8, masks H×W bool)."""
        from xmed.data.io import read_image

        image = read_image(record.image_path)
        masks = {}
        if self.load_masks:
            for name, path in record.mask_paths.items():
                masks.update(self.decode_mask(name, path, image.shape[:2]))
        vcdr = record.vcdr
        if math.isnan(vcdr) and "disc" in masks and "cup" in masks:
            vcdr = vcdr_from_masks(masks["disc"], masks["cup"])
        return {
            "image": image,
            "label": record.label,
            "findings": record.findings.copy(),
            "vcdr": vcdr,
            "masks": masks,
            "meta": {"id": record.id, "eye": record.eye or "", "source": record.source or self.name},
        }

    def decode_mask(self, name: str, path: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Read one mask file; subclasses with multi-level masks (cup/disc in one file) override."""
        from xmed.data.io import read_mask

        mask = read_mask(path)
        if mask.shape != tuple(shape):
            raise DatasetError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                     f"{shape[1]}x{shape[0]}")
        return {name: mask > 0}

    # ----------------------------------------------------------------- helpers
    def _drop_missing_images(self, records: list[Record]) -> list[Record]:
        kept = []
        for record in records:
            if record.image_path.is_file():
                kept.append(record)
            else:
                self.skip_or_raise(record.image_path, f"image listed for {record.id!r} is missing")
        return kept

    def labels(self) -> np.ndarray:
        """Diagnosis labels of all records (NaN = ungraded), without decoding any image."""
        return np.array([r.label for r in self.records], dtype=np.float32)

    def groups(self) -> list[str]:
        """Patient (or, when unknown, eye) identifiers for patient-level splits."""
        return [r.patient or r.id for r in self.records]


def vcdr_from_masks(disc: np.ndarray, cup: np.ndarray) -> float:
    """Vertical cup-to-disc ratio measured from masks: the cup's vertical extent (rows it
    spans) over the disc's. NaN when the disc mask is empty.

    Data sets that publish disc/cup masks but no vCDR get it measured this way.

    Example:
        >>> disc = np.zeros((10, 10), bool); disc[1:9, 2:8] = True
        >>> cup = np.zeros((10, 10), bool); cup[3:7, 4:6] = True
        >>> vcdr_from_masks(disc, cup)
        0.5
    """
    disc_rows = int(np.asarray(disc).any(1).sum())
    if disc_rows == 0:
        return NAN
    return int(np.asarray(cup).any(1).sum()) / disc_rows


def to_tensor_sample(sample: dict) -> dict:
    """Numpy sample -> DESIGN's Sample: image float 3×H×W in [0, 1] (unless already a tensor)."""
    image = sample["image"]
    if isinstance(image, np.ndarray):  # H×W×3; uint8 is scaled to [0, 1], floats are kept
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        image = tensor.float().div_(255.0) if image.dtype == np.uint8 else tensor.float()
    masks = {k: torch.as_tensor(np.ascontiguousarray(v)).bool() if not torch.is_tensor(v) else v.bool()
             for k, v in sample.get("masks", {}).items()}
    return {
        "image": image,
        "label": torch.tensor(float(sample["label"]), dtype=torch.float32),
        "findings": torch.as_tensor(np.asarray(sample["findings"], dtype=np.float32)),
        "vcdr": torch.tensor(float(sample["vcdr"]), dtype=torch.float32),
        "masks": masks,
        "meta": dict(sample["meta"]),
    }


def collate_samples(batch: Iterable[dict | SkippedSample]) -> dict:
    """Stack Sample dicts; report skipped ones under ``"skipped"`` instead of dropping them.

    Masks present in only some samples are stacked with zeros elsewhere, and
    ``mask_valid[name]`` (B bool) says which samples actually had that mask.
    """
    samples, skipped = [], []
    for item in batch:
        if isinstance(item, SkippedSample):
            skipped.append({"path": item.path, "reason": item.reason})
        else:
            samples.append(item)
    out: dict[str, Any] = {"skipped": skipped, "size": len(samples)}
    if not samples:
        return out
    out["image"] = torch.stack([s["image"] for s in samples])
    for key in ("label", "findings", "vcdr"):
        out[key] = torch.stack([s[key] for s in samples])
    names = sorted({k for s in samples for k in s["masks"]})
    hw = out["image"].shape[-2:]
    out["masks"] = {
        n: torch.stack([s["masks"].get(n, torch.zeros(hw, dtype=torch.bool)) for s in samples])
        for n in names
    }
    out["mask_valid"] = {n: torch.tensor([n in s["masks"] for s in samples]) for n in names}
    out["meta"] = {k: [s["meta"].get(k, "") for s in samples] for k in ("id", "eye", "source")}
    return out
