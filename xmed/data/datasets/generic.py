"""Readers for data a user brings: a labelled CSV, class folders, or a tree of DICOM files.

Not a published data set, so no citation; the layouts are the common ones, every column and
folder name is an argument.

:class:`CsvDataset` (registry ``csv``)::

    root/
      labels.csv          image, label[, eye, patient, vcdr, split, ANRS, …, LC]
      images/…            paths in the ``image`` column are relative to ``root / image_dir``

:class:`ImageFolderDataset` (registry ``image_folder``)::

    root/{glaucoma,normal}/*.png                  or
    root/{train,val,test}/{glaucoma,normal}/*.png

:class:`PhotoFolderDataset` (registry ``photo_folder``; what ``xmed-predict`` screens)::

    root/**/*.{jpg,png,…,dcm}   (any depth; photographs and DICOM files together, no labels)

:class:`DicomFolderDataset` (registry ``dicom_folder``)::

    root/**/*.dcm          (any depth; files with the DICM preamble count too)
    root/labels.csv        optional: file, label  (keyed by path relative to root, or file name)

The three folder readers list a folder one way (:func:`xmed.data.folders.walk_folder`): every
entry below ``root`` becomes a record or a skip that says why (not an image, unreadable folder,
symbolic link loop, FIFO…), and a DICOM file is never named by its file name.

Harmonisation: labels are read as 0/1 or as the usual words (``glaucoma``/``normal``,
``RG``/``NRG``, ``positive``/``negative``, …) — see :data:`LABEL_WORDS`; ``suspect``, ``-1``
and empty cells give NaN (ungraded), unknown values are reported. Finding columns are those
named by a code of :data:`xmed.FINDINGS` (empty = NaN). Eyes are normalised to OD/OS and
splits to train/val/test. DICOM eyes come from Image Laterality (0020,0062) or Laterality
(0020,0060), read from the header only (``stop_before_pixels=True``); DICOM ids and patient
groups are salted pseudonyms (as :func:`xmed.data.read_dicom` makes them), never the
identifiers in the file.

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("csv", root="/data/mine", csv="labels.csv", image_column="file",
    ...                  label_column="diagnosis", eye_column="laterality")   # doctest: +SKIP
    >>> ds = get_dataset("image_folder", root="/data/folders")               # doctest: +SKIP
    >>> ds = get_dataset("dicom_folder", root="/data/pacs_export")           # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Sequence

from xmed.data.datasets.base import (
    NAN, FundusDataset, Record, Skip, SkippedSample, TableRow, read_csv_rows, require_file,
)
from xmed.data.datasets.common import (
    IMAGE_EXTENSIONS, findings_vector, label_cell, normalise_eye, normalise_split, published_eye, published_split,
)
from xmed.data.folders import DICOM, KIND_NAMES, PHOTO, FolderEntry, walk_folder
from xmed.data.io import DICOM_SUFFIXES, dicom_pseudonym
from xmed.errors import DatasetError, ImageReadError, InputError
from xmed.findings import FINDINGS

if TYPE_CHECKING:
    from xmed.data.preprocess import PixelNeed

#: label cells and class-folder names understood by default (compared case-insensitively)
LABEL_WORDS: dict[Any, float] = {
    0: 0.0, 1: 1.0, -1: NAN,
    "normal": 0.0, "healthy": 0.0, "non-glaucoma": 0.0, "nonglaucoma": 0.0, "no_glaucoma": 0.0,
    "nrg": 0.0, "negative": 0.0, "neg": 0.0, "no": 0.0, "n": 0.0,
    "glaucoma": 1.0, "glaucomatous": 1.0, "rg": 1.0, "positive": 1.0, "pos": 1.0, "yes": 1.0,
    "g": 1.0,
    "suspect": NAN, "suspects": NAN, "glaucoma_suspect": NAN, "u": NAN, "ungradable": NAN,
}


class CsvDataset(FundusDataset):
    """Any CSV that lists one image per row.

    Args:
        root: the data folder.
        csv: the label file, relative to ``root`` (or absolute).
        image_column: column with the image path, relative to ``root / image_dir``.
        label_column: column with the diagnosis (None: every label is NaN).
        eye_column, patient_column, vcdr_column, split_column, id_column: optional columns
            (``id`` defaults to the image path without its extension).
        finding_columns: ``{code: column}``; None takes every column named by a finding code.
        image_dir: folder the image paths are relative to, relative to ``root``.
        labels: cell value -> 0/1/NaN (default :data:`LABEL_WORDS`).
        delimiter: CSV delimiter (default: sniffed, comma, semicolon or tab).
        allow_outside_root: read images the CSV places outside ``root`` (``../x.png``, an
            absolute path elsewhere). Off by default: such a row raises
            :class:`~xmed.errors.DatasetError` naming the CSV and the row (or is skipped and
            recorded with ``on_error="skip"``), so that a label table cannot point the reader at
            arbitrary files. Paths are compared after resolving ``..`` but not symlinks: an
            image folder linked into ``root`` is read as inside it.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.

    Every row is checked (see :func:`~xmed.data.datasets.base.record_problems`): label 0, 1
    or ungraded; vCDR in [0, 1]; findings 0/1; a split every row (when ``split_column`` is
    given) that :func:`~xmed.data.datasets.common.normalise_split` knows; a known eye; a patient
    every row (when ``patient_column`` is given); no id or image listed twice. The CSV is read
    as UTF-8 (BOM or not) or UTF-16 with a BOM.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        csv: str | os.PathLike = "labels.csv",
        image_column: str = "image",
        label_column: str | None = "label",
        eye_column: str | None = None,
        patient_column: str | None = None,
        vcdr_column: str | None = None,
        split_column: str | None = None,
        id_column: str | None = None,
        finding_columns: Mapping[str, str] | None = None,
        image_dir: str = "",
        labels: Mapping[Any, float] | None = None,
        delimiter: str | None = None,
        **kwargs: Any,
    ):
        unknown = [code for code in (finding_columns or {}) if code not in FINDINGS]
        if unknown:
            raise KeyError(f"unknown finding code(s) {unknown}; known: {', '.join(FINDINGS)}")
        self.csv, self.image_column, self.label_column = csv, image_column, label_column
        self.columns = {"eye": eye_column, "patient": patient_column, "vcdr": vcdr_column,
                        "split": split_column, "id": id_column}
        self.finding_columns = dict(finding_columns) if finding_columns is not None else None
        self.image_dir, self.delimiter = image_dir, delimiter
        self.label_words = dict(labels) if labels is not None else LABEL_WORDS
        self.has_patient_ids = patient_column is not None  # type: ignore[misc]
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        csv_path = Path(self.csv) if Path(self.csv).is_absolute() else self.root / self.csv
        col = self.columns
        required = [self.image_column, *([self.label_column] if self.label_column else []),
                    *(c for c in col.values() if c), *(self.finding_columns or {}).values()]
        rows = read_csv_rows(csv_path, required, delimiter=self.delimiter,
                             also=FINDINGS if self.finding_columns is None else (),
                             on_bad_row=self.skip_or_raise)
        findings_map = self.finding_columns
        if findings_map is None:
            header = rows[0].keys() if rows else ()
            findings_map = {code: code for code in FINDINGS if code in header}
        columns = {"id": col["id"] or self.image_column, "image": self.image_column,
                   **({"label": self.label_column} if self.label_column else {}),
                   **{name: c for name, c in col.items() if c and name != "id"}, **findings_map}

        def record(row: TableRow) -> Record:
            image = row[self.image_column]
            if not image:
                raise DatasetError(csv_path, f"{row.where(self.image_column)}: empty image path")
            row_id = row[col["id"]] if col["id"] else id_from_path(image)
            label = NAN
            if self.label_column:
                label = label_cell(row, self.label_column, self.label_words,
                                   "0, 1 or a word such as glaucoma, normal, suspect", row_id)
            return Record(
                id=row_id,
                image_path=self.root / self.image_dir / image,
                label=label,
                findings=findings_vector({code: row.grade(column, row_id)
                                          for code, column in findings_map.items()}),
                vcdr=row.number(col["vcdr"], row_id) if col["vcdr"] else NAN,
                eye=published_eye(row[col["eye"]]) if col["eye"] else None,
                patient=(row[col["patient"]] or None) if col["patient"] else None,
                split=published_split(row[col["split"]]) if col["split"] else None,
                source=self.name,
                origin=row.origin(columns),
            )

        return self.records_from_rows(rows, record)


