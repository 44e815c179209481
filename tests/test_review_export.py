"""The static export of a review session: one self-contained report.html (every case in session
order, every image the session's own file as a data URI, nothing fetched, all text escaped, the
readers' mean scores, each reader's progress and the study's statistics) and one composite PNG per
case, wide enough for a slide."""

from __future__ import annotations

import base64
import io
import json
import shutil
import statistics
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmed.errors import PathError
from xmed.findings import FINDING_NAMES
from xmed.metrics.paired import holm
from xmed.review.export import (PNG_DIR, RATINGS_FILES, REPORT_FILE, TILE_PIXELS, export_report, ratings_summary,
                                reader_progress, study_statistics)
from xmed.review.session import SESSION_FILE, load_session
from xmed.review.store import RatingStore
from xmed.review.synthetic import synthetic_session
from xmed.runs import eye_file_stem

HOSTILE = "<script>alert(1)</script>"


class ReportParser(HTMLParser):
    """The case sections of a report: each one's id, heading text, image sources, table cells (a
    row's heading ``th`` counted as a cell) and whole text; before them, the header's tables by
    class (``scores``, ``readers``, ``comparisons``, …), each a list of rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.cases: list[dict] = []
        self.images_outside: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = None
        self._heading = self._cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("class") == "case":
            self.cases.append({"id": attrs["id"], "heading": "", "images": [], "cells": [], "text": ""})
        elif tag == "img":
            (self.cases[-1]["images"] if self.cases else self.images_outside).append(attrs["src"])
        elif tag == "table" and not self.cases:
            self._table = self.tables.setdefault(attrs.get("class", ""), [])
        elif tag == "tr" and self._table is not None and not self.cases:
            self._table.append([])
        self._heading |= tag == "h2" and bool(self.cases)
        if tag == "td" or tag == "th" and attrs.get("scope") == "row":
            self._cell = True
            if self.cases:
                self.cases[-1]["cells"].append("")
            elif self._table is not None:
                self._table[-1].append("")

    def handle_endtag(self, tag):
        if tag == "h2":
            self._heading = False
        if tag in ("td", "th"):
            self._cell = False
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self.cases:
            self.cases[-1]["text"] = " ".join(f"{self.cases[-1]['text']} {data}".split())
        if self._heading:
            self.cases[-1]["heading"] += data
        if self._cell:
            cells = self.cases[-1]["cells"] if self.cases else self._table[-1]
            cells[-1] = " ".join(f"{cells[-1]} {data.strip()}".split())

    def header_rows(self, table: str) -> list[list[str]]:
        """The rows of cells (a header row of ``th`` has none) of the header's table ``table``."""
        return [row for row in self.tables.get(table, []) if row]


def parsed(report: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(report.read_text(encoding="utf-8"))
    return parser


def shown_images(case: dict) -> list[str]:
    """The session's images a case shows, in page order: photograph, saliency overlays, then per
    counterfactual method the edit toward normal (image, difference map), the photograph again and
    the edit toward glaucoma (a heatmap alone is the live page's layer, not shown in the export)."""
    panels = case["panels"].values()
    paths = [case["photo"], *(panel["overlay"] for panel in panels if panel["kind"] == "saliency")]
    for panel in panels:
        if panel["kind"] == "counterfactual":
            less, more = panel["edits"]["toward_normal"], panel["edits"]["toward_glaucoma"]
            paths += [less["image"], less["difference"], case["photo"], more["image"], more["difference"]]
    return [path for path in paths if path]


def decoded(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:60]
    return base64.b64decode(uri[len(prefix):], validate=True)


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory) -> Path:
    return synthetic_session(tmp_path_factory.mktemp("review") / "session", n_cases=3, size=96, seed=1)


@pytest.fixture(scope="module")
def exported(session_dir, tmp_path_factory) -> Path:
    return export_report(session_dir, tmp_path_factory.mktemp("export") / "out")


def copied(session_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(session_dir, tmp_path / "session"))


def rows_of(readers_scores: dict) -> list[dict]:
    return [{"reader": reader, "case": case, "method": method, "location": location, "rationale": rationale,
             "agree": agree}
            for (reader, case, method), (location, rationale, agree) in readers_scores.items()]


