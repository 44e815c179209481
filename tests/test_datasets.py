"""The public data set readers, each on a tiny tree laid out exactly as the set is published."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch

from xmed.data.datasets import DATASETS, SkippedSample, collate_samples, dataset_class
from xmed.errors import DatasetError
from xmed.findings import FINDINGS

from helpers.published import BUILDERS, CUP, DISC, S, build_refuge2, build_rimone, image, write_csv, write_xlsx

NAN = float("nan")


def drop_column(path: Path, column: str) -> None:
    """Rewrite a CSV/xlsx label file without ``column`` (same delimiter, same title rows)."""
    if path.suffix == ".xlsx":
        workbook = openpyxl.load_workbook(path)
        sheet = workbook.active
        for row in sheet.iter_rows():
            for cell in row:
                if cell.value == column:
                    sheet.delete_cols(cell.column)
                    workbook.save(path)
                    return
        raise AssertionError(f"{column} not in {path}")
    text = path.read_text()
    delimiter = ";" if text.splitlines()[0].count(";") > text.splitlines()[0].count(",") else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    j = rows[0].index(column)
    write_csv(path, [r[:j] + r[j + 1:] for r in rows], delimiter)


def same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN."""
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) \
        or a == b


def by_id(ds) -> dict:
    return {r.id: r for r in ds.records}


def sample_of(ds, record_id: str) -> dict:
    return ds[[r.id for r in ds.records].index(record_id)]


def make(name: str, tmp_path: Path, **kwargs):
    builder, defaults = BUILDERS[name]
    root = builder(tmp_path / name)
    return dataset_class(name)(root, **{**defaults, **kwargs})


def test_every_registered_public_dataset_has_a_fixture():
    assert set(BUILDERS) == {n for n in DATASETS if not n.startswith("phantom")}


# ----------------------------------------------------------------------------- per data set
def test_refuge(tmp_path):
    ds = make("refuge", tmp_path)
    records = by_id(ds)
    assert sorted(records) == ["T0001", "V0001", "V0002", "g0001", "n0001"]
    assert {k: r.label for k, r in records.items()} == {
        "g0001": 1.0, "n0001": 0.0, "V0001": 0.0, "V0002": 1.0, "T0001": 1.0}
    assert {k: r.split for k, r in records.items()} == {
        "g0001": "train", "n0001": "train", "V0001": "val", "V0002": "val", "T0001": "test"}
    assert set(records["T0001"].mask_paths) == {"disc_cup"} and not records["n0001"].mask_paths
    assert all(np.isnan(r.findings).all() and math.isnan(r.vcdr) for r in ds.records)
    for record_id in ("g0001", "T0001"):  # BMP levels: 0 cup, 128 rim, 255 background
        masks = sample_of(ds, record_id)["masks"]
        assert torch.equal(masks["disc"], torch.from_numpy(DISC))
        assert torch.equal(masks["cup"], torch.from_numpy(CUP))
    assert [r.id for r in dataset_class("refuge")(ds.root, split="test").records] == ["T0001"]


def test_refuge2(tmp_path):
    ds = make("refuge2", tmp_path)
    records = by_id(ds)
    assert {k: (r.label, r.split) for k, r in records.items()} == {
        "g0001": (1.0, "train"), "n0001": (0.0, "train"), "V0001": (1.0, "train"),
        "T0001": (0.0, "train"), "refuge2-val/V0001": (0.0, "val"),
        "refuge2-val/V0002": (1.0, "val"), "refuge2-test/T0001": (1.0, "test")}
    assert torch.equal(sample_of(ds, "g0001")["masks"]["cup"], torch.from_numpy(CUP))
    only = dataset_class("refuge2")(ds.root, parts=("val",))
    assert sorted(r.id for r in only.records) == ["refuge2-val/V0001", "refuge2-val/V0002"]


