"""``xmed-study``: the same eyes explained by every method and model, scored alike, and statistics
that equal their references (scipy's Wilcoxon test, Holm's correction by hand, the bootstrap by
its definition)."""

from __future__ import annotations

import csv
import json
import shutil
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from xmed.errors import ConfigError, InputError
from xmed.metrics.classification import resample_indices
from xmed.metrics.paired import MIN_PAIRS, bootstrap_mean, holm, paired_difference
from xmed.review import analysis
from xmed.models import FundusClassifier
from xmed.models.export import export_model
from xmed.pipeline.study import SCORES, edit_scores, location_scores
from xmed.pipeline.study_report import accounting, findings_in_words, summarise

from helpers.commands import compose

SIZE = 48


# -- the statistics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_paired_difference_equals_scipy_on_the_pairs_both_scored(seed):
    g = np.random.default_rng(seed)
    a = np.round(g.uniform(0, 1, 30), 2)           # rounded: ties and zero differences occur
    b = np.round(a + g.normal(0.05, 0.1, 30), 2)
    a[g.choice(30, 4, replace=False)] = np.nan       # eyes one method could not score
    d = paired_difference(a, b, n_bootstrap=200, seed=seed)
    both = ~np.isnan(a) & ~np.isnan(b)
    diff = a[both] - b[both]
    expected = wilcoxon(diff, zero_method="pratt", method="asymptotic")   # 26 pairs with ties: scipy's choice
    assert d.n == both.sum() == 26
    assert d.difference == pytest.approx(diff.mean(), abs=1e-12)
    assert d.statistic == pytest.approx(expected.statistic) and d.p_value == pytest.approx(expected.pvalue, abs=1e-12)
    index = resample_indices(26, 200, seed).numpy()
    resampled = diff[index].mean(axis=1)
    assert (d.low, d.high) == pytest.approx(tuple(np.quantile(resampled, [0.025, 0.975])), abs=1e-9)


def test_exact_wilcoxon_without_ties_and_no_pairs():
    a, b = [0.9, 0.8, 0.71, 0.95, 0.86, 0.93, 0.4], [0.5, 0.6, 0.55, 0.42, 0.7, 0.61, 0.45]
    d = paired_difference(a, b, n_bootstrap=10)
    assert d.test == "exact" and d.p_value == pytest.approx(wilcoxon(np.subtract(a, b), method="exact").pvalue)
    assert MIN_PAIRS == analysis.MIN_PAIRS
    assert not d.underpowered
    empty = paired_difference([math.nan], [0.5], n_bootstrap=10)
    assert (empty.n, empty.difference, empty.p_value, empty.underpowered) == (0, None, None, True)
    with pytest.raises(InputError, match="n_bootstrap"):
        paired_difference(a, b, n_bootstrap=0)
    with pytest.raises(InputError, match="one score per eye"):
        paired_difference(a, b[:3])


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.2 -> 4*0.01, max(3*0.02, .04), max(2*0.03, .06), max(1*0.2, .06)
    assert holm([0.2, 0.01, 0.03, 0.02]) == [0.2, 0.04, 0.06, 0.06]
    assert holm([0.5, None, 0.9]) == [1.0, None, 1.0]


def test_bootstrap_mean_by_its_definition():
    values = np.array([0.2, 0.5, 0.9, math.nan, 0.4])
    m = bootstrap_mean(values, n_bootstrap=300, seed=3)
    finite = values[~np.isnan(values)]
    resampled = finite[resample_indices(4, 300, 3).numpy()].mean(axis=1)
    assert (m.n, m.mean) == (4, pytest.approx(0.5))
    assert (m.low, m.high) == pytest.approx(tuple(np.quantile(resampled, [0.025, 0.975])), abs=1e-9)


# -- per-eye scores ------------------------------------------------------------------------------------


def test_a_map_equal_to_the_evidence_scores_full_marks():
    region = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    region[:, :, 4:8, 4:8] = True
    perfect = location_scores(region.float() + 0.0, region)
    inverse = location_scores((~region).float(), region)
    assert {k: v.tolist() for k, v in perfect.items()} == {"energy_in_evidence": [1.0, 1.0],
                                                           "pointing_game": [1.0, 1.0], "map_auroc": [1.0, 1.0]}
    assert inverse["energy_in_evidence"].tolist() == [0.0, 0.0] and inverse["map_auroc"].tolist() == [0.0, 0.0]
    assert location_scores(region.float(), None) == {}


