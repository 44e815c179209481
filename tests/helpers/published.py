"""Tiny trees laid out exactly as each public data set is published (``BUILDERS``: data set name ->
(builder, the reader's keyword arguments)), and the file writers they use."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import openpyxl
from PIL import Image

from xmed.findings import FINDINGS

S = 8  # every test image is S×S


# ------------------------------------------------------------------------------ file helpers
def image(path: Path, value=(200, 80, 40)) -> Path:
    """A tiny RGB photograph; the format follows the suffix (JPEG, PNG, BMP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (S, S), value).save(path, format={".jpg": "JPEG", ".jpeg": "JPEG"}.get(
        path.suffix.lower(), None))
    return path


def mask(path: Path, levels: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = Image.fromarray(levels.astype(np.uint8), "L")
    if palette:  # a palette PNG whose indices are the levels, with unrelated colours
        m = m.convert("P")
        m.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
        m.frombytes(levels.astype(np.uint8).tobytes())
    m.save(path)
    return path


def square(lo: int, hi: int) -> np.ndarray:
    """Boolean S×S mask, True on rows/columns lo..hi inclusive."""
    m = np.zeros((S, S), bool)
    m[lo:hi + 1, lo:hi + 1] = True
    return m


DISC, CUP = square(2, 5), square(3, 4)


def refuge_levels() -> np.ndarray:  # 255 background, 128 rim, 0 cup
    m = np.full((S, S), 255, np.uint8)
    m[DISC], m[CUP] = 128, 0
    return m


def index_levels() -> np.ndarray:  # ORIGA/G1020: 0 background, 1 rim, 2 cup
    m = np.zeros((S, S), np.uint8)
    m[DISC], m[CUP] = 1, 2
    return m


def binary_levels(region: np.ndarray) -> np.ndarray:
    return np.where(region, 255, 0).astype(np.uint8)


def write_csv(path: Path, rows: list[list], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)
    return path


# --------------------------------------------------------------------------- fixture builders
def build_refuge(root: Path) -> Path:
    image(root / "Training400/Glaucoma/g0001.jpg")
    image(root / "Training400/Non-Glaucoma/n0001.jpg")
    mask(root / "Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp", refuge_levels())
    image(root / "REFUGE-Validation400/V0001.jpg")
    image(root / "REFUGE-Validation400/V0002.jpg")
    write_xlsx(root / "REFUGE-Validation400-GT/Fovea_locations.xlsx", [
        ["ID", "ImgName", "Fovea_X", "Fovea_Y", "Glaucoma Label"],
        [1, "V0001.jpg", 3.5, 4.0, 0],
        [2, "V0002.jpg", 3.0, 3.0, 1],
    ])
    image(root / "Test400/T0001.jpg")
    write_xlsx(root / "REFUGE-Test-GT/Glaucoma_label_and_Fovea_location.xlsx", [
        ["ID", "ImgName", "Fovea_X", "Fovea_Y", "Label(Glaucoma=1)"],
        [1, "T0001.jpg", 4.0, 4.0, 1],
    ])
    mask(root / "REFUGE-Test-GT/Disc_Cup_Masks/G/T0001.bmp", refuge_levels())
    return root


def build_refuge2(root: Path) -> Path:
    t = root / "Train"
    image(t / "REFUGE1-train/Training400/Glaucoma/g0001.jpg")
    image(t / "REFUGE1-train/Training400/Non-Glaucoma/n0001.jpg")
    mask(t / "REFUGE1-train/Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp",
         refuge_levels())
    image(t / "REFUGE1-val/REFUGE-Validation400/V0001.jpg")
    write_xlsx(t / "REFUGE1-val/Fovea_locations.xlsx", [
        ["ID", "ImgName", "Fovea_X", "Fovea_Y", "Glaucoma Label"], [1, "V0001.jpg", 1, 1, 1]])
    image(t / "REFUGE1-test/Test400/T0001.jpg")
    write_xlsx(t / "REFUGE1-test/Glaucoma_label_and_Fovea_location.xlsx", [
        ["ID", "ImgName", "Fovea_X", "Fovea_Y", "Label(Glaucoma=1)"], [1, "T0001.jpg", 1, 1, 0]])
    image(root / "Validation/Images/V0001.jpg")
    image(root / "Validation/Images/V0002.jpg")
    write_csv(root / "Validation/glaucoma.csv",
              [["FileName", "Glaucoma Risk"], ["V0001.jpg", 0], ["V0002.jpg", 1]])
    image(root / "Test/refuge2-test/T0001.jpg")
    write_csv(root / "Test/task1.csv", [["T0001.jpg", 1]])  # headerless, as task1.xls is
    return root


def build_origa(root: Path) -> Path:
    write_csv(root / "OrigaList.csv", [
        ["Eye", "Filename", "ExpCDR", "Set", "Glaucoma"],
        ["OD", "001.jpg", 0.7057, "A", 0],
        ["OS", "002.jpg", 0.85, "B", 1],
    ])
    image(root / "Images/001.jpg")
    image(root / "Images/002.jpg")
    mask(root / "Masks/001.png", index_levels())
    return root


def build_g1020(root: Path) -> Path:
    write_csv(root / "G1020.csv", [["imageID", "binaryLabels"],
                                   ["image_0.jpg", 1], ["image_1.jpg", 0]])
    image(root / "Images/image_0.jpg")
    image(root / "Images/image_1.jpg")
    mask(root / "Masks/image_0.png", index_levels(), palette=True)
    return root


def build_papila(root: Path) -> Path:
    for stem in ("RET002OD", "RET002OS", "RET004OD", "RET004OS"):
        image(root / f"FundusImages/{stem}.jpg")
    title = [None, None, None, None, "Refractive_Defect"]
    header = ["ID", "Age", "Gender", "Diagnosis", "dioptre_1"]
    sub = [None, None, None, None, "dioptre_1"]
    write_xlsx(root / "ClinicalData/patient_data_od.xlsx",
               [title, header, sub, ["#002", 39, 0, 0, -1.0], ["#004", 57, 1, 2, 0.5]])
    write_xlsx(root / "ClinicalData/patient_data_os.xlsx",
               [title, header, sub, ["#002", 39, 0, 1, -1.5], ["#004", 57, 1, 0, 0.25]])
    contours = root / "ExpertsSegmentations/Contours"
    contours.mkdir(parents=True)
    (contours / "RET002OD_disc_exp1.txt").write_text("2 2\n5 2\n5 5\n2 5\n")
    (contours / "RET002OD_cup_exp1.txt").write_text("3 3\n4 3\n4 4\n3 4\n")
    (contours / "RET002OD_disc_exp2.txt").write_text("1 1\n6 1\n6 6\n1 6\n")
    return root


def build_acrima(root: Path) -> Path:
    image(root / "Database/Images/Im001_ACRIMA.jpg")
    image(root / "Database/Images/Im311_g_ACRIMA.JPG")  # the release has upper-case .JPG files
    (root / "Database/readme.txt").write_text("not an image")
    return root


def build_rimone(root: Path) -> Path:
    by_h = root / "RIM-ONE_DL_images/partitioned_by_hospital"
    image(by_h / "training_set/glaucoma/r2_Im001.png")
    image(by_h / "training_set/normal/r1_Im002.png")
    image(by_h / "test_set/glaucoma/r3_Im003.png")
    rnd = root / "RIM-ONE_DL_images/partitioned_randomly"
    image(rnd / "training_set/glaucoma/r3_Im003.png")
    image(rnd / "training_set/normal/r1_Im002.png")
    image(rnd / "test_set/glaucoma/r2_Im001.png")
    seg = root / "RIM-ONE_DL_reference_segmentations/glaucoma"
    mask(seg / "r2_Im001-1-Disc-T.png", binary_levels(DISC))
    mask(seg / "r2_Im001-1-Cup-T.png", binary_levels(CUP))
    return root


def build_airogs(root: Path) -> Path:
    write_csv(root / "train_labels.csv", [["challenge_id", "class"], ["TRAIN000000", "NRG"],
                                          ["TRAIN000001", "RG"], ["TRAIN000002", "NRG"]])
    image(root / "0/TRAIN000000.jpg")
    image(root / "0/TRAIN000001.jpg")
    image(root / "1/TRAIN000002.jpg")
    return root


def justraigs_row(eye_id, final, fellow, labels, features) -> list:
    """One CSV row; ``features[g]`` maps codes to cell values (missing codes are empty)."""
    row = [eye_id, final, fellow, 60, *labels]
    for g in ("G1", "G2", "G3"):
        row += [features.get(g, {}).get(code, "") for code in FINDINGS]
    return row


def build_justraigs(root: Path) -> Path:
    header = ["Eye ID", "Final Label", "Fellow Eye ID", "Age", "Label G1", "Label G2", "Label G3",
              *(f"{g} {code}" for g in ("G1", "G2", "G3") for code in FINDINGS)]
    zeros = {code: 0 for code in FINDINGS}
    rows = [
        # G1/G2 disagree, so G3 graded: G3's features win (DH left empty by G3 -> NaN)
        justraigs_row("TRAIN000000", "RG", "TRAIN000001", ["RG", "NRG", "RG"], {
            "G1": {code: 1 for code in FINDINGS},
            "G3": {**{c: 0 for c in FINDINGS if c != "DH"}, "ANRS": 1}}),
        # G1/G2 agree on RG: agreed features kept, ANRI (1 vs 0) disagrees -> NaN
        justraigs_row("TRAIN000001", "RG", "TRAIN000000", ["RG", "RG", ""], {
            "G1": {**zeros, "ANRS": 1, "ANRI": 1, "LC": 1},
            "G2": {**zeros, "ANRS": 1, "ANRI": 0, "LC": 1}}),
        # both NRG, no features graded: all NaN, never 0
        justraigs_row("TRAIN000002", "NRG", "", ["NRG", "NRG", ""], {}),
        # ungradable
        justraigs_row("TRAIN000003", "U", "", ["U", "U", ""], {}),
    ]
    write_csv(root / "JustRAIGS_Train_labels.csv", [header, *rows], delimiter=";")
    image(root / "0/TRAIN000000.JPG")
    image(root / "0/TRAIN000001.JPG")
    image(root / "1/TRAIN000002.JPG")
    image(root / "5/TRAIN000003.JPG")
    return root


def build_smdg(root: Path) -> Path:
    write_csv(root / "metadata - standardized.csv", [
        ["names", "types", "type_expanded", "patient_id", "fundus", "fundus_od_seg",
         "fundus_oc_seg", "eye", "vcdr"],
        ["PAPILA-1", 1, "", 7, "/full-fundus/PAPILA-1.png", "/optic-disc/PAPILA-1.png",
         "/optic-cup/PAPILA-1.png", "OD", 0.6],
        ["PAPILA-2", 0, "", 7, "/full-fundus/PAPILA-2.png", "", "", "OS", ""],
        ["OIA-ODIR-TEST-OFFLINE-57", -1, "", "", "/full-fundus/OIA-ODIR-TEST-OFFLINE-57.png",
         "", "Not Visible", "OD", ""],
    ])
    image(root / "full-fundus/PAPILA-1.png")
    image(root / "full-fundus/full-fundus/PAPILA-2.png")  # Kaggle's doubled folder
    image(root / "full-fundus/OIA-ODIR-TEST-OFFLINE-57.png")
    mask(root / "optic-disc/PAPILA-1.png", binary_levels(DISC))
    mask(root / "optic-cup/PAPILA-1.png", binary_levels(CUP))
    return root


def build_csv(root: Path) -> Path:
    write_csv(root / "labels.csv", [
        ["image", "label", "eye", "patient", "vcdr", "split", "DH", "LC"],
        ["a.png", "glaucoma", "right", "p1", 0.5, "training", 1, ""],
        ["b.png", 0, "OS", "p1", "", "test", 0, 1],
        ["sub/c.png", "suspect", "L", "p2", "", "val", "", ""],
    ])
    for name in ("a.png", "b.png", "sub/c.png"):
        image(root / "images" / name)
    return root


def build_image_folder(root: Path) -> Path:
    image(root / "train/glaucoma/x.png")
    image(root / "train/normal/y.png")
    image(root / "test/Glaucoma/z.png")
    return root


def dicom(path: Path, laterality: str | None, patient: str | None, uid: str,
          attribute: str = "ImageLaterality") -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, uid, "OP"
    if patient:
        ds.PatientID = patient
    if laterality:
        setattr(ds, attribute, laterality)
    ds.Rows = ds.Columns = S
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.full((S, S, 3), 100, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def build_dicom(root: Path) -> Path:
    dicom(root / "a.dcm", "L", "PAT-1", "1.2.3.1")
    dicom(root / "sub/b.dcm", "R", "PAT-1", "1.2.3.2", attribute="Laterality")
    dicom(root / "sub/IM0003", None, "PAT-2", "1.2.3.3")  # extension-less PACS export
    write_csv(root / "labels.csv", [["file", "label"], ["a.dcm", 1], ["sub/b.dcm", 0]])
    return root


# name -> (builder, constructor kwargs)
BUILDERS = {
    "refuge": (build_refuge, {}),
    "refuge2": (build_refuge2, {"test_labels": "Test/task1.csv"}),
    "origa": (build_origa, {}),
    "g1020": (build_g1020, {}),
    "papila": (build_papila, {}),
    "acrima": (build_acrima, {}),
    "rimone_dl": (build_rimone, {}),
    "airogs": (build_airogs, {}),
    "justraigs": (build_justraigs, {}),
    "smdg": (build_smdg, {}),
    "csv": (build_csv, {"eye_column": "eye", "patient_column": "patient", "vcdr_column": "vcdr",
                        "split_column": "split", "image_dir": "images"}),
    "image_folder": (build_image_folder, {}),
    "dicom_folder": (build_dicom, {"labels": "labels.csv"}),
    "photo_folder": (build_image_folder, {}),   # the same files, read without labels
}