def test_refuge2_corrupt_xls_names_the_file(tmp_path):
    root = build_refuge2(tmp_path / "refuge2")
    (root / "Test/task1.xls").write_bytes(b"\xd0\xcf\x11\xe0 legacy excel")
    with pytest.raises(DatasetError, match="xls") as err:
        dataset_class("refuge2")(root)
    assert "task1.xls" in str(err.value)
    assert len(dataset_class("refuge2")(root, parts=("train", "val"))) == 6


def test_origa(tmp_path):
    ds = make("origa", tmp_path)
    a, b = ds.records
    assert (a.id, a.label, a.eye, a.split) == ("001", 0.0, "OD", "train")
    assert (b.id, b.label, b.eye, b.split) == ("002", 1.0, "OS", "test")
    assert (a.vcdr, b.vcdr) == (pytest.approx(0.7057), pytest.approx(0.85))  # ExpCDR
    sample = ds[0]
    assert torch.equal(sample["masks"]["disc"], torch.from_numpy(DISC))  # levels 1 and 2
    assert torch.equal(sample["masks"]["cup"], torch.from_numpy(CUP))    # level 2
    assert ds[1]["masks"] == {}
    assert [r.id for r in dataset_class("origa")(ds.root, split="test").records] == ["002"]


def test_g1020_palette_mask_uses_indices(tmp_path):
    ds = make("g1020", tmp_path)
    assert [(r.id, r.label, r.split, r.eye) for r in ds.records] == [
        ("image_0", 1.0, None, None), ("image_1", 0.0, None, None)]
    masks = ds[0]["masks"]
    assert torch.equal(masks["disc"], torch.from_numpy(DISC))
    assert torch.equal(masks["cup"], torch.from_numpy(CUP))


def test_papila(tmp_path):
    ds = make("papila", tmp_path)
    records = by_id(ds)
    assert sorted(records) == ["RET002OD", "RET002OS", "RET004OD", "RET004OS"]
    labels = {k: r.label for k, r in records.items()}
    assert labels["RET002OD"] == 0.0 and labels["RET002OS"] == 1.0 and labels["RET004OS"] == 0.0
    assert math.isnan(labels["RET004OD"])  # Diagnosis 2 = suspect
    assert {k: (r.eye, r.patient) for k, r in records.items()} == {
        "RET002OD": ("OD", "RET002"), "RET002OS": ("OS", "RET002"),
        "RET004OD": ("OD", "RET004"), "RET004OS": ("OS", "RET004")}
    assert ds.has_patient_ids and len(set(ds.groups())) == 2
    masks = sample_of(ds, "RET002OD")["masks"]
    assert torch.equal(masks["disc"], torch.from_numpy(DISC))
    assert torch.equal(masks["cup"], torch.from_numpy(CUP))
    other = dataset_class("papila")(ds.root, expert=2)
    assert set(by_id(other)["RET002OD"].mask_paths) == {"disc"}
    assert int(sample_of(other, "RET002OD")["masks"]["disc"].sum()) == 36


def test_acrima(tmp_path):
    ds = make("acrima", tmp_path)
    assert [(r.id, r.label) for r in ds.records] == [("Im001_ACRIMA", 0.0), ("Im311_g_ACRIMA", 1.0)]
    image(ds.root / "Database/Images/photo.png")
    with pytest.raises(DatasetError, match="ACRIMA") as err:
        dataset_class("acrima")(ds.root)
    assert "photo.png" in str(err.value)
    skipped = dataset_class("acrima")(ds.root, on_error="skip")
    assert len(skipped) == 2 and skipped.skipped[0].path.endswith("photo.png")