def id_from_path(listed: str) -> str:
    """The default id of a listed image: its path without the extension (POSIX separators).

    Example:
        >>> id_from_path("sub/c.png"), id_from_path(".")
        ('sub/c', '.')
    """
    path = Path(listed)
    return (path.with_suffix("") if path.name else path).as_posix()


class FolderDataset(FundusDataset):
    """Base of the readers of a folder (``photo_folder``, ``image_folder``, ``dicom_folder``): every
    entry :func:`~xmed.data.folders.walk_folder` finds below ``root`` becomes a record or is
    reported (:meth:`skip_or_raise`) saying why not, so that the records and :attr:`skipped`
    account for all of :attr:`entries`.

    A DICOM entry is never named by its file name, which may carry the patient's: its record's id
    and patient are salted pseudonyms from its header, and its skips and read errors name it
    ``root / "dicom#<position>-<hash>"`` (:attr:`~xmed.data.folders.FolderEntry.label`).

    Args:
        root: the folder, searched recursively.
        salt: salt of the DICOM pseudonyms and labels (default as :func:`xmed.data.read_dicom`).
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.

    Subclass contract: :meth:`load_records` calls :meth:`list_entries` once, then
    :meth:`read_entry` for each entry.

    Example:
        >>> ds = get_dataset("photo_folder", "/data/clinic", on_error="skip")   # doctest: +SKIP
        >>> len(ds.records) + len(ds.skipped) == len(ds.entries)              # doctest: +SKIP
        True
    """

    #: the kinds of entry read; an entry of another kind is reported
    kinds: tuple[str, ...] = (PHOTO, DICOM)

    def __init__(self, root: str | os.PathLike, salt: str | None = None, **kwargs: Any):
        self.salt = salt
        self.entries: list[FolderEntry] = []
        self._by_path: dict[str, FolderEntry] = {}
        super().__init__(root, **kwargs)

    def list_entries(self, exclude: Iterable[str | os.PathLike] = ()) -> list[FolderEntry]:
        """Every entry below ``root`` but ``exclude`` (:func:`~xmed.data.folders.walk_folder`),
        kept in :attr:`entries`."""
        self.entries = walk_folder(self.root, salt=self.salt, exclude=exclude)
        self._by_path = {str(entry.path): entry for entry in self.entries}
        return self.entries

    def read_entry(self, entry: FolderEntry, problem: str | None = None, **fields: Any) -> Record | None:
        """The record of ``entry`` with ``fields`` (``label``, ``split``…): a photograph's id is its
        path below ``root`` without extension; a DICOM file's id, eye and patient come from its
        header. None, reported, when the entry cannot be read, is of a kind this data set does not
        read, or has the ``problem`` the caller found."""
        reason = entry.reason or self._kind_problem(entry) or problem
        if entry.not_an_eye:  # a stray .DS_Store or notes.txt: listed, never a reason to stop
            self.skipped.append(Skip(str(self.reported_path(entry.path)), entry.scrub(reason)))
            return None
        if reason:
            self.skip_or_raise(entry.path, reason)
            return None
        if entry.kind == PHOTO:
            return Record(id=id_from_path(entry.relative), image_path=entry.path, source=self.name, **fields)
        header = self._dicom_header(entry)
        return None if header is None else Record(image_path=entry.path, source=self.name, **header, **fields)

    def entry_label(self, path: str | os.PathLike) -> str:
        """How reports name what is at ``path`` (a record's image, a skip's path): its entry's
        label, else its path below ``root`` (as given when outside it).

        Example:
            >>> ds.entry_label(ds.records[0].image_path)                           # doctest: +SKIP
            'monday/eye_0001.jpg'
        """
        entry = self._by_path.get(str(path))
        if entry is not None:
            return entry.label
        path = Path(path)
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)

    def reported_path(self, path: str | os.PathLike) -> Path:
        """``path`` as skips and errors name it: ``root / label`` for a DICOM entry, else itself."""
        entry = self._by_path.get(str(path))
        return self.root / entry.label if entry is not None and entry.dicom else Path(path)

    def skip_or_raise(self, path: str | os.PathLike, reason: str) -> None:
        """As :meth:`FundusDataset.skip_or_raise`; an entry's file named as :meth:`reported_path` does."""
        entry = self._by_path.get(str(path))
        if entry is not None:
            path, reason = self.reported_path(path), entry.scrub(reason)
        super().skip_or_raise(path, reason)

    def load(self, index: int, pixel_need: PixelNeed | None = None) -> dict | SkippedSample:
        """As :meth:`FundusDataset.load`; a DICOM file that cannot be decoded is named by its label."""
        entry = self._by_path.get(str(self.records[index].image_path))
        if entry is None or not entry.dicom:
            return super().load(index, pixel_need)
        try:
            sample = super().load(index, pixel_need)
        except (ImageReadError, DatasetError) as err:
            raise type(err)(self.reported_path(entry.path), entry.scrub(err.reason)) from None
        if isinstance(sample, SkippedSample):
            return SkippedSample(str(self.reported_path(entry.path)), entry.scrub(sample.reason))
        return sample

    def _kind_problem(self, entry: FolderEntry) -> str | None:
        if entry.kind in self.kinds:
            return None
        read = " and ".join(f"{KIND_NAMES[kind]}s" for kind in self.kinds)
        return f"a {KIND_NAMES[entry.kind]}, not read (this {self.name} reads {read} only)"

    def _dicom_header(self, entry: FolderEntry) -> dict[str, Any] | None:
        """``id``, ``eye`` and ``patient`` of a DICOM entry from its header only, the ids salted
        pseudonyms (``id`` as :func:`xmed.data.read_dicom` makes it); None, reported, when the
        header cannot be read."""
        from pydicom import dcmread

        try:
            ds = dcmread(entry.path, stop_before_pixels=True)
            file_meta = getattr(ds, "file_meta", None)
            instance = ds.get("SOPInstanceUID") or (
                file_meta.get("MediaStorageSOPInstanceUID") if file_meta is not None else None)
            patient = ds.get("PatientID")
            laterality = ds.get("ImageLaterality") or ds.get("Laterality") or ""
        except Exception as err:  # pydicom raises several types for a bad header or element
            self.skip_or_raise(entry.path, f"cannot read the DICOM header ({type(err).__name__}: {err})")
            return None
        return {
            "id": dicom_pseudonym(str(instance) if instance else f"file:{entry.relative}", self.salt),
            "eye": normalise_eye(str(laterality)),
            "patient": dicom_pseudonym(f"patient:{patient}", self.salt) if patient else None,
        }


