"""Fuzzing the label-table readers: whatever a table holds (random cells, bytes, encodings,
delimiters, headers, numbers), building the data set either succeeds with only usable records or
raises an ``XmedError`` — nothing else escapes, nothing hangs.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmed.data.datasets import dataset_class, get_dataset
from xmed.errors import XmedError
from xmed.findings import FINDINGS

from helpers.published import build_origa, build_refuge, image

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IMAGES = ("a.png", "b.png", "sub/c.png", "d.png", "e.png", "f.png")

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["0", "1", "0.5", "-0", "1e999", "-1e999", "nan", "NaN", "inf", "-inf", "NA", "1_000",
                     "0x10", "١", "9" * 400, " 1 ", "1,5"]),
)
words = st.sampled_from(["", "glaucoma", "normal", "suspect", "RG", "NRG", "-1", "train", "trian", "Validation400",
                         "test_set", "OD", "OS", "left", "X", "p1", "../x.png", "/etc/passwd", ".", "..", "a.png",
                         "A.PNG", "b.png", "sub/c.png", "sub\\c.png", "\ufeffa.png", "x" * 5000])
junk = st.one_of(words, numbers, st.text(max_size=30), st.text(alphabet=",;\t\"'\r\n\x00 ", max_size=6))
#: column -> cells that column usually holds (the tables are mostly plausible, so that readers also succeed)
PLAUSIBLE = {
    "image": st.sampled_from(IMAGES), "Filename": st.sampled_from(["001.jpg", "002.jpg", "003.jpg"]),
    "label": st.sampled_from(["0", "1", "glaucoma", "normal", "", "-1"]), "Glaucoma": st.sampled_from(["0", "1"]),
    "vcdr": st.floats(0, 1).map(str), "ExpCDR": st.floats(0, 1).map(str),
    "split": st.sampled_from(["train", "val", "test", "Training", "test_set"]), "Set": st.sampled_from(["A", "B"]),
    "eye": st.sampled_from(["OD", "OS", "left", ""]), "Eye": st.sampled_from(["OD", "OS"]),
    "patient": st.sampled_from(["p1", "p2", "p3"]), "id": st.sampled_from(["x", "y", "z", "X", "w", "v"]),
    **{code: st.sampled_from(["0", "1", ""]) for code in FINDINGS},
}
rarely = st.sampled_from([False] * 9 + [True])
OPTIONAL = {"id": "id_column", "vcdr": "vcdr_column", "split": "split_column", "eye": "eye_column",
            "patient": "patient_column"}
COLUMNS = ["image", "label", *OPTIONAL, *FINDINGS]
plausible_headers = st.permutations(COLUMNS[2:]).flatmap(
    lambda rest: st.integers(0, len(rest)).map(lambda n: ["image", "label", *rest[:n]])).flatmap(st.permutations)
headers = st.one_of(plausible_headers.map(list), plausible_headers.map(list),
                    st.lists(st.one_of(st.sampled_from(COLUMNS), st.text(max_size=8)), max_size=8))


@st.composite
def table_rows(draw, header: list[str]) -> list[str]:
    """A row of plausible cells; now and then one junk cell, a missing cell or an extra one."""
    cells = [draw(PLAUSIBLE.get(column, junk)) for column in header]
    flaw = draw(st.sampled_from(["none", "none", "none", "junk cell", "short", "long"]))
    if flaw == "junk cell" and cells:
        cells[draw(st.integers(0, len(cells) - 1))] = draw(junk)
    elif flaw == "short":
        cells = cells[:-1]
    elif flaw == "long":
        cells.append(draw(junk))
    return cells


@st.composite
def csv_datasets(draw) -> tuple[bytes, dict]:
    """A label table for the CSV reader and the reader's options (mostly naming columns the
    table has)."""
    header = draw(headers)
    options = {OPTIONAL[c]: c for c in header if c in OPTIONAL and draw(st.booleans())}
    if draw(rarely):  # a column the table lacks
        options[draw(st.sampled_from(sorted(OPTIONAL.values())))] = "absent"
    if draw(st.booleans()):
        options["on_error"] = "skip"
    return draw(label_tables(header)), options


@st.composite
def label_tables(draw, header: list[str] | None = None) -> bytes:
    """The bytes of a label table: mostly plausible rows with some junk cells, written as CSV or
    joined raw, in one of several encodings and delimiters, with or without a BOM, with extra or
    missing cells — or plain random bytes."""
    if draw(rarely):
        return draw(st.binary(max_size=300))
    head = header if header is not None else draw(headers)
    rows = draw(st.lists(table_rows(head), max_size=8))
    delimiter = draw(st.sampled_from([",", ",", ";", "\t", "|"]))
    if draw(st.booleans()):
        out = io.StringIO()
        csv.writer(out, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"]))).writerows(
            [head, *rows])
        text = out.getvalue()
    else:
        text = "\n".join(delimiter.join(r) for r in [head, *rows])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252"]))
    return text.encode(encoding, errors="replace")


def check_records(ds, *, patients_required: bool = False) -> None:
    """What every record a reader returns must be: usable values, one listing per eye and image,
    an existing image inside the root."""
    root = Path(os.path.abspath(ds.root))
    ids, images = set(), set()
    for r in ds.records:
        assert math.isnan(r.label) or r.label in (0.0, 1.0)
        assert math.isnan(r.vcdr) or 0.0 <= r.vcdr <= 1.0
        assert all(math.isnan(v) or v in (0.0, 1.0) for v in r.findings.tolist())
        assert r.split in (None, "train", "val", "test") and r.eye in (None, "OD", "OS")
        assert r.id.strip() and r.id.strip().casefold() not in ids
        path = os.path.abspath(r.image_path)
        assert path not in images and Path(path).is_relative_to(root) and r.image_path.is_file()
        assert r.patient or not patients_required
        ids.add(r.id.strip().casefold())
        images.add(path)
    assert all(s.path and s.reason for s in ds.skipped)


def build(make) -> object | None:
    """The data set ``make()`` builds, or None when it refused the table with an XmedError."""
    try:
        return make()
    except XmedError:
        return None


@pytest.fixture(scope="module")
def csv_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_csv")
    for name in IMAGES:
        image(root / name)
    image(root.parent / "x.png")  # what "../x.png" reaches
    return root


@pytest.mark.timeout(60)
@FUZZ
@given(case=csv_datasets())
def test_csv_reader_returns_valid_records_or_an_xmed_error(csv_root, case):
    table, options = case
    (csv_root / "labels.csv").write_bytes(table)
    ds = build(lambda: get_dataset("csv", root=csv_root, **options))
    if ds is not None:
        check_records(ds, patients_required="patient_column" in options)


@pytest.fixture(scope="module")
def origa_root(tmp_path_factory) -> Path:
    root = build_origa(tmp_path_factory.mktemp("fuzz") / "origa")
    image(root / "Images/003.jpg")
    return root


@pytest.mark.timeout(60)
@FUZZ
@given(table=label_tables(header=["Eye", "Filename", "ExpCDR", "Set", "Glaucoma"]),
       on_error=st.sampled_from(["raise", "skip"]))
def test_origa_reader_returns_valid_records_or_an_xmed_error(origa_root, table, on_error):
    (origa_root / "OrigaList.csv").write_bytes(table)
    ds = build(lambda: dataset_class("origa")(origa_root, on_error=on_error))
    if ds is not None:
        check_records(ds)


workbook_cells = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
                           st.floats(allow_nan=True, allow_infinity=True), words,
                           st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
REFUGE_HEADER = ["ID", "ImgName", "Fovea_X", "Fovea_Y", "Glaucoma Label"]


@pytest.fixture(scope="module")
def refuge_root(tmp_path_factory) -> Path:
    return build_refuge(tmp_path_factory.mktemp("fuzz") / "refuge")


@pytest.mark.timeout(60)
@settings(FUZZ, max_examples=80)
@given(header=st.one_of(st.just(REFUGE_HEADER), st.lists(st.sampled_from(REFUGE_HEADER + ["Label(Glaucoma=1)", ""]),
                                                         max_size=6)),
       rows=st.lists(st.lists(workbook_cells, max_size=6), max_size=6),
       image_names=st.lists(st.sampled_from(["V0001.jpg", "V0002.jpg", "v0001.JPG", "../Test400/T0001.jpg"]),
                            max_size=4),
       broken=st.one_of(st.none(), st.binary(max_size=200)),
       on_error=st.sampled_from(["raise", "skip"]))
def test_refuge_workbook_reader_returns_valid_records_or_an_xmed_error(refuge_root, header, rows, image_names,
                                                                       broken, on_error):
    path = refuge_root / "REFUGE-Validation400-GT/Fovea_locations.xlsx"
    if broken is not None:
        path.write_bytes(broken)
    else:
        workbook = openpyxl.Workbook()
        for values in [header, *rows, *([1, name, 0, 0, 1] for name in image_names)]:
            workbook.active.append(values)
        workbook.save(path)
    ds = build(lambda: dataset_class("refuge")(refuge_root, on_error=on_error))
    if ds is not None:
        check_records(ds)