@pytest.mark.parametrize("partition, splits", [
    ("by_hospital", {"r2_Im001": "train", "r1_Im002": "train", "r3_Im003": "test"}),
    ("randomly", {"r3_Im003": "train", "r1_Im002": "train", "r2_Im001": "test"}),
])
def test_rimone_dl_partitions(tmp_path, partition, splits):
    ds = make("rimone_dl", tmp_path, partition=partition)
    records = by_id(ds)
    assert {k: r.split for k, r in records.items()} == splits
    assert {k: r.label for k, r in records.items()} == {
        "r2_Im001": 1.0, "r1_Im002": 0.0, "r3_Im003": 1.0}
    masks = sample_of(ds, "r2_Im001")["masks"]
    assert torch.equal(masks["disc"], torch.from_numpy(DISC))
    assert torch.equal(masks["cup"], torch.from_numpy(CUP))
    assert records["r1_Im002"].mask_paths == {}


def test_rimone_dl_root_may_be_the_images_folder(tmp_path):
    root = build_rimone(tmp_path / "rimone")
    ds = dataset_class("rimone_dl")(root / "RIM-ONE_DL_images")
    assert len(ds) == 3 and set(by_id(ds)["r2_Im001"].mask_paths) == {"disc", "cup"}


def test_airogs(tmp_path):
    ds = make("airogs", tmp_path)
    assert [(r.id, r.label, r.image_path.parent.name) for r in ds.records] == [
        ("TRAIN000000", 0.0, "0"), ("TRAIN000001", 1.0, "0"), ("TRAIN000002", 0.0, "1")]


def test_justraigs_finding_consensus(tmp_path):
    ds = make("justraigs", tmp_path)
    records = by_id(ds)
    idx = {code: i for i, code in enumerate(FINDINGS)}
    assert [same(r.label, v) for r, v in zip(ds.records, [1.0, 1.0, 0.0, NAN])] == [True] * 4

    g3 = records["TRAIN000000"].findings  # G3 graded: G3's features, not G1's all-ones
    assert g3[idx["ANRS"]] == 1 and np.isnan(g3[idx["DH"]])
    assert all(g3[idx[c]] == 0 for c in FINDINGS if c not in ("ANRS", "DH"))

    agree = records["TRAIN000001"].findings  # G1/G2: agreed values kept, disagreement NaN
    assert agree[idx["ANRS"]] == 1 and agree[idx["LC"]] == 1 and np.isnan(agree[idx["ANRI"]])
    assert all(agree[idx[c]] == 0 for c in FINDINGS if c not in ("ANRS", "ANRI", "LC"))

    assert np.isnan(records["TRAIN000002"].findings).all()  # nothing graded: NaN, never 0
    assert {k: r.patient for k, r in records.items()} == {
        "TRAIN000000": "TRAIN000000", "TRAIN000001": "TRAIN000000",
        "TRAIN000002": "TRAIN000002", "TRAIN000003": "TRAIN000003"}
    sample = sample_of(ds, "TRAIN000001")
    assert torch.equal(torch.isnan(sample["findings"]), torch.from_numpy(np.isnan(agree)))


def test_smdg(tmp_path):
    ds = make("smdg", tmp_path)
    records = by_id(ds)
    p1, p2, oia = records["PAPILA-1"], records["PAPILA-2"], records["OIA-ODIR-TEST-OFFLINE-57"]
    assert (p1.label, p1.eye, p1.vcdr, p1.patient) == (1.0, "OD", pytest.approx(0.6), "PAPILA/7")
    assert (p2.label, p2.eye, p2.patient) == (0.0, "OS", "PAPILA/7") and math.isnan(p2.vcdr)
    assert p2.image_path == ds.root / "full-fundus/full-fundus/PAPILA-2.png"
    assert math.isnan(oia.label) and oia.patient is None  # types -1 = suspect
    assert set(p1.mask_paths) == {"disc", "cup"} and not oia.mask_paths
    masks = sample_of(ds, "PAPILA-1")["masks"]
    assert torch.equal(masks["disc"], torch.from_numpy(DISC))
    assert torch.equal(masks["cup"], torch.from_numpy(CUP))


