"""The common shape of every data set: records read from labels, samples decoded on demand.

A data set module turns a published folder into a list of :class:`Record` (reading only label
files and directory listings, never decoding an image) and :class:`FundusDataset` turns a record
into a sample dict (``image``, ``label``, ``findings``, ``vcdr``, ``masks``, ``meta``: see
:func:`to_tensor_sample`). Bad files either raise an :mod:`xmed.errors` exception naming the file,
or, with ``on_error="skip"``, are skipped *and recorded* in :attr:`FundusDataset.skipped` (at
load time) or as a :class:`SkippedSample` that :func:`collate_samples` reports in the batch.

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("phantom", root="data/phantom")           # doctest: +SKIP
    >>> sample = ds[0]; sample["image"].shape                      # doctest: +SKIP
    torch.Size([3, 512, 512])
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from xmed.data.datasets.registry import registered_name
from xmed.data.io import read_image_reduced, read_mask
from xmed.errors import DatasetError, ImageReadError
from xmed.findings import FINDINGS

if TYPE_CHECKING:
    from xmed.data.preprocess import PixelNeed

OnError = Literal["raise", "skip"]
NAN = float("nan")
#: the published splits a record may belong to
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: the eyes a record may be, as harmonised
EYES: tuple[str, ...] = ("OD", "OS")

# the published spellings of a split and of an eye (:func:`normalise_split`, :func:`normalise_eye`)
_SPLITS = {
    "train": ("train", "training", "trainingset", "training400", "trainset", "tr"),
    "val": ("val", "valid", "validation", "validationset", "validation400", "dev", "va"),
    "test": ("test", "testing", "testset", "test400", "te"),
}
_SPLIT_LOOKUP = {alias: split for split, aliases in _SPLITS.items() for alias in aliases}

_EYES = {
    "od": "OD", "r": "OD", "right": "OD", "re": "OD",
    "os": "OS", "l": "OS", "left": "OS", "le": "OS",
}


def normalise_split(name: Any) -> str | None:
    """A published split name as ``"train"``, ``"val"`` or ``"test"`` (None if unrecognised).

    Case, separators and a trailing ``set``/``_set`` are ignored: ``Training400``,
    ``training_set``, ``REFUGE-Validation400`` and ``test`` are all understood.
    """
    if name is None:
        return None
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if key in _SPLIT_LOOKUP:
        return _SPLIT_LOOKUP[key]
    for prefix in ("refuge", "refuge1", "refuge2"):  # REFUGE-Validation400 and friends
        if key.startswith(prefix) and key[len(prefix):] in _SPLIT_LOOKUP:
            return _SPLIT_LOOKUP[key[len(prefix):]]
    return None


def normalise_eye(value: Any) -> str | None:
    """``"OD"`` (right) / ``"OS"`` (left) from the spellings data sets use, else None."""
    if value is None:
        return None
    return _EYES.get(str(value).strip().lower())


def accepted_spellings(field_name: str) -> str:
    """The spellings read for ``"split"`` or ``"eye"``, for messages.

    Example:
        >>> accepted_spellings("eye")
        'OD (or r, right, re), OS (or l, left, le); case is ignored'
    """
    if field_name == "split":
        table, note = _SPLITS, "case and separators are ignored"
    else:
        table = {eye: tuple(k for k, v in _EYES.items() if v == eye) for eye in ("OD", "OS")}
        note = "case is ignored"
    names = (f"{name} (or {', '.join(a for a in aliases if a != name.lower())})"
             for name, aliases in table.items())
    return f"{', '.join(names)}; {note}"



def cell_location(row: int | None, row_id: str | None = None, column: str | None = None) -> str:
    """How errors point at a cell: ``row 3 (id 'b'), column 'vcdr'`` (parts left out when unknown).

    Example:
        >>> cell_location(3, "b", "vcdr")
        "row 3 (id 'b'), column 'vcdr'"
    """
    parts = [f"row {row}" if row is not None else ""]
    if row_id is not None:
        parts[0] = f"{parts[0]} (id {row_id!r})" if parts[0] else f"id {row_id!r}"
    if column is not None:
        parts.append(f"column {column!r}")
    return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Origin:
    """Where a record was listed: a row of a label table, and the column each field came from.

    ``row`` is numbered as a spreadsheet or a text editor shows it (the header of a plain CSV
    is row 1; title rows above a workbook's header count too). ``columns`` maps a record field
    (``"id"``, ``"image"``, ``"label"``, ``"vcdr"``, ``"split"``, ``"eye"``, ``"patient"`` or a
    finding code) to its column; one mapping is shared by every row of a table. A ``"split"``
    or ``"patient"`` entry means the table gives every eye one, so an empty cell is an error
    (an empty eye is only unknown).
    """

    file: Path
    row: int
    columns: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Record:
    """One eye as listed by a data set's label files (nothing decoded yet).

    ``findings`` has one float per code of :data:`xmed.FINDINGS` (NaN where unknown);
    ``label`` is 0/1 or NaN when ungraded; ``patient`` groups eyes of one person for
    patient-level splits (None when the data set does not say); ``split`` is the published
    split when there is one; ``source`` is the data set's name; ``origin`` is the label-table
    row the record was read from (None for records listed from folders); ``mask_paths`` maps
    mask names to files.
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
    origin: Origin | None = None

    def __post_init__(self):
        self.image_path = Path(self.image_path)
        self.findings = np.asarray(self.findings, dtype=np.float32)
        if self.findings.shape != (len(FINDINGS),):
            raise ValueError(f"record {self.id}: findings must have {len(FINDINGS)} entries")


@dataclass
class Skip:
    """A file that was skipped, and why: listed in ``dataset.skipped`` when it failed as the data
    set was read (what ``inspect`` and the training log report), and returned by ``dataset[i]`` in
    place of a sample when ``on_error="skip"`` and decoding it failed (:data:`SkippedSample`)."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


#: What ``dataset[i]`` returns for a file that failed to decode (``on_error="skip"``): a :class:`Skip`.
SkippedSample = Skip


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


_GRADE_CELLS = {"0": 0.0, "1": 1.0, "": NAN}


class TableRow(dict):
    """One row of a label table: its cells by column name, plus the ``file`` and the ``row``
    number (as a spreadsheet or text editor shows it) that errors name.

    Example:
        >>> row = TableRow({"vcdr": "0.4"}, "labels.csv", 3)
        >>> row.number("vcdr"), row.where("vcdr", row_id="a")
        (0.4, "row 3 (id 'a'), column 'vcdr'")
    """

    def __init__(self, cells: Mapping[str, Any], file: str | os.PathLike, row: int):
        super().__init__(cells)
        self.file, self.row = Path(file), row

    def where(self, column: str | None = None, row_id: str | None = None) -> str:
        return cell_location(self.row, row_id, column)

    def number(self, column: str, row_id: str | None = None) -> float:
        """The cell as a float (empty -> NaN); garbage raises :class:`DatasetError` naming it."""
        return parse_float(self.get(column, ""), self.file, column, self.row, row_id)

    def grade(self, column: str, row_id: str | None = None) -> float:
        """The cell as a finding grade (0, 1 or NaN), checked before it is stored in float32
        (where 1e-300 would pass for 0); anything else raises naming the cell."""
        cell = self.get(column, "")
        if cell in _GRADE_CELLS:  # the common case, read fast (JustRAIGS has three million)
            return _GRADE_CELLS[cell]
        value = self.number(column, row_id)
        problem = grade_problem(value)
        if problem is not None:
            raise DatasetError(self.file, f"{self.where(column, row_id)}: {problem}")
        return value

    def origin(self, columns: Mapping[str, str]) -> Origin:
        return Origin(self.file, self.row, columns)


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut short for messages (a label cell can hold anything)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_text(path: str | os.PathLike) -> str:
    """A text label file: UTF-8 (with or without a BOM), or UTF-16 with its BOM.

    Any other encoding raises :class:`DatasetError` naming the file and the first byte that
    is not UTF-8, rather than guessing (a wrong guess silently renames files and classes).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(path, f"cannot read the file: {err.strerror or err}") from None
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        return data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(path, f"not {'UTF-16' if utf16 else 'UTF-8'} text (byte "
                                 f"{data[err.start]:#04x} at offset {err.start}); save the table "
                                 "as UTF-8 (e.g. Excel's 'CSV UTF-8')") from None


def read_csv_cells(
    path: str | os.PathLike, delimiter: str | None = None
) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV as ``(row number, stripped cells)``.

    The delimiter is the most frequent of comma, semicolon and tab in the first non-blank line
    unless given; quoted cells may span lines (the row number is the line the row starts on).
    """
    text = read_text(path)
    if delimiter is None:
        first = next((line for line in text.splitlines() if line.strip()), "")
        delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, line = [], 0
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            cells = [c.strip() for c in cells]
            if any(cells):
                rows.append((start, cells))
    except csv.Error as err:
        raise DatasetError(path, f"row {line + 1}: cannot read as CSV ({err})") from None
    return rows


def check_header(
    path: Path, header: Sequence[str], required: Sequence[str], also: Sequence[str] = (),
    header_row: int = 1,
) -> None:
    """Raise :class:`DatasetError` naming the file when a ``required`` column is missing or a
    column the reader uses (``required`` or ``also``) appears more than once."""
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(path, f"missing column(s) {', '.join(repr(c) for c in missing)}; "
                                 f"found {[c for c in header if c]}")
    twice = [c for c in dict.fromkeys((*required, *also)) if c and list(header).count(c) > 1]
    if twice:
        raise DatasetError(path, f"row {header_row} (the header): column(s) "
                                 f"{', '.join(repr(c) for c in twice)} appear more than once; "
                                 "keep one of each")


RowReport = Callable[[Path, str], None]


def raise_dataset_error(path: Path, reason: str) -> None:
    """The strict :data:`RowReport`: a bad row is a :class:`DatasetError`."""
    raise DatasetError(path, reason)


def read_csv_rows(
    path: str | os.PathLike,
    required: Sequence[str],
    delimiter: str | None = None,
    also: Sequence[str] = (),
    on_bad_row: RowReport = raise_dataset_error,
) -> list[TableRow]:
    """Read a CSV with a header into :class:`TableRow` dicts, checking its columns.

    ``required`` columns must be present; ``also`` names columns read when present. A
    missing or repeated column raises :class:`DatasetError` naming it and the file. A row with
    more non-empty cells than the header has columns is passed to ``on_bad_row(path, reason)``
    (e.g. :meth:`FundusDataset.skip_or_raise`) and left out; missing trailing cells are empty.
    The delimiter is sniffed (comma, semicolon or tab) unless given; see :func:`read_text`
    for the encodings read.

    Example:
        >>> import tempfile; folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "labels.csv").write_text("image;label\\na.png;1\\n")
        >>> rows = read_csv_rows(folder / "labels.csv", ["image", "label"])
        >>> rows[0], rows[0].row
        ({'image': 'a.png', 'label': '1'}, 2)
    """
    path = require_file(path)
    rows = read_csv_cells(path, delimiter)
    header_row, header = rows[0] if rows else (1, [])
    check_header(path, header, required, also, header_row)
    out = []
    for row, cells in rows[1:]:
        if any(cells[len(header):]):
            on_bad_row(path, f"row {row} has {len(cells)} cells but the header (row {header_row}) "
                             f"has {len(header)} columns; quote cells that hold the delimiter")
            continue
        out.append(TableRow({name: cells[j] if j < len(cells) else ""
                             for j, name in enumerate(header) if name}, path, row))
    return out


def parse_float(
    value: Any, path: str | os.PathLike, column: str, row: int | None = None,
    row_id: str | None = None,
) -> float:
    """A float from a label cell; empty cells become NaN, garbage raises naming file/row/column."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN", "NA")):
        return NAN
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(path, f"{cell_location(row, row_id, column)}: "
                                 f"cannot read {show(value)} as a number") from None