def test_the_report_shows_each_case_in_session_order_with_its_values(session_dir, exported):
    session = load_session(session_dir)
    cases = parsed(exported).cases
    assert [c["id"] for c in cases] == [f"case-{eye_file_stem(c['id'])}" for c in session["cases"]]
    for shown, case in zip(cases, session["cases"]):
        assert shown["heading"] == f"{case['id']} {case['side']} eye"
        section = shown["text"]
        assert (f"Model's probability of glaucoma {case['probability']:.2f} · decision {case['decision']} "
                f"(threshold {session['threshold']:.2f})") in section
        expected = [cell for f in case["findings"] for cell in (
            FINDING_NAMES[f["code"]].short, f"{f['probability']:.2f}", f"{f['contribution']:+.2f}")]
        expected += ["vertical cup-to-disc ratio (vCDR)", f"{case['vcdr']:.2f}", f"{case['vcdr_contribution']:+.2f}"]
        assert shown["cells"] == expected
        assert case["sentence"] in section
        assert f"explain {100 * case['explained_share']:.0f}% of the evidence for the decision" in section
        for edit in case["panels"]["adversarial"]["edits"].values():
            assert (f"Probability {edit['probability_from']:.2f} → {edit['probability_to']:.2f} "
                    f"(goal {edit['goal']:.2f})") in section


def test_every_image_is_the_session_file_embedded_and_nothing_is_fetched(session_dir, exported):
    session = load_session(session_dir)
    report = parsed(exported)
    assert report.images_outside == []
    for shown, case in zip(report.cases, session["cases"]):
        expected = [(session_dir / path).read_bytes() for path in shown_images(case)]
        assert [decoded(src) for src in shown["images"]] == expected
    text = exported.read_text(encoding="utf-8")
    for reference in ("http://", "https://", 'src="/', "<script", "url("):
        assert reference not in text
    sources = [line.split(",")[1] for line in (session_dir / "key.csv").read_text().splitlines()[1:]]
    assert sources and not any(source in text for source in sources)  # the pseudonyms' key stays apart


def test_a_flagged_edit_says_so(session_dir, exported):
    session = load_session(session_dir)
    flagged = [(case, edit) for case in session["cases"] for edit in case["panels"]["adversarial"]["edits"].values()
               if edit["flag"]]
    assert flagged, "the synthetic session has an edit that does not reach its goal"
    text = exported.read_text(encoding="utf-8")
    for case, edit in flagged:
        section = text[text.index(f'id="case-{eye_file_stem(case["id"])}"'):]
        assert f'<p class="flag"><strong>{edit["flag"]}</strong>: ' in section[:section.find("</section>")]


def test_text_from_the_session_is_escaped(session_dir, tmp_path):
    session_dir = copied(session_dir, tmp_path)
    session = json.loads((session_dir / SESSION_FILE).read_text())
    session["title"] = session["cases"][0]["id"] = session["cases"][0]["sentence"] = HOSTILE
    session["methods"][0]["title"] = HOSTILE
    (session_dir / SESSION_FILE).write_text(json.dumps(session))
    out = tmp_path / "out"
    text = export_report(session_dir, out).read_text(encoding="utf-8")
    assert HOSTILE not in text and "<script" not in text
    # title (twice), the case heading, the photograph's alt text, the method's caption, the sentence
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
    assert sorted(p.name for p in (out / PNG_DIR).iterdir()) == sorted(
        f"{eye_file_stem(c['id'])}.png" for c in session["cases"])
    assert sorted(p.name for p in out.iterdir()) == sorted([PNG_DIR, REPORT_FILE])


