"""A rating the review page acknowledged survives the server being killed (SIGKILL, no shutdown):
the ratings file is intact, holds both ratings, and a restarted server shows them."""

from __future__ import annotations

import contextlib
import signal
import sqlite3

import httpx

from xmed.review.server import CSRF_HEADER
from xmed.review.store import STORE_FILE, RatingStore
from xmed.review.synthetic import synthetic_session

from helpers.review_page import checked, page_data, running_server


def signed_in(base: str, token: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=10)
    assert client.get("/login", params={"token": token}, follow_redirects=True).url.path == "/case/1"
    return client, page_data(client.get("/case/1").text)["csrf"]


def test_acknowledged_ratings_survive_a_killed_server(tmp_path):
    folder = synthetic_session(tmp_path / "session", n_cases=2, size=64)
    token = RatingStore(folder / STORE_FILE).add_reader("ana")
    with running_server(folder) as (base, process):
        client, csrf = signed_in(base, token)
        first = client.post("/api/case/1/panel/B", json={"location": 4, "rationale": 2}, headers={CSRF_HEADER: csrf})
        assert first.json() == {"saved": True, "location": 4, "rationale": 2}
        second = client.post("/api/case/2", json={"agree": 0, "note": "cup ≥ 0.7"}, headers={CSRF_HEADER: csrf})
        assert second.json() == {"saved": True, "agree": 0, "note": "cup ≥ 0.7"}
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        client.close()

    with contextlib.closing(sqlite3.connect(folder / STORE_FILE)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT location, rationale, panel FROM panel_ratings").fetchall() == [(4, 2, "B")]
        assert db.execute("SELECT case_id, agree, note FROM case_ratings").fetchall()[0][1:] == (0, "cup ≥ 0.7")

    with running_server(folder) as (base, _):
        client, _ = signed_in(base, token)
        first_case, second_case = client.get("/case/1").text, client.get("/case/2").text
        assert (checked(first_case, "location-B"), checked(first_case, "rationale-B")) == ("4", "2")
        assert checked(second_case, "agree") == "0" and "cup ≥ 0.7</textarea>" in second_case
        client.close()
