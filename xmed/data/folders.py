"""Listing a folder to read: every entry below it, with what it is or why it cannot be read.

:func:`walk_folder` is the one listing behind everything that takes a folder of eyes
(``xmed-predict``, ``xmed-review build --images``, the ``photo_folder``, ``image_folder`` and
``dicom_folder`` data sets). Each entry is a photograph, a DICOM file, or left out with a reason —
hidden, not an image, a folder named like an image, a folder that cannot be listed, a file that
cannot be opened, a symbolic link loop or a dangling link, a FIFO, socket or device — so that
what a reader reports adds up to what the folder holds. Nothing is decoded: a file's first 132
bytes are read to find DICOM's ``DICM`` preamble.

A DICOM entry (by its name or its preamble) is reported by its :attr:`FolderEntry.label`
``dicom#<position>-<hash>`` — its place in the sorted listing and 10 hex digits of the salted
pseudonym of its path (:func:`xmed.data.io.dicom_pseudonym`) — never by its name, which may carry
the patient's; any other entry by its path relative to the folder.

Example:
    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "eye.png").write_bytes(b"a photograph")
    >>> _ = (folder / "notes.txt").write_text("seen on monday")
    >>> [(e.label, e.kind, e.reason) for e in walk_folder(folder)]
    [('eye.png', 'photo', ''), ('notes.txt', None, "not an image: a .txt file without DICOM's 'DICM' preamble")]
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from xmed.data.io import DICOM_SUFFIXES, IMAGE_EXTENSIONS, dicom_pseudonym, is_dicom_file
from xmed.errors import DatasetError

__all__ = ["DICOM", "PHOTO", "FolderEntry", "walk_folder"]

#: the kinds of entry a folder reader reads
PHOTO, DICOM = "photo", "dicom"
#: what messages call each kind
KIND_NAMES = {PHOTO: "photograph", DICOM: "DICOM file"}

_HIDDEN = "hidden (its name starts with '.')"
_NOT_AN_IMAGE = "not an image"
_LOOP = "a symbolic link loop"
_DANGLING = "a dangling symbolic link (its target does not exist)"
_IMAGE_NAMED_FOLDER = "a folder named like an image file (what it holds is listed too)"
_SPECIAL = {stat.S_IFIFO: "a FIFO (named pipe), not a file", stat.S_IFSOCK: "a socket, not a file",
            stat.S_IFCHR: "a character device, not a file", stat.S_IFBLK: "a block device, not a file"}


@dataclass(frozen=True)
class FolderEntry:
    """One entry found below a folder.

    ``kind`` is :data:`PHOTO` or :data:`DICOM` when the entry can be read as one, else None and
    ``reason`` says why not; ``dicom`` says whether it is a DICOM file or is named like one;
    ``relative`` is its POSIX path below the folder, ``position`` its place (from 1) in the sorted
    listing and ``label`` what reports name it by.

    Example:
        >>> entry = FolderEntry(Path("/in/Doe^J.dcm"), "Doe^J.dcm", 3, DICOM, "", True, "dicom#3-1a2b3c4d5e")
        >>> entry.scrub("cannot read /in/Doe^J.dcm")
        'cannot read dicom#3-1a2b3c4d5e'
    """

    path: Path
    relative: str
    position: int
    kind: str | None
    reason: str
    dicom: bool
    label: str

    @property
    def not_an_eye(self) -> bool:
        """Whether the entry is one no reader would take for an eye (a hidden file, a file that
        is neither named like an image nor DICOM): reported, but never a reason to stop.

        Example:
            >>> FolderEntry(Path("/in/.DS_Store"), ".DS_Store", 1, None, _HIDDEN, False, ".DS_Store").not_an_eye
            True
        """
        return self.kind is None and self.reason.startswith((_HIDDEN, _NOT_AN_IMAGE))

    def scrub(self, text: str) -> str:
        """``text`` with a DICOM entry's path and name replaced by its label (a reader's message
        may quote the file it failed on); other entries' text unchanged."""
        if not self.dicom:
            return text
        for name in sorted({str(self.path), self.relative, self.path.name}, key=len, reverse=True):
            text = text.replace(name, self.label)
        return text


