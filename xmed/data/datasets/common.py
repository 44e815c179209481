"""Helpers shared by the public data set readers: label tables, folder listings, harmonisation.

Everything here reads label files (CSV, xlsx) and directory listings only — never an image —
so a data set can be listed, counted and split without decoding a single photograph.

Example:
    >>> from xmed.data.datasets.common import normalise_split, normalise_eye, binary_label
    >>> normalise_split("training_set"), normalise_split("Validation400"), normalise_eye("left")
    ('train', 'val', 'OS')
    >>> published_split("trian")        # kept as published, so validation can name it
    'trian'
    >>> binary_label("RG", {"RG": 1.0, "NRG": 0.0})
    1.0
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from xmed.data.datasets.base import (  # the split and eye spellings are base's, used here and by the readers
    NAN, FundusDataset, Record, RowReport, TableRow, check_header, file_exists, normalise_eye, normalise_split,
    raise_dataset_error, read_csv_cells, read_csv_rows, require_dir, require_file, show,
)
from xmed.data.io import IMAGE_EXTENSIONS, read_mask  # noqa: F401  (IMAGE_EXTENSIONS re-exported for the readers)
from xmed.errors import DatasetError
from xmed.findings import FINDINGS

# ---------------------------------------------------------------- harmonisation
def published_split(value: Any) -> str | None:
    """A split cell harmonised by :func:`normalise_split`; an empty cell is None, and text it
    does not know is kept as published, for validation to report with its row and column."""
    text = cell_str(value)
    return (normalise_split(text) or text) if text else None


def published_eye(value: Any) -> str | None:
    """An eye cell harmonised by :func:`normalise_eye` (None when empty; unknown text kept)."""
    text = cell_str(value)
    return (normalise_eye(text) or text) if text else None


def binary_label(value: Any, mapping: Mapping[Any, float]) -> float | None:
    """Map a published class value to 0/1/NaN; None when the value is not in ``mapping``.

    String keys match case-insensitively and numbers match by value (``1.0`` matches ``1``),
    so ``mapping`` can mix both. An empty cell is NaN (ungraded), never a fake 0.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return NAN
    if isinstance(value, float) and math.isnan(value):
        return NAN
    text = str(value).strip()
    lowered = {str(k).strip().lower(): v for k, v in mapping.items()}
    if text.lower() in lowered:
        return float(lowered[text.lower()])
    try:
        number = float(text)
    except ValueError:
        return None
    for key, label in mapping.items():
        try:
            if float(key) == number:
                return float(label)
        except (TypeError, ValueError):
            continue
    return None


#: 0/1 labels as integers, floats or words
ZERO_ONE = {0: 0.0, 1: 1.0}
#: the Rotterdam EyePACS classes (AIROGS, JustRAIGS): referable / no referable glaucoma
RG_NRG = {"RG": 1.0, "NRG": 0.0}


# ---------------------------------------------------------------- label tables
def read_xlsx_rows(
    path: str | os.PathLike,
    required: Sequence[str],
    sheet: str | None = None,
    search_rows: int = 10,
    any_of: Sequence[str] = (),
) -> list[TableRow]:
    """Read an xlsx sheet into :class:`TableRow` dicts keyed by its header, checking the
    required columns.

    The header is the first row (within ``search_rows``) that holds every ``required`` column
    (and, when ``any_of`` is given, at least one of those), so title rows above it are
    tolerated. Rows below it that are entirely empty are left out; each row keeps its sheet
    row number; string cells are stripped, empty cells are ``""``. A missing column, or one
    of those asked for appearing twice, raises :class:`DatasetError` naming it and the file.
    """
    path = require_file(path)
    rows = _xlsx_matrix(path, sheet)
    header_index, header = None, []
    for i, row in enumerate(rows[:search_rows]):
        names = [_cell_text(c) for c in row]
        if all(col in names for col in required) and (
                not any_of or any(col in names for col in any_of)):
            header_index, header = i, names
            break
    if header_index is None:
        # name what is missing against the row that looks most like a header
        candidates = [[_cell_text(c) for c in r] for r in rows[:search_rows]] or [[]]
        best = max(candidates, key=lambda names: sum(c in names for c in (*required, *any_of)))
        missing = [repr(c) for c in required if c not in best]
        if any_of and not any(c in best for c in any_of):
            missing.append(" or ".join(repr(c) for c in any_of))
        raise DatasetError(path, f"missing column(s) {', '.join(missing)}; "
                                 f"found {[c for c in best if c]}")
    check_header(path, header, required, any_of, header_row=header_index + 1)
    out = []
    for i, row in enumerate(rows[header_index + 1:], start=header_index + 2):
        values = [_cell_value(c) for c in row]
        if all(v == "" for v in values):
            continue
        out.append(TableRow({name: (values[j] if j < len(values) else "")
                             for j, name in enumerate(header) if name}, path, i))
    return out