def test_the_readers_scores_are_the_means_of_their_ratings(session_dir, tmp_path):
    case_ids = [case["id"] for case in load_session(session_dir)["cases"]]
    scores = {("ana", case_ids[0], "gradcam"): (4, 3, 1), ("ben", case_ids[0], "gradcam"): (1, None, 0),
              ("cem", case_ids[0], "gradcam"): (2, 5, 1), ("ana", case_ids[0], "adversarial"): (5, 4, 1),
              ("ana", case_ids[1], "gradcam"): (3, 2, None), ("ana", "case-999", "gradcam"): (1, 1, 1)}
    out = export_report(session_dir, tmp_path / "out", ratings=rows_of(scores))

    def means(method, case=None):
        """The ratings, mean location, rationale and agree of ``method`` on ``case`` (else on every
        case of the session), computed here from the rows."""
        chosen = [values for (_, c, m), values in scores.items() if m == method and (c == case or
                                                                                     case is None and c in case_ids)]
        columns = [[v for v in column if v is not None] for column in zip(*chosen)]
        return [str(len(chosen))] + [f"{statistics.mean(column):.2f}" for column in columns]

    report = parsed(out)
    # header: per method over the session's cases; case-999 is left out and said so
    assert report.header_rows("scores") == [["Adversarial explanation", *means("adversarial")],
                                            ["Grad-CAM", *means("gradcam")]]
    assert "1 ratings of cases not in this session are left out" in out.read_text(encoding="utf-8")
    first, second, third = report.cases
    n_findings = len(load_session(session_dir)["cases"][0]["findings"]) + 1
    assert first["cells"][3 * n_findings:] == ["Adversarial explanation", *means("adversarial", case_ids[0]),
                                                "Grad-CAM", *means("gradcam", case_ids[0])]
    assert second["cells"][3 * n_findings:] == ["Grad-CAM", "1", "3.00", "2.00", "—"]
    assert third["cells"][3 * n_findings:] == []
    assert ratings_summary(rows_of(scores), case_ids)["cases"][case_ids[0]]["gradcam"] == {
        "n": 3, "location": pytest.approx(7 / 3), "rationale": 4.0, "agree": pytest.approx(2 / 3)}


def test_the_ratings_the_server_stored_are_read_without_changing_them(session_dir, tmp_path):
    session_dir = copied(session_dir, tmp_path)
    case_id = load_session(session_dir)["cases"][0]["id"]
    store = RatingStore(session_dir / "ratings.sqlite")
    for reader, location, agree in (("ana", 4, 1), ("ben", 1, 0)):
        store.add_reader(reader)
        store.save_panel_rating(reader, case_id, "gradcam", panel="A", mode="blinded", location=location)
        store.save_case_rating(reader, case_id, agree=agree, note=HOSTILE)
    before = (session_dir / "ratings.sqlite").read_bytes()
    out = export_report(session_dir, tmp_path / "out")
    assert parsed(out).header_rows("scores") == [["Grad-CAM", "2", "2.50", "—", "0.50"]]
    assert (session_dir / "ratings.sqlite").read_bytes() == before
    assert HOSTILE not in out.read_text(encoding="utf-8")  # a note is never shown, let alone unescaped


def test_each_case_has_its_own_composite_png(session_dir, exported):
    session = load_session(session_dir)
    pictures = []
    for case in session["cases"]:
        with Image.open(exported.parent / PNG_DIR / f"{eye_file_stem(case['id'])}.png") as image:
            assert image.format == "PNG"
            # a slide's width: the edits around the photograph and the model's reasons; then the
            # heatmap and the two difference maps
            assert image.width == 4 * TILE_PIXELS >= 1600
            assert 2 * TILE_PIXELS < image.height < 3.5 * TILE_PIXELS
            picture = np.asarray(image.convert("RGB"))
        for relative in (case["photo"], *(e["image"] for e in case["panels"]["adversarial"]["edits"].values()),
                         case["panels"]["gradcam"]["overlay"]):
            assert found_in(picture, session_dir / relative) > 0.98, relative
        pictures.append(picture.astype(np.int16))
    assert all(np.abs(a - b).mean() > 1 for i, a in enumerate(pictures) for b in pictures[i + 1:])


def found_in(picture: np.ndarray, path: Path) -> float:
    """How well the image at ``path``, enlarged to a tile, matches its best place in ``picture``
    (normalised cross-correlation, 1: exactly)."""
    import cv2

    with Image.open(path) as image:
        side = TILE_PIXELS - 12
        tile = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS))
    return float(cv2.matchTemplate(picture, tile, cv2.TM_CCOEFF_NORMED).max())