def test_csv_dataset(tmp_path):
    ds = make("csv", tmp_path)
    a, b, c = ds.records
    assert (a.id, a.label, a.eye, a.patient, a.split, a.vcdr) == (
        "a", 1.0, "OD", "p1", "train", 0.5)
    assert (b.id, b.label, b.eye, b.split) == ("b", 0.0, "OS", "test") and math.isnan(b.vcdr)
    assert (c.id, c.eye, c.split, c.patient) == ("sub/c", "OS", "val", "p2")
    assert math.isnan(c.label)
    dh, lc = FINDINGS.index("DH"), FINDINGS.index("LC")
    assert a.findings[dh] == 1 and np.isnan(a.findings[lc]) and b.findings[lc] == 1
    assert np.isnan(np.delete(a.findings, [dh, lc])).all()
    assert ds.has_patient_ids and ds.groups() == ["p1", "p1", "p2"]


def test_photo_folder_lists_every_photograph_without_labels(tmp_path):
    ds = make("photo_folder", tmp_path)
    assert [r.id for r in ds.records] == ["test/Glaucoma/z", "train/glaucoma/x", "train/normal/y"]
    assert all(math.isnan(r.label) and r.split is None for r in ds.records)
    assert ds[0]["image"].shape[0] == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no photographs found"):
        dataset_class("photo_folder")(tmp_path / "empty")


def test_image_folder(tmp_path):
    ds = make("image_folder", tmp_path)
    assert [(r.id, r.label, r.split) for r in ds.records] == [
        ("test/Glaucoma/z", 1.0, "test"), ("train/glaucoma/x", 1.0, "train"),
        ("train/normal/y", 0.0, "train")]
    flat = tmp_path / "flat"
    image(flat / "G/a.png")
    image(flat / "N/b.png")
    image(flat / "unsure/c.png")
    custom = dataset_class("image_folder")(flat, classes={"G": 1, "N": 0}, on_error="skip")
    assert [(r.id, r.label, r.split) for r in custom.records] == [
        ("G/a", 1.0, None), ("N/b", 0.0, None)]
    assert custom.skipped[0].path.endswith("unsure/c.png") and "class folder" in custom.skipped[0].reason


def test_dicom_folder(tmp_path):
    ds = make("dicom_folder", tmp_path, on_error="skip")
    assert len(ds) == 3 and not ds.skipped
    records = {r.image_path.name: r for r in ds.records}
    assert (records["a.dcm"].eye, records["a.dcm"].label) == ("OS", 1.0)
    assert (records["b.dcm"].eye, records["b.dcm"].label) == ("OD", 0.0)
    assert records["IM0003"].eye is None and math.isnan(records["IM0003"].label)
    assert records["a.dcm"].patient == records["b.dcm"].patient != records["IM0003"].patient
    for r in ds.records:  # pseudonyms, never the identifiers in the file
        assert "PAT" not in r.id and "PAT" not in (r.patient or "") and len(r.id) == 16
    from xmed.data import read_dicom
    assert records["a.dcm"].id == read_dicom(ds.root / "a.dcm")[1]["id"]
    sample = sample_of(ds, records["a.dcm"].id)
    assert sample["meta"]["eye"] == "OS" and sample["image"].shape == (3, S, S)
    assert torch.allclose(sample["image"], torch.full((3, S, S), 100 / 255))

    write_csv(ds.root / "labels.csv", [["file", "label"], ["a.dcm", 1], ["gone.dcm", 0]])
    skipped = dataset_class("dicom_folder")(ds.root, labels="labels.csv", on_error="skip")
    assert len(skipped) == 3 and skipped.skipped[0].path.endswith("gone.dcm")
    (ds.root / "broken.dcm").write_bytes(b"not a dicom header at all")
    (ds.root / "notes.txt").write_text("not DICOM")
    broken = dataset_class("dicom_folder")(ds.root, on_error="skip")
    # every other entry reported; a DICOM file by its place in the listing, never by its name
    label = {e.relative: e.label for e in broken.entries}["broken.dcm"]
    assert label.startswith("dicom#2-") and "broken" not in broken.skipped[0].path
    assert [(broken.entry_label(s.path), s.reason.split(" (")[0]) for s in broken.skipped] == [
        (label, "cannot read the DICOM header"),
        ("labels.csv", "not an image: a .csv file without DICOM's 'DICM' preamble"),
        ("notes.txt", "not an image: a .txt file without DICOM's 'DICM' preamble")]