def test_an_edit_is_scored_on_what_it_moved():
    from xmed.explain.counterfactual import Counterfactual

    b, f = 3, 10
    findings = torch.full((2, b, f), 0.2)
    findings[1, 0, 0] = 0.05           # eye 0: ANRS present, falls by 0.15 -> named, the right way
    findings[1, 0, 9] = 0.6            # eye 0: LC absent, rises -> not named toward normal
    findings[1, 1, 1] = 0.1            # eye 1: ANRI present, falls by 0.1 -> right way, not named
    present = torch.zeros(b, f)
    present[0, 0] = present[1, 1] = 1.0
    present[2, 2] = math.nan
    images = torch.zeros(b, 3, 8, 8)
    edited = images.clone()
    edited[:2, :, :2, :2] = 0.5
    cf = Counterfactual(images=edited, frames=torch.stack([images, edited]),
                        probability=torch.tensor([[0.9, 0.8, 0.01], [0.04, 0.3, 0.01]]), findings=findings,
                        vcdr=torch.tensor([[0.7, 0.7, 0.3], [0.5, 0.8, 0.3]]),
                        difference=(edited - images).abs().sum(1, keepdim=True), steps=torch.tensor([5, 5, 0]),
                        reached=torch.tensor([True, False, True]), method="adversarial", target="glaucoma",
                        direction="decrease", seconds=0.1, epsilon=torch.ones(b), std=(1.0, 1.0, 1.0),
                        fov=None, threshold=0.05)
    region = torch.zeros(b, 1, 8, 8, dtype=torch.bool)
    region[:, :, :2, :2] = True
    scores = {k: v.tolist() for k, v in edit_scores(cf, present, region, min_change=0.15).items()}
    assert scores["reached_goal"][:2] == [1.0, 0.0] and math.isnan(scores["reached_goal"][2])  # eye 2: not edited
    assert scores["reason_precision"][0] == pytest.approx(1.0) and math.isnan(scores["reason_precision"][1])
    assert scores["reason_recall"][:2] == [1.0, 0.0]
    assert scores["findings_right_way"][:2] == [1.0, 1.0]
    assert scores["vcdr_right_way"][:2] == [1.0, 0.0]
    assert scores["energy_in_evidence"][:2] == [1.0, 1.0]
    assert scores["changed_fraction"][:2] == [pytest.approx(4 / 64), pytest.approx(4 / 64)]


# -- the summary ---------------------------------------------------------------------------------------


def synthetic_rows(n: int = 40, seed: int = 0) -> list[dict]:
    """Two models; on each, an edit that locates better than Grad-CAM, a map no different from it."""
    g = np.random.default_rng(seed)
    rows = []
    for model in ("m1", "m2"):
        base = g.uniform(0.2, 0.5, n)
        for method, shift in (("gradcam", 0.0), ("edit", 0.2), ("other_map", 0.0)):
            for i in range(n):
                value = float(np.clip(base[i] + shift + g.normal(0, 0.05), 0, 1))
                rows.append({"model": model, "method": method, "eye": f"e{i}", "score": "energy_in_evidence",
                             "value": None if (method == "edit" and i < 3) else value,
                             "note": "not edited: already at the goal" if (method == "edit" and i < 3) else ""})
    return rows


def test_summary_pairs_the_same_eyes_and_corrects_across_methods():
    rows = synthetic_rows()
    summary = summarise(rows, reference=["gradcam"], n_bootstrap=200)
    by = {(d["model"], d["method"]): d for d in summary["differences"]}
    edit = by[("m1", "edit")]
    values = {(r["method"], r["eye"]): r["value"] for r in rows if r["model"] == "m1"}
    eyes = [f"e{i}" for i in range(3, 40)]
    diff = np.array([values[("edit", e)] - values[("gradcam", e)] for e in eyes])
    assert edit["n"] == 37 and edit["difference"] == pytest.approx(diff.mean())
    raw = [by[("m1", m)]["p_value"] for m in ("edit", "other_map")]
    assert [by[("m1", m)]["p_holm"] for m in ("edit", "other_map")] == holm(raw)
    assert edit["p_holm"] < 1e-6 and by[("m1", "other_map")]["p_holm"] > 0.05
    words = findings_in_words(summary["differences"])
    assert words[0].startswith("m1: by the share of the energy in the evidence, edit (+0.1")
    assert "37 eyes) is better than gradcam; other_map (" in words[0]
    assert words[0].endswith("40 eyes) does not differ clearly from gradcam.")
    (edit_accounting,) = [a for a in summary["accounting"] if (a["model"], a["method"]) == ("m1", "edit")]
    assert edit_accounting == {"model": "m1", "method": "edit", "eyes": 40, "scored": 37,
                               "not scored": {"not edited: already at the goal": 3}}
    with pytest.raises(ConfigError, match="reference"):
        summarise(rows, reference=["occlusion"])


