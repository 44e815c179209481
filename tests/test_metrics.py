"""Screening metrics against scikit-learn and hand-computed values; bootstrap; plots."""

from __future__ import annotations

import json
import math
import sys
import time

import matplotlib

matplotlib.use("Agg")  # before pyplot: the tests only ask pyplot whether figures were left open

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import brier_score_loss, mean_absolute_error, roc_auc_score, roc_curve  # noqa: E402

from xmed.errors import ConfigError  # noqa: E402
from xmed.findings import FINDINGS  # noqa: E402
from xmed.metrics import (  # noqa: E402
    CI_METRICS,
    PREDICTION_SCORE_DIRECTIONS,
    Predictions,
    auroc,
    bootstrap_ci,
    bootstrap_predictions,
    brier,
    calibration_bins,
    choose_threshold,
    ece,
    evaluate_predictions,
    finding_auroc,
    finding_hamming,
    operating_point,
    resample_indices,
    score_direction,
    sens_at_spec,
    vcdr_mae,
)
from xmed.metrics.classification import _justraigs_sens, _roc_metrics, _weighted_roc  # noqa: E402
from xmed.viz.plots import plot_calibration, plot_finding_auroc, plot_roc  # noqa: E402

NAN = float("nan")
KEYS = {"auroc", "pauroc_90", "sens_at_95spec", "sens_at_95spec_justraigs", "sensitivity", "specificity", "accuracy",
        "threshold", "threshold_rule", "brier", "ece", "finding_auroc", "finding_auroc_mean",
        "finding_hamming", "vcdr_mae", "n", "n_positive", "ci"}


def scores(n: int, seed: int, tied: bool, prevalence: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative probabilities; ``tied`` rounds them to one decimal (many ties)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(float)
    p = np.clip(0.35 + 0.25 * y + 0.2 * rng.standard_normal(n), 0, 1)
    return y, (np.round(p, 1) if tied else p)


def make_split(n: int, seed: int) -> Predictions:
    """A split with everything: NaN labels, unknown findings, unknown vCDRs."""
    rng = np.random.default_rng(seed)
    y, p = scores(n, seed, tied=False)
    y[rng.random(n) < 0.05] = NAN
    fl = (rng.random((n, len(FINDINGS))) < 0.3 + 0.4 * np.nan_to_num(y)[:, None]).astype(float)
    fl[rng.random(fl.shape) < 0.3] = NAN
    fp = np.clip(0.3 + 0.3 * np.nan_to_num(fl) + 0.25 * rng.standard_normal(fl.shape), 0, 1)
    vt = 0.4 + 0.3 * np.nan_to_num(y) + 0.05 * rng.standard_normal(n)
    vt[rng.random(n) < 0.2] = NAN
    return Predictions(p, y, fp, fl, vt + 0.08 * rng.standard_normal(n), vt)


def sklearn_sens_at_spec(y: np.ndarray, p: np.ndarray, spec: float = 0.95) -> float:
    """AIROGS' rule on scikit-learn's ROC: the largest TPR with FPR <= 1 - spec."""
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return float(tpr[fpr <= round(1 - spec, 12)].max())


def airogs_reference(y: np.ndarray, p: np.ndarray, spec: float = 0.95) -> float:
    """AIROGS' evaluation code: the last (highest-TPR) point with specificity >= spec - eps."""
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return float(tpr[(1 - fpr) >= spec - sys.float_info.epsilon][-1])


def justraigs_reference(y: np.ndarray, p: np.ndarray, spec: float = 0.95) -> float:
    """JustRAIGS' evaluation code (unrounded): the first point of the default curve with FPR >= 1 - spec."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(tpr[np.argmax(fpr >= (1 - spec))])


def reference_ece(p: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    """ECE from scikit-learn's calibration_curve, weighting each non-empty bin by its eyes."""
    frac_pos, mean_prob = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], p), minlength=n_bins)
    return float(np.sum(counts[counts > 0] * np.abs(frac_pos - mean_prob)) / p.size)


# ---------------------------------------------------------------------------- against sklearn


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_partial_auroc_equal_sklearn(seed, tied):
    y, p = scores(300, seed, tied)
    assert auroc(p, y) == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert auroc(p, y, max_fpr=0.1) == pytest.approx(roc_auc_score(y, p, max_fpr=0.1), abs=1e-6)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sens_at_95spec_equals_roc_curve_rule(seed, tied):
    y, p = scores(400, seed, tied)
    assert sens_at_spec(p, y, 0.95) == pytest.approx(sklearn_sens_at_spec(y, p), abs=1e-6)


