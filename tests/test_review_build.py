"""``xmed-review build``: a review session from an ``xmed-explain`` run or from a model and a folder
of photographs / DICOM files — the photographs the model saw, the explain run's own maps, both edits
of every eye carried to its own goal and flagged, pseudonymous case ids, and no patient identifier
anywhere."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from xmed.data import render_phantom
from xmed.data.folders import walk_folder
from xmed.errors import ConfigError, PathError
from xmed.models import FundusClassifier
from xmed.models.export import export_model, load_model
from xmed.explain.counterfactual import step_goals
from xmed.review.build import REVIEW_GOALS, build_session
from xmed.review.panels import edit_flag, heatmap_layer
from xmed.review.session import EDITS, intervene, load_session
from xmed.review.study import analyse_session, automatic_scores, main_finding

from helpers.commands import compose
from helpers.dicom import PHI, write_dicom

SIZE = 48


@pytest.fixture(scope="module")
def explain_run(tmp_path_factory) -> Path:
    from xmed.pipeline.explanation import explain_run

    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE, data_config={"crop_fov": False}, threshold=0.4)
    with torch.no_grad():
        model.glaucoma_head.weight.fill_(0.1)
    model_dir = export_model(model.eval(), tmp_path_factory.mktemp("model") / "model")
    out = tmp_path_factory.mktemp("explain")
    cfg = compose("explain", ["data=phantom_render", "data.dataset_options.n=40", f"data.dataset_options.size={SIZE}",
                              "data.num_workers=0", f"ckpt_path={model_dir}", "n=3", "batch_size=3", "overlays=0",
                              "randomisation.n_images=0", "faithfulness.n_steps=4", "explainer=gradcam", "label=1", "split=train",
                              f"paths.output_dir={out}"])
    explain_run(cfg)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")   # as the xmed-explain command's Hydra run does
    return out


@pytest.fixture(scope="module")
def session_dir(explain_run, tmp_path_factory) -> Path:
    return build_session(tmp_path_factory.mktemp("review") / "session", explain_dir=explain_run,
                         counterfactual_options={"max_steps": 20}, progress=False)


def test_a_session_from_an_explain_run(explain_run, session_dir):
    session = load_session(session_dir)
    model = load_model(OmegaConf.load(explain_run / ".hydra" / "config.yaml").ckpt_path)
    assert [c["id"] for c in session["cases"]] == ["case-001", "case-002", "case-003"]
    assert [m["name"] for m in session["methods"]] == ["gradcam", "adversarial"]
    assert session["threshold"] == pytest.approx(0.4) and session["mode"] == "blinded"
    with open(session_dir / "key.csv", newline="") as handle:
        key = {row["case"]: row["source_id"] for row in csv.DictReader(handle)}
    with open(explain_run / "per_image.csv", newline="") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert list(key.values()) == list(rows)                 # the explain run's eyes, in its order
    for case in session["cases"]:
        eye = rows[key[case["id"]]]
        photo = np.asarray(Image.open(session_dir / case["photo"]).convert("RGB"))
        assert photo.shape == (SIZE, SIZE, 3) and case["size"] == [SIZE, SIZE]
        # the model's probability of the photograph as stored (8-bit rounding aside)
        x = torch.from_numpy((photo / 255.0 - np.array(model.data_config.mean)) / np.array(model.data_config.std))
        with torch.no_grad():
            p = torch.sigmoid(model(x.permute(2, 0, 1)[None].float())["logits"]).item()
        assert case["probability"] == pytest.approx(p, abs=0.01)
        assert case["decision"] == ("referable glaucoma" if case["probability"] >= 0.4 else "no referable glaucoma")
        # the explain run's own map, not a new one
        saved = np.load(explain_run / "maps" / "gradcam" / f"{key[case['id']]}.npy")
        layer = np.asarray(Image.open(session_dir / case["panels"]["gradcam"]["heatmap"]))
        assert np.array_equal(layer, heatmap_layer(saved)[0])
        assert case["panels"]["gradcam"]["automatic"]["energy_pointing_game"] == pytest.approx(
            float(eye["energy_pointing_game"]))
        assert case["truth"]["label"] in (0, 1)


def test_every_eye_gets_both_edits_each_to_its_own_goal_saying_what_they_did(session_dir):
    session = load_session(session_dir)
    seen_edit = False
    for case in session["cases"]:
        for name, edit in case["panels"]["adversarial"]["edits"].items():
            # a step of the logit from where the eye starts (P as stored: rounded to 4 decimals)
            goal = step_goals(torch.tensor([edit["probability_from"]]), EDITS[name], REVIEW_GOALS["logit_step"]).item()
            assert edit["goal"] == pytest.approx(goal, abs=2e-3)
            assert edit["probability_from"] == pytest.approx(case["probability"], abs=1e-3)
            assert edit["steps"] > 0 and edit["flag"] != "not edited"
            assert edit["flag"] == edit_flag(edit["steps"], edit["reached"], edit["changed_fraction"])
            if edit["reached"]:
                assert (edit["probability_to"] < edit["goal"] + 1e-4) if name == "toward_normal" else \
                    (edit["probability_to"] > edit["goal"] - 1e-4)
            if edit["image"]:
                seen_edit = True
                before = np.asarray(Image.open(session_dir / case["photo"]).convert("RGB")).astype(int)
                after = np.asarray(Image.open(session_dir / edit["image"]).convert("RGB")).astype(int)
                assert np.abs(after - before).max() / 255 == pytest.approx(edit["max_change"], abs=1e-6)
    assert seen_edit


def test_automatic_scores_and_main_finding(session_dir):
    session = load_session(session_dir)
    scores = automatic_scores(session)
    for case in session["cases"]:
        assert scores[(case["id"], "gradcam")]["automatic"] == case["panels"]["gradcam"]["automatic"]["energy_pointing_game"]
        finding = main_finding(case)
        if finding is not None:
            best = max(case["findings"], key=lambda f: f["contribution"] if case["decision"] == "referable glaucoma"
                       else -f["contribution"])
            assert finding == best["code"]


def test_the_study_of_simulated_readers_follows_their_rule(session_dir, tmp_path):
    """Two readers score Grad-CAM 4 and the edits 2 on every case: the analysis says so."""
    session = load_session(session_dir)
    rows = [{"reader": reader, "case": case["id"], "method": method, "location": score, "rationale": score,
             "agree": 1} for reader in ("r1", "r2") for case in session["cases"]
            for method, score in (("gradcam", 4), ("adversarial", 2))]
    ratings = tmp_path / "ratings.csv"
    with open(ratings, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = analyse_session(session_dir, ratings=ratings, out=tmp_path / "analysis", n_bootstrap=200)
    assert report["scores"]["gradcam"]["location"]["mean"] == 4.0
    assert report["scores"]["adversarial"]["rationale"]["mean"] == 2.0
    assert json.loads((tmp_path / "analysis" / "analysis.json").read_text())["n_ratings"] == 12
    assert (tmp_path / "analysis" / "scores.png").stat().st_size > 1000
    bad = tmp_path / "bad.csv"
    bad.write_text("reader,case,method,location,rationale,agree\nr1,case-999,gradcam,3,3,1\n")
    with pytest.raises(Exception, match="case-999"):
        analyse_session(session_dir, ratings=bad)


def test_a_session_from_dicom_files_holds_no_patient_identifier(tmp_path):
    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE, threshold=0.5,
                             mode="concept_bottleneck")
    model_dir = export_model(model.eval(), tmp_path / "model")
    pacs = tmp_path / "pacs"
    pacs.mkdir()
    for i in range(2):
        write_dicom(pacs / f"img{i}.dcm", render_phantom(i, 64).image, instance=f"1.2.826.0.1.3680043.8.498.{i + 1}")
    (pacs / "broken.dcm").write_bytes(b"not a dicom file")
    folder = build_session(tmp_path / "session", model=model_dir, images=pacs, methods=["gradcam"],
                           counterfactual=False, mode="open", progress=False)
    session = load_session(folder)
    broken = [e.label for e in walk_folder(pacs) if e.relative == "broken.dcm"]   # dicom#1-…, not its name
    assert len(session["cases"]) == 2 and [s["path"] for s in session["skipped"]] == broken
    assert session["cases"][0]["side"] == "right"
    everything = "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.suffix in (".json", ".csv"))
    names = " ".join(p.name for p in folder.rglob("*"))
    for value in PHI.values():
        assert value not in everything and value.split("^")[0] not in everything + names
    # test-time intervention in the session equals the model's own
    case = session["cases"][0]
    image = load_model(model_dir).prepare(render_phantom(0, 64).image)
    with torch.no_grad():
        expected = torch.sigmoid(load_model(model_dir)(image, intervene={"LC": 1.0, "vcdr": 0.9})["logits"]).item()
    assert intervene(session, case, {"LC": 1.0, "vcdr": 0.9})["probability"] == pytest.approx(expected, abs=2e-4)


def test_photographs_larger_than_the_model_input_are_shown_at_their_own_resolution(tmp_path):
    from xmed.data.preprocess import area_resize
    from xmed.viz.overlay import to_uint8_image

    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE, threshold=0.5)   # crops to the field of view
    model_dir = export_model(model.eval(), tmp_path / "model")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(render_phantom(i, 256).image).save(photos / f"eye{i}.png")
    folder = build_session(tmp_path / "session", model=model_dir, images=photos, methods=["gradcam"],
                           counterfactual_options={"max_steps": 3}, progress=False)
    small = build_session(tmp_path / "small", model=model_dir, images=photos, methods=["gradcam"], counterfactual=False,
                          progress=False, display_side=100)
    net = load_model(model_dir)
    for case, small_case, i in zip(load_session(folder)["cases"], load_session(small)["cases"], range(2)):
        photo = np.asarray(Image.open(folder / case["photo"]).convert("RGB"))
        side = photo.shape[0]
        assert 200 <= side <= 256 and photo.shape == (side, side, 3)          # the field of view's crop, not 48 px
        assert case["size"] == [side, side] and case["model_input"] == [SIZE, SIZE]
        assert small_case["size"] == [100, 100] and small_case["model_input"] == [SIZE, SIZE]
        # framed as the model saw it: reduced to its input, the photograph is what the model was given
        seen = to_uint8_image(net.prepare(render_phantom(i, 256).image)[0], net.data_config.mean, net.data_config.std)
        assert np.abs(area_resize(photo, (SIZE, SIZE)).astype(int) - seen.astype(int)).mean() < 1.5
        for name in ("gradcam_overlay.png", "gradcam_heatmap.png"):
            assert Image.open(folder / Path(case["photo"]).parent / name).size == (side, side)
        for edit in case["panels"]["adversarial"]["edits"].values():
            edited = np.asarray(Image.open(folder / edit["image"]).convert("RGB")).astype(int)
            assert edited.shape == photo.shape
            change = np.abs(edited - photo).sum(-1)
            assert change.max() > 0 and edit["changed_fraction"] > 0


def test_bad_sources_are_named(explain_run, tmp_path):
    with pytest.raises(ConfigError, match="source"):
        build_session(tmp_path / "a", explain_dir=explain_run, model=tmp_path, images=tmp_path)
    with pytest.raises(PathError, match="not an xmed-explain run"):
        build_session(tmp_path / "b", explain_dir=tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "old.txt").write_text("an earlier run")
    with pytest.raises(ConfigError, match="overwrite"):
        build_session(tmp_path / "c", explain_dir=explain_run, counterfactual=False, progress=False)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "session.json").write_text("{}")
    (tmp_path / "d" / "ratings.sqlite").write_text("")
    with pytest.raises(ConfigError, match="holds readers' ratings"):
        build_session(tmp_path / "d", explain_dir=explain_run, overwrite=True, progress=False)
    assert (tmp_path / "d" / "ratings.sqlite").exists()


def test_eyes_without_glaucoma_join_the_explained_ones(explain_run, tmp_path):
    from xmed.explain import get_explainer

    folder = build_session(tmp_path / "session", explain_dir=explain_run, n=2, normal=2, counterfactual=False,
                           progress=False)
    session = load_session(folder)
    with open(folder / "key.csv", newline="") as handle:
        key = {row["case"]: row["source_id"] for row in csv.DictReader(handle)}
    explained = {p.stem for p in (explain_run / "maps" / "gradcam").glob("*.npy")}
    labels = {case["id"]: case["truth"]["label"] for case in session["cases"]}
    assert sorted(labels.values()) == [0, 0, 1, 1]
    assert {labels[case] for case, source in key.items() if source in explained} == {1}
    net = load_model(OmegaConf.load(explain_run / ".hydra" / "config.yaml").ckpt_path)
    for case in session["cases"]:
        layer = np.asarray(Image.open(folder / case["panels"]["gradcam"]["heatmap"]))
        if key[case["id"]] in explained:        # the run's own map
            assert np.array_equal(layer, heatmap_layer(np.load(explain_run / "maps" / "gradcam" / f"{key[case['id']]}.npy"))[0])
            continue
        photo = np.asarray(Image.open(folder / case["photo"]).convert("RGB")) / 255.0
        x = torch.from_numpy((photo - np.array(net.data_config.mean)) / np.array(net.data_config.std))
        with torch.enable_grad():
            fresh = get_explainer("gradcam")(net)(x.permute(2, 0, 1)[None].float(), "glaucoma").maps[0, 0].numpy()
        # computed here as the run computes its maps (8-bit rounding of the photograph aside)
        assert layer[..., 3].max() == 255 and np.abs(layer.astype(int) - heatmap_layer(fresh)[0]).mean() < 2
    with pytest.raises(ConfigError, match="normal"):
        build_session(tmp_path / "more", explain_dir=explain_run, normal=1000, counterfactual=False, progress=False)