class ImageFolderDataset(FolderDataset):
    """Photographs (or DICOM files) sorted into class folders, optionally below split folders;
    any other entry is reported (see :class:`FolderDataset`).

    Args:
        root: the folder holding the class (or split) folders.
        classes: class-folder name -> 0/1/NaN (case-insensitive; default :data:`LABEL_WORDS`).
            What a folder not in it holds is reported.
        **kwargs: :class:`FolderDataset` arguments.
    """

    def __init__(
        self, root: str | os.PathLike, classes: Mapping[str, float] | None = None, **kwargs: Any
    ):
        self.classes = {str(k).lower(): float(v)
                        for k, v in (classes if classes is not None else LABEL_WORDS).items()}
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        entries = self.list_entries()
        folders = {entry.relative.split("/")[0] for entry in entries if "/" in entry.relative}
        by_split = bool(folders) and all(normalise_split(f) is not None and f.lower() not in self.classes
                                         for f in folders)
        records = []
        for entry in entries:
            fields, problem = self._placement(entry.relative, by_split)
            record = self.read_entry(entry, problem, **fields)
            if record is not None:
                records.append(record)
        if not records and not self.skipped:
            raise DatasetError(self.root, "no images found in class folders "
                                          "(e.g. glaucoma/, normal/)")
        return records

    def _placement(self, relative: str, by_split: bool) -> tuple[dict[str, Any], str | None]:
        """``({"label", "split"}, None)`` from the folders an entry is in, or ``({}, why not)``."""
        parts = relative.split("/")
        depth = 2 if by_split else 1
        if len(parts) <= depth:
            return {}, f"not in a class folder{' below a split folder' if by_split else ''} (e.g. glaucoma/, normal/)"
        label = self.classes.get(parts[depth - 1].lower())
        if label is None:
            return {}, f"in unknown class folder {parts[depth - 1]!r} (pass classes={{folder: label}})"
        return {"label": label, "split": normalise_split(parts[0]) if by_split else None}, None