def test_sens_at_spec_counts_fpr_of_exactly_5_percent():
    # 40 negatives, 2 of them (FPR = 0.05 exactly) scored above every positive but one
    y = np.r_[np.zeros(40), np.ones(4)]
    p = np.r_[np.linspace(0.0, 0.3, 38), 0.9, 0.9, 0.95, 0.8, 0.7, 0.6]
    assert sklearn_sens_at_spec(y, p) == 1.0
    assert sens_at_spec(p, y) == 1.0
    # a third such negative pushes FPR to 0.075: only the eye at 0.95 is left
    p[37] = 0.9
    assert sens_at_spec(p, y) == sklearn_sens_at_spec(y, p) == 0.25



def test_sens_at_spec_rules_of_the_two_challenges_differ_on_tied_scores():
    y = np.r_[np.ones(5), np.zeros(30)]
    p = np.r_[0.9, 0.8, 0.8, 0.8, 0.3, 0.8, 0.8, np.full(28, 0.1)]
    assert (airogs_reference(y, p), justraigs_reference(y, p)) == (0.2, 0.8)
    assert sens_at_spec(p, y) == sens_at_spec(p, y, rule="airogs") == 0.2
    assert sens_at_spec(p, y, rule="justraigs") == 0.8
    out = evaluate_predictions(Predictions(p, y), Predictions(p, y), n_bootstrap=0)
    assert (out["sens_at_95spec"], out["sens_at_95spec_justraigs"]) == (0.2, 0.8)
    with pytest.raises(ConfigError) as err:
        sens_at_spec(p, y, rule="refuge")  # type: ignore[arg-type]
    assert err.value.key == "rule"


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 120), levels=st.integers(1, 12),
       spec=st.sampled_from([0.95, 0.9, 0.8, 0.5]))
def test_sens_at_spec_equals_each_challenge_reference_exactly(seed, n, levels, spec):
    # few distinct scores: many ties, and ROC points collinear with their neighbours
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    y[:2] = [0, 1]
    p = np.round(np.clip(0.3 + 0.3 * y + 0.3 * rng.standard_normal(n), 0, 1) * levels) / levels
    assert sens_at_spec(p, y, spec, "airogs") == airogs_reference(y, p, spec)
    assert sens_at_spec(p, y, spec, "justraigs") == justraigs_reference(y, p, spec)

@pytest.mark.parametrize("tied", [False, True])
def test_vectorised_roc_metrics_equal_sklearn(tied):
    y, p = scores(250, 7, tied)
    w = torch.ones(1, y.size, dtype=torch.float64)
    full, partial, sens = _roc_metrics(*_weighted_roc(torch.tensor(p), torch.tensor(y), w), 0.1, 0.95)
    assert float(full) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert float(partial) == pytest.approx(roc_auc_score(y, p, max_fpr=0.1), abs=1e-12)
    assert float(sens) == pytest.approx(sklearn_sens_at_spec(y, p), abs=1e-12)


def test_brier_mae_equal_sklearn_and_ece_by_hand():
    y, p = scores(200, 4, tied=False)
    assert brier(p, y) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    true = np.where(np.arange(200) % 5 == 0, NAN, p)
    pred = p + np.linspace(-0.1, 0.2, 200)
    known = ~np.isnan(true)
    assert vcdr_mae(pred, true) == pytest.approx(mean_absolute_error(true[known], pred[known]), abs=1e-12)
    assert vcdr_mae(pred, np.full(200, NAN)) is None
    # 15 bins of width 1/15: 0.05 -> bin 0 (|0 - 0.05|), 0.30 and 0.32 -> bin 4 (|0.5 - 0.31| twice),
    # 0.9 -> bin 13 (|1 - 0.9|): ECE = (0.05 + 2 * 0.19 + 0.1) / 4
    assert ece([0.05, 0.3, 0.32, 0.9], [0, 0, 1, 1]) == pytest.approx(0.1325, abs=1e-12)
    assert ece([0.05, 0.3, 0.32, 0.9], [0, 0, 1, 1], n_bins=1) == pytest.approx(abs(0.5 - 1.57 / 4))



