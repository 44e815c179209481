"""``xmed-predict`` on a folder of photographs and on a folder of DICOM files: one row per file, the
same probabilities ``model.prepare`` + ``model`` give, decisions at the model's operating threshold,
unreadable files and failed quality checks said, and no patient identifier in any output."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from xmed.data import read_image, render_phantom
from xmed.errors import ConfigError
from xmed.models import FundusClassifier
from xmed.models.export import export_model

from helpers.dicom import PHI, write_dicom
from helpers.predict import SIZE, predict


@pytest.fixture(scope="module")
def clinic(tmp_path_factory) -> Path:
    """Five phantom eyes (two in a subfolder), a white frame and a file that is no image."""
    folder = tmp_path_factory.mktemp("clinic")
    (folder / "monday").mkdir()
    for seed in range(5):
        target = folder / ("monday" if seed < 2 else ".") / f"eye_{seed}.png"
        cv2.imwrite(str(target), cv2.cvtColor(render_phantom(seed, 128).image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "white.png"), np.full((128, 128, 3), 255, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_a_folder_of_photographs(model_dir, clinic, tmp_path):
    from xmed.models.export import load_model

    summary, rows = predict(model_dir, clinic, tmp_path / "out")
    assert list(rows) == ["broken", "eye_2", "eye_3", "eye_4", "monday/eye_0", "monday/eye_1", "white"]  # folder order
    model = load_model(model_dir)
    for eye_id in ("eye_2", "monday/eye_0", "white"):
        with torch.no_grad():
            expected = torch.sigmoid(model(model.prepare(read_image(clinic / f"{eye_id}.png")))["logits"]).item()
        assert float(rows[eye_id]["prob"]) == pytest.approx(expected, abs=1e-5)   # the library's own answer
        assert rows[eye_id]["referable"] == str(int(float(rows[eye_id]["prob"]) >= 0.5))
    assert rows["white"]["quality"] != "" and all(rows[f"eye_{i}"]["quality"] == "" for i in (2, 3, 4))
    assert rows["broken"]["status"].startswith("unreadable: not an image") and rows["broken"]["prob"] == ""
    assert summary["n"] == 7 and summary["scored"] == 6 and summary["unreadable"] == ["broken"]
    assert summary["quality_flagged"] == ["white"] and summary["threshold"] == 0.5
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert not (tmp_path / "out" / ".parts").exists()


def test_the_threshold_can_be_given(model_dir, clinic, tmp_path):
    _, rows = predict(model_dir, clinic, tmp_path / "out", "threshold=0.0")
    assert {r["referable"] for r in rows.values() if not r["status"]} == {"1"}


def test_a_model_without_an_operating_threshold_needs_one(clinic, tmp_path):
    bare = export_model(FundusClassifier("test_resnet.r160_in1k", input_size=SIZE), tmp_path / "bare")
    with pytest.raises(ConfigError, match="carries no operating threshold") as err:
        predict(bare, clinic, tmp_path / "out")
    assert err.value.key == "threshold" and str(bare) in str(err.value)   # names the model's folder


def test_a_folder_of_dicom_files_gives_no_patient_identifier(model_dir, tmp_path):
    folder = tmp_path / "pacs"
    folder.mkdir()
    for i in range(3):
        write_dicom(folder / f"img{i}.dcm", render_phantom(i, 64).image, instance=f"1.2.826.0.1.3680043.8.498.{i + 1}")
    out = tmp_path / "out"
    summary, rows = predict(model_dir, folder, out)
    assert summary["n"] == 3 and summary["scored"] == 3
    assert {r["eye"] for r in rows.values()} == {"OD"}                  # laterality read from the header
    assert all(len(eye_id) >= 16 and "img" not in eye_id for eye_id in rows)  # salted pseudonyms
    everything = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    for value in PHI.values():
        assert value not in everything and value.split("^")[0] not in everything


def test_photographs_and_dicom_files_are_told_apart(tmp_path):
    from xmed.pipeline.prediction import input_dataset

    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    assert input_dataset(tmp_path / "photos", "auto", "raise").name == "photo_folder"
    with pytest.raises(ConfigError, match="expected auto, photos or dicom") as err:
        input_dataset(tmp_path / "photos", "jpeg", "raise")
    assert err.value.key == "format"
    (tmp_path / "empty").mkdir()
    from xmed.errors import DatasetError

    with pytest.raises(DatasetError, match="no photographs found"):
        input_dataset(tmp_path / "empty", "auto", "raise")


@pytest.mark.slow
def test_two_processes_give_the_same_predictions_as_one(model_dir, clinic, tmp_path):
    command = [str(Path(sys.executable).parent / "xmed-predict"), f"ckpt_path={model_dir}", f"input={clinic}",
               "num_workers=0"]
    one = subprocess.run([*command, f"paths.output_dir={tmp_path / 'one'}"], capture_output=True, text=True)
    two = subprocess.run([*command, f"paths.output_dir={tmp_path / 'two'}", "trainer=ddp_cpu"],
                         capture_output=True, text=True)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    rows = []
    for run in ("one", "two"):
        with open(tmp_path / run / "predictions.csv", newline="") as fh:
            rows.append(list(csv.DictReader(fh)))
    assert [r["id"] for r in rows[0]] == [r["id"] for r in rows[1]]          # every eye once, in folder order
    for a, b in zip(*rows):   # batches of another size round differently in the last digits
        assert (a["status"], a["quality"], a["referable"]) == (b["status"], b["quality"], b["referable"])
        assert a["prob"] == b["prob"] == "" or float(a["prob"]) == pytest.approx(float(b["prob"]), abs=1e-5)