def test_accounting_counts_an_eye_once():
    rows = [{"model": "m", "method": "a", "eye": "1", "score": s, "value": v, "note": ""}
            for s, v in (("pointing_game", 1.0), ("map_auroc", None))]
    assert accounting(rows) == [{"model": "m", "method": "a", "eyes": 1, "scored": 1, "not scored": {}}]


# -- the command -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dirs(cam_model_dir, tmp_path_factory) -> dict[str, Path]:
    """``first``: the session's ``cam_model_dir`` (tests/conftest.py, seed 0); ``second``: its settings, seed 1."""
    torch.manual_seed(1)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE, data_config={"crop_fov": False})
    with torch.no_grad():
        model.glaucoma_head.weight.fill_(0.1)
    return {"first": cam_model_dir, "second": export_model(model.eval(), tmp_path_factory.mktemp("second") / "model")}


def study_overrides(out: Path, models: dict[str, Path], *extra: str) -> list[str]:
    listed = ", ".join(f"{k}: {v}" for k, v in models.items())
    chosen = [] if any(e.startswith("models=") for e in extra) else [f"models={{{listed}}}"]
    return ["experiment=study_quick", "train=null", *chosen, "data.dataset_options.n=100",
            f"data.dataset_options.size={SIZE}", "n=4", "adversarial.max_steps=4", "n_bootstrap=50",
            "progress=false", f"paths.output_dir={out}", *extra]


@pytest.fixture(scope="module")
def study(model_dirs, tmp_path_factory):
    from xmed.pipeline.study import study_run

    out = tmp_path_factory.mktemp("study") / "run"
    return out, study_run(compose("study", study_overrides(out, model_dirs)))


def test_every_model_method_and_eye_is_in_the_long_table(study):
    out, result = study
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    methods = ["gradcam", "integrated_gradients", "adversarial_toward_normal", "adversarial_toward_glaucoma", "rationale"]
    assert result["eyes"] == {"first": 4, "second": 4}
    for model in ("first", "second"):
        eyes = {r["eye"] for r in rows if r["model"] == model}
        assert len(eyes) == 4
        for method in methods:
            assert {r["eye"] for r in rows if (r["model"], r["method"]) == (model, method)} == eyes
    assert {r["score"] for r in rows} <= {"", *SCORES}
    assert all(r["note"] for r in rows if r["value"] == "")     # an eye without a value says why
    scored = [float(r["value"]) for r in rows if r["value"] != ""]
    assert scored and all(0.0 <= v <= 1.0 for v in scored)
    counted = {(a["model"], a["method"]): a["eyes"] for a in result["accounting"]}
    assert counted == {(m, meth): 4 for m in ("first", "second") for meth in methods}