class PhotoFolderDataset(FolderDataset):
    """Every photograph and DICOM file below a folder (searched recursively), without labels: what
    a clinic hands over to be screened (``xmed-predict input=<folder>``), read as a whole. A
    photograph's id is its path relative to ``root`` without its extension, a DICOM file's a salted
    pseudonym; labels, findings and vCDR are unknown (NaN). Any other entry is reported (see
    :class:`FolderDataset`).

    Args:
        root: the folder to search.
        kinds: what is read, ``("photo", "dicom")`` by default; an entry of another kind is reported.
        **kwargs: :class:`FolderDataset` arguments.

    Example:
        >>> ds = PhotoFolderDataset("/data/clinic_2026_11")           # doctest: +SKIP
        >>> ds.records[0].id                                          # doctest: +SKIP
        'monday/eye_0001'
    """

    def __init__(self, root: str | os.PathLike, kinds: Sequence[str] = (PHOTO, DICOM), **kwargs: Any):
        unknown = [kind for kind in kinds if kind not in KIND_NAMES]
        if unknown or not kinds:
            raise InputError("kinds", f"got {list(kinds)!r}; give one or both of {', '.join(KIND_NAMES)}")
        self.kinds = tuple(kinds)
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        records = [record for record in map(self.read_entry, self.list_entries()) if record is not None]
        if not records and not self.skipped:
            looked_for = {PHOTO: ", ".join(sorted(IMAGE_EXTENSIONS)), DICOM: "DICOM files"}
            raise DatasetError(self.root, f"no photographs found (looked for "
                                          f"{' and '.join(looked_for[k] for k in self.kinds)}, in every subfolder)")
        return records


