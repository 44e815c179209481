"""Every entry of a folder is accounted for, by every reader of folders: ``xmed-predict`` gives each
a row (scored, or saying why not), ``xmed-review build --images`` scores it or lists it in
``skipped``, and the ``photo_folder``/``image_folder``/``dicom_folder`` data sets make it a record
or a skip. Photographs and DICOM files in one folder are screened together, and a DICOM file's
name (which may carry the patient's) reaches no output, log or error."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import cv2
import pytest

from xmed.data import render_phantom
from xmed.data.datasets import dataset_class
from xmed.data.folders import walk_folder
from xmed.errors import DatasetError, ImageReadError

from helpers.dicom import write_dicom
from helpers.predict import SIZE, predict

PATIENT_FILE = "Doe^John_12345.dcm"
#: entry -> the reason it is not scored (every reader's, ``xmed-predict`` prefixes "unreadable: ")
LEFT_OUT = {
    ".DS_Store": "hidden (its name starts with '.')",
    "again": "a symbolic link loop",                       # a link to the folder itself
    "broken.dcm": "cannot read the DICOM header (InvalidDicomError: ",
    "corrupt.jpg": "truncated file (OSError: image file is truncated",
    "eye.jpg": "a folder named like an image file (what it holds is listed too)",
    "gone.png": "a dangling symbolic link (its target does not exist)",
    "locked": "cannot list the folder (Permission denied)",
    "loop.png": "a symbolic link loop",                    # a link to itself
    "no_pixels.dcm": "no pixel data: the DICOM file has no Pixel Data (7FE0,0010) element",
    "notes.txt": "not an image: a .txt file without DICOM's 'DICM' preamble",
    "pipe.png": "a FIFO (named pipe), not a file",
}
PHOTOS = ("eye_0.png", "eye_1.jpg", "sub/eye_2.png")
DICOM_NAMES = (PATIENT_FILE, "broken.dcm", "no_pixels.dcm")


def photograph(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(render_phantom(seed, SIZE).image, cv2.COLOR_RGB2BGR))


def permission_can_be_denied(folder: Path) -> bool:
    """Whether ``chmod 000`` keeps this process out of a folder (not as root)."""
    probe = folder / "probe"
    probe.mkdir()
    probe.chmod(0)
    try:
        os.listdir(probe)
        return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
        probe.rmdir()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three photographs and a DICOM file named after its patient, and one entry of every kind that
    cannot be scored (the locked folder only where permission can be denied)."""
    root = tmp_path_factory.mktemp("clinic")
    for seed, name in enumerate(PHOTOS):
        photograph(root / name, seed)
    write_dicom(root / PATIENT_FILE, render_phantom(7, SIZE).image, instance="1.2.826.0.1.3680043.8.498.77")
    write_dicom(root / "no_pixels.dcm", render_phantom(8, SIZE).image, instance="1.2.826.0.1.3680043.8.498.78",
                pixel_data=False)
    (root / "broken.dcm").write_bytes(b"not a DICOM file")
    jpeg = cv2.imencode(".jpg", render_phantom(6, SIZE).image)[1].tobytes()
    (root / "corrupt.jpg").write_bytes(jpeg[:len(jpeg) // 2])          # cut off halfway
    (root / "notes.txt").write_text("seen on monday")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "eye.jpg").mkdir()
    os.symlink("loop.png", root / "loop.png")
    os.symlink("missing.png", root / "gone.png")
    os.symlink(".", root / "again")
    os.mkfifo(root / "pipe.png")
    locked = permission_can_be_denied(root)
    if locked:
        photograph(root / "locked" / "inside.png", 9)
        (root / "locked").chmod(0)
    yield root, locked
    if locked:
        (root / "locked").chmod(0o700)


def left_out(locked: bool) -> dict[str, str]:
    return {name: reason for name, reason in LEFT_OUT.items() if locked or name != "locked"}


@contextlib.contextmanager
def everything_said():
    """Whatever is printed, logged (any logger, any level) or warned inside, as one string."""
    said, handler = io.StringIO(), logging.StreamHandler()
    handler.stream = said
    root_logger, level = logging.getLogger(), logging.getLogger().level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(said), \
                contextlib.redirect_stderr(said):
            warnings.simplefilter("always")
            yield said
        said.write("".join(str(w.message) for w in caught))
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)


