"""The rating store of the review page (xmed.review.store): durable commits, readers' tokens,
validation naming the field, resume, exports the reader-study analysis reads back, and the lock
(no save slips past it; a store of the format before locks gains it)."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import threading

import pytest

from xmed.errors import InputError, PathError
from xmed.review.analysis import Rating, read_ratings
from xmed.review.store import COLUMNS, NOTE_LIMIT, RatingStore, StudyLocked


@pytest.fixture
def store(tmp_path):
    store = RatingStore(tmp_path / "ratings.sqlite")
    store.add_reader("ana")
    return store


def test_a_save_is_committed_when_it_returns(store):
    store.save_panel_rating("ana", "case-001", "gradcam", panel="A", mode="blinded", location=4, rationale=2)
    store.save_case_rating("ana", "case-001", agree=0, note="rim thin below")
    # a separate connection, as a restarted server would open, sees both at once
    other = sqlite3.connect(store.path)
    try:
        assert other.execute("SELECT location, rationale, panel, mode FROM panel_ratings").fetchall() == [
            (4, 2, "A", "blinded")]
        assert other.execute("SELECT agree, note FROM case_ratings").fetchall() == [(0, "rim thin below")]
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_connections_write_through_to_disk(store):
    with store.connect() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_only_the_digest_of_a_token_is_kept(store, tmp_path):
    token = store.add_reader("ben")
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert store.reader_for(token) == "ben"
    assert [store.reader_for(other) for other in ("", token[:-1], token + "x", None, 42, "x" * 10_000)] == [None] * 6
    with store.connect() as db:
        digests = dict(db.execute("SELECT name, token_sha256 FROM readers"))
    assert digests["ben"] == hashlib.sha256(token.encode()).hexdigest()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("ratings.sqlite*"))
    assert token.encode() not in raw
    assert store.readers() == ["ana", "ben"]


def test_a_reader_name_is_registered_once(store):
    with pytest.raises(InputError, match="reader 'ana' already exists") as caught:
        store.add_reader("ana")
    assert caught.value.name == "name"
    with pytest.raises(InputError) as caught:
        store.add_reader(" ana")
    assert caught.value.name == "name"


PANEL = dict(reader="ana", case="case-001", method="gradcam", panel="A", mode="blinded", location=3)


@pytest.mark.parametrize("change, field", [
    ({"location": 6}, "location"), ({"location": 0}, "location"), ({"location": True}, "location"),
    ({"location": "4"}, "location"), ({"location": 2.5}, "location"), ({"rationale": -1}, "rationale"),
    ({"panel": "AB"}, "panel"), ({"panel": "a"}, "panel"), ({"mode": "double-blind"}, "mode"),
    ({"case": ""}, "case"), ({"method": " gradcam"}, "method"), ({"case": "x" * 201}, "case"),
    ({"reader": "nobody"}, "reader"),
])
def test_a_bad_panel_rating_names_its_field(store, change, field):
    arguments = {**PANEL, **change}
    with pytest.raises(InputError) as caught:
        store.save_panel_rating(arguments.pop("reader"), arguments.pop("case"), arguments.pop("method"), **arguments)
    assert caught.value.name == field
    assert store.rows() == []


@pytest.mark.parametrize("change, field", [
    ({"agree": 2}, "agree"), ({"agree": "yes"}, "agree"), ({"agree": False}, "agree"),
    ({"note": "x" * (NOTE_LIMIT + 1)}, "note"), ({"note": 5}, "note"), ({"note": "a\x00b"}, "note"),
    ({}, "agree"),
])
def test_a_bad_case_rating_names_its_field(store, change, field):
    with pytest.raises(InputError) as caught:
        store.save_case_rating("ana", "case-001", **change)
    assert caught.value.name == field


def test_a_score_left_out_is_kept_and_none_clears_it(store):
    store.save_panel_rating("ana", "c1", "gradcam", panel="B", mode="open", location=2)
    store.save_panel_rating("ana", "c1", "gradcam", panel="B", mode="open", rationale=5)
    assert store.case_ratings("ana", "c1")["panels"] == {"gradcam": {"location": 2, "rationale": 5}}
    store.save_panel_rating("ana", "c1", "gradcam", panel="B", mode="open", location=None)
    store.save_case_rating("ana", "c1", note="x" * NOTE_LIMIT)
    store.save_case_rating("ana", "c1", agree=1)
    assert store.case_ratings("ana", "c1") == {"panels": {"gradcam": {"location": None, "rationale": 5}},
                                               "agree": 1, "note": "x" * NOTE_LIMIT}
    assert store.case_ratings("ana", "c2") == {"panels": {}, "agree": None, "note": None}


def test_progress_counts_a_case_once_every_panel_and_the_decision_are_rated(tmp_path):
    expected = {"c1": ["gradcam", "adversarial"], "c2": ["gradcam", "adversarial"]}
    store = RatingStore(tmp_path / "ratings.sqlite")
    store.add_reader("ana")
    store.save_panel_rating("ana", "c1", "gradcam", panel="A", mode="blinded", location=4, rationale=4)
    store.save_case_rating("ana", "c1", agree=1)
    assert store.progress("ana", expected) == {"c1": False, "c2": False}
    store.save_panel_rating("ana", "c1", "adversarial", panel="B", mode="blinded", location=1)
    assert store.progress("ana", expected) == {"c1": False, "c2": False}
    store.save_panel_rating("ana", "c1", "adversarial", panel="B", mode="blinded", rationale=3)
    # a reopened store (a restarted server) resumes from the same state
    assert RatingStore(tmp_path / "ratings.sqlite").progress("ana", expected) == {"c1": True, "c2": False}
    assert store.progress("ben", expected) == {"c1": False, "c2": False}


def fill(store):
    store.add_reader("ben")
    note = 'cup, "notched", at 6 o\'clock;\nsee RNFL'
    store.save_panel_rating("ana", "case-002", "gradcam", panel="B", mode="blinded", location=5, rationale=4)
    store.save_panel_rating("ana", "case-002", "adversarial", panel="A", mode="blinded", location=2)
    store.save_case_rating("ana", "case-002", agree=1, note=note)
    store.save_panel_rating("ben", "case-001", "gradcam", panel="A", mode="blinded", rationale=1)
    return note


def test_rows_hold_the_analysis_columns_and_repeat_the_case_answer(store):
    note = fill(store)
    rows = store.rows()
    assert all(tuple(row) == COLUMNS for row in rows)
    assert [(r["reader"], r["case"], r["method"], r["location"], r["rationale"], r["agree"], r["note"], r["panel"])
            for r in rows] == [("ana", "case-002", "adversarial", 2, None, 1, note, "A"),
                               ("ana", "case-002", "gradcam", 5, 4, 1, note, "B"),
                               ("ben", "case-001", "gradcam", None, 1, None, None, "A")]
    assert [row["reader"] for row in store.rows("ben")] == ["ben"]


EXPECTED = [Rating("ana", "case-002", "adversarial", 2, None, 1), Rating("ana", "case-002", "gradcam", 5, 4, 1),
            Rating("ben", "case-001", "gradcam", None, 1, None)]


def test_csv_export_reads_back_through_the_analysis(store, tmp_path):
    note = fill(store)
    path = store.export_csv(tmp_path / "out" / "ratings.csv")
    assert read_ratings(path) == EXPECTED
    with open(path, newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == COLUMNS
    assert [row["note"] for row in table] == [note, note, ""]
    assert read_ratings(store.export_csv(tmp_path / "ben.csv", reader="ben")) == EXPECTED[2:]


def test_json_export_reads_back_through_the_analysis(store, tmp_path):
    note = fill(store)
    rows = json.loads(store.export_json(tmp_path / "ratings.json").read_text())
    assert [tuple(row) for row in rows] == [COLUMNS] * 3
    assert rows[0]["note"] == note and rows[0]["mode"] == "blinded"
    assert read_ratings(rows) == EXPECTED


def test_threads_saving_at_once_lose_nothing(store):
    def rate(case):
        for method in ("gradcam", "adversarial", "rise"):
            store.save_panel_rating("ana", case, method, panel="A", mode="open", location=1 + len(method) % 5)

    threads = [threading.Thread(target=rate, args=(f"case-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.rows()) == 18


def test_a_file_that_is_not_a_ratings_file_is_refused(tmp_path):
    (tmp_path / "ratings.sqlite").write_text("not a database, " * 100)
    with pytest.raises(PathError, match="is not a ratings file"):
        RatingStore(tmp_path / "ratings.sqlite")
    with pytest.raises(PathError, match="does not exist"):
        RatingStore(tmp_path / "missing" / "ratings.sqlite")


def test_no_save_slips_past_the_lock(store):
    acknowledged, started = {}, threading.Event()

    def rate(case):
        for n in range(10_000):
            try:
                store.save_panel_rating("ana", case, "gradcam", panel="A", mode="open", location=1 + n % 5)
            except StudyLocked:
                return
            acknowledged[case] = 1 + n % 5
            started.set()

    threads = [threading.Thread(target=rate, args=(f"case-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    assert started.wait(30)
    locked = store.lock()
    for thread in threads:
        thread.join()
    rows = store.rows()
    assert {row["case"]: row["location"] for row in rows} == acknowledged  # each save acknowledged, none after
    assert all(row["updated"] <= locked for row in rows)  # times of a millisecond's resolution


def test_a_store_from_before_locks_gains_the_lock_and_keeps_its_ratings(store):
    store.save_case_rating("ana", "case-001", agree=1)
    with store.connect() as db:
        db.executescript("DROP TABLE study_lock; PRAGMA user_version = 2;")
    assert RatingStore(store.path, read_only=True).locked() is None  # read as it is: no upgrade
    upgraded = RatingStore(store.path)
    assert upgraded.locked() is None and [row["agree"] for row in upgraded.rows()] == [1]
    upgraded.lock()
    with pytest.raises(StudyLocked):
        upgraded.save_case_rating("ana", "case-001", agree=0)
    with store.connect() as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
