"""Simulated readers (xmed.review.simulate): they rate a session through the rating store; the
analyses of xmed.review.analysis, run on a few hundred simulated studies, hold their type I error
and coverage and find known orderings; the power calculator's numbers.

Rates from S studies are judged within 3 binomial standard errors of their target:
sqrt(0.05 * 0.95 / 400) = 0.011, so a 5 % test over 400 studies must reject 1.7-8.3 % of them
(a correct test falls outside about 3 times in 1000; the errors these tests guard against reject
15 % and more), and a 95 % interval must cover 91.7-98.3 % of the time. Every simulation is seeded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from xmed.errors import InputError
from xmed.review.analysis import analyse, mrmc, paired_comparison
from xmed.review.session import load_session, panel_labels
from xmed.review.simulate import (SimulatedReader, StudyPlan, draw_study, expected_score, power, rate_session,
                                  simulate_ratings, true_difference)
from xmed.review.study import analyse_session
from xmed.review.synthetic import synthetic_session

N_STUDIES = 400
ALPHA_BAND = (0.05 - 3 * math.sqrt(0.05 * 0.95 / N_STUDIES), 0.05 + 3 * math.sqrt(0.05 * 0.95 / N_STUDIES))
COVERAGE_BAND = (0.95 - 3 * math.sqrt(0.05 * 0.95 / N_STUDIES), 0.95 + 3 * math.sqrt(0.05 * 0.95 / N_STUDIES))
#: one strict reader who leaves 30 % of method B's scores blank: no difference between A and B for any of them
STRICT = (SimulatedReader("strict", bias=-0.8, noise=0.7, blank={"B": 0.3}), SimulatedReader("middle", noise=0.7),
          SimulatedReader("lenient", bias=0.4, noise=0.7))


def test_a_reader_scores_by_the_rule():
    exact = SimulatedReader("exact", bias=-0.3, noise=0.0, preference={"b": 1.0})
    ratings = simulate_ratings([exact], {"a": [1.2, 2.6, 4.4, 5.9], "b": [1.2, 2.6, 4.4, 5.9]})
    assert [(r.method, r.location, r.rationale) for r in ratings if r.case == "case-003"] == [("a", 4, 4), ("b", 5, 5)]
    assert [r.location for r in ratings if r.method == "a"] == [1, 2, 4, 5]  # rounded, clipped to 1-5
    blanks = simulate_ratings([SimulatedReader("ana", blank={"b": 0.3})], {"a": [3.0] * 2000, "b": [3.0] * 2000})
    share = sum(r.location is None for r in blanks if r.method == "b") / 2000
    assert share == pytest.approx(0.3 * 0.7 / (1 - 0.3 * 0.3), abs=3 * math.sqrt(0.25 / 2000))  # rows with a score left
    assert all(r.location is not None for r in blanks if r.method == "a")


def test_simulated_readers_rate_a_session_through_the_store(tmp_path):
    folder = synthetic_session(tmp_path / "session", n_cases=3, size=64, seed=2)
    readers = [SimulatedReader("ana", noise=0.3), SimulatedReader("ben", bias=-1.0, blank={"gradcam": 0.5}),
               SimulatedReader("eve", bias=0.5)]
    store = rate_session(folder, readers, seed=4)
    session, rows = load_session(folder), store.rows()
    assert store.readers() == ["ana", "ben", "eve"]
    everyone = {(reader.name, case["id"]) for reader in readers for case in session["cases"]}
    assert {(row["reader"], row["case"]) for row in rows} == everyone
    for row in rows:  # saved as the blinded page saves them: the letter the reader saw, the session's mode
        labels = panel_labels(["adversarial", "gradcam"], session["seed"], row["reader"], row["case"])
        assert labels[row["panel"]] == row["method"] and row["mode"] == "blinded"
        assert row["agree"] in (0, 1)
    # the synthetic edits always reach their goal (validity 1): quality 5, so the adversarial panels score high
    adversarial = [row["location"] for row in rows if row["method"] == "adversarial" and row["reader"] == "ana"]
    assert adversarial == [5, 5, 5]
    report = analyse_session(folder, n_bootstrap=100)
    random = report["mrmc"]["location"]
    assert report["readers"] == ["ana", "ben", "eve"] == sorted(random["readers"] + random["readers_left_out"])
    counts = {(r.name, method): sum(row["reader"] == r.name and row["method"] == method and row["location"] is not None
                                    for row in rows) for r in readers for method in ("adversarial", "gradcam")}
    assert random["readers_left_out"] == sorted({name for (name, _), n in counts.items() if n < 2})
    assert report["scores"]["adversarial"]["location"]["mean"] > report["scores"]["gradcam"]["location"]["mean"]
    assert report["agreement"]["agree"]["n_answers"] == 9
    rate_session(folder, readers[:1], seed=5)  # a second round replaces ana's ratings, adds no reader
    assert store.readers() == ["ana", "ben", "eve"] and len(store.rows()) == len(rows)


def test_the_true_difference_is_what_simulated_studies_average():
    plan = StudyPlan(n_cases=200, difference=0.5, reader_sd=0.6, preference_sd=0.3)
    rng = np.random.default_rng(0)
    differences = [np.nanmean(table.method("A")) - np.nanmean(table.method("B"))
                   for table in (draw_study(plan, rng) for _ in range(300))]
    assert np.mean(differences) == pytest.approx(true_difference(plan), abs=3 * np.std(differences) / math.sqrt(300))
    assert expected_score(3.0, 0.8) == 3.0 and expected_score(10.0, 0.1) == pytest.approx(5.0)
    fixed = StudyPlan(difference=0.5, readers=(SimulatedReader("a", noise=0.0, preference={"B": 0.5}),))
    assert true_difference(fixed) == pytest.approx(0.0, abs=1e-12)  # their preference cancels the difference


def test_the_case_level_test_holds_its_level_with_blanks():
    """No difference for these readers; the strict one leaves B blank 30 % of the time. Matched by
    reader, the case-level Wilcoxon test keeps its 5 %; case means over whoever scored each method
    (the strict reader missing from B's) reject far more often."""
    plan = StudyPlan(n_cases=100, difference=0.0, readers=STRICT)
    rng = np.random.default_rng(0)
    matched, unmatched = [], []
    for _ in range(N_STUDIES):
        table = draw_study(plan, rng)
        matched.append(paired_comparison(table, "A", "B", n_bootstrap=None)["p_value"] < 0.05)
        means = np.nanmean(table.method("A"), axis=0) - np.nanmean(table.method("B"), axis=0)
        unmatched.append(wilcoxon(means, zero_method="pratt").pvalue < 0.05)
    assert ALPHA_BAND[0] <= np.mean(matched) <= ALPHA_BAND[1]  # 0.0475
    assert np.mean(unmatched) > ALPHA_BAND[1]  # 0.15


def test_readers_drawn_anew_the_random_readers_analysis_holds_level_and_coverage():
    """Each study has 5 new readers (own bias, own preference for a method) and 10 % blanks. OR
    rejects about 5 % of studies without a difference and its interval covers the true difference
    about 95 % of the time with one; the case-level test, about these readers only, rejects 11 %
    of the studies without a difference for readers in general."""
    null = power(StudyPlan(n_cases=100, n_readers=5, difference=0.0, blank=0.1), n_studies=N_STUDIES)
    assert ALPHA_BAND[0] <= null["random_readers"]["power"] <= ALPHA_BAND[1]  # 0.0425
    assert null["fixed_readers"]["power"] > ALPHA_BAND[1]  # 0.1125
    shifted = power(StudyPlan(n_cases=100, n_readers=5, difference=0.3, blank=0.1), n_studies=N_STUDIES)
    assert COVERAGE_BAND[0] <= shifted["random_readers"]["coverage"] <= COVERAGE_BAND[1]  # 0.96
    assert shifted["true_difference"] == pytest.approx(0.2776, abs=1e-4)


def test_the_analysis_recovers_a_known_ordering():
    rng = np.random.default_rng(5)
    quality = {method: mean + rng.normal(0, 0.6, 60)
               for method, mean in (("adversarial", 4.0), ("gradcam", 3.0), ("occlusion", 2.0))}
    readers = [SimulatedReader(f"r{j}", bias=bias, noise=0.6) for j, bias in enumerate((-0.4, 0.0, 0.3))]
    report = analyse(simulate_ratings(readers, quality, seed=6), n_bootstrap=200)
    order = ["adversarial", "gradcam", "occlusion"]
    for scale in ("location", "rationale"):
        means = [report["scores"][method][scale]["mean"] for method in order]
        assert means == sorted(means, reverse=True)
        random = report["mrmc"][scale]
        assert [random["method_means"][method] for method in order] == sorted(random["method_means"].values())[::-1]
        for comparison in (c for c in report["comparisons"] if c["scale"] == scale):
            sign = 1 if order.index(comparison["a"]) < order.index(comparison["b"]) else -1
            assert sign * comparison["mean_difference"] > 0.5 and comparison["p_value"] < 1e-4
    # over studies with readers drawn anew: the ordering of the means over readers comes out right
    plan = StudyPlan(n_cases=100, n_readers=3, n_methods=3, difference=0.5)
    rng = np.random.default_rng(1)
    right = [list(mrmc(draw_study(plan, rng))["method_means"].values()) for _ in range(200)]
    assert np.mean([means == sorted(means, reverse=True) for means in right]) > 0.95


def test_power_of_a_400_eye_3_specialist_study():
    """The numbers a clinician reads before recruiting (the benchmark has them from 4000 studies):
    at a latent difference of 0.25 points the case-level test finds it most of the time, the
    random-readers analysis rarely, as three readers' own preferences leave it few degrees of freedom."""
    plan = StudyPlan(n_cases=400, n_readers=3, difference=0.25)
    result = power(plan, n_studies=200, seed=3)
    assert result["true_difference"] == pytest.approx(0.2316, abs=1e-4)
    se = math.sqrt(0.25 / 200)
    assert result["fixed_readers"]["power"] == pytest.approx(0.87, abs=3 * se)
    assert result["random_readers"]["power"] == pytest.approx(0.29, abs=3 * se)
    assert result["random_readers"]["ci_width"] == pytest.approx(0.80, abs=0.1)
    assert power(plan, n_studies=20, seed=3) == power(plan, n_studies=20, seed=3)


@pytest.mark.parametrize("field, value", [("n_cases", 1), ("n_readers", 0), ("n_methods", 1), ("noise", -1.0),
                                          ("blank", 1.0), ("case_correlation", 1.5)])
def test_a_plan_out_of_range_is_an_input_error(field, value):
    with pytest.raises(InputError, match=field):
        StudyPlan(**{field: value})
    with pytest.raises(InputError, match="n_studies"):
        power(StudyPlan(), n_studies=0)