def label_problem(value: float) -> str | None:
    """Why ``value`` cannot be a diagnosis label, or None when it can (0, 1, NaN = ungraded)."""
    if math.isnan(value) or value in (0.0, 1.0):
        return None
    return f"{value:g} is not a diagnosis label (0, 1, or empty for ungraded)"


def grade_problem(value: float) -> str | None:
    """Why ``value`` cannot be a finding grade, or None when it can (0, 1, NaN = unknown)."""
    if math.isnan(value) or value in (0.0, 1.0):
        return None
    return f"{value:g} is not a finding grade (0, 1, or empty for unknown)"


def ratio_problem(value: float) -> str | None:
    """Why ``value`` cannot be a vertical cup-to-disc ratio, or None (``[0, 1]`` or NaN)."""
    if math.isnan(value) or 0.0 <= value <= 1.0:
        return None
    return f"{value:g} is outside [0, 1] (a cup-to-disc ratio; leave the cell empty when unknown)"


def file_exists(path: Path) -> bool:
    """``path.is_file()``, False (not an exception) for a name the system cannot look up
    (too long, say) — label cells can hold anything."""
    try:
        return path.is_file()
    except OSError:
        return False


# ----------------------------------------------------------------- record checks
def record_problems(
    records: Sequence[Record], root: str | os.PathLike, allow_outside_root: bool = False
) -> dict[int, tuple[str, str]]:
    """The first problem of each record that cannot be used, by index: ``(path, reason)``.

    Checked, in this order: a non-empty id; image and mask paths that a label table gave
    inside ``root`` (compared after resolving ``..``, not symlinks; not checked with
    ``allow_outside_root``, nor for files found by listing folders); the label,
    vCDR and finding values; the split and eye (a reader keeps the published text when it
    cannot harmonise it); a patient wherever the table gives every eye one; then duplicates
    among the records that passed: one id (compared ignoring case and surrounding spaces) or
    one image file listed twice. Duplicates that disagree on the label are all reported (no
    one can tell which is right); otherwise every listing after the first is.

    ``path`` is the label file when the record came from a table (the reason then starts with
    its row, id and column), else the image.

    Example:
        >>> a = Record("a", "/data/a.png", label=1.0); b = Record("A ", "/data/b.png", label=0.0)
        >>> record_problems([a, b], "/data")[1][1]
        "id 'A ', label: 0 here but 1 at id 'a' for the same id; fix or remove one of them"
    """
    root_abs = os.path.join(os.path.abspath(root), "")  # with a trailing separator
    grades = (np.stack([r.findings for r in records]) if records
              else np.zeros((0, len(FINDINGS)), np.float32))
    bad_grades = ~(np.isnan(grades) | (grades == 0) | (grades == 1))
    problems: dict[int, tuple[str, str]] = {}
    for i, record in enumerate(records):
        problem = _value_problem(record, root_abs, allow_outside_root, bad_grades[i])
        if problem is not None:
            problems[i] = _locate(record, *problem)
    for key in (_same_id, _same_image):
        sound = [i for i in range(len(records)) if i not in problems]
        problems.update(_duplicate_problems(records, sound, key))
    return problems