class DicomFolderDataset(FolderDataset):
    """Every DICOM file below a folder, with optional labels from a CSV keyed by file name; any other
    entry is reported (see :class:`FolderDataset`).

    Args:
        root: the folder to search (recursively).
        labels: optional CSV, relative to ``root`` (or absolute), with a file and a label
            column. Files it does not list get a NaN label; rows whose file does not exist are
            reported like any missing image.
        file_column, label_column: the CSV's columns; the file is matched by its path relative
            to ``root`` or by its name.
        label_words: cell value -> 0/1/NaN (default :data:`LABEL_WORDS`).
        salt: salt of the id/patient pseudonyms (default as :func:`xmed.data.read_dicom`).
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    has_patient_ids: ClassVar[bool] = True
    kinds = (DICOM,)
    SUFFIXES: ClassVar[tuple[str, ...]] = DICOM_SUFFIXES

    def __init__(
        self,
        root: str | os.PathLike,
        labels: str | os.PathLike | None = None,
        file_column: str = "file",
        label_column: str = "label",
        label_words: Mapping[Any, float] | None = None,
        salt: str | None = None,
        **kwargs: Any,
    ):
        self.labels_file, self.file_column, self.label_column = labels, file_column, label_column
        self.label_words = dict(label_words) if label_words is not None else LABEL_WORDS
        super().__init__(root, salt=salt, **kwargs)

    def load_records(self) -> list[Record]:
        labels, csv_path = self._read_labels()
        records, seen = [], set()
        for entry in self.list_entries(exclude=[csv_path] if csv_path else []):
            key = entry.relative if entry.relative in labels else entry.path.name
            seen.add(key)
            listed = labels.get(key)
            record = self.read_entry(entry, label=listed.label if listed else NAN)
            if record is not None:
                records.append(record)
        for key, listed in labels.items():  # listed, but no such file: reported by the base
            if key not in seen:
                records.append(listed)
        if not records and not self.skipped:
            raise DatasetError(self.root, "no DICOM files found")
        return records

    def _read_labels(self) -> tuple[dict[str, Record], Path | None]:
        """``{listed file: record holding its label and row}`` from the label CSV; rows listing
        one file twice are reported like any duplicated eye."""
        if self.labels_file is None:
            return {}, None
        csv_path = Path(self.labels_file)
        if not csv_path.is_absolute():
            csv_path = self.root / csv_path
        csv_path = require_file(csv_path)
        rows = read_csv_rows(csv_path, [self.file_column, self.label_column],
                             on_bad_row=self.skip_or_raise)
        columns = {"id": self.file_column, "image": self.file_column, "label": self.label_column}

        def entry(row: TableRow) -> Record:
            key = row[self.file_column].replace("\\", "/")
            if not key:
                raise DatasetError(csv_path, f"{row.where(self.file_column)}: empty file name")
            label = label_cell(row, self.label_column, self.label_words,
                               "0, 1 or a word such as glaucoma, normal, suspect", key)
            return Record(id=key, image_path=self.root / key, label=label, source=self.name,
                          origin=row.origin(columns))

        entries = self.validate_records(self.records_from_rows(rows, entry))
        return {e.id: e for e in entries}, csv_path
