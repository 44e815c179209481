"""The ``xmed-review`` command line: build -> reader -> export -> analyse, and its errors."""

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
from xmed.review.session import load_session
from xmed.review.store import RatingStore


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


def test_build_reader_export_analyse(session, tmp_path, capsys):
    assert [c["id"] for c in load_session(session)["cases"]] == ["case-001", "case-002", "case-003"]
    capsys.readouterr()
    assert main(["reader", str(session), "Dr Ana Silva", "--port", "9001"]) == 0
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
    for command in ("build", "reader", "serve", "export", "analyse"):
        assert command in done.stdout