@pytest.mark.parametrize(("prob", "label", "n_bins", "expected"), [
    pytest.param([1.0, 0.95], [0, 1], 15, 0.475, id="p-1.0-joins-the-last-bin"),
    pytest.param([1.0, 1.0, 1.0], [1, 1, 0], 15, 1 / 3, id="all-p-1.0"),
    pytest.param([0.0, 0.0], [0, 1], 4, 0.5, id="p-0.0-in-the-first-bin"),
    # 0.25 closes [0, 0.25] and 0.5 closes (0.25, 0.5]: bins {0.1, 0.25} and {0.5, 0.3}
    pytest.param([0.1, 0.25, 0.5, 0.3], [0, 1, 1, 0], 4, (abs(0.5 - 0.175) + abs(0.5 - 0.4)) / 2,
                 id="p-on-an-inner-edge-joins-the-lower-bin"),
    pytest.param([0.75, 0.76], [1, 1], 4, (0.25 + 0.24) / 2, id="p-on-the-last-inner-edge"),
])
def test_ece_bins_are_right_closed_like_calibration_curve(prob, label, n_bins, expected):
    assert ece(prob, label, n_bins=n_bins) == pytest.approx(expected, abs=1e-12)
    assert ece(prob, label, n_bins=n_bins) == pytest.approx(
        reference_ece(np.array(prob), np.array(label), n_bins), abs=1e-12)


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_equals_calibration_curve_on_tied_and_untied_scores(n_bins):
    for tied in (False, True):
        y, p = scores(300, n_bins, tied)
        p[:5] = [0.0, 1.0, 1.0, 0.2, 0.8]
        assert ece(p, y, n_bins=n_bins) == pytest.approx(reference_ece(p, y, n_bins), abs=1e-12)
    with pytest.raises(ConfigError):
        ece(p, y, n_bins=0)

def test_finding_auroc_over_known_eyes_equals_sklearn():
    split = make_split(300, 3)
    fp, fl = split.finding_prob.numpy(), split.finding_label.numpy().copy()
    fl[:, FINDINGS.index("DH")] = np.where(np.isnan(fl[:, FINDINGS.index("DH")]), NAN, 1.0)
    got = finding_auroc(fp, fl)
    assert list(got) == list(FINDINGS)
    assert got["DH"] is None                          # one class among the known eyes
    for k, code in enumerate(FINDINGS):
        if code != "DH":
            known = ~np.isnan(fl[:, k])
            assert got[code] == pytest.approx(roc_auc_score(fl[known, k], fp[known, k]), abs=1e-6)
    test = Predictions(split.prob, split.label, fp, fl, split.vcdr_pred, split.vcdr_true)
    out = evaluate_predictions(test, test, n_bootstrap=0)
    defined = [v for v in got.values() if v is not None]
    assert out["finding_auroc_mean"] == pytest.approx(sum(defined) / 9, abs=1e-12)


def test_finding_hamming_by_hand():
    fl = np.full((6, 10), NAN)
    fp = np.full((6, 10), 0.9)
    i = FINDINGS.index
    # eye 0, referable: ANRS 1 vs 0.8 (right), ANRI 0 vs 0.6 (wrong), DH 1 vs 0.2 (wrong) -> 2/3
    fl[0, [i("ANRS"), i("ANRI"), i("DH")]] = [1, 0, 1]
    fp[0, [i("ANRS"), i("ANRI"), i("DH")]] = [0.8, 0.6, 0.2]
    fl[1] = 0.0                      # non-referable, all wrong: not counted
    # eye 2, referable but no known feature: not counted
    fl[3] = 0.0                      # ungraded (label NaN), all wrong: not counted
    # eye 4, referable: LC 1 vs 0.5 (>= 0.5: right), NVT 0 vs 0.49 (right) -> 0
    fl[4, [i("LC"), i("NVT")]] = [1, 0]
    fp[4, [i("LC"), i("NVT")]] = [0.5, 0.49]
    # eye 5, referable: all ten known 0, one predicted present -> 1/10
    fl[5] = 0.0
    fp[5] = 0.1
    fp[5, i("BCLVS")] = 0.7
    label = [1, 0, 1, NAN, 1, 1]
    expected = (2 / 3 + 0 + 0.1) / 3
    assert finding_hamming(fp, fl, label) == pytest.approx(expected, abs=1e-12)
    assert finding_hamming(fp, fl, [0, 0, 0, 0, 0, 0]) is None
    split = Predictions([0.9, 0.1, 0.8, 0.5, 0.7, 0.6], label, fp, fl)
    assert evaluate_predictions(split, split, n_bootstrap=0)["finding_hamming"] == pytest.approx(expected)


