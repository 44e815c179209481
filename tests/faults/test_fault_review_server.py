"""The review page never answers 500 to a hostile request: each request below gets the exact 4xx
it deserves, with the field at fault named, and nothing is stored. Also: a sign-in another site
starts is refused, a revoked reader's cookie stops working at once, an image that is a symbolic
link loop is a 404, and the ratings CSV holds no spreadsheet formula."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from starlette.testclient import TestClient
from helpers.review_page import BASE, Reader, page_data

from xmed.review.server import COOKIE, CSRF_HEADER, create_app
from xmed.review.session import case_file, load_session
from xmed.review.store import STORE_FILE, RatingStore, ratings_csv
from xmed.review.synthetic import synthetic_session

POSTS = ("/api/case/1/panel/A", "/api/case/1", "/api/intervene")
DEEP = 30_000  # levels of nesting; the body stays under the 64 KiB limit
DIGITS = "9" * 5000  # more digits than Python turns into an int


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """An open session (cases in session order, letters in method order: A Grad-CAM, B adversarial)."""
    return synthetic_session(tmp_path_factory.mktemp("hostile"), n_cases=2, mode="open", size=64)


@pytest.fixture(scope="module")
def served(session, tmp_path_factory):
    """The page, its store and a signed-in reader; no request of this module may store anything."""
    store = RatingStore(tmp_path_factory.mktemp("store") / STORE_FILE)
    app = create_app(session, store=store)
    return app, store, Reader(app, store, "ana")


def refused(reader: Reader, url: str, body: bytes):
    return reader.client.post(url, content=body, headers={CSRF_HEADER: reader.csrf, "Content-Type": "application/json"})


def nothing_stored(store: RatingStore) -> bool:
    with store.connect() as db:
        return db.execute("SELECT (SELECT count(*) FROM panel_ratings) + (SELECT count(*) FROM case_ratings)"
                          ).fetchone()[0] == 0


# -- bodies no endpoint can read ------------------------------------------------------------------

UNREADABLE = {
    "arrays nested 30000 deep": (b"[" * DEEP + b"]" * DEEP, "nested too deeply"),
    "objects nested 10000 deep": (b'{"":' * 10_000 + b"1" + b"}" * 10_000, "nested too deeply"),
    "a note nested 20000 deep": (b'{"note": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested too deeply"),
    "an integer of 5000 digits": (b'{"location": ' + DIGITS.encode() + b"}", "integer of 5000 digits"),
    "a negative integer of 5000 digits": (b'{"agree": -' + DIGITS.encode() + b"}", "integer of 5000 digits"),
    "an integer of 101 digits": (b'{"case": 1' + b"0" * 100 + b"}", "integer of 101 digits"),
    "a deep value of 5000 digits": (b'{"values": {"LC": [' + DIGITS.encode() + b"]}}", "integer of 5000 digits"),
    "NaN": (b'{"location": NaN}', "NaN is not a JSON number"),
    "Infinity": (b'{"values": {"vcdr": Infinity}}', "Infinity is not a JSON number"),
    "-Infinity": (b'{"agree": -Infinity}', "-Infinity is not a JSON number"),
    "a lone high surrogate": (b'{"note": "\\ud800"}', "lone surrogate '\\ud800'"),
    "a lone low surrogate": (b'{"note": "x\\udfff"}', "lone surrogate '\\udfff'"),
    "two high surrogates": (b'{"note": "\\ud83d\\ud83d"}', "lone surrogate"),
    "a surrogate of surrogateescape": (b'{"note": "\\udc80"}', "lone surrogate '\\udc80'"),
    "a surrogate in a key": (b'{"\\ud800": 1}', "lone surrogate"),
    "a surrogate in a concept": (b'{"case": 1, "values": {"\\udbff": 1}}', "lone surrogate"),
    "bytes that are not UTF-8": (b'{"note": "\xff\xfe"}', "not UTF-8 text"),
    "an overlong UTF-8 slash": (b'{"note": "\xc0\xaf"}', "not UTF-8 text"),
    "a surrogate encoded as UTF-8": (b'{"note": "\xed\xa0\x80"}', "lone surrogate '\\ud800'"),
    "Latin-1 text": ('{"note": "café"}'.encode("latin-1"), "not UTF-8 text"),
    "an empty body": (b"", "Expecting value"),
    "only spaces": (b"   \n\t ", "Expecting value"),
    "truncated": (b'{"note": "x', "Unterminated string"),
    "trailing data": (b'{"agree": 1} {"agree": 0}', "Extra data"),
    "single quotes": (b"{'agree': 1}", "Expecting property name"),
    "a comment": (b'{"agree": 1 /* yes */}', "Expecting ','"),
    "a trailing comma": (b'{"agree": 1,}', "Expecting property name"),
    "a NUL byte": (b'{"agree": 1}\x00', "Extra data"),
    "null": (b"null", "must be a JSON object"),
    "true": (b"true", "must be a JSON object"),
    "a number": (b"42", "must be a JSON object"),
    "a string": (b'"agree"', "must be a JSON object"),
    "a list": (b'[{"agree": 1}]', "must be a JSON object"),
    "a list nested 300 deep": (b"[" * 300 + b"]" * 300, "must be a JSON object"),
}


@pytest.mark.parametrize("url", POSTS)
@pytest.mark.parametrize("body, reason", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_body_no_endpoint_can_read_is_a_400_naming_the_body(served, url, body, reason):
    _, store, reader = served
    response = refused(reader, url, body)
    assert (response.status_code, response.json()["field"]) == (400, "body"), response.text
    assert reason in response.json()["error"]
    assert nothing_stored(store)


# -- bodies an endpoint reads, with a field it refuses --------------------------------------------

NESTED_300 = "[" * 300 + "]" * 300
BAD_FIELDS = [
    ("/api/case/1/panel/A", '{"location": 0}', "location", "must be an integer 1..5 or null, got 0"),
    ("/api/case/1/panel/A", '{"location": 6}', "location", "got 6"),
    ("/api/case/1/panel/A", '{"location": -1}', "location", "got -1"),
    ("/api/case/1/panel/A", '{"location": 3.5}', "location", "got 3.5"),
    ("/api/case/1/panel/A", '{"location": 4.0}', "location", "got 4.0"),
    ("/api/case/1/panel/A", '{"location": 1e999}', "location", "got Infinity"),
    ("/api/case/1/panel/A", '{"location": "3"}', "location", 'got "3"'),
    ("/api/case/1/panel/A", '{"location": true}', "location", "got true"),
    ("/api/case/1/panel/A", '{"location": [3]}', "location", "got [3]"),
    ("/api/case/1/panel/A", '{"location": {"score": 3}}', "location", 'got {"score": 3}'),
    ("/api/case/1/panel/A", '{"location": 1' + "0" * 99 + "}", "location", "got 1000"),
    ("/api/case/1/panel/A", '{"rationale": ' + NESTED_300 + "}", "rationale", "got [[[["),
    ("/api/case/1/panel/A", '{"rationale": 9, "location": 2}', "rationale", "got 9"),
    ("/api/case/1/panel/A", "{}", "location", "send location and/or rationale"),
    ("/api/case/1/panel/A", '{"method": "gradcam", "location": 2}', "method", "is not accepted here"),
    ("/api/case/1/panel/A", '{"panel": "B", "location": 2}', "panel", "is not accepted here"),
    ("/api/case/1/panel/A", '{"reader": "ben", "location": 2}', "reader", "is not accepted here"),
    ("/api/case/1", '{"agree": 2}', "agree", "must be an integer 0..1 or null, got 2"),
    ("/api/case/1", '{"agree": -1}', "agree", "got -1"),
    ("/api/case/1", '{"agree": "1"}', "agree", 'got "1"'),
    ("/api/case/1", '{"agree": true}', "agree", "got true"),
    ("/api/case/1", '{"agree": 1.0}', "agree", "got 1.0"),
    ("/api/case/1", '{"agree": 1, "agree": 5}', "agree", "got 5"),
    ("/api/case/1", '{"note": 5}', "note", "must be text, got int"),
    ("/api/case/1", '{"note": ["a"]}', "note", "must be text, got list"),
    ("/api/case/1", '{"note": {"text": "a"}}', "note", "must be text, got dict"),
    ("/api/case/1", '{"note": false}', "note", "must be text, got bool"),
    ("/api/case/1", '{"note": ' + NESTED_300 + "}", "note", "must be text, got list"),
    ("/api/case/1", '{"note": "a\\u0000b"}', "note", "must be text"),
    ("/api/case/1", json.dumps({"note": "x" * 5001}), "note", "is 5001 characters long; at most 5000"),
    ("/api/case/1", "{}", "agree", "send agree and/or note"),
    ("/api/case/1", '{"agree": 1, "case": 2}', "case", "is not accepted here"),
    ("/api/intervene", '{"case": "1", "values": {}}', "case", 'got "1"'),
    ("/api/intervene", '{"case": 1.0, "values": {}}', "case", "got 1.0"),
    ("/api/intervene", '{"case": true, "values": {}}', "case", "got true"),
    ("/api/intervene", '{"case": null, "values": {}}', "case", "got null"),
    ("/api/intervene", '{"values": {"LC": 1}}', "case", "got null"),
    ("/api/intervene", '{"case": 1, "values": [1]}', "values", "must be an object"),
    ("/api/intervene", '{"case": 1, "values": "LC=1"}', "values", "must be an object"),
    ("/api/intervene", '{"case": 1, "values": {"XYZ": 1}}', "intervene", "unknown concept 'XYZ'"),
    ("/api/intervene", '{"case": 1, "values": {"lc": 1}}', "intervene", "unknown concept 'lc'"),
    ("/api/intervene", '{"case": 1, "values": {"LC": "1"}}', "intervene", 'LC must be a number in [0, 1], got "1"'),
    ("/api/intervene", '{"case": 1, "values": {"LC": true}}', "intervene", "got true"),
    ("/api/intervene", '{"case": 1, "values": {"LC": null}}', "intervene", "got null"),
    ("/api/intervene", '{"case": 1, "values": {"LC": 1.5}}', "intervene", "got 1.5"),
    ("/api/intervene", '{"case": 1, "values": {"vcdr": -0.01}}', "intervene", "got -0.01"),
    ("/api/intervene", '{"case": 1, "values": {"LC": 1e999}}', "intervene", "got Infinity"),
    ("/api/intervene", '{"case": 1, "values": {"LC": 1' + "0" * 99 + "}}", "intervene", "got 1000"),
    ("/api/intervene", '{"case": 1, "values": {"LC": ' + NESTED_300 + "}}", "intervene", "LC must be a number"),
    ("/api/intervene", '{"case": 1, "values": {"LC": {"value": 1}}}', "intervene", 'got {"value": 1}'),
    ("/api/intervene", '{"case": 1, "values": {}, "reader": "ben"}', "reader", "is not accepted here"),
]


@pytest.mark.parametrize("url, body, field, reason", BAD_FIELDS)
def test_a_field_an_endpoint_refuses_is_a_400_naming_it(served, url, body, field, reason):
    _, store, reader = served
    response = refused(reader, url, body.encode())
    assert (response.status_code, response.json()["field"]) == (400, field), response.text
    assert reason in response.json()["error"]
    assert nothing_stored(store)


@pytest.mark.parametrize("url, body", [
    ("/api/intervene", '{"case": 0, "values": {}}'), ("/api/intervene", '{"case": -1, "values": {}}'),
    ("/api/intervene", '{"case": 3, "values": {}}'), ("/api/intervene", '{"case": 1' + "0" * 99 + ', "values": {}}'),
    ("/api/case/" + DIGITS, '{"agree": 1}'), ("/api/case/" + DIGITS + "/panel/A", '{"location": 1}'),
    ("/api/case/1e3", '{"agree": 1}'), ("/api/case/-1", '{"agree": 1}'), ("/api/case/%D9%A1", '{"agree": 1}'),
    ("/api/case/1/panel/C", '{"location": 1}'), ("/api/case/1/panel/%F0%9F%98%80", '{"location": 1}'),
])
def test_a_case_or_panel_that_is_not_there_is_a_404(served, url, body):
    _, store, reader = served
    assert refused(reader, url, body.encode()).status_code == 404
    assert nothing_stored(store)


@pytest.mark.parametrize("url", [
    "/case/" + DIGITS, "/case/" + DIGITS + "/photo", "/case/" + DIGITS + "/image/A/overlay", "/case/0",
    "/case/1e3", "/case/0x1", "/case/%20%201", "/case/%D9%A1", "/case/%C2%B2", "/case/%00", "/case/1%00/photo",
    "/case/1/image/A/" + "x" * 5000, "/case/1/image/" + "A" * 5000 + "/overlay",
])
def test_a_page_or_image_that_is_not_there_is_a_404(served, url):
    assert served[2].client.get(url).status_code == 404


def test_intervention_on_a_session_without_a_bottleneck_is_a_404(tmp_path):
    folder = synthetic_session(tmp_path / "multitask", n_cases=1, mode="open", bottleneck=False, size=64)
    store = RatingStore(tmp_path / STORE_FILE)
    reader = Reader(create_app(folder, store=store), store, "ana")
    for values in ({"LC": 1}, {}, {"XYZ": 2}):
        response = reader.post("/api/intervene", {"case": 1, "values": values})
        assert response.status_code == 404
        assert "no concept bottleneck" in response.json()["error"]
    assert page_data(reader.client.get("/case/1").text)["intervene_url"] is None  # the page offers none


# -- signing in -----------------------------------------------------------------------------------


@pytest.mark.parametrize("site, signed_in", [
    ("cross-site", False), ("same-site", False), ("CROSS-SITE", False), ("", False),
    ("none", True), ("same-origin", True), (None, True),
])
def test_a_sign_in_another_site_starts_is_refused(session, tmp_path, site, signed_in):
    store = RatingStore(tmp_path / STORE_FILE)
    client = TestClient(create_app(session, store=store), base_url=BASE, follow_redirects=False)
    headers = {} if site is None else {"Sec-Fetch-Site": site}
    response = client.get("/login", params={"token": store.add_reader("ana")}, headers=headers)
    assert response.status_code == (303 if signed_in else 403)
    assert ("set-cookie" in response.headers) == signed_in
    if not signed_in:
        assert "started by another site" in response.text and client.get("/case/1").status_code == 401


def test_a_revoked_reader_is_signed_out_at_once_and_keeps_their_ratings(session, tmp_path):
    store = RatingStore(tmp_path / STORE_FILE)
    app = create_app(session, store=store)
    ana, ben = Reader(app, store, "Dr Ana"), Reader(app, store, "ben")
    assert ana.post("/api/case/1", {"agree": 1, "note": "fine"}).status_code == 200
    assert store.revoke_reader("dr  ANA") == "Dr Ana"
    for response in (ana.client.get("/case/1"), ana.client.get("/export/ratings.csv"),
                     ana.post("/api/case/2", {"agree": 0}), ana.post("/api/case/1/panel/A", {"location": 2})):
        assert response.status_code == 403
    cookie = ana.client.cookies[COOKIE]
    again = TestClient(app, base_url=BASE, follow_redirects=False).get("/login", params={"token": cookie})
    assert again.status_code == 403 and "set-cookie" not in again.headers
    assert [(row["reader"], row["note"]) for row in store.rows()] == [("Dr Ana", "fine")]
    assert ben.post("/api/case/1", {"agree": 0}).status_code == 200


# -- images that are symbolic link loops ----------------------------------------------------------

LOOPS = {  # the field of case 1 whose file becomes a loop, and the URL that serves it
    "photo": (lambda case: case["photo"], "/case/1/photo"),
    "overlay": (lambda case: case["panels"]["gradcam"]["overlay"], "/case/1/image/A/overlay"),
    "heatmap": (lambda case: case["panels"]["gradcam"]["heatmap"], "/case/1/image/A/heatmap"),
    "edit": (lambda case: case["panels"]["adversarial"]["edits"]["toward_normal"]["image"],
             "/case/1/image/B/toward_normal"),
    "difference map": (lambda case: case["panels"]["adversarial"]["edits"]["toward_glaucoma"]["difference"],
                       "/case/1/image/B/toward_glaucoma_difference"),
}


def make_loop(path, kind):
    """Replace ``path`` by a link to itself, or by one of two links to each other."""
    path.unlink()
    if kind == "self":
        path.symlink_to(path.name)
    else:
        path.symlink_to(path.name + ".other")
        path.with_name(path.name + ".other").symlink_to(path.name)


@pytest.mark.parametrize("kind", ["self", "pair"])
@pytest.mark.parametrize("field", LOOPS)
def test_an_image_that_becomes_a_link_loop_while_serving_is_a_404(session, tmp_path, field, kind):
    folder = shutil.copytree(session, tmp_path / "session")
    store = RatingStore(tmp_path / STORE_FILE)
    reader = Reader(create_app(folder, store=store), store, "ana")
    relative, url = LOOPS[field][0](load_session(folder)["cases"][0]), LOOPS[field][1]
    assert reader.client.get(url).status_code == 200
    make_loop(folder / relative, kind)
    response = reader.client.get(url)
    assert response.status_code == 404 and "no such image" in response.text
    assert reader.client.get("/case/2/photo").status_code == 200


def test_a_case_folder_that_becomes_a_link_loop_is_a_404(session, tmp_path):
    folder = shutil.copytree(session, tmp_path / "session")
    store = RatingStore(tmp_path / STORE_FILE)
    reader = Reader(create_app(folder, store=store), store, "ana")
    case_dir = case_file(folder, load_session(folder)["cases"][0]["photo"]).parent
    shutil.rmtree(case_dir)
    case_dir.symlink_to(case_dir.name)
    assert [reader.client.get(url).status_code for url in ("/case/1/photo", "/case/1/image/A/overlay")] == [404, 404]


# -- the ratings CSV download ---------------------------------------------------------------------

FORMULAS = ["=1+1", "=cmd|' /C calc'!A0", "+1", "+SUM(A1:A2)", "-1", "-2+3", "@SUM(1)", "\t=1", "\r=1",
            '=HYPERLINK("http://evil.example","x")']


def test_the_live_ratings_csv_holds_no_formula(session, tmp_path):
    store = RatingStore(tmp_path / STORE_FILE)
    app = create_app(session, store=store)
    readers = [Reader(app, store, f"reader {index}") for index in range(len(FORMULAS))]
    for reader, note in zip(readers, FORMULAS):
        assert reader.post("/api/case/1/panel/A", {"location": 2}).status_code == 200
        assert reader.post("/api/case/1", {"agree": 0, "note": note}).status_code == 200
        text = reader.client.get("/export/ratings.csv").text
        (row,) = csv.DictReader(io.StringIO(text))
        assert row["note"] == "'" + note and (row["location"], row["agree"]) == ("2", "0")
    assert text == ratings_csv(store.rows(readers[-1].name))  # the function `xmed-review export` writes with