def _value_problem(
    record: Record, root: str, allow_outside_root: bool, bad_grades: np.ndarray
) -> tuple[str, str] | None:
    """``(field, problem)`` for the first field of ``record`` that cannot be used, or None."""
    columns = record.origin.columns if record.origin is not None else {}
    if not record.id.strip():
        return "id", "empty id"
    if record.origin is not None and not allow_outside_root:  # paths a table gave
        for name, path in (("image", record.image_path), *record.mask_paths.items()):
            resolved = os.path.abspath(path)
            if not resolved.startswith(root):
                return name, (f"{show(resolved, 200)} is outside the data set root "
                              f"{os.path.dirname(root)}; move it into the root or pass "
                              "allow_outside_root=True")
    for name, problem in (("label", label_problem(record.label)),
                          ("vcdr", ratio_problem(record.vcdr))):
        if problem is not None:
            return name, problem
    if bad_grades.any():
        code = FINDINGS[int(np.argmax(bad_grades))]
        return code, grade_problem(float(record.findings[FINDINGS.index(code)]))
    if record.split is None and "split" in columns:
        return "split", ("empty; every row needs a split (train, val or test), else the "
                         "published split is lost for every eye")
    for name, value, accepted in (("split", record.split, SPLITS), ("eye", record.eye, EYES)):
        if value is not None and value not in accepted:
            return name, f"unknown {name} {show(value)}; accepted: {accepted_spellings(name)}"
    if "patient" in columns and not record.patient:
        return "patient", ("empty; every row needs one (both eyes of a person share it, so that "
                           "a patient-level split keeps them together)")
    return None