def test_the_study_writes_its_tables_plots_and_report(study):
    out, result = study
    assert json.loads((out / "metrics.json").read_text())["eyes"] == result["eyes"]
    report = (out / "report.md").read_text()
    for heading in ("## What it finds", "## Eyes accounted for", "## Means per eye", "## Paired differences"):
        assert heading in report
    assert "`first`" in report and "`second`" in report
    assert result["differences"] and all(d["reference"] in ("gradcam", "rationale") for d in result["differences"])
    for score in {d["score"] for d in result["differences"]}:
        assert (out / f"forest_{score}.png").stat().st_size > 1000
    with open(out / "differences.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(result["differences"])


def test_a_rerun_into_the_same_folder_is_refused(study, model_dirs):
    from xmed.pipeline.study import study_run

    out, _ = study
    with pytest.raises(ConfigError, match="already holds a run"):
        study_run(compose("study", study_overrides(out, model_dirs)))


def test_a_stopped_study_resumes_where_it_stopped(study, model_dirs, tmp_path, monkeypatch):
    import xmed.pipeline.study as pipeline_study

    out, _ = study
    scored, real_rows = [], pipeline_study.study_rows

    def stopped_at_second(name, *args, **kwargs):
        if name == "second" and "stopped once" not in scored:
            raise KeyboardInterrupt   # the session ends while the second model is being explained
        scored.append(name)
        return real_rows(name, *args, **kwargs)

    monkeypatch.setattr(pipeline_study, "study_rows", stopped_at_second)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pipeline_study.study_run(compose("study", study_overrides(run, model_dirs)))
    assert scored == ["first"] and not (run / "scores.csv").exists()
    state = json.loads((run / "study_state.json").read_text())
    assert list(state["scored"]) == ["first"] and (run / "scored" / "first.csv").is_file()
    with pytest.raises(ConfigError, match="already holds a run"):   # without resume=true: refused
        pipeline_study.study_run(compose("study", study_overrides(run, model_dirs)))
    with pytest.raises(ConfigError, match=r"config key 'resume'.*n: 4 then, 3 now"):
        pipeline_study.study_run(compose("study", study_overrides(run, model_dirs, "n=3", "resume=true")))

    scored.append("stopped once")
    result = pipeline_study.study_run(compose("study", study_overrides(run, model_dirs, "resume=true")))
    assert scored == ["first", "stopped once", "second"]        # the first model is not explained again
    assert result["attempts"] == 2 and "over 2 attempts" in (run / "report.md").read_text()

    def table(folder):
        with open(folder / "scores.csv", newline="") as handle:
            return sorted(tuple(row.values()) for row in csv.DictReader(handle))

    assert table(run) == table(out)            # the same table as the study that was never stopped
    assert result["differences"] == study[1]["differences"]


@pytest.mark.slow
def test_a_resumed_study_scores_only_models_added_or_changed(study, model_dirs, tmp_path, monkeypatch):
    import xmed.pipeline.study as pipeline_study

    out, _ = study
    run = shutil.copytree(out, tmp_path / "run")          # a finished study, extended
    scored, real_rows = [], pipeline_study.study_rows

    def counted(name, *args, **kwargs):
        scored.append(name)
        return real_rows(name, *args, **kwargs)

    monkeypatch.setattr(pipeline_study, "study_rows", counted)
    result = pipeline_study.study_run(compose("study", study_overrides(run, {**model_dirs, "third": model_dirs["second"]},
                                                                       "resume=true")))
    assert scored == ["third"] and result["eyes"] == {"first": 4, "second": 4, "third": 4}
    copy = shutil.copytree(model_dirs["first"], tmp_path / "first_copy")      # the same files elsewhere: kept
    pipeline_study.study_run(compose("study", study_overrides(run, {**model_dirs, "first": copy}, "resume=true")))
    assert scored == ["third"]
    with open(copy / "config.json", "a") as handle:
        handle.write(" ")                                                    # other files: scored again
    pipeline_study.study_run(compose("study", study_overrides(run, {**model_dirs, "first": copy}, "resume=true")))
    assert scored == ["third", "first"]


def test_resume_needs_a_study_to_resume(model_dirs, tmp_path):
    from xmed.pipeline.study import study_run

    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="config key 'resume'.*no study to resume"):
        study_run(compose("study", study_overrides(tmp_path / "run", model_dirs, "resume=true")))


@pytest.mark.parametrize("override, key", [("models=[a, b]", "models"), ("train={x: 3}", "train.x"),
                                           ("reference=[occlusion]", "reference")])
def test_bad_study_settings_name_the_key(model_dirs, tmp_path, override, key):
    from xmed.pipeline.study import study_run

    overrides = study_overrides(tmp_path / "run", model_dirs, override)
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        study_run(compose("study", overrides))


@pytest.mark.slow
def test_the_quick_study_command_trains_and_reports(tmp_path):
    out = tmp_path / "quick"
    done = subprocess.run([sys.executable, "-m", "xmed.cli.study", "experiment=study_quick", "progress=false",
                           f"paths.output_dir={out}"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["models"]) == {"standard", "robust"}
    assert (out / "models" / "robust" / "model" / "config.json").is_file()
    assert result["command"].startswith("xmed-study experiment=study_quick")