# ----------------------------------------------------------------------- the Sample contract
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sample_contract(tmp_path, name):
    ds = make(name, tmp_path)
    sample = ds[0]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, S, S)
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["findings"].shape == (len(FINDINGS),)
    record = ds.records[0]
    assert same(float(sample["label"]), record.label) and sample["meta"]["id"] == record.id
    assert sample["meta"]["source"] == name and record.source == name
    assert record.split in (None, "train", "val", "test") and record.eye in (None, "OD", "OS")


def test_no_image_is_decoded_while_listing(tmp_path, monkeypatch):
    roots = {name: builder(tmp_path / name) for name, (builder, _) in BUILDERS.items()}

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded while reading labels")

    import PIL.Image
    import xmed.data.io as io

    for module, attribute in ((io, "read_image"), (io, "read_mask"), (io, "read_dicom"),
                              (PIL.Image, "open")):
        monkeypatch.setattr(module, attribute, refuse)
    for name, root in roots.items():
        ds = dataset_class(name)(root, **BUILDERS[name][1])
        assert len(ds) > 0 and not ds.skipped
        ds.labels(), ds.groups()


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_missing_root_names_the_path(tmp_path, name):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DatasetError) as err:
        dataset_class(name)(missing)
    assert str(missing) in str(err.value)


LABEL_FILES = {
    "refuge": "REFUGE-Test-GT/Glaucoma_label_and_Fovea_location.xlsx",
    "refuge2": "Validation/glaucoma.csv",
    "origa": "OrigaList.csv",
    "g1020": "G1020.csv",
    "papila": "ClinicalData/patient_data_os.xlsx",
    "airogs": "train_labels.csv",
    "justraigs": "JustRAIGS_Train_labels.csv",
    "smdg": "metadata - standardized.csv",
    "csv": "labels.csv",
    "dicom_folder": "labels.csv",
}


@pytest.mark.parametrize("name", sorted(LABEL_FILES))
def test_missing_label_file_names_the_path(tmp_path, name):
    root = BUILDERS[name][0](tmp_path / name)
    (root / LABEL_FILES[name]).unlink()
    with pytest.raises(DatasetError) as err:
        dataset_class(name)(root, **BUILDERS[name][1])
    assert str(root / LABEL_FILES[name]) in str(err.value)


@pytest.mark.parametrize("name, column", [
    ("refuge", "Label(Glaucoma=1)"), ("refuge", "ImgName"), ("refuge2", "Glaucoma Risk"),
    ("origa", "ExpCDR"), ("g1020", "binaryLabels"), ("papila", "Diagnosis"),
    ("airogs", "class"), ("justraigs", "G3 LC"), ("justraigs", "Fellow Eye ID"),
    ("smdg", "types"), ("csv", "vcdr"), ("dicom_folder", "label"),
])
def test_missing_column_names_column_and_file(tmp_path, name, column):
    root = BUILDERS[name][0](tmp_path / name)
    label_file = root / LABEL_FILES[name]
    drop_column(label_file, column)
    with pytest.raises(DatasetError) as err:
        dataset_class(name)(root, **BUILDERS[name][1])
    message = str(err.value)
    assert column in message and label_file.name in message