def _locate(record: Record, field_name: str, problem: str) -> tuple[str, str]:
    """``(path, reason)`` naming the table, row, id and column of ``field_name`` in ``record``."""
    origin = record.origin
    if origin is None:
        return str(record.image_path), f"{cell_location(None, record.id)}, {field_name}: {problem}"
    column = origin.columns.get(field_name)
    where = cell_location(origin.row, record.id, column)
    return str(origin.file), f"{where}: {problem}" if column else f"{where}, {field_name}: {problem}"


def _reference(record: Record, seen_from: Record) -> str:
    """How a message in ``seen_from``'s table points at ``record``: its row (and its file when
    it is another one), or its image when it was listed from a folder."""
    origin = record.origin
    if origin is None:
        return cell_location(None, record.id) if seen_from.origin is None else str(record.image_path)
    where = cell_location(origin.row, record.id)
    if seen_from.origin is None or seen_from.origin.file != origin.file:
        return f"{origin.file.name} {where}"
    return where


def _same_id(record: Record) -> tuple[str, str]:
    return "id", record.id.strip().casefold()


def _same_image(record: Record) -> tuple[str, str]:
    return "image", os.path.abspath(record.image_path)


def _duplicate_problems(
    records: Sequence[Record], indices: Iterable[int], key: Callable[[Record], tuple[str, str]]
) -> dict[int, tuple[str, str]]:
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(key(records[i])[1], []).append(i)
    problems = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        field_name = key(records[members[0]])[0]
        what = "the same id" if field_name == "id" else "the same image file"
        labels = {_label_text(records[i].label) for i in members}
        if len(labels) > 1:
            for i in members:
                others = ", ".join(f"{_label_text(records[j].label)} at "
                                   f"{_reference(records[j], records[i])}"
                                   for j in members if j != i)
                problems[i] = _locate(records[i], "label",
                                      f"{_label_text(records[i].label)} here but {others} for "
                                      f"{what}; fix or remove one of them")
        else:
            first = records[members[0]]
            for i in members[1:]:
                problems[i] = _locate(records[i], field_name,
                                      f"{what} as {_reference(first, records[i])} "
                                      "(listed twice); remove one of them")
    return problems