@pytest.fixture(scope="module")
def screened(model_dir, folder, tmp_path_factory):
    root, _ = folder
    out = tmp_path_factory.mktemp("screened") / "run"
    with everything_said() as said:
        summary, rows = predict(model_dir, root, out)
    return summary, rows, out, said.getvalue()


@pytest.fixture(scope="module")
def session(model_dir, folder, tmp_path_factory):
    from xmed.review.build import build_session
    from xmed.review.session import load_session

    root, _ = folder
    with everything_said() as said:
        built = build_session(tmp_path_factory.mktemp("review") / "session", model=model_dir, images=root,
                              methods=["gradcam"], counterfactual=False, progress=False)
    return load_session(built), built, said.getvalue()


def labels(root: Path) -> dict[str, str]:
    """How reports name each entry: the DICOM files by ``dicom#<position>-<hash>``."""
    return {entry.relative: entry.label for entry in walk_folder(root)}


def expected_rows(root: Path, locked: bool) -> list[tuple[str, str]]:
    """``(id, start of the status)`` of each row of ``predictions.csv``, in folder order."""
    from xmed.data.io import dicom_pseudonym

    named = labels(root)
    ids = {"corrupt.jpg": "corrupt", "no_pixels.dcm": dicom_pseudonym("1.2.826.0.1.3680043.8.498.78"),
           PATIENT_FILE: dicom_pseudonym("1.2.826.0.1.3680043.8.498.77"),
           **{photo: photo.rsplit(".", 1)[0] for photo in PHOTOS}}   # a photograph's id has no extension
    reasons = left_out(locked)
    return [(ids.get(entry, label), f"unreadable: {reasons[entry]}" if entry in reasons else "")
            for entry, label in named.items()]


def test_photographs_and_a_dicom_file_are_all_scored(screened):
    summary, rows, _, _ = screened
    scored = {row["id"]: row for row in rows.values() if not row["status"]}
    assert len(scored) == summary["scored"] == len(PHOTOS) + 1
    dicom_row, = [row for eye_id, row in scored.items() if eye_id not in ("eye_0", "eye_1", "sub/eye_2")]
    assert len(dicom_row["id"]) == 16 and dicom_row["eye"] == "OD"   # a pseudonym; laterality from the header
    assert all(0 <= float(row["prob"]) <= 1 for row in scored.values())


def test_every_entry_gets_a_row_that_says_why_it_was_not_scored(screened, folder):
    root, locked = folder
    summary, rows, _, _ = screened
    expected = expected_rows(root, locked)
    assert [eye_id for eye_id, _ in expected] == list(rows)              # one row per entry, in folder order
    for eye_id, status in expected:
        assert rows[eye_id]["status"].startswith(status) and bool(rows[eye_id]["status"]) == bool(status), \
            (eye_id, rows[eye_id]["status"])
    assert summary["n"] == len(walk_folder(root)) == len(PHOTOS) + 1 + len(left_out(locked))
    assert summary["scored"] + len(summary["failed"]) + len(summary["unreadable"]) == summary["n"]
    assert summary["unreadable"] == [eye_id for eye_id, status in expected if status]


def test_a_review_session_scores_or_lists_every_entry(session, folder):
    root, locked = folder
    built, _, _ = session
    named = labels(root)
    assert len(built["cases"]) == len(PHOTOS) + 1
    expected = [(label, left_out(locked)[entry]) for entry, label in named.items() if entry in left_out(locked)]
    assert [s["path"] for s in built["skipped"]] == [label for label, _ in expected]   # folder order
    for skip, (label, reason) in zip(built["skipped"], expected):
        assert skip["reason"].startswith(reason), (label, skip["reason"])


def test_no_dicom_file_name_reaches_an_output_or_a_log(screened, session):
    _, _, out, said_predicting = screened
    _, built, said_building = session
    written = "".join(p.read_text(errors="replace") for p in [*out.rglob("*"), *built.rglob("*")]
                      if p.is_file() and p.suffix in (".json", ".csv", ".log", ".txt"))
    for text in (written, said_predicting, said_building):
        for name in (*DICOM_NAMES, "Doe^", "John"):
            assert name not in text
    assert "dicom#" in written


@pytest.mark.parametrize("name, options", [("photo_folder", {}), ("image_folder", {}), ("dicom_folder", {}),
                                           ("photo_folder", {"kinds": ("photo",)})])
def test_each_folder_reader_accounts_for_every_entry(folder, name, options):
    root, _ = folder
    ds = dataset_class(name)(root, on_error="skip", **options)
    assert len(ds.records) + len(ds.skipped) == len(ds.entries) == len(walk_folder(root))
    for skip in ds.skipped:
        assert all(dicom not in skip.path + skip.reason for dicom in DICOM_NAMES)


def skip_reasons(ds) -> dict[str, str]:
    return {ds.entry_label(skip.path): skip.reason for skip in ds.skipped}


def test_an_entry_of_a_kind_a_reader_does_not_read_is_reported(folder):
    root, _ = folder
    assert skip_reasons(dataset_class("dicom_folder")(root, on_error="skip"))["eye_0.png"] == \
        "a photograph, not read (this dicom_folder reads DICOM files only)"
    only_photos = dataset_class("photo_folder")(root, on_error="skip", kinds=("photo",))
    assert skip_reasons(only_photos)[labels(root)[PATIENT_FILE]] == \
        "a DICOM file, not read (this photo_folder reads photographs only)"


def test_image_folder_reports_what_is_outside_its_class_folders(tmp_path):
    for name in ("glaucoma/a.png", "normal/b.png", "unsure/c.png"):
        photograph(tmp_path / name, 0)
    (tmp_path / "readme.txt").write_text("class folders below")
    (tmp_path / "top.png").write_bytes(b"")
    ds = dataset_class("image_folder")(tmp_path, on_error="skip")
    assert [(r.id, r.label) for r in ds.records] == [("glaucoma/a", 1.0), ("normal/b", 0.0)]
    assert skip_reasons(ds) == {
        "readme.txt": LEFT_OUT["notes.txt"], "top.png": "not in a class folder (e.g. glaucoma/, normal/)",
        "unsure/c.png": "in unknown class folder 'unsure' (pass classes={folder: label})"}


def test_errors_name_a_dicom_file_by_its_label(tmp_path):
    """With on_error=raise, listing and decoding stop at a bad DICOM file and name it by its label."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / PATIENT_FILE).write_bytes(b"not a DICOM file")
    with pytest.raises(DatasetError) as err:
        dataset_class("photo_folder")(tmp_path / "broken")
    assert err.value.path == str(tmp_path / "broken" / labels(tmp_path / "broken")[PATIENT_FILE])
    assert PATIENT_FILE not in str(err.value) and "dicom#1-" in str(err.value)
    (tmp_path / "empty").mkdir()
    write_dicom(tmp_path / "empty" / PATIENT_FILE, render_phantom(1, SIZE).image, pixel_data=False)
    ds = dataset_class("photo_folder")(tmp_path / "empty")
    with pytest.raises(ImageReadError, match="no pixel data") as err:
        ds[0]
    assert PATIENT_FILE not in str(err.value) and err.value.path.endswith(labels(tmp_path / "empty")[PATIENT_FILE])


def test_a_folder_that_cannot_be_listed_is_an_entry(tmp_path, monkeypatch):
    """The listing refused by hand, so that this runs as root too (whom chmod 000 keeps out of nothing)."""
    import xmed.data.folders as folders

    photograph(tmp_path / "locked" / "inside.png", 0)
    photograph(tmp_path / "open.png", 1)
    scandir = os.scandir

    def refuse(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return scandir(path)

    monkeypatch.setattr(folders.os, "scandir", refuse)
    assert [(e.relative, e.kind, e.reason) for e in walk_folder(tmp_path)] == [
        ("locked", None, LEFT_OUT["locked"]), ("open.png", "photo", "")]