@pytest.mark.parametrize("name, column, row", [
    ("origa", "ExpCDR", "002.jpg"), ("justraigs", "G2 DH", "TRAIN000001"),
    ("smdg", "vcdr", "PAPILA-2"), ("csv", "vcdr", "b"),
])
def test_bad_cell_names_file_column_and_row(tmp_path, name, column, row):
    root = BUILDERS[name][0](tmp_path / name)
    label_file = root / LABEL_FILES[name]
    text = label_file.read_text()
    delimiter = ";" if name == "justraigs" else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    j = rows[0].index(column)
    for r in rows[1:]:
        if row in r[0] or r[0] == f"{row}.png" or r[1] == row:
            r[j] = "not-a-number"
    write_csv(label_file, rows, delimiter)
    with pytest.raises(DatasetError) as err:
        dataset_class(name)(root, **BUILDERS[name][1])
    message = str(err.value)
    assert label_file.name in message and column in message and row.split(".")[0] in message


# (data set, image file to delete, id of its record)
MISSING_IMAGES = [
    ("refuge", "REFUGE-Validation400/V0002.jpg", "V0002"),
    ("refuge2", "Validation/Images/V0002.jpg", "refuge2-val/V0002"),
    ("origa", "Images/002.jpg", "002"),
    ("g1020", "Images/image_1.jpg", "image_1"),
    ("papila", "FundusImages/RET004OS.jpg", "RET004OS"),
    ("airogs", "1/TRAIN000002.jpg", "TRAIN000002"),
    ("justraigs", "5/TRAIN000003.JPG", "TRAIN000003"),
    ("smdg", "full-fundus/OIA-ODIR-TEST-OFFLINE-57.png", "OIA-ODIR-TEST-OFFLINE-57"),
    ("csv", "images/b.png", "b"),
]


@pytest.mark.parametrize("name, relative, record_id", MISSING_IMAGES)
def test_missing_image_raises_or_is_skipped_and_recorded(tmp_path, name, relative, record_id):
    root = BUILDERS[name][0](tmp_path / name)
    total = len(dataset_class(name)(root, **BUILDERS[name][1]))
    (root / relative).unlink()
    with pytest.raises(DatasetError) as err:
        dataset_class(name)(root, **BUILDERS[name][1])
    assert Path(relative).stem in str(err.value)
    ds = dataset_class(name)(root, on_error="skip", **BUILDERS[name][1])
    assert len(ds) == total - 1 and record_id not in by_id(ds)
    assert len(ds.skipped) == 1 and Path(relative).stem in ds.skipped[0].path + ds.skipped[0].reason
    assert "missing" in ds.skipped[0].reason


@pytest.mark.parametrize("name, rewrite, expected", [
    ("airogs", ("train_labels.csv", "TRAIN000001,RG", "TRAIN000001,maybe"), "maybe"),
    ("origa", ("OrigaList.csv", "B,1", "B,7"), "'7'"),
    ("justraigs", ("JustRAIGS_Train_labels.csv", "TRAIN000002;NRG", "TRAIN000002;XRG"), "XRG"),
    ("smdg", ("metadata - standardized.csv", "PAPILA-2,0", "PAPILA-2,3"), "'3'"),
    ("papila", None, "value 5 "),
])
def test_unknown_class_value_is_reported(tmp_path, name, rewrite, expected):
    root = BUILDERS[name][0](tmp_path / name)
    if rewrite is None:  # PAPILA: an undefined Diagnosis code
        write_xlsx(root / "ClinicalData/patient_data_os.xlsx",
                   [["ID", "Age", "Gender", "Diagnosis"], ["#002", 39, 0, 1], ["#004", 57, 1, 5]])
    else:
        path = root / rewrite[0]
        path.write_text(path.read_text().replace(rewrite[1], rewrite[2]))
    with pytest.raises(DatasetError, match=expected):
        dataset_class(name)(root, **BUILDERS[name][1])
    ds = dataset_class(name)(root, on_error="skip", **BUILDERS[name][1])
    assert len(ds.skipped) == 1 and expected in ds.skipped[0].reason