# ---------------------------------------------------------------------------- threshold rules


def test_threshold_rules_on_a_hand_made_split():
    # 20 negatives: 18 at 0.1, 2 at 0.7; positives at 0.9, 0.8, 0.6, 0.3.
    # threshold: TP FP  J
    #   0.9       1  0  0.25
    #   0.8       2  0  0.50   <- spec95: the most positives with FP <= 1 (5 % of 20)
    #   0.7       2  2  0.40
    #   0.6       3  2  0.65
    #   0.3       4  2  0.90   <- youden
    #   0.1       4 20  0.00
    p = [0.1] * 18 + [0.7, 0.7, 0.9, 0.8, 0.6, 0.3]
    y = [0] * 20 + [1] * 4
    assert choose_threshold(p, y, "youden") == 0.3
    assert choose_threshold(p, y, "spec95") == 0.8
    # the rule reads `prob >= threshold`: an eye exactly at the threshold is called glaucoma
    assert operating_point([0.3, 0.29], [1, 0], 0.3) == {"sensitivity": 1.0, "specificity": 1.0,
                                                           "accuracy": 1.0}
    with pytest.raises(ConfigError, match="threshold_rule"):
        choose_threshold(p, y, "f1")
    with pytest.raises(ValueError, match="one class"):
        choose_threshold([0.2, 0.4], [1, 1])


def test_threshold_ties_go_to_the_highest_threshold():
    # J = 0.5 at 0.9 (TPR 0.5, FPR 0) and at 0.4 (TPR 1, FPR 0.5): the higher one wins
    assert choose_threshold([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0], "youden") == 0.9
    # TPR 1 at 0.9 (FP 0) and at 0.8 (FP 1 of 20, still 95 %): the higher one wins
    assert choose_threshold([0.9] + [0.8] + [0.1] * 19, [1] + [0] * 20, "spec95") == 0.9
    # when no threshold is specific enough but "predict none", that is chosen: above every score
    t = choose_threshold([1.0, 1.0, 0.2], [1, 0, 0], "spec95")
    assert t > 1.0 and operating_point([1.0, 1.0, 0.2], [1, 0, 0], t)["sensitivity"] == 0.0


# ---------------------------------------------------------------------------- the report


def test_nan_labels_are_left_out_of_diagnosis_metrics():
    y, p = scores(200, 5, tied=False)
    val = Predictions(*scores(200, 6, tied=False)[::-1])
    base = evaluate_predictions(val, Predictions(p, y), n_bootstrap=50)
    noisy = Predictions(np.r_[p, [0.99, 0.01, 0.5]], np.r_[y, [NAN, NAN, NAN]])
    with_nan = evaluate_predictions(val, noisy, n_bootstrap=0)
    for key in ("auroc", "pauroc_90", "sens_at_95spec", "sensitivity", "specificity", "accuracy",
                "threshold", "brier", "ece", "n", "n_positive"):
        assert with_nan[key] == base[key], key
    assert base["n"] == 200 and base["n_positive"] == int(y.sum())
    assert base["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert base["ece"] == ece(p, y, n_bins=15)


def test_single_class_test_split_gives_none_and_valid_json():
    val = make_split(120, 0)
    rng = np.random.default_rng(1)
    test = Predictions(rng.random(50), np.zeros(50))
    out = evaluate_predictions(val, test, n_bootstrap=30)
    assert set(out) == KEYS and set(out["ci"]) == set(CI_METRICS)
    for key in ("auroc", "pauroc_90", "sens_at_95spec", "sensitivity", "finding_auroc_mean",
                "finding_hamming", "vcdr_mae"):
        assert out[key] is None, key
        assert out["ci"][key] is None, key
    assert out["finding_auroc"] == {code: None for code in FINDINGS}
    assert out["specificity"] is not None and out["n_positive"] == 0
    json.dumps(out, allow_nan=False)
    # a one-class validation split: no threshold, hence no operating point
    one_class_val = Predictions([0.2, 0.3], [0, 0])
    out = evaluate_predictions(one_class_val, make_split(80, 2), threshold_rule="spec95", n_bootstrap=20)
    assert out["threshold"] is None and out["sensitivity"] is None and out["ci"]["accuracy"] is None
    assert out["auroc"] is not None
    json.dumps(out, allow_nan=False)
    with pytest.raises(ConfigError):
        evaluate_predictions(val, test, threshold_rule="max_f1")


def test_full_report_is_json_and_every_metric_has_a_score_direction():
    out = evaluate_predictions(make_split(150, 10), make_split(150, 11), n_bootstrap=100, seed=3)
    assert set(out) == KEYS
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text)["threshold_rule"] == "youden"
    for key, value in out.items():
        if key not in ("threshold", "threshold_rule", "n", "n_positive", "ci"):
            assert PREDICTION_SCORE_DIRECTIONS[key] == score_direction(key) in ("higher", "lower"), key
    assert all(out["ci"][key] is not None for key in CI_METRICS)
    assert score_direction("brier") == score_direction("ece") == score_direction("vcdr_mae") == "lower"
    assert score_direction("auroc") == score_direction("sens_at_95spec_justraigs") == "higher"
    assert score_direction("threshold") is None and score_direction("n") is None


