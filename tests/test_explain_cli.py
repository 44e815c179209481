"""``xmed-explain`` end to end on a tiny rendered phantom and an exported tiny model."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from xmed.errors import ConfigError

from helpers.commands import compose

ROOT = Path(__file__).resolve().parents[1]


#: the exported model's operating threshold (not 0.5, so that a decision taken at 0.5 shows)
OPERATING_THRESHOLD = 0.37


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from xmed.models import FundusClassifier, export_model

    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=48, data_config={"crop_fov": False},
                             threshold=OPERATING_THRESHOLD)
    with torch.no_grad():  # an untrained head can make every CAM negative (all zero after ReLU)
        model.glaucoma_head.weight.fill_(0.1)
    return export_model(model.eval(), tmp_path_factory.mktemp("model") / "model")


def overrides(out: Path, model: Path, *extra: str) -> list[str]:
    return ["data=phantom_render", "data.dataset_options.n=40", "data.dataset_options.size=48",
            "data.num_workers=0", f"ckpt_path={model}", "n=4", "batch_size=2", "overlays=2",
            "randomisation.n_images=2", "faithfulness.n_steps=4", f"paths.output_dir={out}", *extra]


@pytest.fixture(scope="module")
def run(exported, tmp_path_factory):
    from xmed.pipeline.explanation import explain_run

    out = tmp_path_factory.mktemp("explain_run")
    card = out.parent / "card.md"
    shutil.copy(ROOT / "model_cards" / "phantom_resnet18.md", card)
    cfg = compose("explain", overrides(out, exported, "explainer=[gradcam,rise]",
                                                  "explainer.rise.n_masks=32", f"model_card={card}"))
    return out, explain_run(cfg), card


def test_metrics_json_has_one_entry_per_method(run):
    out, result, _ = run
    written = json.loads((out / "metrics.json").read_text())
    assert written == result and written["n"] == 4 and written["target"] == "glaucoma"
    assert set(written["methods"]) == {"gradcam", "rise"}
    assert written["failed"] == [] and written["quality_flagged"] == []   # phantom eyes, a finite model
    for method, entry in written["methods"].items():
        assert entry["n"] == 4 and entry["seconds"] > 0
        for key in ("pointing_game", "energy_pointing_game", "map_auroc", "map_auprc"):
            assert 0.0 <= entry[key] <= 1.0, (method, key)
        for key in ("deletion", "insertion", "road_morf", "road_lerf"):
            assert 0.0 <= entry[key] <= 1.0, (method, key)  # AUCs of a probability over [0, 1]
        assert 0.0 <= entry["sparseness"] <= 1.0
    # randomisation runs for gradient methods only (perturbation methods are skipped by default)
    assert "randomisation_spearman" in written["methods"]["gradcam"]
    assert "randomisation_spearman" not in written["methods"]["rise"]
    curve = written["methods"]["gradcam"]["randomisation_curve"]
    assert len(curve) >= 3 and all(v is None or -1.0 <= v <= 1.0 for v in curve.values())


def test_maps_overlays_and_per_image_rows(run):
    out, _, _ = run
    maps = sorted((out / "maps" / "gradcam").glob("*.npy"))
    assert len(maps) == 4 and np.load(maps[0]).shape == (48, 48)
    assert len(list((out / "overlays" / "rise").glob("*.png"))) == 2
    assert (out / "overlays" / "comparison.png").is_file()
    with open(out / "per_image.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["method"] for r in rows} == {"gradcam", "rise"}
    # the summary is the mean of the per-image values
    summary = json.loads((out / "metrics.json").read_text())["methods"]["gradcam"]
    values = [float(r["energy_pointing_game"]) for r in rows if r["method"] == "gradcam" and r["energy_pointing_game"]]
    assert values  # at least one glaucomatous eye among the four
    assert summary["energy_pointing_game"] == pytest.approx(np.mean(values), abs=1e-5)


def test_comparison_table_goes_into_the_model_card(run):
    out, _, card = run
    table = (out / "comparison.md").read_text()
    assert "| gradcam |" in table and "energy pointing game ↑" in table and "deletion ↓" in table
    text = card.read_text()
    assert "| gradcam |" in text and "No explanation method has been checked" not in text
    assert text.index("## Explanation checks") < text.index("| gradcam |") < text.index("## Limitations")
    assert "### `xmed-explain 'explainer=[gradcam,rise]' target=glaucoma split=test n=4`" in text


def test_model_card_keeps_one_subsection_per_run(tmp_path):
    from omegaconf import OmegaConf

    from xmed.pipeline.explanation_report import CARD_LEGEND, update_model_card
    from xmed.pipeline.card import NO_EXPLANATION_CHECKS

    card = tmp_path / "card.md"
    card.write_text(f"# Card\n\n## Explanation checks\n\n{NO_EXPLANATION_CHECKS}\n\n## Limitations\n\n- few\n")
    older_legend = CARD_LEGEND[:CARD_LEGEND.index("(")] + "(an older wording)."

    def cfg(methods, n):
        return OmegaConf.create({"explainer": {m: {} for m in methods}, "target": "glaucoma", "split": "test",
                                 "n": n, "label": None, "ckpt_path": "run/model"})

    update_model_card(card, "| gradcam | 0.1 |", cfg(["gradcam"], 8))
    update_model_card(card, "| adversarial | 0.9 |", cfg(["adversarial"], 32))
    card.write_text(card.read_text().replace(CARD_LEGEND, older_legend))  # as an older version wrote it
    update_model_card(card, "| gradcam | 0.2 |", cfg(["gradcam"], 8))  # a rerun replaces its own table
    text = card.read_text()
    assert NO_EXPLANATION_CHECKS not in text and text.count(CARD_LEGEND) == 1 and older_legend not in text
    assert "| gradcam | 0.1 |" not in text and text.count("| gradcam | 0.2 |") == 1
    assert text.count("### `xmed-explain") == 2
    # replaced in place: the runs keep the order they were first recorded in
    assert (text.index(CARD_LEGEND) < text.index("| gradcam | 0.2 |") < text.index("| adversarial | 0.9 |")
            < text.index("## Limitations"))
    assert text.endswith("## Limitations\n\n- few\n")


def test_ground_truth_for_each_target():
    from xmed.pipeline.explanation import ground_truth
    from xmed.findings import FINDINGS

    b, size = 2, 8
    disc = torch.zeros(b, size, size, dtype=torch.bool)
    disc[:, 2:4, 2:4] = True
    dh = torch.zeros(b, size, size, dtype=torch.bool)
    dh[:, 6, 6] = True
    findings = torch.zeros(b, len(FINDINGS))
    findings[0, FINDINGS.index("DH")] = 1  # eye 0 has a haemorrhage, eye 1 does not
    batch = {"image": torch.zeros(b, 3, size, size), "findings": findings, "label": torch.tensor([1.0, 1.0]),
             "masks": {"disc": disc, "DH": dh}, "mask_valid": {"disc": torch.tensor([True, True]),
                                                              "DH": torch.tensor([True, True])}}
    glaucoma = ground_truth(batch, "glaucoma")[:, 0]
    assert glaucoma[0].sum() == 5 and glaucoma[1].sum() == 4  # disc (+ the haemorrhage where present)
    only_dh = ground_truth(batch, "DH")[:, 0]
    assert only_dh[0].sum() == 1 and only_dh[1].sum() == 0   # absent finding: empty -> NaN metrics
    assert torch.equal(ground_truth(batch, "vCDR")[:, 0], disc)
    assert ground_truth({"image": batch["image"], "findings": findings, "masks": {}}, "glaucoma") is None
    healthy = {**batch, "label": torch.tensor([0.0, float("nan")])}  # no evidence for glaucoma to point at
    assert ground_truth(healthy, "glaucoma").sum() == 0 and ground_truth(healthy, "DH")[0].sum() == 1
    # an edit toward glaucoma should reshape a healthy eye's disc: every eye's disc + its findings
    edited = ground_truth(healthy, "glaucoma", edit=True)[:, 0]
    assert edited[0].sum() == 5 and edited[1].sum() == 4
    assert torch.equal(ground_truth(batch, "DH", edit=True), ground_truth(batch, "DH"))


def test_every_explainer_config_composes(exported, tmp_path):
    from xmed.explain import EXPLAINERS

    cfg = compose("explain", overrides(tmp_path, exported, "explainer=all"))
    assert {entry["method"] for entry in cfg.explainer.values()} == set(EXPLAINERS)


def test_bad_settings_name_the_key(exported, tmp_path):
    from xmed.pipeline.explanation import explain_run

    with pytest.raises(ConfigError, match="metrics"):
        explain_run(compose("explain", overrides(tmp_path, exported, "metrics=[pointing_game,nonsense]")))
    with pytest.raises(ConfigError, match="target"):
        explain_run(compose("explain", overrides(tmp_path, exported, "target=XYZ")))
    with pytest.raises(ConfigError, match="explainer.gradcam"):
        explain_run(compose("explain", overrides(tmp_path, exported, "+explainer.gradcam.n_steps=3")))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ddp_cpu_explains_every_eye_once_and_matches_one_process(exported, tmp_path):
    """Two gloo processes share the eyes (Lightning's distributed sampler); rank 0 merges the parts."""
    import os
    import subprocess
    import sys

    script = Path(sys.executable).with_name("xmed-explain")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for trainer in ("cpu", "ddp_cpu"):
        out = tmp_path / trainer
        cmd = [str(script), *overrides(out, exported, "n=6", "explainer=[gradcam]", "randomisation.n_images=0"),
               f"trainer={trainer}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with open(out / "per_image.csv") as fh:
            rows = list(csv.DictReader(fh))
        results[trainer] = {r["id"]: (float(r["sparseness"]), float(r["deletion"])) for r in rows}
        assert len(rows) == len(results[trainer]) == 6  # every eye once (no padding duplicates kept)
    assert results["cpu"].keys() == results["ddp_cpu"].keys()
    for eye, values in results["cpu"].items():
        assert results["ddp_cpu"][eye] == pytest.approx(values, abs=1e-5)


def test_counterfactuals_and_rationale_in_the_same_run(exported, tmp_path):
    from xmed.pipeline.explanation import explain_run
    from xmed.findings import FINDINGS

    out = tmp_path / "cf"
    result = explain_run(compose("explain", overrides(out, exported, "explainer=[adversarial,rationale]",
                                                      "explainer.adversarial.max_steps=3",
                                                      "+explainer.rationale.counterfactual_options.max_steps=2")))
    methods = result["methods"]
    assert set(methods) == {"adversarial_decrease", "adversarial_increase"}
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    for row in rows:
        start, end = float(row["probability_from"]), float(row["probability_to"])
        assert (end <= start + 1e-6) if row["method"].endswith("decrease") else (end >= start - 1e-6)
        assert 0 <= int(row["steps"]) <= 3
        # an eye already at the goal was not edited and has no edit to score
        assert (row["proximity_l2"] == "") if row["steps"] == "0" else (float(row["proximity_l2"]) > 0)
    for method in methods:
        assert 0.0 <= methods[method]["mask_coverage"] <= 1.0
        edited = sum(r["steps"] != "0" for r in rows if r["method"] == method)
        assert methods[method].get("proximity_l2_n", 4) == edited  # `_n` is recorded when some are undefined
        # a path for each of the 2 overlay eyes that the edit changed (an eye already at the goal has none)
        shown = [r["id"] for r in rows if r["method"] == method][:2]
        edited_shown = sum(r["steps"] != "0" for r in rows if r["method"] == method and r["id"] in shown)
        strips = sorted((out / "counterfactuals" / method).glob("*_strip.png"))
        assert len(strips) == edited_shown and len(list((out / "counterfactuals" / method).glob("*.gif"))) == edited_shown
        assert np.load(sorted((out / "maps" / method).glob("*.npy"))[0]).shape == (48, 48)
    assert any(r["steps"] != "0" for r in rows)
    rationales = sorted((out / "rationale").glob("*.json"))
    assert len(rationales) == 4
    first = json.loads(rationales[0].read_text())
    assert [f["code"] for f in first["findings"]] == list(FINDINGS) and first["sentence"].endswith(".")
    assert first["counterfactual"]["toward"] in ("normal", "glaucoma")
    # the decision at the model's own operating threshold, as xmed-predict and the review take it
    assert first["threshold"] == OPERATING_THRESHOLD
    assert first["decision"] == ("referable glaucoma" if first["probability"] >= OPERATING_THRESHOLD
                                 else "no referable glaucoma")


def test_goal_per_direction_from_the_command_line(exported):
    from xmed.pipeline.explanation import build_explainers
    from xmed.models import load_model

    cfg = compose("explain", overrides(Path("unused"), exported, "explainer=[adversarial]",
                                       "explainer.adversarial.threshold={decrease: 0.5, increase: 0.95}"))
    model = load_model(exported)
    run = build_explainers(model, OmegaConf.to_container(cfg.explainer, resolve=True))["adversarial"]
    assert run.explainer.thresholds == {"decrease": 0.5, "increase": 0.95}
    bad = compose("explain", overrides(Path("unused"), exported, "explainer=[adversarial]",
                                       "explainer.adversarial.threshold={up: 0.9}"))
    with pytest.raises(ConfigError, match="'explainer.adversarial.threshold'.*unknown direction"):
        build_explainers(model, OmegaConf.to_container(bad.explainer, resolve=True))


def test_run_comparison_puts_two_runs_side_by_side(tmp_path):
    from PIL import Image

    from xmed.pipeline.explanation_report import run_comparison

    earlier, now = tmp_path / "standard", tmp_path / "robust"
    earlier.mkdir()
    (earlier / "metrics.json").write_text(json.dumps({"methods": {
        "gradcam": {"shortcut_energy": 0.02}, "adversarial_decrease": {"validity": 1.0, "energy_in_mask": 0.4}}}))
    for run, shade, height in ((earlier, 10, 6), (now, 200, 4)):
        (run / "overlays" / "adversarial_decrease").mkdir(parents=True)
        Image.fromarray(np.full((height, 5, 3), shade, np.uint8)).save(run / "overlays" / "adversarial_decrease" / "eye1.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(now / "overlays" / "adversarial_decrease" / "only_here.png")
    summary = {"gradcam": {"shortcut_energy": 0.61}, "rise": {"pointing_game": 1.0},
               "adversarial_decrease": {"validity": 0.9, "energy_in_mask": 0.55}}
    table = run_comparison(summary, earlier, now)
    assert "| gradcam | shortcut energy | 0.610 | 0.020 |" in table and "rise" not in table
    assert "| adversarial_decrease | energy in mask | 0.550 | 0.400 |" in table
    assert "| adversarial_decrease | validity | 0.900 | 1.000 |" in table
    picture = np.asarray(Image.open(now / "compare" / "adversarial_decrease" / "eye1.png"))
    assert picture.shape == (6, 5 + 6 + 5, 3)      # padded to the taller, a white gap between
    assert (picture[:4, :5] == 200).all() and (picture[:, 11:] == 10).all() and (picture[4:, :5] == 255).all()
    assert not (now / "compare" / "adversarial_decrease" / "only_here.png").exists()
    with pytest.raises(ConfigError, match="compare_run"):
        run_comparison({}, tmp_path / "nowhere")


def test_run_comparison_pairs_the_eyes_both_runs_scored(tmp_path):
    from xmed.pipeline.explanation_report import run_comparison

    earlier = tmp_path / "standard"
    earlier.mkdir()
    (earlier / "metrics.json").write_text(json.dumps({"methods": {
        "adversarial_increase": {"validity": 1.0, "energy_in_mask": 0.5}}}))
    (earlier / "per_image.csv").write_text(
        "id,method,validity,energy_in_mask\n"
        "a,adversarial_increase,1.0,0.50\n"
        "b,adversarial_increase,1.0,0.70\n"
        "c,adversarial_increase,1.0,0.40\n"
        "d,adversarial_increase,,\n")      # not edited there: left out of the pairs
    records = [{"id": "a", "method": "adversarial_increase", "validity": 1.0, "energy_in_mask": 0.6},
               {"id": "b", "method": "adversarial_increase", "validity": 0.0, "energy_in_mask": 0.65},
               {"id": "c", "method": "adversarial_increase", "validity": 1.0, "energy_in_mask": 0.55},
               {"id": "d", "method": "adversarial_increase", "validity": 1.0, "energy_in_mask": 0.9},
               {"id": "e", "method": "adversarial_increase", "validity": 1.0, "energy_in_mask": 0.9}]
    summary = {"adversarial_increase": {"validity": 0.8, "energy_in_mask": 0.72}}
    table = run_comparison(summary, earlier, records=records)
    assert "| adversarial_increase | energy in mask | 0.720 | 0.500 | 2 of 3 eyes |" in table
    assert "| adversarial_increase | validity | 0.800 | 1.000 | 0 of 3 eyes (2 equal) |" in table
    (earlier / "per_image.csv").unlink()       # an older run without per-eye values: no pairs column
    assert "this model higher" not in run_comparison(summary, earlier, records=records)


def test_label_filter_explains_glaucomatous_eyes_only(exported, tmp_path):
    from xmed.pipeline.explanation import explain_run

    out = tmp_path / "glaucomatous"
    result = explain_run(compose("explain", overrides(out, exported, "label=1", "n=2", "randomisation.n_images=0")))
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert result["n"] == len(rows) >= 1  # the tiny test split has few glaucomatous eyes
    assert all(r["energy_pointing_game"] for r in rows)  # every eye has a disc to point at: glaucomatous
    with pytest.raises(ConfigError, match="with label 7"):
        explain_run(compose("explain", overrides(tmp_path / "none", exported, "label=7")))
