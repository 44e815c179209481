"""The review page (xmed.review.server) through Starlette's test client: the pages, the blinded
protocol (reader order, A/B letters, nothing naming a method or giving a raw scale until the study is
locked), ratings that map back to the true method, the lock, the next unrated case, test-time
intervention, the exports, and each attack the page must refuse."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import warnings

import pytest
from starlette.testclient import TestClient

from xmed.errors import ConfigError, SecurityWarning
from xmed.review.analysis import read_ratings
from xmed.review.server import COOKIE, CSRF_HEADER, create_app, serve
from xmed.review.session import (ADDRESS_FILE, case_file, intervene, load_session, panel_labels, reader_order,
                                 session_url)
from xmed.review.store import LETTER_COLUMNS, RatingStore
from xmed.review.synthetic import synthetic_session

from helpers.review_page import (BASE, METHOD_WORDS, RAW_SCALE_TEXTS, Reader, checked, page_data,
                                 with_distinct_scales)

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(2)>'


@pytest.fixture(scope="module")
def blinded(tmp_path_factory):
    return synthetic_session(tmp_path_factory.mktemp("blinded"), n_cases=3, mode="blinded", size=64)


@pytest.fixture(scope="module")
def open_session(tmp_path_factory):
    return synthetic_session(tmp_path_factory.mktemp("open"), n_cases=2, mode="open", size=64)


def shown_case(html: str) -> str:
    return re.search(r"<h1>(.*?) <span", html).group(1)


@pytest.fixture
def store(tmp_path):
    return RatingStore(tmp_path / "ratings.sqlite")


@pytest.fixture
def app(blinded, store):
    return create_app(blinded, store=store)


# -- signing in -----------------------------------------------------------------------------------


def test_login_sets_a_strict_http_only_cookie_and_resumes(app, store):
    client = TestClient(app, base_url=BASE, follow_redirects=False)
    token = store.add_reader("ana")
    response = client.get("/login", params={"token": token})
    assert (response.status_code, response.headers["location"]) == (303, "/")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={token};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert client.get("/").headers["location"] == "/case/1"


@pytest.mark.parametrize("query", [{"token": "forged"}, {}, {"token": ""}])
def test_a_bad_sign_in_link_is_refused(app, query):
    response = TestClient(app, base_url=BASE, follow_redirects=False).get("/login", params=query)
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert "not valid" in response.text


PROTECTED = ["/", "/summary", "/case/1", "/case/1/next", "/case/1/photo", "/case/1/image/A/overlay",
             "/export/ratings.csv", "/export/ratings.json"]
POSTS = ["/api/case/1/panel/A", "/api/case/1", "/api/intervene"]


@pytest.mark.parametrize("url", PROTECTED + POSTS)
def test_every_route_needs_a_valid_reader(app, url):
    client = TestClient(app, base_url=BASE, follow_redirects=False)
    ask = (lambda: client.post(url, json={"location": 3})) if url in POSTS else (lambda: client.get(url))
    assert ask().status_code == 401
    client.cookies.set(COOKIE, "a-token-of-no-reader")
    assert ask().status_code == 403


def test_static_assets_need_no_sign_in(app):
    client = TestClient(app, base_url=BASE)
    script, style = client.get("/static/review.js"), client.get("/static/review.css")
    assert (script.status_code, style.status_code) == (200, 200)
    assert "javascript" in script.headers["content-type"] and style.headers["content-type"].startswith("text/css")


# -- the blinded protocol -------------------------------------------------------------------------


def test_cases_come_in_the_readers_own_order(app, store, blinded):
    session = load_session(blinded)
    ids = [case["id"] for case in session["cases"]]
    for name in ("ana", "ben", "carla"):
        reader = Reader(app, store, name)
        shown = [shown_case(reader.client.get(f"/case/{n}").text) for n in range(1, len(ids) + 1)]
        assert shown == reader_order(ids, session["seed"], name)
    assert reader.client.get("/case/4").status_code == 404
    assert reader.client.get("/case/0").status_code == 404


def test_a_blinded_page_names_no_method(app, store, blinded):
    reader = Reader(app, store, "ana")
    for n in (1, 2, 3):
        html = reader.client.get(f"/case/{n}").text
        for word in METHOD_WORDS:
            assert word not in html.lower()
        assert "Explanation A" in html and "Explanation B" in html
        assert "energy_in_truth" not in html and "Automatic scores" not in html
        urls = re.findall(r'(?:src|href|data-url)="([^"]*)"', html) + list(page_data(html).values())
        for url in filter(lambda value: isinstance(value, str) and value.startswith("/"), urls):
            assert re.fullmatch(r"/(static/review\.(js|css)|summary|case/\d+(/photo|/next|/image/[A-Z]/[a-z_]+)?"
                                r"|api/case/\d+(/panel/[A-Z])?|api/intervene)", url), url
        answer = reader.post(f"/api/case/{n}/panel/A", {"location": 3})
        assert not any(word in answer.text.lower() for word in METHOD_WORDS)
    summary = reader.client.get("/summary").text.lower()
    assert not any(word in summary for word in METHOD_WORDS)


def test_an_open_page_names_methods_and_shows_automatic_scores(open_session, store):
    reader = Reader(create_app(open_session, store=store), store, "ana")
    html = reader.client.get("/case/1").text
    assert "Grad-CAM" in html and "Adversarial explanation" in html and "energy_in_truth" in html
    session = load_session(open_session)
    assert [shown_case(reader.client.get(f"/case/{n}").text) for n in (1, 2)] == [c["id"] for c in session["cases"]]
    reader.post("/api/case/1/panel/A", {"location": 5})
    assert [(row["method"], row["panel"], row["mode"]) for row in store.rows()] == [("gradcam", "A", "open")]


def test_letters_follow_panel_labels_and_ratings_keep_the_true_method(app, store, blinded):
    session = load_session(blinded)
    reader = Reader(app, store, "ben")
    expected = []
    for n, case_id in enumerate(reader_order([c["id"] for c in session["cases"]], session["seed"], "ben"), 1):
        case = next(c for c in session["cases"] if c["id"] == case_id)
        labels = panel_labels(list(case["panels"]), session["seed"], "ben", case_id)
        html = reader.client.get(f"/case/{n}").text
        for score, (letter, method) in enumerate(sorted(labels.items()), start=2):
            # the panel the page shows under this letter is the method's: a heatmap for the saliency method
            panel_html = html.split(f'id="panel-{letter}"')[1].split("</article>")[0]
            assert (f"/case/{n}/image/{letter}/heatmap" in panel_html) == (case["panels"][method]["kind"] == "saliency")
            assert reader.post(f"/api/case/{n}/panel/{letter}", {"location": score, "rationale": 6 - score}).json() == {
                "saved": True, "location": score, "rationale": 6 - score}
            expected.append(("ben", case_id, method, score, 6 - score, letter))
            image = "heatmap" if case["panels"][method]["kind"] == "saliency" else "toward_glaucoma"
            source = case["panels"][method].get(image) or case["panels"][method]["edits"][image]["image"]
            assert reader.client.get(f"/case/{n}/image/{letter}/{image}").content == case_file(blinded, source).read_bytes()
    rows = [(r["reader"], r["case"], r["method"], r["location"], r["rationale"], r["panel"]) for r in store.rows()]
    assert sorted(rows) == sorted(expected)


def test_a_reload_shows_what_is_stored_and_home_resumes(app, store):
    reader = Reader(app, store, "ana")
    assert reader.post("/api/case/1/panel/B", {"rationale": 4}).status_code == 200
    assert reader.post("/api/case/1", {"agree": 0, "note": "disc tilted"}).json() == {
        "saved": True, "agree": 0, "note": "disc tilted"}
    html = reader.client.get("/case/1").text
    assert (checked(html, "rationale-B"), checked(html, "location-B"), checked(html, "agree")) == ("4", None, "0")
    assert "disc tilted</textarea>" in html
    assert reader.client.get("/").url.path == "/case/1"  # not fully rated yet
    for n in (1, 2, 3):
        for letter in "AB":
            reader.post(f"/api/case/{n}/panel/{letter}", {"location": 3, "rationale": 3})
        reader.post(f"/api/case/{n}", {"agree": 1})
        assert reader.client.get("/").url.path == ("/case/{}".format(n + 1) if n < 3 else "/summary")
    assert "All cases rated" in reader.client.get("/summary").text


def test_intervention_answers_as_the_bottleneck_computes(app, store, blinded):
    session = load_session(blinded)
    reader = Reader(app, store, "ana")
    case_id = reader_order([c["id"] for c in session["cases"]], session["seed"], "ana")[1]
    case = next(c for c in session["cases"] if c["id"] == case_id)
    values = {"LC": 1, "DH": 0, "vcdr": 0.85}
    answer = reader.post("/api/intervene", {"case": 2, "values": values})
    assert answer.json() == intervene(session, case, values)
    refused = reader.post("/api/intervene", {"case": 2, "values": {"XYZ": 1}})
    assert refused.status_code == 400 and "unknown concept 'XYZ'" in refused.json()["error"]
    assert reader.post("/api/intervene", {"case": 9, "values": {}}).status_code == 404
    assert reader.post("/api/intervene", {"case": "2", "values": {}}).json()["field"] == "case"
    assert store.rows() == []  # not stored


def test_the_export_holds_the_readers_own_ratings_by_letter_until_the_lock(app, store, blinded):
    session = load_session(blinded)
    ana, ben = Reader(app, store, "ana"), Reader(app, store, "ben")
    ana.post("/api/case/1/panel/B", {"location": 2})
    ana.post("/api/case/1/panel/A", {"location": 5})
    ana.post("/api/case/1", {"agree": 1})
    ben.post("/api/case/2/panel/B", {"location": 1})
    case_id = reader_order([c["id"] for c in session["cases"]], session["seed"], "ana")[0]
    labels = panel_labels(["gradcam", "adversarial"], session["seed"], "ana", case_id)
    exported = ana.client.get("/export/ratings.csv")
    assert exported.headers["content-disposition"] == 'attachment; filename="ratings.csv"'
    assert exported.text.splitlines()[0] == ",".join(LETTER_COLUMNS)
    assert [(row["case"], row["panel"], row["location"], row["agree"]) for row in csv.DictReader(io.StringIO(
        exported.text))] == [(case_id, "A", "5", "1"), (case_id, "B", "2", "1")]  # letter order, not method order
    assert [sorted(row) for row in ana.client.get("/export/ratings.json").json()] == [sorted(LETTER_COLUMNS)] * 2
    assert not any(word in exported.text.lower() for word in METHOD_WORDS)

    store.lock()
    ratings = read_ratings(list(csv.DictReader(io.StringIO(ana.client.get("/export/ratings.csv").text))))
    assert [(r.reader, r.case, r.method, r.location, r.agree) for r in ratings] == [
        ("ana", case_id, labels["A"], 5, 1), ("ana", case_id, labels["B"], 2, 1)]
    assert [(r.reader, r.method) for r in read_ratings(ana.client.get("/export/ratings.json").json())] == [
        ("ana", "adversarial"), ("ana", "gradcam")]
    assert [r.reader for r in read_ratings(ben.client.get("/export/ratings.json").json())] == ["ben"]
    assert checked(ben.client.get("/case/1").text, "location-A") is None  # ana's 5 is hers alone


# -- the lock -------------------------------------------------------------------------------------


def test_after_the_lock_every_rating_is_refused_with_409_and_nothing_changes(app, store):
    reader = Reader(app, store, "ana")
    assert reader.post("/api/case/1/panel/A", {"location": 4}).status_code == 200
    assert reader.post("/api/case/1", {"agree": 1, "note": "rim thin"}).status_code == 200
    before = store.rows()
    locked = store.lock()
    for url, body in [("/api/case/1/panel/A", {"location": 2}), ("/api/case/1/panel/B", {"rationale": 3}),
                      ("/api/case/1", {"agree": 0}), ("/api/case/2", {"note": "later"})]:
        response = reader.post(url, body)
        assert response.status_code == 409
        assert response.json() == {"error": f"the study was locked by its coordinator on {locked[:10]} "
                                            f"{locked[11:16]} UTC: ratings can no longer change"}
    assert store.rows() == before
    assert reader.post("/api/intervene", {"case": 1, "values": {"LC": 1}}).status_code == 200  # not a rating
    html = reader.client.get("/case/1").text
    assert "This study was locked by its coordinator" in html
    assert html.count("<fieldset class=\"rating\"") == html.count(" disabled>") == 5
    assert "readonly>rim thin</textarea>" in html


def test_the_lock_unblinds_the_page(app, store, blinded):
    session = load_session(blinded)
    reader = Reader(app, store, "ana")
    case_id = reader_order([c["id"] for c in session["cases"]], session["seed"], "ana")[0]
    labels = panel_labels(["gradcam", "adversarial"], session["seed"], "ana", case_id)
    titles = {"gradcam": "Grad-CAM", "adversarial": "Adversarial explanation"}
    store.lock()
    html = reader.client.get("/case/1").text
    assert [f"Explanation {letter}: {titles[labels[letter]]}" in html for letter in "AB"] == [True, True]
    assert "top of this map" not in html and "the method behind each letter is shown" in html


# -- colour scales --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def distinct_scales(blinded, tmp_path_factory):
    return with_distinct_scales(shutil.copytree(blinded, tmp_path_factory.mktemp("scales") / "session"))


def test_a_blinded_reader_sees_scales_in_relative_terms_until_the_lock(distinct_scales, store):
    reader = Reader(create_app(distinct_scales, store=store), store, "ana")
    pages = [reader.client.get(f"/case/{n}").text for n in (1, 2, 3)]
    for html in pages:
        assert [text for text in RAW_SCALE_TEXTS if text in html] == []
        assert "top of this map" in html and "largest change of this edit" in html
    store.lock()
    html = reader.client.get("/case/1").text
    assert "0.322" in html and "0.049" in html and "13 of 255" in html


def test_an_open_page_gives_the_raw_scale_ends(distinct_scales, tmp_path, store):
    folder = shutil.copytree(distinct_scales, tmp_path / "open")
    session = json.loads((folder / "session.json").read_text())
    (folder / "session.json").write_text(json.dumps({**session, "mode": "open"}))
    html = Reader(create_app(folder, store=store), store, "ana").client.get("/case/1").text
    assert "<span>0.322</span>" in html and "0.049" in html and "top of this map" not in html


# -- the next unrated case ------------------------------------------------------------------------


def test_the_next_unrated_case_comes_after_this_one_wrapping_round(app, store):
    reader = Reader(app, store, "ana")
    client = TestClient(app, base_url=BASE, follow_redirects=False, cookies=reader.client.cookies)

    def rate_fully(n):
        for letter in "AB":
            reader.post(f"/api/case/{n}/panel/{letter}", {"location": 3, "rationale": 3})
        reader.post(f"/api/case/{n}", {"agree": 1})

    def next_after(n):
        response = client.get(f"/case/{n}/next")
        assert response.status_code == 303
        return response.headers["location"]

    assert [next_after(n) for n in (1, 2, 3)] == ["/case/2#rate", "/case/3#rate", "/case/1#rate"]
    rate_fully(2)
    assert [next_after(n) for n in (1, 2, 3)] == ["/case/3#rate", "/case/3#rate", "/case/1#rate"]
    rate_fully(1)
    assert next_after(3) == "/case/3#rate"  # the only one left is this one
    rate_fully(3)
    assert next_after(2) == "/summary"
    assert client.get("/case/4/next").status_code == 404


# -- attacks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"host": "evil.example"}, {"host": "attacker.127.0.0.1.nip.io:8765"}, {"host": "localhost.evil.example"},
])
def test_requests_addressed_to_another_host_are_refused(app, store, headers):
    client = TestClient(app, base_url=BASE)
    response = client.get("/login", params={"token": store.add_reader("ana")}, headers=headers)
    assert response.status_code == 400 and "set-cookie" not in response.headers


@pytest.mark.parametrize("headers", [
    {CSRF_HEADER: None}, {CSRF_HEADER: "0" * 64}, {CSRF_HEADER: "ben"}, {CSRF_HEADER: b"\xe9" * 64},
    {"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"},
    {"Referer": "http://evil.example/page"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
    {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"},
    {"Content-Type": "multipart/form-data; boundary=x"},
])
def test_state_changes_from_anywhere_but_the_page_are_refused(app, store, headers):
    reader, other = Reader(app, store, "ana"), Reader(app, store, "ben")
    headers = {"Content-Type": "application/json", CSRF_HEADER: reader.csrf, **headers}
    if headers[CSRF_HEADER] == "ben":
        headers[CSRF_HEADER] = other.csrf  # another reader's value is no good either
    headers = {name: value for name, value in headers.items() if value is not None}
    for url, body in [("/api/case/1/panel/A", {"location": 2}), ("/api/case/1", {"note": "x"})]:
        response = reader.client.post(url, content=json.dumps(body), headers=headers)
        assert response.status_code == 403, response.text
    with store.connect() as db:
        assert db.execute("SELECT count(*) FROM panel_ratings").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM case_ratings").fetchone()[0] == 0


def test_the_pages_own_requests_are_accepted(app, store):
    reader = Reader(app, store, "ana")
    same = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
    assert reader.post("/api/case/1/panel/A", {"location": 2}, **same).status_code == 200
    assert reader.post("/api/case/1/panel/A", {"rationale": 2}, Referer=f"{BASE}/case/1").status_code == 200


def test_no_reader_is_taken_from_the_request(app, store):
    ana, _ = Reader(app, store, "ana"), Reader(app, store, "ben")
    refused = ana.post("/api/case/1/panel/A", {"reader": "ben", "location": 1})
    assert (refused.status_code, refused.json()["field"]) == (400, "reader")
    assert ana.post("/api/case/1", {"agree": 1}, **{"X-Reader": "ben"}).status_code == 200
    assert [(r["reader"], r["method"], r["agree"]) for r in store.rows()] == [("ana", "", 1)]
    with store.connect() as db:
        assert db.execute("SELECT reader, agree FROM case_ratings").fetchall() == [("ana", 1)]


@pytest.mark.parametrize("body, status, field", [
    ({"location": 6}, 400, "location"), ({"location": "5"}, 400, "location"), ({}, 400, "location"),
    ({"rationale": None, "panel": "B"}, 400, "panel"), ([1, 2], 400, "body"), ("x" * 70_000, 413, None),
])
def test_bad_ratings_are_refused_with_the_field_named(app, store, body, status, field):
    reader = Reader(app, store, "ana")
    response = reader.post("/api/case/1/panel/A", body)
    assert response.status_code == status
    assert response.json().get("field") == field
    assert store.rows() == []


def test_unknown_panels_cases_and_methods_are_not_found(app, store):
    reader = Reader(app, store, "ana")
    assert reader.post("/api/case/1/panel/C", {"location": 2}).status_code == 404
    assert reader.post("/api/case/7", {"agree": 1}).status_code == 404
    assert reader.client.get("/api/case/1").status_code == 405


@pytest.mark.parametrize("url", [
    "/case/1/image/..%2F..%2Fsession.json/overlay", "/case/1/image/A/..%2F..%2Fkey.csv",
    "/case/1/image/A/%2Fetc%2Fpasswd", "/case/1/image/A/photo", "/case/1/image/a/overlay",
    "/case/1/image/A/overlay%00", "/static/..%2F..%2Freview%2Fsession.py", "/static/../server.py",
    "/key.csv", "/session.json", "/ratings.sqlite", "/cases/case-001/photo.png", "/case/1/..%2F..%2Fkey.csv",
])
def test_only_the_sessions_case_images_are_served(app, store, url):
    reader = Reader(app, store, "ana")
    response = reader.client.get(url)
    assert response.status_code in (404, 405)
    assert b"phantom seed" not in response.content and b"case,source_id" not in response.content


def test_a_link_out_of_the_cases_folder_is_not_followed(tmp_path, store):
    folder = synthetic_session(tmp_path / "session", n_cases=1, size=64)
    app = create_app(folder, store=store)
    reader = Reader(app, store, "ana")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG patient data")
    photo = case_file(folder, load_session(folder)["cases"][0]["photo"])
    photo.unlink()
    photo.symlink_to(secret)
    response = reader.client.get("/case/1/photo")
    assert response.status_code == 404 and b"patient data" not in response.content


def test_pages_never_show_the_key_to_patients(app, store, blinded):
    reader = Reader(app, store, "ana")
    for url in ("/case/1", "/case/2", "/summary", "/export/ratings.csv"):
        text = reader.client.get(url).text
        assert "phantom seed" not in text and "key.csv" not in text


def test_every_response_carries_the_security_headers(app, store):
    reader = Reader(app, store, "ana")
    responses = [reader.client.get(url) for url in ("/case/1", "/case/1/photo", "/summary", "/case/99")]
    responses += [reader.post("/api/case/1", {"agree": 1}), TestClient(app, base_url=BASE).get("/case/1")]
    for response in responses:
        policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'self'" and policy["img-src"] == "'self' data:"
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
    html = responses[0].text
    assert not re.search(r"<script(?![^>]*(src=\"/static/review\.js\"|type=\"application/json\"))", html)
    assert " style=" not in html and "http://" not in html and "https://" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers


def hostile_session(folder, mode):
    """A synthetic session whose texts try to break out of the page."""
    synthetic_session(folder, n_cases=2, mode=mode, size=64)
    session = json.loads((folder / "session.json").read_text())
    session["title"] = f"Study {SCRIPT}"
    session["methods"][0]["title"] = f"Grad-CAM {BREAKOUT}"
    for case, payload in zip(session["cases"], (SCRIPT, BREAKOUT)):
        case["id"] = f"case {payload}"
        case["sentence"] = f"{SCRIPT} {BREAKOUT} </script><script>alert(3)</script>"
        case["findings"][0]["name"] = BREAKOUT
    (folder / "session.json").write_text(json.dumps(session))
    return folder


@pytest.mark.parametrize("mode", ["blinded", "open"])
def test_hostile_texts_are_escaped_everywhere(tmp_path, store, mode):
    app = create_app(hostile_session(tmp_path / "session", mode), store=store)
    reader = Reader(app, store, "ana")
    assert reader.post("/api/case/1", {"note": f"{SCRIPT}{BREAKOUT}</textarea>"}).status_code == 200
    pages = [reader.client.get(url).text for url in ("/case/1", "/case/2", "/summary", "/case/1/image/<b>/x")]
    for html in pages:
        assert SCRIPT not in html and "<img src=x" not in html and "<script>alert(3)" not in html
        assert "</textarea>\"" not in html and "<b>" not in html
        data = re.search(r'id="page-data">(.*?)</script>', html, re.S)
        assert data is None or "<" not in data.group(1)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]  # shown as text, not dropped
    assert pages[0].count("</textarea>") == 1
    assert reader.client.get("/case/1").text.count("&lt;/textarea&gt;") == 1


# -- serving --------------------------------------------------------------------------------------


def test_serve_refuses_other_machines_unless_allowed(blinded, monkeypatch):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.append((app, options)))
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(ConfigError, match="loopback"):
            serve(blinded, host=host)
    with pytest.raises(ConfigError, match="wildcard"):
        serve(blinded, host="0.0.0.0", allow_remote=True)
    assert started == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        serve(blinded, host="192.168.1.20", port=9000, allow_remote=True)
    assert [type(w.message) for w in caught] == [SecurityWarning]
    serve(blinded)
    (remote_app, remote), (local_app, local) = started
    assert (remote["host"], remote["port"], local["host"], local["port"]) == ("192.168.1.20", 9000, "127.0.0.1", 8765)
    assert remote["access_log"] is False and local["access_log"] is False  # sign-in tokens stay out of logs
    assert TestClient(remote_app, base_url="http://192.168.1.20:9000").get("/case/1").status_code == 401
    assert TestClient(local_app, base_url="http://192.168.1.20:9000").get("/case/1").status_code == 400


def test_serve_records_the_address_it_serves_at_and_not_one_it_cannot(tmp_path, monkeypatch):
    import socket

    import uvicorn

    folder = synthetic_session(tmp_path / "session", n_cases=1, size=64)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit):  # uvicorn cannot listen there
            serve(folder, port=port)
        assert not (folder / ADDRESS_FILE).exists()
        announced = []
        with monkeypatch.context() as patch:
            patch.setattr(uvicorn, "run", lambda app, **options: None)
            serve(folder, port=9001, announce=announced.append)
        assert announced == ["http://127.0.0.1:9001"] and session_url(folder) == "http://127.0.0.1:9001"
        with pytest.raises(SystemExit):
            serve(folder, port=port, announce=announced.append)
        assert session_url(folder) == "http://127.0.0.1:9001"  # the earlier record, where it did listen


def test_a_flagged_eye_is_explained_in_words_on_its_page(tmp_path, store):
    folder = synthetic_session(tmp_path / "session", n_cases=1, size=64)
    session = json.loads((folder / "session.json").read_text())
    session["cases"][0]["quality"] = ["unfamiliar_features"]
    (folder / "session.json").write_text(json.dumps(session))
    reader = Reader(create_app(folder, store=store), store, "ana")
    page = reader.client.get("/case/1")
    assert page.status_code == 200
    assert "The model was not trained on images like this one: do not rely on this decision." in page.text
    assert "unfamiliar_features" not in page.text