# ---------------------------------------------------------------------------- bootstrap


def test_vectorised_bootstrap_equals_the_plain_loop():
    test = make_split(60, 21)
    threshold, n_boot, seed = 0.45, 40, 5
    fast = bootstrap_predictions(test, threshold, n_bootstrap=n_boot, seed=seed)
    p, y = test.prob, test.label

    def finding_mean(fp, fl):
        defined = [v for v in finding_auroc(fp, fl).values() if v is not None]
        return sum(defined) / len(defined) if defined else None

    loops = {
        "auroc": (lambda a, b: auroc(a, b), p, y),
        "pauroc_90": (lambda a, b: auroc(a, b, max_fpr=0.1), p, y),
        "sens_at_95spec": (sens_at_spec, p, y),
        "sens_at_95spec_justraigs": (lambda a, b: sens_at_spec(a, b, rule="justraigs"), p, y),
        "sensitivity": (lambda a, b: operating_point(a, b, threshold)["sensitivity"], p, y),
        "specificity": (lambda a, b: operating_point(a, b, threshold)["specificity"], p, y),
        "accuracy": (lambda a, b: operating_point(a, b, threshold)["accuracy"], p, y),
        "brier": (brier, p, y),
        "ece": (ece, p, y),
        "finding_auroc_mean": (finding_mean, test.finding_prob, test.finding_label),
        "finding_hamming": (finding_hamming, test.finding_prob, test.finding_label, y),
        "vcdr_mae": (vcdr_mae, test.vcdr_pred, test.vcdr_true),
    }
    assert set(loops) == set(CI_METRICS)
    for key, (fn, *arrays) in loops.items():
        slow = bootstrap_ci(fn, *arrays, n_bootstrap=n_boot, seed=seed)
        assert (fast[key].low, fast[key].high) == pytest.approx((slow.low, slow.high), abs=2e-6), key
        assert fast[key].n_dropped == slow.n_dropped, key


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 80), levels=st.integers(1, 10),
       spec=st.sampled_from([0.95, 0.9, 0.8, 0.5]))
def test_vectorised_justraigs_rule_equals_it_on_every_resample(seed, n, levels, spec):
    # ties and scores that a resample does not hold: its own curve has fewer points than the data's
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    y[:2] = [0, 1]
    p = np.round(np.clip(0.3 + 0.3 * y + 0.3 * rng.standard_normal(n), 0, 1) * levels) / levels
    idx = resample_indices(n, 20, seed % 1000)
    w = torch.zeros(20, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(20, n, dtype=torch.float64))
    fast = _justraigs_sens(*_weighted_roc(torch.tensor(p), torch.tensor(y), w), spec).tolist()
    slow = [sens_at_spec(p[i], y[i], spec, "justraigs") for i in idx.numpy()]
    assert [None if math.isnan(v) else v for v in fast] == slow