def read_label_table(
    path: str | os.PathLike,
    required: Sequence[str],
    delimiter: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    any_of: Sequence[str] = (),
    on_bad_row: RowReport = raise_dataset_error,
) -> list[TableRow]:
    """Read a CSV, xlsx or legacy xls label table into dicts.

    ``header=False`` with ``names`` reads a table whose first row is already data (REFUGE2's
    ``task1.xls``). ``any_of`` names alternative columns of which one must be present.
    Missing columns and unreadable formats raise :class:`DatasetError` naming the file. Rows
    are :class:`~xmed.data.datasets.base.TableRow` dicts that know their row number; a CSV row
    with too many cells goes to ``on_bad_row`` (see :func:`read_csv_rows`).
    """
    path = require_file(path)
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        if header:
            return read_xlsx_rows(path, required, any_of=any_of)
        return _headerless(enumerate(_xlsx_matrix(path), start=1), names or required, path)
    if suffix == ".xls":
        rows = _read_xls(path, required, header, names)
    elif header:
        rows = read_csv_rows(path, required, delimiter=delimiter, on_bad_row=on_bad_row)
    else:
        rows = None
    if rows is not None:
        if header and any_of and rows and not any(c in rows[0] for c in any_of):
            raise DatasetError(path, f"missing column {' or '.join(map(repr, any_of))}; "
                                     f"found {list(rows[0])}")
        return rows
    return _headerless(read_csv_cells(path, delimiter or ","), names or required, path)


def _xlsx_matrix(path: Path, sheet: str | None = None) -> list[list[Any]]:
    """All cell values of one worksheet (the first unless ``sheet`` names one)."""
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises several types for a broken file
        raise DatasetError(path, f"cannot read the workbook: {err}") from None
    try:
        if sheet is not None and sheet not in workbook.sheetnames:
            raise DatasetError(path, f"no worksheet {sheet!r}; found {workbook.sheetnames}")
        worksheet = workbook[sheet] if sheet is not None else workbook.worksheets[0]
        return [list(r) for r in worksheet.iter_rows(values_only=True)]
    except DatasetError:
        raise
    except Exception as err:  # read-only mode parses the sheet while iterating
        raise DatasetError(path, f"cannot read the worksheet: {err}") from None
    finally:
        workbook.close()


def _read_xls(path: Path, required, header, names) -> list[TableRow]:
    import xlrd

    try:
        sheet = xlrd.open_workbook(str(path)).sheet_by_index(0)
    except Exception as err:  # xlrd raises several types for a broken file
        raise DatasetError(path, f"cannot read as a legacy Excel (.xls) workbook: {err}") from None
    matrix = list(enumerate((sheet.row_values(i) for i in range(sheet.nrows)), start=1))
    if not header:
        return _headerless(matrix, names or required, path)
    head = [_cell_text(c) for c in matrix[0][1]] if matrix else []
    check_header(path, head, required)
    return [TableRow({h: _cell_value(v) for h, v in zip(head, row) if h}, path, i)
            for i, row in matrix[1:] if any(_cell_value(v) != "" for v in row)]