@pytest.mark.parametrize("name, relative", [
    ("origa", "Images/002.jpg"), ("refuge", "Training400/Glaucoma/g0001.jpg"),
    ("airogs", "0/TRAIN000001.jpg"), ("image_folder", "train/normal/y.png"),
])
def test_corrupt_image_becomes_a_skipped_sample(tmp_path, name, relative):
    root = BUILDERS[name][0](tmp_path / name)
    (root / relative).write_bytes(b"these bytes are not an image")
    ds = dataset_class(name)(root, on_error="skip", **BUILDERS[name][1])
    index = [r.image_path for r in ds.records].index(root / relative)
    broken = ds[index]
    assert isinstance(broken, SkippedSample) and broken.path == str(root / relative)
    batch = collate_samples([ds[i] for i in range(len(ds))])
    assert batch["size"] == len(ds) - 1
    assert batch["skipped"] == [{"path": str(root / relative), "reason": broken.reason}]
    assert "image" in broken.reason or "corrupt" in broken.reason
    with pytest.raises(Exception, match=Path(relative).name):
        dataset_class(name)(root, **BUILDERS[name][1])[index]


def test_numbered_folders_are_required_for_airogs(tmp_path):
    root = tmp_path / "airogs"
    write_csv(root / "train_labels.csv", [["challenge_id", "class"], ["TRAIN000000", "RG"]])
    with pytest.raises(DatasetError, match="numbered image folders") as err:
        dataset_class("airogs")(root)
    assert str(root) in str(err.value)


class _OpenCVThreads(torch.utils.data.Dataset):
    """Each item: (the number of threads OpenCV uses in the process that loads it, whether that
    process called ``cv2.setNumThreads`` itself — recorded by the wrapper the test installs)."""

    calls: list[int] = []

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[int, bool]:
        import os

        import cv2

        return cv2.getNumThreads(), os.getpid() in self.calls


def test_loader_workers_start_with_one_opencv_thread_and_the_parent_keeps_its_own(monkeypatch):
    """Workers get one OpenCV thread from the parent at fork, never by setting it themselves
    (``cv2.setNumThreads`` inside a forked worker can hang it); the parent's setting comes back."""
    import os

    import cv2

    from xmed.data.datamodule import SkipRecordingLoader, _init_worker

    set_threads = cv2.setNumThreads

    def recording(n: int) -> None:
        _OpenCVThreads.calls.append(os.getpid())
        set_threads(n)

    before = cv2.getNumThreads()
    monkeypatch.setattr(cv2, "setNumThreads", recording)
    cv2.setNumThreads(2)
    try:
        loader = SkipRecordingLoader(_OpenCVThreads(), batch_size=1, num_workers=2, worker_init_fn=_init_worker,
                                     collate_fn=lambda items: items[0])
        assert list(loader) == [(1, False)] * 4
        assert cv2.getNumThreads() == 2
    finally:
        set_threads(before)


# ------------------------------------------------------------------------------ reduced decoding
@pytest.fixture(scope="module")
def phantom_jpegs(tmp_path_factory) -> Path:
    from xmed.data.phantom.writer import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantom_jpegs") / "phantom"
    write_phantom_dataset(root, n=12, size=512, seed=0, image_format="jpg", workers=1, progress=False)
    return root


def test_the_loaders_decode_jpegs_reduced_within_a_grey_level_of_the_whole_decode(phantom_jpegs):
    """512 px JPEG eyes cropped to their field of view for a 128 px input are decoded at 1/2 with
    data.decode_reduced (the data configs' default): each prepared eye lies within 2 grey levels on average of the
    whole decode's, 1.25 averaged over the eyes (0.74-1.63 and 0.97 here: resampling on the coarser
    grid, largest at the edge of the field of view), and the batches keep their shape."""
    from xmed.data.datamodule import FundusDataModule

    options = dict(dataset="phantom", root=str(phantom_jpegs), image_size=128, batch_size=4,
                   preprocess={"crop_fov": True}, dataset_options={"load_masks": False})
    reduced, whole = FundusDataModule(**options, decode_reduced=True), FundusDataModule(**options)
    reduced.setup(), whole.setup()
    views = reduced.splits["train"], whole.splits["train"]
    prepared = [[view.prepared(i) for i in range(len(view))] for view in views]
    assert {s["meta"].get("decode_reduction") for s in prepared[0]} == {2}
    assert {s["meta"].get("decode_reduction") for s in prepared[1]} == {None}
    differences = [np.abs(a["image"].astype(int) - b["image"]).mean() for a, b in zip(*prepared)]
    assert max(differences) < 2 and np.mean(differences) < 1.25, differences
    batch = next(iter(reduced.train_dataloader()))
    assert tuple(reduced.on_after_batch_transfer(batch, 0)["image"].shape) == (4, 3, 128, 128)