def _label_text(label: float) -> str:
    return "ungraded" if math.isnan(label) else f"{label:g}"


class FundusDataset(Dataset):
    """Base class: subclasses implement :meth:`load_records`; this class does the rest.

    Args:
        root: the data set folder, as published.
        split: keep only records of this published split (None keeps all).
        transform: callable ``(sample_dict) -> sample_dict`` applied to numpy samples
            (see :mod:`xmed.data.transforms`); None converts to tensors unchanged.
        on_error: ``"raise"`` (default) or ``"skip"`` — skip and record unreadable files
            and unusable label rows.
        load_masks: decode the mask files listed by the data set.
        allow_outside_root: read images and masks that a label table places outside
            ``root`` (``../``, an absolute path elsewhere); refused by default, so that a table
            cannot point the reader at arbitrary files.

    Every listing goes through :meth:`validate_records` (:func:`record_problems`): a bad
    value, an unknown split or eye, a path outside the root or a duplicated eye or image
    raises :class:`DatasetError` naming the label file, row, id and column, or with
    ``on_error="skip"`` is left out and recorded in :attr:`skipped` with the same reason.

    Subclass contract: ``load_records(self) -> list[Record]`` using
    ``self.root``; call :meth:`skip_or_raise` for problems found while listing; give records
    read from a table their :class:`Origin` (:meth:`TableRow.origin`).
    """

    #: the registry key (:mod:`xmed.data.datasets.registry`), set when a registered class is
    #: defined; a class of one's own that is not registered may set it.
    name: ClassVar[str] = ""
    has_patient_ids: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        registered = registered_name(cls.__module__, cls.__qualname__)
        if registered is None:
            return
        if "name" in cls.__dict__:  # two places would drift apart: the registry names it
            raise TypeError(f"{cls.__qualname__} is registered as {registered!r} in "
                            "xmed.data.datasets.registry; remove its own name")
        cls.name = registered

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        transform: Callable[[dict], dict] | None = None,
        on_error: OnError = "raise",
        load_masks: bool = True,
        allow_outside_root: bool = False,
    ):
        self.root = require_dir(root)
        self.on_error = check_on_error(on_error)
        self.transform = transform
        self.load_masks = load_masks
        self.allow_outside_root = allow_outside_root
        self.skipped: list[Skip] = []
        records = self.validate_records(self.load_records())
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

    def records_from_rows(self, rows: Iterable[Any], make: Callable[[Any], Any]) -> list[Any]:
        """``make(row)`` for each table row, in order; a :class:`DatasetError` that ``make``
        raises for a row raises, or with ``on_error="skip"`` leaves that row out, recorded.
        ``make`` may return a record, any value to collect, or None to leave the row out."""
        out = []
        for row in rows:
            try:
                value = make(row)
            except DatasetError as err:
                self.skip_or_raise(err.path, err.reason)
                continue
            if value is not None:
                out.append(value)
        return out

    def validate_records(self, records: list[Record]) -> list[Record]:
        """The records :func:`record_problems` finds sound; each other one raises (the first)
        or, with ``on_error="skip"``, is recorded in :attr:`skipped` and left out."""
        problems = record_problems(records, self.root, self.allow_outside_root)
        for i in sorted(problems):
            self.skip_or_raise(*problems[i])
        return [r for i, r in enumerate(records) if i not in problems]

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

    def load(self, index: int, pixel_need: PixelNeed | None = None) -> dict | SkippedSample:
        """The decoded numpy sample ``index`` (decoded smaller as ``pixel_need`` allows: see
        :meth:`load_sample`), or a :class:`SkippedSample` when it cannot be read and
        ``on_error="skip"``."""
        record = self.records[index]
        try:
            # without a need, called as data sets that decode only whole photographs define it
            return self.load_sample(record) if pixel_need is None else self.load_sample(record, pixel_need)
        except (ImageReadError, DatasetError) as err:
            if self.on_error == "skip":
                return SkippedSample(err.path, err.reason)
            raise

    def load_sample(self, record: Record, pixel_need: PixelNeed | None = None) -> dict:
        """Decode one record into a numpy sample (image H×W×3 uint8, masks H×W bool).

        With ``pixel_need``, a JPEG photograph is decoded at 1/2, 1/4 or 1/8 of its size where
        that keeps what the need asks (:meth:`PixelNeed.reduction`), and ``meta["decode_reduction"]``
        says by what factor; not when masks are read, which must match the photograph pixel for
        pixel."""
        masks_to_read = record.mask_paths if self.load_masks else {}
        reduction = pixel_need.reduction if pixel_need is not None and not masks_to_read else None
        image, factor = read_image_reduced(record.image_path, reduction)
        masks = {}
        for name, path in masks_to_read.items():
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
            "meta": {"id": record.id, "eye": record.eye or "", "source": record.source or self.name,
                     **({"decode_reduction": factor} if factor > 1 else {})},
        }

    def decode_mask(self, name: str, path: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Read one mask file; subclasses with multi-level masks (cup/disc in one file) override."""
        mask = read_mask(path)
        if mask.shape != tuple(shape):
            raise DatasetError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                     f"{shape[1]}x{shape[0]}")
        return {name: mask > 0}

    # ----------------------------------------------------------------- helpers
    def _drop_missing_images(self, records: list[Record]) -> list[Record]:
        kept = []
        for record in records:
            if file_exists(record.image_path):
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


def to_tensor_sample(sample: dict, scale_uint8: bool = True) -> dict:
    """Numpy sample -> tensor sample: ``image`` float 3×H×W in [0, 1] (unless already a tensor;
    uint8 3×H×W kept as it is with ``scale_uint8=False``), ``label`` and ``vcdr`` float scalars
    (NaN: unknown), ``findings`` float 10-vector (NaN: unknown), ``masks`` name -> bool H×W,
    ``meta`` a dict (``id``, ``eye``, ...)."""
    image = sample["image"]
    if isinstance(image, np.ndarray):  # H×W×3; uint8 is scaled to [0, 1] (or kept), floats are kept
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if image.dtype != np.uint8:
            image = tensor.float()
        else:
            image = tensor.float().div_(255.0) if scale_uint8 else tensor.contiguous()
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
    # default_collate stacks into shared memory inside a loader worker (plain torch.stack
    # elsewhere): the batch then reaches the main process without being copied once more
    out["image"] = default_collate([s["image"] for s in samples])
    for key in ("label", "findings", "vcdr"):
        out[key] = default_collate([s[key] for s in samples])
    names = sorted({k for s in samples for k in s["masks"]})
    hw = out["image"].shape[-2:]
    out["masks"] = {
        n: default_collate([s["masks"].get(n, torch.zeros(hw, dtype=torch.bool)) for s in samples])
        for n in names
    }
    out["mask_valid"] = {n: torch.tensor([n in s["masks"] for s in samples]) for n in names}
    out["meta"] = {k: [s["meta"].get(k, "") for s in samples] for k in ("id", "eye", "source")}
    return out