def _headerless(numbered_rows, names, path) -> list[TableRow]:
    """Rows of a table without a header, as ``(row number, cells)``, named by ``names``."""
    out = []
    for i, row in numbered_rows:
        values = [_cell_value(c) for c in row]
        if all(v == "" for v in values):
            continue
        if len(values) < len(names):
            raise DatasetError(path, f"row {i} has {len(values)} cell(s); "
                                     f"expected {len(names)} ({', '.join(names)})")
        out.append(TableRow(dict(zip(names, values)), path, i))
    return out


def _cell_text(cell: Any) -> str:
    return "" if cell is None else str(cell).strip()


def _cell_value(cell: Any) -> Any:
    if cell is None:
        return ""
    if isinstance(cell, str):
        return cell.strip()
    return cell


def cell_str(value: Any) -> str:
    """A label cell as text: integral floats from spreadsheets lose their ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


# ---------------------------------------------------------------- listings
def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted; hidden files left out), by extension only."""
    folder = Path(folder)
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
                  and p.is_file())


def index_by_stem(paths: Iterable[Path]) -> dict[str, Path]:
    """``{file stem: path}``; the first of several files with one stem wins (sorted order)."""
    index: dict[str, Path] = {}
    for p in sorted(paths):
        index.setdefault(p.stem, p)
    return index


def numbered_image_folders(root: Path, folders: Sequence[str] | None = None) -> list[Path]:
    """The ``0/ 1/ … 5/`` image folders of the Rotterdam EyePACS releases (AIROGS, JustRAIGS).

    With ``folders=None`` every sub-folder whose name is a number is used; a named folder that
    is missing, or no numbered folder at all, raises :class:`DatasetError` naming the root.
    """
    if folders is None:
        found = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                       key=lambda p: int(p.name))
        if not found:
            raise DatasetError(root, "no numbered image folders (0/, 1/, … 5/) found")
        return found
    return [require_dir(root / name, "image folder") for name in folders]


def index_numbered_folders(
    root: Path, folders: Sequence[str] | None = None
) -> tuple[dict[str, Path], list[str]]:
    """``({image stem: path}, folder names)`` over the numbered image folders (a listing)."""
    paths: list[Path] = []
    found = numbered_image_folders(root, folders)
    for folder in found:
        paths.extend(list_images(folder))
    return index_by_stem(paths), [f.name for f in found]


def relative_id(path: Path, root: Path) -> str:
    """A stable id from a path: relative to ``root``, POSIX separators, extension dropped."""
    return path.relative_to(root).with_suffix("").as_posix()


# ---------------------------------------------------------------- grouping
class PatientGroups:
    """Union-find over eye ids: eyes linked as fellows end up in one patient group.

    Example:
        >>> g = PatientGroups(); g.link("E2", "E1"); g.link("E3", "")
        >>> g.group("E2"), g.group("E1"), g.group("E3")
        ('E1', 'E1', 'E3')
    """

    def __init__(self):
        self._parent: dict[str, str] = {}

    def _find(self, key: str) -> str:
        root = self._parent.setdefault(key, key)
        while self._parent[root] != root:
            root = self._parent[root]
        while key != root:  # path compression, iteratively (no recursion limit)
            self._parent[key], key = root, self._parent[key]
        return root

    def link(self, a: str, b: str | None) -> None:
        ra = self._find(a)
        if b:
            rb = self._find(b)
            if ra != rb:  # the smaller id names the group, so it does not depend on row order
                lo, hi = sorted((ra, rb))
                self._parent[hi] = lo

    def group(self, key: str) -> str:
        return self._find(key)