def test_eyes_whose_masks_are_read_or_that_are_small_are_decoded_whole(phantom_jpegs):
    """Masks must match the photograph pixel for pixel, so an eye with masks is decoded whole; so is
    one whose crop would fall short of the input (512 px eyes for a 512 px input)."""
    from xmed.data.datamodule import FundusDataModule

    with_masks = FundusDataModule(dataset="phantom", root=str(phantom_jpegs), image_size=128,
                                  preprocess={"crop_fov": True}, decode_reduced=True)
    with_masks.setup()
    sample = with_masks.splits["train"].prepared(0)
    assert "decode_reduction" not in sample["meta"] and sample["masks"]["disc"].shape == (128, 128)
    large_input = FundusDataModule(dataset="phantom", root=str(phantom_jpegs), image_size=512, decode_reduced=True,
                                   preprocess={"crop_fov": True}, dataset_options={"load_masks": False})
    large_input.setup()
    assert "decode_reduction" not in large_input.splits["train"].prepared(0)["meta"]


def test_the_train_loader_hands_over_uint8_that_the_hook_normalises_as_the_eval_transform_would():
    from xmed.data.datamodule import FundusDataModule
    from xmed.data.datasets import to_tensor_sample

    dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 24, "size": 64}, image_size=48,
                          batch_size=6, mean=(0.4, 0.4, 0.4), std=(0.3, 0.2, 0.1), normalise_on_device=True,
                          augment={"hflip": 0.0, "rotate": 0.0, "scale": 0.0, "colour": False})
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8
    moved = dm.on_after_batch_transfer(batch, 0)
    assert moved["image"].dtype == torch.float32 and batch["image"].dtype == torch.uint8  # a new dict
    # with every augmentation off, the train pipeline is the eval one: the same normalised pixels,
    # exactly (one function normalises both)
    view = dm.splits["train"]
    position = {dm.base.records[index].id: k for k, index in enumerate(view.indices)}
    evaluated = torch.stack([to_tensor_sample(dm.transforms["eval"].augment(view.prepared(position[eye])))["image"]
                             for eye in batch["meta"]["id"]])
    assert torch.equal(moved["image"], evaluated)
    val = next(iter(dm.val_dataloader()))
    assert val["image"].dtype == torch.float32 and dm.on_after_batch_transfer(val, 0)["image"] is val["image"]


def test_normalise_on_device_false_gives_float32_train_batches_the_hook_leaves_alone():
    from xmed.data.datamodule import FundusDataModule

    options = dict(dataset="phantom_render", dataset_options={"n": 12, "size": 48}, image_size=32, batch_size=4)
    on_device, in_workers = FundusDataModule(**options), FundusDataModule(**options, normalise_on_device=False)
    kept, normalised = next(iter(on_device.train_dataloader())), next(iter(in_workers.train_dataloader()))
    assert kept["image"].dtype == torch.uint8 and normalised["image"].dtype == torch.float32
    assert in_workers.on_after_batch_transfer(normalised, 0)["image"] is normalised["image"]
    torch.testing.assert_close(on_device.on_after_batch_transfer(kept, 0)["image"], normalised["image"],
                               rtol=0, atol=1e-5)  # the same seeded augmentations either way
