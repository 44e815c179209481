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

:class:`DicomFolderDataset` (registry ``dicom_folder``)::

    root/**/*.dcm          (any depth; files with the DICM preamble count too)
    root/labels.csv        optional: file, label  (keyed by path relative to root, or file name)

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
from typing import Any, ClassVar, Mapping

from xmed.data.datasets.base import (
    NAN, FundusDataset, Record, TableRow, read_csv_rows, require_file,
)
from xmed.data.datasets.common import (
    IMAGE_EXTENSIONS, findings_vector, label_cell, list_images, normalise_eye, normalise_split, published_eye,
    published_split, relative_id,
)
from xmed.errors import DatasetError
from xmed.findings import FINDINGS

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

    name: ClassVar[str] = "csv"

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


class ImageFolderDataset(FundusDataset):
    """Images sorted into class folders, optionally below split folders.

    Args:
        root: the folder holding the class (or split) folders.
        classes: class-folder name -> 0/1/NaN (case-insensitive; default :data:`LABEL_WORDS`).
            A folder not in it is reported.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    name: ClassVar[str] = "image_folder"

    def __init__(
        self, root: str | os.PathLike, classes: Mapping[str, float] | None = None, **kwargs: Any
    ):
        self.classes = {str(k).lower(): float(v)
                        for k, v in (classes if classes is not None else LABEL_WORDS).items()}
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        folders = sorted(p for p in self.root.iterdir()
                         if p.is_dir() and not p.name.startswith("."))
        splits = [normalise_split(p.name) for p in folders]
        by_split = bool(folders) and all(s is not None and p.name.lower() not in self.classes
                                         for p, s in zip(folders, splits))
        layers = list(zip(folders, splits)) if by_split else [(self.root, None)]
        records = []
        for base, split in layers:
            for class_dir in sorted(p for p in base.iterdir()
                                    if p.is_dir() and not p.name.startswith(".")):
                label = self.classes.get(class_dir.name.lower())
                if label is None:
                    self.skip_or_raise(class_dir, f"unknown class folder {class_dir.name!r} "
                                                  "(pass classes={folder: label})")
                    continue
                for path in list_images(class_dir, recursive=True):
                    records.append(Record(id=relative_id(path, self.root), image_path=path,
                                          label=label, split=split, source=self.name))
        if not records and not self.skipped:
            raise DatasetError(self.root, "no images found in class folders "
                                          "(e.g. glaucoma/, normal/)")
        return records


class PhotoFolderDataset(FundusDataset):
    """Every photograph below a folder (searched recursively), without labels: what a clinic
    hands over to be screened (``xmed-predict input=<folder>``). The id is the path relative to
    ``root`` without its extension; labels, findings and vCDR are unknown (NaN).

    Args:
        root: the folder to search.
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.

    Example:
        >>> ds = PhotoFolderDataset("/data/clinic_2026_11")           # doctest: +SKIP
        >>> ds.records[0].id                                          # doctest: +SKIP
        'monday/eye_0001'
    """

    name: ClassVar[str] = "photo_folder"

    def load_records(self) -> list[Record]:
        records = [Record(id=relative_id(path, self.root), image_path=path, source=self.name)
                   for path in list_images(self.root, recursive=True)]
        if not records:
            raise DatasetError(self.root, "no photographs found (looked for "
                                          f"{', '.join(sorted(IMAGE_EXTENSIONS))}, in every subfolder)")
        return records


class DicomFolderDataset(FundusDataset):
    """Every DICOM file below a folder, with optional labels from a CSV keyed by file name.

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

    name: ClassVar[str] = "dicom_folder"
    has_patient_ids: ClassVar[bool] = True
    SUFFIXES: ClassVar[tuple[str, ...]] = (".dcm", ".dicom")

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
        self.salt = salt
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        labels, csv_path = self._read_labels()
        records, seen = [], set()
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            if not self._looks_like_dicom(path):
                continue
            header = self._read_header(path)
            if header is None:
                continue
            rel = path.relative_to(self.root).as_posix()
            key = rel if rel in labels else path.name
            seen.add(key)
            listed = labels.get(key)
            records.append(Record(id=header["id"], image_path=path,
                                  label=listed.label if listed else NAN,
                                  eye=header["eye"], patient=header["patient"], source=self.name))
        for key, listed in labels.items():  # listed, but no such DICOM file: reported by the base
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

    def _looks_like_dicom(self, path: Path) -> bool:
        if path.suffix.lower() in self.SUFFIXES:
            return True
        if path.suffix:  # only extension-less files are sniffed (PACS exports)
            return False
        try:
            with open(path, "rb") as f:
                return f.read(132)[128:132] == b"DICM"
        except OSError:
            return False

    def _read_header(self, path: Path) -> dict[str, Any] | None:
        """Eye and pseudonyms from the header only; None (recorded) when it is unreadable."""
        from pydicom import dcmread

        from xmed.data.io import dicom_pseudonym  # the same pseudonyms as read_dicom's meta["id"]

        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception as err:  # pydicom raises several types for a bad header
            self.skip_or_raise(path, f"cannot read the DICOM header ({type(err).__name__}: {err})")
            return None
        file_meta = getattr(ds, "file_meta", None)
        instance = ds.get("SOPInstanceUID") or (
            file_meta.get("MediaStorageSOPInstanceUID") if file_meta is not None else None)
        rel = path.relative_to(self.root).as_posix()
        patient = ds.get("PatientID")
        laterality = ds.get("ImageLaterality") or ds.get("Laterality") or ""
        return {
            "id": dicom_pseudonym(str(instance) if instance else f"file:{rel}", self.salt),
            "eye": normalise_eye(str(laterality)),
            "patient": dicom_pseudonym(f"patient:{patient}", self.salt) if patient else None,
        }