# ---------------------------------------------------------------- masks
def decode_levels(
    levels: np.ndarray,
    classes: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Boolean masks from a multi-level mask: ``classes`` maps a mask name to a level test.

    A test is a set of levels or a callable ``levels -> bool array``; e.g. ORIGA's
    ``{"disc": {1, 2}, "cup": {2}}`` or REFUGE's ``{"disc": lambda m: m <= 128, ...}``.
    """
    out = {}
    for name, test in classes.items():
        out[name] = np.asarray(test(levels) if callable(test) else np.isin(levels, list(test)),
                               dtype=bool)
    return out


def check_mask_shape(mask: np.ndarray, path: Path, shape: tuple[int, int]) -> None:
    """Raise :class:`DatasetError` naming ``path`` when a mask and its image differ in size."""
    if mask.shape[:2] != tuple(shape):
        raise DatasetError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                 f"{shape[1]}x{shape[0]}")


def findings_vector(values: Mapping[str, float]) -> np.ndarray:
    """A :data:`xmed.FINDINGS`-ordered float vector, NaN for codes missing from ``values``."""
    return np.array([values.get(code, NAN) for code in FINDINGS], dtype=np.float32)


def read_level_mask(
    path: Path, shape: tuple[int, int], classes: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Read a multi-level mask file (at ``__getitem__`` time) and split it into named masks."""
    levels = read_mask(path)
    check_mask_shape(levels, path, shape)
    return decode_levels(levels, classes)


# ---------------------------------------------------------------- shared readers
#: 0 = background, 1 = neuroretinal rim, 2 = cup (ORIGA and G1020 masks)
DISC_CUP_INDEX_LEVELS = {"disc": {1, 2}, "cup": {2}}


def read_indexed_csv(
    ds: FundusDataset,
    csv_path: Path,
    name_column: str,
    label_column: str,
    image_dir: Path,
    mask_dir: Path,
    extra_columns: Mapping[str, str] | None = None,
) -> list[tuple[TableRow, Record]]:
    """Rows of a CSV listing one image per row with a 0/1 label, as ``(row, Record)`` pairs.

    Shared by ORIGA and G1020 (same bundle, same mask convention); ``extra_columns`` maps
    further record fields to their (required) columns, for the records' :class:`Origin`. An
    empty file name or an unknown label value is reported through
    :meth:`~FundusDataset.skip_or_raise`.
    """
    extra = dict(extra_columns or {})
    columns = {"id": name_column, "image": name_column, "label": label_column, **extra}
    rows = read_csv_rows(csv_path, [name_column, label_column, *extra.values()],
                         on_bad_row=ds.skip_or_raise)

    def pair(row: TableRow) -> tuple[TableRow, Record]:
        filename = row[name_column]
        if not filename:
            raise DatasetError(csv_path, f"{row.where(name_column)}: empty file name")
        label = label_cell(row, label_column, ZERO_ONE, "0 or 1", row_id=filename)
        stem = Path(filename).stem or filename
        mask = mask_dir / f"{stem}.png"
        return row, Record(id=stem, image_path=image_dir / filename, label=label,
                           source=ds.name, origin=row.origin(columns),
                           mask_paths={"disc_cup": mask} if file_exists(mask) else {})

    return ds.records_from_rows(rows, pair)


def label_cell(
    row: TableRow, column: str, mapping: Mapping[Any, float], expected: str,
    row_id: str | None = None,
) -> float:
    """The diagnosis in ``row[column]`` through ``mapping`` (:func:`binary_label`); a value
    the mapping does not know raises :class:`DatasetError` naming the file, row, id, column
    and the ``expected`` values.

    Example:
        >>> label_cell(TableRow({"class": "RG"}, "labels.csv", 2), "class", RG_NRG, "RG or NRG")
        1.0
    """
    label = binary_label(row.get(column), mapping)
    if label is None:
        raise DatasetError(row.file, f"{row.where(column, row_id)}: unknown class value "
                                     f"{show(row.get(column))} (expected {expected})")
    return label


def missing_in_folders(
    root: Path, image_id: str, row: TableRow, folders: Sequence[str]
) -> DatasetError:
    """The error for a label row whose image is in none of the numbered image folders."""
    return DatasetError(root / f"{image_id}.*",
                        f"image listed for {image_id!r} at {row.file.name} row {row.row} is "
                        f"missing (looked in {', '.join(f + '/' for f in folders)})")
