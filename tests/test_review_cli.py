"""The ``xmed-review`` command line: build -> serve -> reader -> export -> analyse, and its errors;
the links at the address ``serve`` records, readers' progress, new links, and the lock."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

from xmed.cli.review import main
from xmed.data import render_phantom
from xmed.models import FundusClassifier
from xmed.models.export import export_model
from xmed.review.session import ADDRESS_FILE, load_session
from xmed.review.store import STORE_FILE, RatingStore, StudyLocked
from xmed.review.synthetic import synthetic_session


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("review_cli")
    torch.manual_seed(0)
    model = export_model(FundusClassifier("test_resnet.r160_in1k", input_size=48, threshold=0.5).eval(),
                         base / "model")
    clinic = base / "clinic"
    clinic.mkdir()
    for seed in range(3):
        cv2.imwrite(str(clinic / f"eye_{seed}.png"), cv2.cvtColor(render_phantom(seed, 96).image, cv2.COLOR_RGB2BGR))
    assert main(["build", str(base / "session"), "--model", str(model), "--images", str(clinic),
                 "--methods", "gradcam", "--mode", "open", "--quiet"]) == 0
    return base / "session"


@pytest.fixture
def uvicorn_runs(monkeypatch):
    """``serve`` as far as starting uvicorn: the options it would run with."""
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.append(options))
    return started


def test_build_reader_export_analyse(session, tmp_path, capsys, uvicorn_runs):
    assert [c["id"] for c in load_session(session)["cases"]] == ["case-001", "case-002", "case-003"]
    assert main(["serve", str(session), "--port", "9001"]) == 0
    capsys.readouterr()
    assert main(["reader", str(session), "Dr Ana Silva"]) == 0
    link = capsys.readouterr().out.split()[-1]
    assert link.startswith("http://127.0.0.1:9001/login?token=")
    store = RatingStore(session / "ratings.sqlite")
    assert store.reader_for(link.split("token=")[1]) == "Dr Ana Silva"
    for case, score in (("case-001", 5), ("case-002", 4), ("case-003", 2)):
        store.save_panel_rating("Dr Ana Silva", case, "gradcam", panel=None, mode="open", location=score, rationale=score)
        store.save_panel_rating("Dr Ana Silva", case, "adversarial", panel=None, mode="open", location=3, rationale=1)
        store.save_case_rating("Dr Ana Silva", case, agree=1, note="seen")
    assert main(["export", str(session), "--out", str(tmp_path / "report")]) == 0
    with open(tmp_path / "report" / "ratings.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["note"] for r in rows} == {"seen"}
    assert (tmp_path / "report" / "report.html").is_file() and len(list((tmp_path / "report" / "cases").iterdir())) == 3
    assert main(["analyse", str(session), "--out", str(tmp_path / "analysis"), "--bootstrap", "200"]) == 0
    report = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert report["scores"]["gradcam"]["location"]["mean"] == pytest.approx(11 / 3)
    assert report["scores"]["adversarial"]["rationale"]["mean"] == 1.0
    assert "gradcam: location 3.67" in capsys.readouterr().out


def test_errors_name_what_is_wrong(session, tmp_path, capsys):
    assert main(["build", str(tmp_path / "s"), "--explain", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "give an xmed-explain run folder" in capsys.readouterr().err
    assert main(["reader", str(tmp_path), "ana"]) == 2
    assert "session.json missing" in capsys.readouterr().err
    assert main(["reader", str(session), "Ben"]) == 0
    assert main(["reader", str(session), "Ben"]) == 2
    assert "Ben" in capsys.readouterr().err
    assert main(["serve", str(session), "--host", "0.0.0.0"]) == 2
    assert "0.0.0.0" in capsys.readouterr().err


def test_the_console_script_has_help():
    script = Path(sys.executable).parent / "xmed-review"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("build", "reader", "readers", "serve", "lock", "export", "analyse"):
        assert command in done.stdout


@pytest.fixture
def synthetic(tmp_path) -> Path:
    return synthetic_session(tmp_path / "session", n_cases=3, size=64)


def link_of(out: str) -> str:
    """The link the last line of ``reader`` or ``readers link`` gives."""
    return out.splitlines()[-1].strip()


def test_links_point_where_serve_listens(synthetic, capsys, uvicorn_runs):
    assert main(["reader", str(synthetic), "ana"]) == 0
    out = capsys.readouterr().out
    assert link_of(out).startswith("http://127.0.0.1:8765/login?token=") and "not served yet" in out
    assert main(["serve", str(synthetic), "--port", "9123"]) == 0
    assert [(options["host"], options["port"]) for options in uvicorn_runs] == [("127.0.0.1", 9123)]
    assert json.loads((synthetic / ADDRESS_FILE).read_text())["port"] == 9123
    capsys.readouterr()
    assert main(["reader", str(synthetic), "ben"]) == 0
    out = capsys.readouterr().out
    assert link_of(out).startswith("http://127.0.0.1:9123/login?token=") and "not served yet" not in out
    assert RatingStore(synthetic / STORE_FILE).reader_for(link_of(out).split("token=")[1]) == "ben"


def test_serve_lists_each_readers_progress_and_the_command_for_a_link(synthetic, capsys, uvicorn_runs):
    for name in ("ana", "ben"):
        main(["reader", str(synthetic), name])
    tokens = [line.split("token=")[1] for line in capsys.readouterr().out.splitlines() if "token=" in line]
    store = RatingStore(synthetic / STORE_FILE)
    for method in ("gradcam", "adversarial"):
        store.save_panel_rating("ben", "case-002", method, panel=None, mode="blinded", location=4, rationale=2)
    store.save_case_rating("ben", "case-002", agree=1)
    store.save_case_rating("ben", "case-003", agree=0)
    assert main(["serve", str(synthetic), "--port", "9124"]) == 0
    out = capsys.readouterr().out
    assert f"review page of {synthetic} at http://127.0.0.1:9124" in out
    assert f"`xmed-review readers link {synthetic} NAME` prints a new one" in out
    readers = [line.strip().split("\t") for line in out.splitlines() if "\t" in line]
    assert [(fields[0], fields[3]) for fields in readers] == [("ana", "0/3 cases rated (0 started)"),
                                                              ("ben", "1/3 cases rated (2 started)")]
    assert "  study not locked" in out.splitlines()
    assert not any(token in out for token in tokens)  # links are secrets: never shown again


def test_a_new_link_replaces_a_lost_one(synthetic, capsys):
    main(["reader", str(synthetic), "Dr Ana"])
    old = link_of(capsys.readouterr().out).split("token=")[1]
    assert main(["readers", "link", str(synthetic), "dr  ana"]) == 0
    new = link_of(capsys.readouterr().out).split("token=")[1]
    store = RatingStore(synthetic / STORE_FILE)
    assert (store.reader_for(new), store.reader_for(old)) == ("Dr Ana", None)
    store.revoke_reader("Dr Ana")
    assert main(["readers", "link", str(synthetic), "Dr Ana"]) == 2
    assert "was revoked" in capsys.readouterr().err and store.reader_for(new) is None
    assert main(["readers", "link", str(synthetic), "zed"]) == 2
    assert "no reader 'zed'" in capsys.readouterr().err


def test_lock_records_when_and_no_rating_changes_after_it(synthetic, capsys):
    main(["reader", str(synthetic), "ana"])
    store = RatingStore(synthetic / STORE_FILE)
    store.save_case_rating("ana", "case-001", agree=1)
    capsys.readouterr()
    assert main(["lock", str(synthetic)]) == 0
    out = capsys.readouterr().out
    locked = store.locked()
    assert out.startswith(f"study now locked ({locked[:10]} {locked[11:16]} UTC): ratings can no longer change; "
                          "each reader's page and download now name the method behind each letter")
    assert "ana\tcan sign in" in out and f"xmed-review export {synthetic} --out FOLDER" in out
    with pytest.raises(StudyLocked, match="ratings can no longer change"):
        store.save_case_rating("ana", "case-001", agree=0)
    with pytest.raises(StudyLocked):
        store.save_panel_rating("ana", "case-002", "gradcam", panel="A", mode="blinded", location=2)
    assert [(row["case"], row["agree"]) for row in store.rows()] == [("case-001", 1)]
    assert main(["lock", str(synthetic)]) == 0
    assert capsys.readouterr().out.startswith(f"study was already locked ({locked[:10]}")
    assert store.locked() == locked
    assert main(["readers", "list", str(synthetic)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"study locked on {locked[:10]} {locked[11:16]} UTC: ratings can no longer change")