def test_a_missing_image_is_named_and_nothing_is_written(session_dir, tmp_path):
    session_dir = copied(session_dir, tmp_path)
    case = load_session(session_dir)["cases"][1]
    missing = case["panels"]["gradcam"]["overlay"]
    (session_dir / missing).unlink()
    with pytest.raises(PathError, match=missing):
        export_report(session_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_image_that_is_not_a_png_is_named(session_dir, tmp_path):
    session_dir = copied(session_dir, tmp_path)
    photo = session_dir / load_session(session_dir)["cases"][2]["photo"]
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    photo.write_bytes(buffer.getvalue())
    with pytest.raises(PathError, match="is not a PNG image") as raised:
        export_report(session_dir, tmp_path / "out")
    assert raised.value.path == str(photo.resolve())
    assert not (tmp_path / "out").exists()


def test_an_earlier_export_is_replaced_but_no_other_folder(session_dir, tmp_path):
    out = tmp_path / "out"
    (out / PNG_DIR).mkdir(parents=True)
    (out / PNG_DIR / "case-from-another-session.png").write_bytes(b"old")
    (out / "ratings.csv").write_text("reader,case\n")  # as xmed-review export writes beside the report
    export_report(session_dir, out)
    assert "case-from-another-session.png" not in {p.name for p in (out / PNG_DIR).iterdir()}
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(PathError, match="mine.txt"):
        export_report(session_dir, tmp_path / "notes")
    with pytest.raises(PathError, match="inside the review session"):
        export_report(session_dir, session_dir / "export")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"


def test_a_flagged_eye_is_explained_in_words_not_flag_names(session_dir, tmp_path):
    session_dir = copied(session_dir, tmp_path)
    session = json.loads((session_dir / SESSION_FILE).read_text())
    session["cases"][0]["quality"] = ["unfamiliar_features", "nearly_uniform"]
    (session_dir / SESSION_FILE).write_text(json.dumps(session))
    text = export_report(session_dir, tmp_path / "out").read_text(encoding="utf-8")
    assert ("The model was not trained on images like this one, and the image failed the quality check "
            "(a nearly uniform image): do not rely on this decision.") in text
    assert "unfamiliar_features" not in text


def test_the_coordinator_sees_each_readers_progress_and_the_studys_statistics(session_dir, tmp_path):
    session_dir = copied(session_dir, tmp_path)
    session = load_session(session_dir)
    ids = [case["id"] for case in session["cases"]]
    store = RatingStore(session_dir / "ratings.sqlite")
    scores = {"ana": [(5, 4, 2, 2, 1), (4, 4, 1, 2, 1), (5, 5, 2, 1, 1)],   # adversarial loc/rat, gradcam loc/rat, agree
              "ben": [(2, 4, 5, 2, 0), (4, 3, 2, 3, 1), (3, 5, 2, 2, None)]}
    for reader, cases in scores.items():
        store.add_reader(reader)
        for case, (a_loc, a_rat, g_loc, g_rat, agree) in zip(ids, cases):
            store.save_panel_rating(reader, case, "adversarial", panel="A", mode="blinded", location=a_loc,
                                    rationale=a_rat)
            store.save_panel_rating(reader, case, "gradcam", panel="B", mode="blinded", location=g_loc,
                                    rationale=g_rat)
            if agree is not None:
                store.save_case_rating(reader, case, agree=agree)
    store.add_reader("cem")
    store.revoke_reader("ben")
    report = parsed(export_report(session_dir, tmp_path / "out", n_bootstrap=200))

    assert report.header_rows("readers") == [["ana", "3 / 3", "3", "can sign in"], ["ben", "2 / 3", "3", "revoked"],
                                             ["cem", "0 / 3", "0", "can sign in"]]
    assert reader_progress(store.rows(), session) == [
        {"reader": reader, "rated": rated, "started": started, "total": 3, "state": None}
        for reader, rated, started in (("ana", 3, 3), ("ben", 2, 3))]
    study = study_statistics(session, store.rows(), n_bootstrap=200)
    random = {scale: study["mrmc"][scale]["differences"][0]["p_value"] for scale in ("location", "rationale")}
    assert [row[1:] for row in report.header_rows("comparisons")] == [
        [c["scale"], str(c["n_pairs"]), f"{c['mean_difference']:+.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]",
         f"{c['p_value']:.3f}", f"{c['p_holm']:.3f}", f"{random[c['scale']]:.3f}"] for c in study["comparisons"]]
    assert [c["p_holm"] for c in study["comparisons"]] == holm([c["p_value"] for c in study["comparisons"]])
    kappa = study["agreement"]["location"]["gradcam"]
    assert report.header_rows("agreement")[1][3] == (
        f"{kappa['kappa_quadratic']:.2f} [{kappa['kappa_quadratic_ci'][0]:.2f}, {kappa['kappa_quadratic_ci'][1]:.2f}]")
    assert report.header_rows("decision-agreement")[:3] == [["all", "5", "0.80"], ["ana", "3", "1.00"],
                                                            ["ben", "2", "0.50"]]  # once per case, not per panel
    assert report.header_rows("flagged") == [[ids[0], "adversarial location scores 2 to 5 (3 points apart); "
                                              "gradcam location scores 2 to 5 (3 points apart); readers split on the "
                                              "model's decision (1 of 2 agree); 1 of 2 readers disagree with the "
                                              "model's decision"]]


class ClassTexts(HTMLParser):
    """The text of every element of the classes asked for (whitespace collapsed), by the case
    section it is in (``id``; None outside one): ``{section: [(class, text), …]}`` in page order."""

    VOID = {"img", "input", "br", "meta", "link", "hr", "source", "col", "wbr"}

    def __init__(self, classes: tuple[str, ...]):
        super().__init__()
        self.classes = classes
        self.found: dict[str | None, list[list[str]]] = {}
        self._section: str | None = None
        self._open: list[tuple[str, list[list[str]]]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("class") == "case":
            self._section = attrs["id"]
        if tag in self.VOID:
            return
        if tag in ("th", "td"):
            self.handle_data(" ")  # a table's cells apart
        captured = [[name, ""] for name in (attrs.get("class") or "").split() if name in self.classes]
        self.found.setdefault(self._section, []).extend(captured)
        self._open.append((tag, captured))

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, captured in self._open:
            for entry in captured:
                entry[1] += data


#: the parts of a case the review page and the report share (templates/_case.html)
SHARED = ("side", "decision", "flag", "sentence", "reasons", "explained", "edit-title", "probability", "changes")


def shared_texts(html: str, section: str | None = None) -> list[tuple[str, str]]:
    parser = ClassTexts(SHARED)
    parser.feed(html)
    return [(name, " ".join(text.split())) for name, text in parser.found.get(section, [])]


def test_the_page_and_the_report_show_a_case_in_the_same_words(tmp_path):
    from starlette.testclient import TestClient

    from xmed.review.server import create_app

    folder = synthetic_session(tmp_path / "session", n_cases=3, mode="open", bottleneck=False, size=64, seed=1)
    session = json.loads((folder / SESSION_FILE).read_text())
    first = session["cases"][0]
    first["quality"], first["contributions_exact"] = ["unfamiliar_features"], False
    first["findings"][0]["name"] = FINDING_NAMES[first["findings"][0]["code"]].full
    first["panels"]["adversarial"]["edits"]["toward_normal"]["changes"] = [
        {"code": "vcdr", "from": 0.7367, "to": 0.4759}, {"code": "ANRI", "from": 0.9, "to": 0.31}]
    first["panels"]["adversarial"]["edits"]["toward_glaucoma"].update(findings_to=None, vcdr_to=None)
    (folder / SESSION_FILE).write_text(json.dumps(session))
    report = export_report(folder, tmp_path / "out").read_text(encoding="utf-8")
    client = TestClient(create_app(folder), base_url="http://127.0.0.1")
    client.get("/login", params={"token": RatingStore(folder / "ratings.sqlite").add_reader("ana")})

    for n, case in enumerate(session["cases"], 1):
        page = shared_texts(client.get(f"/case/{n}").text)
        assert page == shared_texts(report, f"case-{eye_file_stem(case['id'])}")
        texts = dict(page)  # its decision line and findings table: one each
        assert texts["decision"] == (f"Model's probability of glaucoma {case['probability']:.2f} · decision "
                                     f"{case['decision']} (threshold {session['threshold']:.2f})")
        short = FINDING_NAMES[case["findings"][0]["code"]].short
        assert texts["reasons"].startswith(f"Finding Probability Contribution (logit) {short} "
                                           f"{case['findings'][0]['probability']:.2f} "
                                           f"{case['findings'][0]['contribution']:+.2f} ")
        edits = case["panels"]["adversarial"]["edits"]
        assert [text for name, text in page if name == "edit-title"] == [
            "Less glaucomatous (edited toward normal)", "Original", "More glaucomatous (edited toward glaucoma)"]
        assert [text for name, text in page if name == "probability"] == [
            f"Probability {edits['toward_normal']['probability_from']:.2f} → "
            f"{edits['toward_normal']['probability_to']:.2f} (goal {edits['toward_normal']['goal']:.2f})",
            f"Probability {case['probability']:.2f}",
            f"Probability {edits['toward_glaucoma']['probability_from']:.2f} → "
            f"{edits['toward_glaucoma']['probability_to']:.2f} (goal {edits['toward_glaucoma']['goal']:.2f})"]
    full, short = FINDING_NAMES[first["findings"][0]["code"]]
    named = f'<th scope="row" title="{full}">{short}</th>'  # a short name, the full one on hovering
    assert named in client.get("/case/1").text and named in report
    first_page = shared_texts(client.get("/case/1").text)
    assert ("flag", "The model was not trained on images like this one: do not rely on this decision.") in first_page
    assert [text for name, text in first_page if name == "changes"] == [
        "vCDR 0.74 → 0.48 · inferior rim thinning 0.90 → 0.31", first["decision"],
        "the model's findings after the edit were not recorded"]
    assert dict(first_page)["explained"].endswith("of the evidence for the decision (approximate).")
    third = shared_texts(client.get("/case/3").text)
    assert ("flag", "no flip within the budget: the edit did not reach the goal within its budget") in third


def test_the_report_template_is_a_file_that_shares_the_pages_macros():
    import inspect
    import re

    from xmed.review import export
    from xmed.review.views import TEMPLATES

    source = inspect.getsource(export)
    assert "from_string" not in source and re.search(r"<(html|body|section|table|div|p)\b", source) is None
    for template in ("report.html", "case.html"):
        assert '{% from "_case.html" import case_head, reasons, edit_summary, original_summary %}' in (
            TEMPLATES / template).read_text()


def test_the_ratings_tables_come_with_the_report_from_one_reading_of_the_store(tmp_path):
    from xmed.review.store import ratings_csv, ratings_json

    session_dir = synthetic_session(tmp_path / "session", n_cases=1, size=64)
    case_id = load_session(session_dir)["cases"][0]["id"]
    store = RatingStore(session_dir / "ratings.sqlite")
    store.add_reader("ana")
    store.save_panel_rating("ana", case_id, "gradcam", panel="A", mode="blinded", location=4)
    store.save_case_rating("ana", case_id, agree=1, note="rim notch")
    out = export_report(session_dir, tmp_path / "out", ratings_files=True).parent
    assert sorted(p.name for p in out.iterdir()) == sorted([PNG_DIR, REPORT_FILE, *RATINGS_FILES])
    assert (out / "ratings.csv").read_bytes().decode() == ratings_csv(store.rows())
    assert json.loads((out / "ratings.json").read_text()) == json.loads(ratings_json(store.rows()))
    assert "rim notch" in (out / "ratings.csv").read_text() and "rim notch" not in (out / REPORT_FILE).read_text()
    assert not (export_report(session_dir, tmp_path / "plain").parent / "ratings.csv").exists()  # asked for only