def test_bootstrap_drops_and_counts_one_class_resamples():
    y = np.r_[np.zeros(14), 1.0]            # one positive in 15 eyes: many resamples miss it
    p = np.linspace(0.05, 0.95, 15)
    ci = bootstrap_predictions(Predictions(p, y), 0.5, n_bootstrap=200, seed=0)
    idx = resample_indices(15, 200, seed=0)
    missing = int((~(idx == 14).any(1)).sum())           # resamples without the positive eye
    assert 0 < missing < 200
    for key in ("auroc", "pauroc_90", "sens_at_95spec", "sens_at_95spec_justraigs", "sensitivity"):
        assert ci[key].n_dropped == missing, key
    assert ci["brier"].n_dropped == 0 and ci["specificity"].n_dropped == 0


def test_bootstrap_ci_contains_estimate_narrows_and_is_seeded():
    small, large = make_split(100, 30), make_split(1000, 31)
    val = make_split(300, 32)
    t0 = time.perf_counter()
    out_large = evaluate_predictions(val, large, n_bootstrap=1000, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"1000 resamples of 1000 eyes took {elapsed:.1f} s"
    out_small = evaluate_predictions(val, small, n_bootstrap=1000, seed=0)
    for key in CI_METRICS:
        low, high = out_large["ci"][key]
        assert low <= out_large[key] <= high, key
        small_low, small_high = out_small["ci"][key]
        assert small_low <= out_small[key] <= small_high, key
        assert high - low < small_high - small_low, key
    again = evaluate_predictions(val, small, n_bootstrap=1000, seed=0)
    assert again["ci"] == out_small["ci"]
    other = evaluate_predictions(val, small, n_bootstrap=1000, seed=1)
    assert other["ci"]["auroc"] != out_small["ci"]["auroc"]
    assert not any(math.isnan(v) for pair in out_small["ci"].values() for v in pair)


# ---------------------------------------------------------------------------- plots


def test_plots_write_pngs_and_leave_no_figure_open(tmp_path):
    split = make_split(200, 40)
    paths = [
        plot_roc(split.prob, split.label, tmp_path / "roc.png"),
        plot_calibration(split.prob, split.label, tmp_path / "sub" / "calibration.png", n_bins=10),
        plot_finding_auroc({**finding_auroc(split.finding_prob, split.finding_label), "DH": None},
                           tmp_path / "findings.png"),
    ]
    for path in paths:
        assert path.exists() and path.stat().st_size > 0
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []
    with pytest.raises(ValueError, match="one class"):
        plot_roc([0.2, 0.3], [1, 1], tmp_path / "bad.png")


def test_reliability_diagram_draws_the_bins_ece_uses(tmp_path, monkeypatch):
    import xmed.viz.plots as plots

    drawn = {}
    save = plots._save

    def keep_axes(fig, path):
        ax = fig.axes[0]
        line = ax.lines[1]                                 # mean probability vs observed fraction
        drawn.update(conf=list(line.get_xdata()), frac=list(line.get_ydata()),
                     counts=[int(t.get_text()) for t in ax.texts], title=ax.get_title())
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep_axes)
    # 0.25, 0.5 and 0.75 lie on inner edges and join the lower bin; 1.0 joins the last one
    prob, label = [0.1, 0.25, 0.5, 0.3, 1.0, 0.75, 0.76], [0, 1, 1, 0, 1, 1, 0]
    plot_calibration(prob, label, tmp_path / "calibration.png", n_bins=4)
    assert calibration_bins(torch.tensor(prob, dtype=torch.float64), 4).tolist() == [0, 0, 1, 1, 3, 2, 3]
    assert drawn["conf"] == pytest.approx([0.175, 0.4, 0.75, 0.88], abs=1e-12)
    assert drawn["frac"] == pytest.approx([0.5, 0.5, 1.0, 0.5], abs=1e-12)
    assert drawn["counts"] == [2, 2, 1, 2]
    gaps = sum(c * abs(f - m) for c, f, m in zip(drawn["counts"], drawn["frac"], drawn["conf"])) / len(prob)
    assert ece(prob, label, n_bins=4) == pytest.approx(gaps, abs=1e-12) == pytest.approx(1.86 / 7, abs=1e-12)
    assert f"ECE = {1.86 / 7:.3f} (4 bins, 7 eyes)" in drawn["title"]