def walk_folder(root: str | os.PathLike, *, salt: str | None = None,
                exclude: Iterable[str | os.PathLike] = ()) -> list[FolderEntry]:
    """Every entry below ``root`` (searched recursively, symbolic links followed), sorted by path
    as :class:`FolderEntry` records.

    Folders are not entries, but one that cannot be listed, one named like an image (searched
    too) and a hidden one (not searched) are. ``exclude`` names files that are not entries (a
    data set's own label table); ``salt`` salts the DICOM labels (default as
    :func:`xmed.data.io.dicom_pseudonym`). ``root`` itself must be a folder that can be listed,
    else :class:`~xmed.errors.DatasetError` naming it.

    Example:
        >>> import tempfile; folder = Path(tempfile.mkdtemp()); (folder / "a.jpg").mkdir()
        >>> [(e.relative, e.reason) for e in walk_folder(folder)]
        [('a.jpg', 'a folder named like an image file (what it holds is listed too)')]
    """
    root = Path(root)
    try:
        top = root.stat()
    except OSError as err:
        raise DatasetError(root, f"cannot open the folder ({err.strerror})") from None
    if not stat.S_ISDIR(top.st_mode):
        raise DatasetError(root, "is not a folder")
    names = _listing(root)
    if isinstance(names, str):
        raise DatasetError(root, names)
    excluded = {_identity(s) for s in map(_stat_or_none, exclude) if s is not None}
    entries: list[FolderEntry] = []
    # depth first, each folder's names sorted: the order of sorted(paths)
    pending = [(root / name, (_identity(top),)) for name in reversed(names)]
    while pending:
        path, above = pending.pop()
        found = _look_up(path, above, excluded)
        if found is None:
            continue
        kind, reason, dicom, folder = found
        if folder is not None:
            listed = _listing(path)
            if isinstance(listed, str):
                kind, reason = None, listed
            else:
                pending.extend((path / name, (*above, folder)) for name in reversed(listed))
        if kind is not None or reason:
            entries.append(_entry(root, path, len(entries) + 1, kind, reason, dicom, salt))
    return entries


def _look_up(path: Path, above: tuple, excluded: set) -> tuple | None:
    """``(kind, reason, dicom, identity of a folder to search or None)`` of one entry; None for
    an excluded file."""
    dicom_name = _named_dicom(path)
    if path.name.startswith("."):
        return None, _HIDDEN, dicom_name, None
    try:
        info = path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None, _LOOP, dicom_name, None
        if isinstance(err, FileNotFoundError) and path.is_symlink():
            return None, _DANGLING, dicom_name, None
        return None, f"cannot look it up ({err.strerror})", dicom_name, None
    if _identity(info) in excluded:
        return None
    if stat.S_ISDIR(info.st_mode):
        if _identity(info) in above:
            return None, _LOOP, dicom_name, None
        named_like_image = path.suffix.lower() in IMAGE_EXTENSIONS or dicom_name
        return None, _IMAGE_NAMED_FOLDER if named_like_image else "", dicom_name, _identity(info)
    if not stat.S_ISREG(info.st_mode):
        return None, _SPECIAL.get(stat.S_IFMT(info.st_mode), "not a file"), dicom_name, None
    return (*_file_kind(path), None)


def _file_kind(path: Path) -> tuple[str | None, str, bool]:
    """``(kind, reason, dicom)`` of a regular file, from its name and DICOM preamble."""
    try:
        if is_dicom_file(path):
            return DICOM, "", True
    except OSError as err:
        return None, f"cannot open the file ({err.strerror})", False
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return PHOTO, "", False
    what = f"a {suffix} file" if suffix else "a file without extension"
    return None, f"{_NOT_AN_IMAGE}: {what} without DICOM's 'DICM' preamble", False


def _entry(root: Path, path: Path, position: int, kind: str | None, reason: str, dicom: bool,
           salt: str | None) -> FolderEntry:
    relative = path.relative_to(root).as_posix()
    # the same salted hash as a DICOM id, of the path: the label does not give the name away
    label = f"dicom#{position}-{dicom_pseudonym(f'file:{relative}', salt)[:10]}" if dicom else relative
    return FolderEntry(path, relative, position, kind, reason, dicom, label)


def _listing(folder: Path) -> list[str] | str:
    """The sorted names in ``folder``, or why it cannot be listed."""
    try:
        with os.scandir(folder) as listing:
            return sorted(entry.name for entry in listing)
    except OSError as err:
        return f"cannot list the folder ({err.strerror})"


def _named_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES


def _stat_or_none(path: str | os.PathLike) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino
