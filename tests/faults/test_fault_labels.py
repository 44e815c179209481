"""A label table is checked before anything trains on it: every bad row raises a ``DatasetError``
naming the table, the row and the column (or, with ``on_error="skip"``, is left out and recorded
with that same reason), and the count of skipped files a run reports is exact.

Rows are numbered as a spreadsheet shows them: the header of a plain CSV is row 1.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xmed.cli.data import main as xmed_data
from xmed.data.datamodule import FundusDataModule
from xmed.data.datasets import dataset_class, get_dataset
from xmed.data.inspect import inspect_dataset
from xmed.data.phantom.writer import write_phantom_dataset
from xmed.errors import DatasetError

from helpers.published import BUILDERS, image, write_csv, write_xlsx

IMAGES = ("a.png", "b.png", "c.png")


@dataclass
class Bad:
    """A label table (rows, or the file's bytes) the CSV reader must refuse, and how."""

    table: list[list] | bytes
    row: int | None            # the row the message names (None: the whole file is at fault)
    column: str | None         # the column it names
    says: str                  # what else it says
    options: dict = field(default_factory=dict)
    skipped: int | None = 1    # rows left out with on_error="skip" (None: the file is refused)


HEADER = ["image", "label"]
FULL = ["image", "label", "vcdr", "split", "eye", "patient", "DH", "LC"]
FULL_OPTIONS = {"vcdr_column": "vcdr", "split_column": "split", "eye_column": "eye",
                "patient_column": "patient"}


def full(*rows: list) -> list[list]:
    """A table with every optional column: two good rows, then ``rows``."""
    good = [["a.png", 1, 0.7, "train", "OD", "p1", 1, 1], ["b.png", 0, 0.3, "test", "OS", "p1", 0, 0]]
    return [FULL, *good, *rows]


def row(**cells) -> list:
    """A third row (``c.png``), good unless ``cells`` say otherwise."""
    values = dict(zip(FULL, ["c.png", 0, 0.4, "val", "OD", "p2", 0, 0]))
    values.update(cells)
    return [values[c] for c in FULL]


BAD = [
    pytest.param(Bad([HEADER, ["a.png", 1], ["a.png", 0]], 2, "label", "1 here but 0 at row 3 (id 'a') for the same id",
                     skipped=2), id="duplicate-id-opposite-label"),
    pytest.param(Bad([HEADER, ["a.png", 1], ["b.png", 0], ["a.png", 1]], 4, "image",
                     "the same id as row 2 (id 'a') (listed twice)"), id="duplicate-id-same-label"),
    pytest.param(Bad([["image", "id", "label"], ["a.png", "x", 1], ["a.png", "y", 1]], 3, "image",
                     "the same image file as row 2 (id 'x')", {"id_column": "id"}), id="one-image-under-two-ids"),
    pytest.param(Bad([["image", "id", "label"], ["a.png", "x", 0], ["b.png", "X", 0]], 3, "id",
                     "the same id as row 2 (id 'x')", {"id_column": "id"}), id="ids-differing-only-by-case"),
    pytest.param(Bad(b"image,id,label\na.png,x,0\nb.png,  x ,0\n", 3, "id", "the same id as row 2",
                     {"id_column": "id"}), id="ids-differing-only-by-spaces"),
    pytest.param(Bad(full(row(vcdr=1.7)), 4, "vcdr", "1.7 is outside [0, 1]", FULL_OPTIONS), id="vcdr-above-one"),
    pytest.param(Bad(full(row(vcdr=-0.2)), 4, "vcdr", "-0.2 is outside [0, 1]", FULL_OPTIONS), id="vcdr-negative"),
    pytest.param(Bad(full(row(vcdr="inf")), 4, "vcdr", "inf is outside [0, 1]", FULL_OPTIONS), id="vcdr-inf-string"),
    pytest.param(Bad(full(row(vcdr="1e999")), 4, "vcdr", "inf is outside [0, 1]", FULL_OPTIONS), id="vcdr-huge-number"),
    pytest.param(Bad(full(row(vcdr="0,4")), 4, "vcdr", "cannot read '0,4' as a number", FULL_OPTIONS),
                 id="vcdr-not-a-number"),
    pytest.param(Bad(full(row(DH=7)), 4, "DH", "7 is not a finding grade", FULL_OPTIONS), id="finding-seven"),
    pytest.param(Bad(full(row(LC=-3)), 4, "LC", "-3 is not a finding grade", FULL_OPTIONS), id="finding-minus-three"),
    pytest.param(Bad(full(row(split="trian")), 4, "split", "unknown split 'trian'; accepted: train (or training",
                     FULL_OPTIONS), id="split-typo"),
    pytest.param(Bad(full(row(split="")), 4, "split", "empty; every row needs a split (train, val or test)",
                     FULL_OPTIONS), id="split-missing-value"),
    pytest.param(Bad(full(row(eye="X")), 4, "eye", "unknown eye 'X'; accepted: OD (or r, right, re)", FULL_OPTIONS),
                 id="eye-unknown"),
    pytest.param(Bad(full(row(patient="")), 4, "patient", "empty; every row needs one", FULL_OPTIONS),
                 id="patient-empty"),
    pytest.param(Bad([HEADER, ["a.png", "glaucoma"], ["b.png", "probably"]], 3, "label",
                     "unknown class value 'probably'"), id="label-word-unknown"),
    pytest.param(Bad([HEADER, ["a.png", "glaucoma"], ["b.png", "borderline"]], 3, "label",
                     "7 is not a diagnosis label (0, 1, or empty for ungraded)",
                     {"labels": {"glaucoma": 1, "normal": 0, "borderline": 7}}), id="label-mapped-outside-0-1"),
    pytest.param(Bad([HEADER, ["a.png", 1], ["../outside.png", 0]], 3, "image", "is outside the data set root"),
                 id="image-outside-root-dotdot"),
    pytest.param(Bad([HEADER, ["a.png", 1], ["{outside}", 0]], 3, "image", "is outside the data set root"),
                 id="image-outside-root-absolute"),
    pytest.param(Bad([HEADER, ["a.png", 1], ["", 0]], 3, "image", "empty image path"), id="image-cell-empty"),
    pytest.param(Bad([HEADER, ["a.png", 1], ["b.png", 0, "extra"]], 3, None,
                     "has 3 cells but the header (row 1) has 2"), id="row-with-too-many-cells"),
    pytest.param(Bad(b"image,label\r\n\r\na.png,1\r\n\r\nb.png,7\r\n", 5, "label", "unknown class value '7'"),
                 id="blank-lines-count-as-rows"),
    pytest.param(Bad(b'image,label,note\na.png,1,"two\nlines"\nb.png,9,\n', 4, "label", "unknown class value '9'"),
                 id="quoted-cell-spanning-lines"),
    pytest.param(Bad([["image", "vcdr"], ["a.png", 0.5]], None, None, "missing column(s) 'label'", skipped=None),
                 id="required-column-missing"),
    pytest.param(Bad([["image", "label", "label"], ["a.png", 1, 0]], 1, None,
                     "(the header): column(s) 'label' appear more than once", skipped=None), id="duplicated-header"),
    pytest.param(Bad(b"", None, None, "missing column(s) 'image', 'label'; found []", skipped=None), id="empty-file"),
    pytest.param(Bad("image,label\na.png,1\nb\xe9.png,0\n".encode("latin-1"), None, None,
                     "not UTF-8 text (byte 0xe9 at offset 21)", skipped=None), id="not-utf8"),
]


def csv_root(tmp_path: Path, table: list[list] | bytes) -> Path:
    """A data set root holding a.png, b.png, c.png and ``table`` as labels.csv (and an image
    beside the root, outside it)."""
    root = tmp_path / "data"
    for name in IMAGES:
        image(root / name)
    outside = image(tmp_path / "outside.png")
    if isinstance(table, bytes):
        (root / "labels.csv").write_bytes(table)
    else:
        write_csv(root / "labels.csv", [[str(outside) if c == "{outside}" else c for c in r] for r in table])
    return root


def data_rows(table: list[list] | bytes) -> int:
    if isinstance(table, bytes):
        return sum(1 for cells in csv.reader(io.StringIO(table.decode(), newline="")) if any(cells)) - 1
    return len(table) - 1


@pytest.mark.parametrize("case", BAD)
def test_a_bad_label_table_names_file_row_and_column(tmp_path, case):
    root = csv_root(tmp_path, case.table)
    with pytest.raises(DatasetError) as err:
        get_dataset("csv", root=root, **case.options)
    assert err.value.path == str(root / "labels.csv")
    reason = err.value.reason
    assert case.says in reason
    if case.row is not None:
        assert re.match(rf"row {case.row}\b", reason)
    if case.column is not None:
        assert f"column {case.column!r}" in reason


@pytest.mark.parametrize("case", BAD)
def test_skipping_leaves_out_exactly_the_bad_rows_with_the_same_reason(tmp_path, case):
    root = csv_root(tmp_path, case.table)
    if case.skipped is None:  # nothing in the file can be trusted: refused even when skipping
        with pytest.raises(DatasetError, match="labels.csv"):
            get_dataset("csv", root=root, on_error="skip", **case.options)
        return
    with pytest.raises(DatasetError) as err:
        get_dataset("csv", root=root, **case.options)
    ds = get_dataset("csv", root=root, on_error="skip", **case.options)
    assert len(ds.skipped) == case.skipped
    assert ds.skipped[0].path == str(root / "labels.csv") and ds.skipped[0].reason == err.value.reason
    assert len(ds) + len(ds.skipped) == data_rows(case.table)


def test_outside_root_is_read_when_the_user_opts_in(tmp_path):
    root = csv_root(tmp_path, [HEADER, ["a.png", 1], ["../outside.png", 0]])
    ds = get_dataset("csv", root=root, allow_outside_root=True)
    assert [(r.id, r.label, r.image_path) for r in ds.records] == [
        ("a", 1.0, root / "a.png"), ("../outside", 0.0, root / "../outside.png")]


def test_a_symlinked_image_folder_counts_as_inside_the_root(tmp_path):
    elsewhere = tmp_path / "store"
    image(elsewhere / "a.png")
    root = tmp_path / "data"
    root.mkdir()
    (root / "images").symlink_to(elsewhere, target_is_directory=True)
    write_csv(root / "labels.csv", [HEADER, ["images/a.png", 1]])
    assert [r.id for r in get_dataset("csv", root=root).records] == ["images/a"]


@pytest.mark.parametrize("content, options, expected", [
    pytest.param("\ufeffimage,label,vcdr\na.png,1,0.5\n".encode("utf-8"), {"vcdr_column": "vcdr"},
                 [("a", 1.0, 0.5)], id="utf8-bom"),
    pytest.param("image\tlabel\tvcdr\na.png\t1\t0.5\nb.png\t0\t\n".encode("utf-16"), {"vcdr_column": "vcdr"},
                 [("a", 1.0, 0.5), ("b", 0.0, math.nan)], id="utf16-tab-separated"),
    pytest.param(b"image;label;vcdr\na.png;glaucoma;0.5\nb.png;normal;NaN\n", {"vcdr_column": "vcdr"},
                 [("a", 1.0, 0.5), ("b", 0.0, math.nan)], id="semicolon-delimiter"),
    pytest.param(b"image,label,vcdr\na.png,1,NA\nb.png,-1,nan\nc.png\n", {"vcdr_column": "vcdr"},
                 [("a", 1.0, math.nan), ("b", math.nan, math.nan), ("c", math.nan, math.nan)],
                 id="unknown-values-and-short-rows-are-nan"),
    pytest.param(b"image,label,split\na.png,1,Training\nb.png,0,test_set\nc.png,0,Validation400\n",
                 {"split_column": "split"}, [("a", 1.0, "train"), ("b", 0.0, "test"), ("c", 0.0, "val")],
                 id="split-spellings"),
    pytest.param(b"image,label\n", {}, [], id="header-only"),
    pytest.param(b"image,label,,\na.png,1,,\n", {}, [("a", 1.0, math.nan)], id="trailing-delimiters"),
])
def test_tables_that_are_read(tmp_path, content, options, expected):
    root = csv_root(tmp_path, content)
    ds = get_dataset("csv", root=root, **options)
    third = (lambda r: r.split) if "split_column" in options else (lambda r: r.vcdr)
    got = [(r.id, r.label, third(r)) for r in ds.records]
    assert len(got) == len(expected) and not ds.skipped
    for g, e in zip(got, expected):
        assert all(a == b or (a != a and b != b) for a, b in zip(g, e)), (g, e)


# -------------------------------------------------------------------- published readers
def set_cell(path: Path, first_cell: str, column: str, value, delimiter: str = ",") -> None:
    """Set ``column`` of the CSV row whose first cell is ``first_cell``."""
    rows = list(csv.reader(path.read_text().splitlines(), delimiter=delimiter))
    j = rows[0].index(column)
    for r in rows[1:]:
        if r[0] == first_cell:
            r[j] = value
    write_csv(path, rows, delimiter)


def origa_set(root):
    set_cell(root / "OrigaList.csv", "OS", "Set", "C")


def origa_cdr(root):
    set_cell(root / "OrigaList.csv", "OS", "ExpCDR", "1.7")


def justraigs_grade(root):
    set_cell(root / "JustRAIGS_Train_labels.csv", "TRAIN000002", "G1 DH", "7", delimiter=";")


def smdg_duplicate(root):
    path = root / "metadata - standardized.csv"
    rows = list(csv.reader(path.read_text().splitlines()))
    write_csv(path, [*rows, [c if j != 1 else "1" for j, c in enumerate(rows[2])]])


def smdg_mask_outside(root):
    image(root.parent / "elsewhere.png")
    set_cell(root / "metadata - standardized.csv", "PAPILA-1", "fundus_od_seg", "../elsewhere.png")


def refuge_duplicate(root):
    write_xlsx(root / "REFUGE-Validation400-GT/Fovea_locations.xlsx", [
        ["ID", "ImgName", "Fovea_X", "Fovea_Y", "Glaucoma Label"],
        [1, "V0001.jpg", 3.5, 4.0, 0], [2, "V0002.jpg", 3.0, 3.0, 1], [3, "V0001.jpg", 3.5, 4.0, 0]])


def papila_id(root):
    write_xlsx(root / "ClinicalData/patient_data_os.xlsx",
               [["ID", "Age", "Gender", "Diagnosis"], ["#002", 39, 0, 1], ["#x", 57, 1, 0]])


def dicom_duplicate(root):
    write_csv(root / "labels.csv", [["file", "label"], ["a.dcm", 1], ["sub/b.dcm", 0], ["a.dcm", 0]])


# (data set, change, label file, row, column, text, rows skipped with on_error="skip")
PUBLISHED = [
    pytest.param("origa", origa_set, "OrigaList.csv", 3, "Set", "unknown split 'C'", 1, id="origa-unknown-set"),
    pytest.param("origa", origa_cdr, "OrigaList.csv", 3, "ExpCDR", "1.7 is outside [0, 1]", 1,
                 id="origa-vcdr-above-one"),
    pytest.param("justraigs", justraigs_grade, "JustRAIGS_Train_labels.csv", 4, "G1 DH", "7 is not a finding grade",
                 1, id="justraigs-grade-seven"),
    pytest.param("smdg", smdg_duplicate, "metadata - standardized.csv", 3, "types",
                 "0 here but 1 at row 5 (id 'PAPILA-2') for the same id", 2, id="smdg-names-twice-opposite-types"),
    pytest.param("smdg", smdg_mask_outside, "metadata - standardized.csv", 2, "fundus_od_seg",
                 "is outside the data set root", 1, id="smdg-mask-outside-root"),
    pytest.param("refuge", refuge_duplicate, "REFUGE-Validation400-GT/Fovea_locations.xlsx", 4, "ImgName",
                 "the same id as row 2 (id 'V0001') (listed twice)", 1, id="refuge-workbook-lists-an-image-twice"),
    pytest.param("papila", papila_id, "ClinicalData/patient_data_os.xlsx", 3, "ID", "cannot read a patient number",
                 1, id="papila-id-without-number"),
    pytest.param("dicom_folder", dicom_duplicate, "labels.csv", 2, "label", "1 here but 0 at row 4", 2,
                 id="dicom-labels-list-a-file-twice"),
]


@pytest.mark.parametrize("name, change, label_file, row_number, column, says, skipped", PUBLISHED)
def test_published_readers_check_their_tables_too(tmp_path, name, change, label_file, row_number, column, says,
                                                  skipped):
    builder, options = BUILDERS[name]
    root = builder(tmp_path / name)
    change(root)
    with pytest.raises(DatasetError) as err:
        dataset_class(name)(root, **options)
    assert err.value.path == str(root / label_file)
    assert err.value.reason.startswith(f"row {row_number} ") and f"column {column!r}" in err.value.reason
    assert says in err.value.reason
    ds = dataset_class(name)(root, on_error="skip", **options)
    assert len(ds.skipped) == skipped and ds.skipped[0].reason == err.value.reason


# -------------------------------------------------------------------- exact skip counts
@pytest.fixture
def damaged_phantom(tmp_path) -> tuple[Path, list[tuple[str, str]]]:
    """A phantom on disk with two unreadable train images, one unreadable test image, one missing
    val image and one label row with vCDR 1.7; returns (root, the (path, reason start) of each)."""
    root = tmp_path / "phantom"
    write_phantom_dataset(root, n=40, size=32, seed=4, workers=1, progress=False)
    labels = root / "labels.csv"
    rows = list(csv.DictReader(labels.open()))
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    expected = []
    for r in (by_split["train"][0], by_split["train"][1], by_split["test"][0]):
        (root / r["image"]).write_bytes(b"not an image")
        expected.append((str(root / r["image"]), ""))  # the reason is the image reader's
    (root / by_split["val"][0]["image"]).unlink()
    expected.append((str(root / by_split["val"][0]["image"]), "image listed for"))
    bad = by_split["train"][2]
    set_cell(labels, bad["id"], "vcdr", "1.7")
    line = 2 + rows.index(bad)
    expected.append((str(labels), f"row {line} (id {bad['id']!r}), column 'vcdr': 1.7 is outside [0, 1]"))
    return root, expected


def same_skips(reported: list[dict], expected: list[tuple[str, str]]) -> bool:
    """Each expected (path, reason start) is matched by exactly one reported skip, and nothing else is reported."""
    return len(reported) == len(expected) and all(
        sum(s["path"] == path and s["reason"].startswith(start) for s in reported) == 1 for path, start in expected)


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "two-loader-workers"])
def test_a_run_counts_every_skipped_file_once(damaged_phantom, workers):
    root, expected = damaged_phantom
    dm = FundusDataModule(dataset="phantom", root=str(root), image_size=32, batch_size=4, on_error="skip",
                          num_workers=workers, preprocess={"crop_fov": False})
    dm.setup()
    assert len(dm.skipped) == 2  # listing found the missing image and the bad row; nothing decoded yet
    train = dm.train_dataloader()
    for _ in range(2):  # two epochs meet the same unreadable images twice
        seen = sum(len(batch["skipped"]) for batch in train)
        assert seen == 2
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        for _ in loader:
            pass
    skipped = dm.skipped
    assert len(skipped) == len({(s["path"], s["reason"]) for s in skipped}) == 5
    assert same_skips(skipped, expected)


def test_inspect_reports_the_same_skips_as_a_run(damaged_phantom, capsys):
    root, expected = damaged_phantom
    report = inspect_dataset(get_dataset("phantom", root, on_error="skip"))
    assert same_skips(report["skipped"], expected)
    assert xmed_data(["inspect", "--dataset", "phantom", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == report["skipped"]


def test_a_published_split_that_leaves_a_part_empty_is_not_followed_silently(tmp_path, caplog):
    root = BUILDERS["origa"][0](tmp_path / "origa")
    dm = FundusDataModule(dataset="origa", root=str(root), image_size=32,
                          dataset_options={"set_splits": {"A": "train", "B": "validation"}})
    dm.setup()
    assert not dm.used_published_splits and sorted(len(v) for v in dm.splits.values()) == [0, 0, 2]
    assert any("published split of data set origa leaves test empty" in r.getMessage() for r in caplog.records)


def test_metrics_and_model_card_count_every_skipped_file_once(damaged_phantom, tmp_path):
    from xmed.pipeline.training import train

    from helpers.commands import compose, tiny_overrides

    root, expected = damaged_phantom
    out = tmp_path / "run"
    overrides = [o for o in tiny_overrides(out, epochs=2) if not o.startswith(("data=", "data.dataset_options"))]
    train(compose("train", [*overrides, "data=phantom", f"data.root={root}", "data.image_size=32",
                            "data.on_error=skip", "data.num_workers=2", "data.batch_size=4"]))
    skipped = json.loads((out / "metrics.json").read_text())["skipped"]
    assert same_skips(skipped, expected)
    assert "**Skipped files**: 5" in (out / "model_card.md").read_text()
