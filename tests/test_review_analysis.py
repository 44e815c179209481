"""Reader-study analysis (xmed.review.analysis) on simulated readers whose scoring rule is known,
against scipy on exact reader-matched differences, and on published worked examples of the
agreement statistics and of the Obuchowski-Rockette analysis."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import wilcoxon

from xmed.errors import InputError
from xmed.review.analysis import (
    Rating, ScoreTable, agree_agreement, analyse, automatic_vs_readers, compare_methods, decision_agreement,
    finding_breakdown, flagged_cases, fleiss_kappa, jackknife_covariances, krippendorff_alpha, method_scores,
    mrmc_analysis, obuchowski_rockette, plot_scores, read_ratings, reader_agreement, weighted_kappa,
)
from xmed.review.simulate import SimulatedReader, simulate_ratings

READERS = ("r1", "r2", "r3")
BIASES = (-0.2, 0.0, 0.2)


def simulate(noise: float, readers=READERS, biases=BIASES, n_cases: int = 60, seed: int = 1):
    """Simulated readers (xmed.review.simulate) score ``clip(round(1 + 4 * energy + bias + noise))``;
    the adversarial method's energy in the truth region is higher on average than Grad-CAM's.
    Cases alternate between two findings."""
    rng = np.random.default_rng(seed)
    energy = {"adversarial": rng.uniform(0.3, 0.9, n_cases), "gradcam": rng.uniform(0.0, 0.6, n_cases)}
    simulated = [SimulatedReader(name, bias=bias, noise=noise) for name, bias in zip(readers, biases)]
    cases = [f"eye{case}" for case in range(n_cases)]
    ratings = simulate_ratings(simulated, {method: 1 + 4 * values for method, values in energy.items()},
                               seed=seed, cases=cases)
    ratings = [dataclasses.replace(r, finding="ANRS" if int(r.case[3:]) % 2 else "RNFLDS") for r in ratings]
    automatic = {(f"eye{case}", method): {"energy_in_truth": float(value)}
                 for method, energies in energy.items() for case, value in enumerate(energies)}
    return ratings, automatic, energy


def expected_reliability(energy, noise: float, biases=BIASES) -> float:
    """Share of score variance due to the cases: signal / (signal + noise + rounding + reader bias)."""
    signal = np.var(4 * np.asarray(energy))
    return signal / (signal + noise ** 2 + 1 / 12 + np.var(biases))


def rated(scores: dict[str, tuple], methods=("a", "b"), scale_values=None) -> list[Rating]:
    """Ratings from ``{reader: (scores of a over cases, scores of b)}`` (None: blank)."""
    return [Rating(reader, f"eye{case}", method, score, None, None)
            for reader, rows in scores.items() for method, row in zip(methods, rows)
            for case, score in enumerate(row) if score is not None]


@pytest.fixture(scope="module")
def low_noise():
    return simulate(noise=0.3)


def test_recovers_method_ordering_with_intervals(low_noise):
    ratings, _, energy = low_noise
    latent_difference = 4 * (energy["adversarial"].mean() - energy["gradcam"].mean())  # 1.30 on these cases
    scores = method_scores(ratings, n_bootstrap=1000)
    for scale in ("location", "rationale"):
        adversarial, gradcam = scores["adversarial"][scale], scores["gradcam"][scale]
        assert adversarial["n"] == gradcam["n"] == 180 and adversarial["n_cases"] == 60
        assert adversarial["n_blank"] == gradcam["n_blank"] == 0
        assert adversarial["mean"] > gradcam["mean"] + 0.8
        for summary in (adversarial, gradcam):
            assert summary["ci_low"] < summary["mean"] < summary["ci_high"]
            assert summary["ci_high"] - summary["ci_low"] < 0.6
        comparison = compare_methods(ratings, "adversarial", "gradcam", scale, n_bootstrap=1000)
        assert (comparison["n_pairs"], comparison["n_matched"]) == (60, 180)
        assert comparison["p_value"] < 0.01 and comparison["p_value_method"] == "normal approximation"
        assert comparison["median_difference"] > 0.8
        assert adversarial["mean"] - gradcam["mean"] == pytest.approx(comparison["mean_difference"])
        assert comparison["ci_low"] < latent_difference < comparison["ci_high"] < comparison["ci_low"] + 0.7
        # these readers have no preference of their own: the random-readers analysis agrees
        random = mrmc_analysis(ratings, scale)
        assert random["method_means"]["adversarial"] > random["method_means"]["gradcam"] + 0.8
        assert random["p_value"] < 0.01 and random["differences"][0]["ci_low"] > 0.5


def test_bootstrap_resamples_cases_not_ratings():
    # every reader gives a case the same score: a case bootstrap of two cases only ever sees means 2, 3
    # or 4 and its percentile interval spans 2..4; resampling the six ratings would give a narrower one
    ratings = [Rating(reader, case, "gradcam", score, None, None)
               for reader in READERS for case, score in (("eye1", 2), ("eye2", 4))]
    location = method_scores(ratings, n_bootstrap=2000)["gradcam"]["location"]
    assert (location["mean"], location["ci_low"], location["ci_high"]) == (3.0, 2.0, 4.0)


def test_wilcoxon_with_all_zero_differences_finds_nothing():
    ratings = [Rating("r1", f"eye{case}", method, 3, None, None) for case in range(6) for method in ("a", "b")]
    comparison = compare_methods(ratings, "a", "b", "location")
    assert (comparison["n_pairs"], comparison["p_value"], comparison["median_difference"]) == (6, 1.0, 0.0)
    assert comparison["p_value_method"] is None and (comparison["ci_low"], comparison["ci_high"]) == (0.0, 0.0)


def test_wilcoxon_keeps_zero_differences_in_the_ranking():
    # two readers, so case means move in halves; per-case differences a - b:
    differences = [0, 0, 0.5, -1, 1.5, 2, -2.5, 3, 3.5, 4]
    # Pratt ranks the two zeros (ranks 1-2) and then drops them: the negative differences rank 4 and 7,
    # statistic 11 (discarding the zeros first would rank them 2 and 5, statistic 7)
    ratings = []
    for case, difference in enumerate(differences):
        higher = (1 + math.floor(abs(difference)), 1 + math.ceil(abs(difference)))
        a_scores, b_scores = (higher, (1, 1)) if difference >= 0 else ((1, 1), higher)
        for reader, a_score, b_score in zip(("r1", "r2"), a_scores, b_scores):
            ratings += [Rating(reader, f"eye{case}", "a", a_score, None, None),
                        Rating(reader, f"eye{case}", "b", b_score, None, None)]
    comparison = compare_methods(ratings, "a", "b", "location")
    assert (comparison["n_pairs"], comparison["statistic"], comparison["median_difference"]) == (10, 11.0, 1.0)
    assert 0.05 < comparison["p_value"] < 0.2 and comparison["p_value_method"] == "permutation"


def test_three_readers_equal_differences_stay_tied():
    """Case 0: a = (1, 4, 5), b = (3, 5, 5); six cases a = (1, 1, 4), b = (1, 1, 1): every difference is
    exactly -1 or +1. Means of three readers subtracted in floating point break the tie (scipy then
    says statistic 1, p = 0.031); on the exact differences it is statistic 4, p = 0.125."""
    a_rows, b_rows = [(1, 4, 5)] + [(1, 1, 4)] * 6, [(3, 5, 5)] + [(1, 1, 1)] * 6
    ratings = rated({reader: ([row[j] for row in a_rows], [row[j] for row in b_rows])
                     for j, reader in enumerate(READERS)})
    comparison = compare_methods(ratings, "a", "b", "location")
    assert (comparison["statistic"], comparison["p_value"]) == (4.0, 0.125)
    rounded = wilcoxon([np.mean(a) - np.mean(b) for a, b in zip(a_rows, b_rows)], zero_method="pratt")
    assert (rounded.statistic, rounded.pvalue) == (1.0, 0.03125)


def random_study(n_readers: int, n_cases: int, seed: int) -> list[Rating]:
    """Scores 1-5 from a narrow range (so ties abound), the same for both methods on every fifth
    case (zero differences), 20 % left blank at random."""
    rng = np.random.default_rng(seed)
    base = rng.integers(1, 4, n_cases)
    ratings = []
    for reader in range(n_readers):
        a = np.clip(base + 1 + rng.integers(-1, 2, n_cases), 1, 5)
        b = np.where(np.arange(n_cases) % 5 == 0, a, np.clip(base + rng.integers(-1, 2, n_cases), 1, 5))
        ratings += [Rating(f"r{reader}", f"eye{case}", method, int(score), None, None)
                    for method, scores in (("a", a), ("b", b)) for case, score in enumerate(scores)
                    if rng.random() > 0.2]
    return ratings


@pytest.mark.parametrize("n_readers", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n_cases", [9, 40])
def test_compare_methods_equals_scipy_on_exact_reader_matched_differences(n_readers, n_cases):
    ratings = random_study(n_readers, n_cases, seed=10 * n_readers + n_cases)
    scores = {(r.reader, r.case, r.method): r.location for r in ratings}
    differences, matched, total, unmatched = [], 0, 0, {"a": 0, "b": 0}
    for case in sorted({r.case for r in ratings}):
        pairs = [scores[(f"r{j}", case, "a")] - scores[(f"r{j}", case, "b")] for j in range(n_readers)
                 if (f"r{j}", case, "a") in scores and (f"r{j}", case, "b") in scores]
        for j in range(n_readers):
            has = {m: (f"r{j}", case, m) in scores for m in "ab"}
            unmatched["a"] += has["a"] and not has["b"]
            unmatched["b"] += has["b"] and not has["a"]
        if pairs:
            differences.append(Fraction(sum(pairs), len(pairs)))
            matched, total = matched + len(pairs), total + sum(pairs)
    exact = [float(d) for d in differences]
    reference = wilcoxon(exact, zero_method="pratt")
    comparison = compare_methods(ratings, "a", "b", "location", n_bootstrap=100)
    assert 0 in differences and len(set(map(abs, differences))) < len(differences)  # zeros and ties
    assert unmatched["a"] + unmatched["b"] > 0  # and blanks
    assert (comparison["n_pairs"], comparison["n_matched"], comparison["unmatched"]) == (len(exact), matched, unmatched)
    assert comparison["statistic"] == reference.statistic
    assert comparison["p_value"] == pytest.approx(reference.pvalue, rel=1e-12, abs=1e-15)
    assert comparison["p_value_method"] == ("permutation" if len(exact) <= 13 else "normal approximation")
    assert comparison["median_difference"] == float(np.median(exact))
    assert comparison["mean_difference"] == pytest.approx(total / matched, rel=1e-12)


def test_an_exact_p_value_without_zeros_or_ties():
    ratings = rated({"r1": ([2, 1, 4, 5, 3], [1, 3, 1, 1, 3])})  # differences 1, -2, 3, 4 and a zero
    comparison = compare_methods(ratings, "a", "b", "location")
    assert comparison["p_value_method"] == "permutation"  # a zero: no exact table
    untied = compare_methods(rated({"r1": ([2, 1, 4, 5], [1, 3, 1, 1])}), "a", "b", "location")
    assert untied["p_value_method"] == "exact"
    assert untied["p_value"] == wilcoxon([1, -2, 3, 4], method="exact").pvalue == 0.375


def test_a_reader_who_left_one_method_blank_is_left_out_of_that_case():
    # r2 scores b on case 0 and leaves a blank there: case 0's difference is r1's alone
    ratings = rated({"r1": ([5, 4, 4, 4, 4, 4], [3, 3, 3, 3, 3, 3]), "r2": ([None, 4, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3])})
    comparison = compare_methods(ratings, "a", "b", "location")
    assert comparison["unmatched"] == {"a": 0, "b": 1}
    assert (comparison["n_pairs"], comparison["n_matched"]) == (6, 11)
    assert comparison["median_difference"] == 1.0 and comparison["mean_difference"] == pytest.approx(12 / 11)


def test_fewer_than_six_pairs_cannot_reach_significance():
    five = compare_methods(rated({"r1": ([4] * 5, [2] * 5)}), "a", "b", "location")
    assert (five["p_value"], five["can_reach_significance"]) == (0.0625, False)
    assert "fewer than 6" in five["note"]
    six = compare_methods(rated({"r1": ([4] * 6, [2] * 6)}), "a", "b", "location")
    assert (six["p_value"], six["can_reach_significance"], six["note"]) == (0.03125, True, None)


def test_wrong_arguments_are_input_errors():
    ratings = rated({"r1": ([4] * 6, [2] * 6)}, methods=("adversarial", "gradcam"))
    with pytest.raises(InputError, match="'gradcm' is not a method of these ratings"):
        compare_methods(ratings, "adversarial", "gradcm", "location")
    with pytest.raises(InputError, match="itself"):
        compare_methods(ratings, "gradcam", "gradcam", "location")
    for call in (lambda: method_scores(ratings, n_bootstrap=0), lambda: analyse(ratings, n_bootstrap=0),
                 lambda: compare_methods(ratings, "adversarial", "gradcam", "location", n_bootstrap=0)):
        with pytest.raises(InputError, match="n_bootstrap: must be an integer from 1"):
            call()
    with pytest.raises(InputError, match="counts"):
        fleiss_kappa([])
    with pytest.raises(InputError, match="give one of 'adversarial', 'gradcam'"):
        reader_agreement(ratings, "location")
    with pytest.raises(InputError, match="level"):
        mrmc_analysis(ratings, "location", level=95)


@pytest.mark.parametrize("noise", [0.3, 0.5])
def test_agreement_per_method_matches_the_noise_level(noise):
    ratings, _, energy = simulate(noise=noise)
    for method in ("adversarial", "gradcam"):
        agreement = reader_agreement(ratings, "location", method)
        assert agreement["statistic"] == "krippendorff_alpha_ordinal"
        assert (agreement["method"], agreement["n_readers"], agreement["n_items"]) == (method, 3, 60)
        assert agreement["value"] == pytest.approx(expected_reliability(energy[method], noise), abs=0.1)
        assert agreement["n_reader_pairs"] == 3
        assert 0.3 < agreement["kappa_linear"] < agreement["kappa_quadratic"] < agreement["value"] + 0.1


def test_pooling_methods_inflates_agreement(low_noise):
    # pooled over methods, the methods' own difference (1.2 points) passes for agreement
    ratings, _, _ = low_noise
    table = ScoreTable.from_ratings(ratings, "location")
    pooled = krippendorff_alpha(table.scores.reshape(len(table.readers), -1), "ordinal")
    per_method = [reader_agreement(ratings, "location", method)["value"] for method in table.methods]
    assert pooled > max(per_method) + 0.08


def test_agreement_is_near_zero_for_pure_noise():
    rng = np.random.default_rng(1)
    ratings = [Rating(reader, f"eye{case}", "gradcam", int(rng.integers(1, 6)), int(rng.integers(1, 6)),
                      int(rng.integers(0, 2))) for reader in READERS for case in range(120)]
    for scale in ("location", "rationale"):
        agreement = reader_agreement(ratings, scale)
        assert abs(agreement["value"]) < 0.1 and abs(agreement["kappa_quadratic"]) < 0.1
    assert abs(agree_agreement(ratings)["fleiss_kappa"]) < 0.1


def test_two_readers_use_weighted_kappa():
    ratings, _, energy = simulate(noise=0.3, readers=("r1", "r2"), biases=(0.0, 0.1))
    agreement = reader_agreement(ratings, "rationale", "adversarial")
    assert agreement["statistic"] == "cohen_kappa_quadratic"
    assert (agreement["n_items"], agreement["n_reader_pairs"]) == (60, 1)
    assert agreement["value"] == agreement["kappa_quadratic"]
    assert agreement["value"] == pytest.approx(expected_reliability(energy["adversarial"], 0.3, (0.0, 0.1)), abs=0.1)


@pytest.mark.parametrize("readers", [("r1", "r2"), READERS])
def test_identical_readers_agree_perfectly(readers):
    ratings = [Rating(reader, f"eye{case}", "gradcam", case % 5 + 1, None, case % 2)
               for reader in readers for case in range(20)]
    agreement = reader_agreement(ratings, "location")
    assert agreement["value"] == agreement["kappa_linear"] == agreement["kappa_quadratic"] == 1.0
    assert agree_agreement(ratings)["fleiss_kappa"] == 1.0


def test_weighted_kappas_on_the_1_to_5_scale_equal_scikit_learn():
    # one reader says 1 where the other says 5 on one of five items: weights of the full 1..5 scale,
    # though score 4 is never given; with three readers, the mean over the three pairs
    from sklearn.metrics import cohen_kappa_score

    scores = {"r1": [1, 2, 3, 5, 5], "r2": [1, 2, 3, 5, 1], "r3": [2, 2, 3, 4, 1]}
    ratings = [Rating(reader, f"eye{case}", "gradcam", score, None, None)
               for reader, row in scores.items() for case, score in enumerate(row)]

    def kappa(first, second, weights):
        return cohen_kappa_score(scores[first], scores[second], labels=[1, 2, 3, 4, 5], weights=weights)

    two = reader_agreement([r for r in ratings if r.reader != "r3"], "location")
    assert two["kappa_linear"] == pytest.approx(kappa("r1", "r2", "linear"))
    assert two["kappa_quadratic"] == two["value"] == pytest.approx(kappa("r1", "r2", "quadratic"))
    assert two["kappa_quadratic"] != pytest.approx(cohen_kappa_score(scores["r1"], scores["r2"], weights="quadratic"))
    three = reader_agreement(ratings, "location")
    for weights in ("linear", "quadratic"):
        expected = np.mean([kappa(first, second, weights) for first, second in itertools.combinations(scores, 2)])
        assert three[f"kappa_{weights}"] == pytest.approx(expected)


def test_the_kappas_bootstrap_interval_resamples_cases_as_scikit_learn_would_score_them():
    # the vectorised interval equals scikit-learn's kappa computed on each resample of the cases
    from sklearn.metrics import cohen_kappa_score

    from xmed.metrics.classification import resample_indices

    rng = np.random.default_rng(3)
    truth = rng.integers(1, 6, 30)
    scores = {reader: np.clip(truth + rng.integers(-1, 2, 30), 1, 5) for reader in ("r1", "r2", "r3")}
    scores["r3"] = scores["r3"].astype(float)
    scores["r3"][:4] = np.nan                                   # r3 left four cases blank
    ratings = [Rating(reader, f"eye{case:02d}", "gradcam", int(score), None, None)
               for reader, row in scores.items() for case, score in enumerate(row) if not np.isnan(score)]
    result = reader_agreement(ratings, "location", n_bootstrap=200, seed=5)
    means = []
    for draw in resample_indices(30, 200, 5).numpy():
        kappas = []
        for first, second in itertools.combinations(scores, 2):
            a, b = scores[first][draw], scores[second][draw]
            both = ~np.isnan(a) & ~np.isnan(b)
            kappas.append(cohen_kappa_score(a[both].astype(int), b[both].astype(int), labels=[1, 2, 3, 4, 5],
                                            weights="quadratic"))
        means.append(np.mean(kappas))
    assert result["kappa_quadratic_ci"] == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
    assert result["kappa_quadratic_ci"][0] < result["kappa_quadratic"] < result["kappa_quadratic_ci"][1]
    assert result["kappa_linear_ci"][0] < result["kappa_linear"] < result["kappa_linear_ci"][1]
    assert reader_agreement(ratings, "location")["kappa_quadratic_ci"] is None    # asked for no interval
    counts = np.bincount(5 * (scores["r1"] - 1) + scores["r2"] - 1, minlength=25)
    assert weighted_kappa(counts, "linear") == pytest.approx(
        cohen_kappa_score(scores["r1"], scores["r2"], labels=[1, 2, 3, 4, 5], weights="linear"))


def test_the_report_holm_corrects_every_comparison(low_noise):
    from xmed.metrics.paired import holm

    ratings, _, _ = low_noise
    third = [dataclasses.replace(r, method="rise", location=r.rationale) for r in ratings if r.method == "gradcam"]
    report = analyse(ratings + third, n_bootstrap=100)
    comparisons = report["comparisons"]
    assert len(comparisons) == 6 and "Holm" in report["multiple_comparisons"]
    assert [c["p_holm"] for c in comparisons] == holm([c["p_value"] for c in comparisons])
    assert all(c["p_holm"] >= c["p_value"] for c in comparisons)


def test_agreement_with_the_model_is_counted_per_reader_and_decision():
    answers = {"r1": [1, 1, 1, 0], "r2": [0, 1, None, 0]}
    ratings = [Rating(reader, f"eye{case}", method, 3, None, answer)
               for reader, row in answers.items() for case, answer in enumerate(row)
               for method in ("gradcam", "adversarial")]
    decisions = {"eye0": "referable glaucoma", "eye1": "referable glaucoma", "eye2": "no referable glaucoma",
                 "eye3": "no referable glaucoma"}
    result = decision_agreement(ratings, decisions)
    assert result["overall"] == {"n": 7, "share": 4 / 7}
    assert result["readers"] == {"r1": {"n": 4, "share": 0.75}, "r2": {"n": 3, "share": 1 / 3}}
    assert result["by_decision"] == {"no referable glaucoma": {"n": 3, "share": 1 / 3},
                                     "referable glaucoma": {"n": 4, "share": 0.75}}


def test_cases_readers_disagree_on_are_flagged_with_the_reason():
    ratings = [Rating("r1", "eye0", "gradcam", 1, 2, 1), Rating("r2", "eye0", "gradcam", 4, 4, 1),     # 3 apart
               Rating("r1", "eye1", "gradcam", 3, 2, 1), Rating("r2", "eye1", "gradcam", 4, 4, 0),     # split
               Rating("r1", "eye2", "gradcam", 3, 3, 0), Rating("r2", "eye2", "gradcam", 3, 4, 0),     # both no
               Rating("r1", "eye3", "gradcam", 2, 3, 1), Rating("r2", "eye3", "gradcam", 4, 5, 1)]     # 2 apart: fine
    assert flagged_cases(ratings) == [
        {"case": "eye0", "reasons": ["gradcam location scores 1 to 4 (3 points apart)"]},
        {"case": "eye1", "reasons": ["readers split on the model's decision (1 of 2 agree)",
                                     "1 of 2 readers disagree with the model's decision"]},
        {"case": "eye2", "reasons": ["2 of 2 readers disagree with the model's decision"]}]
    assert [f["case"] for f in flagged_cases(ratings, score_margin=2)] == ["eye0", "eye1", "eye2", "eye3"]


def test_agree_is_counted_once_per_case():
    # two readers, four cases, two panels per case: eight answers, not sixteen
    ratings = [Rating(reader, f"eye{case}", method, 3, None, answer)
               for reader, answers in (("r1", [1, 1, 0, 1]), ("r2", [1, 0, 0, 1]))
               for case, answer in enumerate(answers) for method in ("gradcam", "adversarial")]
    result = agree_agreement(ratings)
    assert (result["n_readers"], result["n_answers"], result["n_cases"], result["share"]) == (2, 8, 4, 0.625)
    assert result["fleiss_kappa"] == pytest.approx(fleiss_kappa([[0, 2], [1, 1], [2, 0], [0, 2]]))
    with pytest.raises(InputError, match="'r1' answered both 0 and 1 on case 'eye0'"):
        agree_agreement(ratings + [Rating("r1", "eye0", "rise", 3, None, 0)])


KRIPPENDORFF_2011 = [  # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


@pytest.mark.parametrize("level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_matches_the_published_example(level, published):
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level), 3) == published


def test_krippendorff_alpha_is_undefined_without_pairable_values():
    assert krippendorff_alpha([[1, None], [None, 2]]) is None
    assert krippendorff_alpha([[3, 3], [3, 3]]) is None


def test_fleiss_kappa_matches_the_published_example():
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)
    with pytest.raises(InputError, match="same number"):
        fleiss_kappa([[2, 0], [1, 0]])


# -- readers as a random effect ------------------------------------------------------------------


def test_obuchowski_rockette_reproduces_the_published_van_dyke_example():
    """Van Dyke et al. (1993) cine MRI vs spin-echo MRI, 5 readers, 114 cases, Wilcoxon AUC as figure
    of merit: the worked example of Chakraborty, "Observer Performance Methods for Diagnostic
    Imaging" (2017), chapter "Obuchowski Rockette applications" (the RJafroc book, dataset02). It
    prints the figures of merit to 4 digits, Cov2 = 3.4407483e-4, Cov3 = 2.3902837e-4, and
    MS(T) = 0.0047962, MS(TR) = 5.5103e-4, F = 4.456, ddf = 15.26, p = 0.05167, and the interval of
    trt0 - trt1 (-0.0879595, 0.0003589); from 4-digit figures of merit these hold to about 0.2 %."""
    fom = [[0.9196, 0.8588, 0.9039, 0.9731, 0.8298], [0.9478, 0.9053, 0.9217, 0.9994, 0.9300]]
    result = obuchowski_rockette(fom, {"cov2": 3.4407483e-4, "cov3": 2.3902837e-4}, methods=["trt0", "trt1"])
    assert result["ms_t"] == pytest.approx(0.0047962, rel=1e-4)
    assert result["ms_tr"] == pytest.approx(5.5103e-4, rel=2e-3)
    assert result["f_statistic"] == pytest.approx(4.456, rel=2e-3)
    assert result["df_den"] == pytest.approx(15.26, rel=2e-3)
    assert result["p_value"] == pytest.approx(0.05167, abs=2e-4)
    pair = result["differences"][0]
    assert (pair["a"], pair["b"], pair["df"]) == ("trt0", "trt1", result["df_den"])
    assert pair["difference"] == pytest.approx(-0.0438, abs=1e-6)
    assert pair["ci_low"] == pytest.approx(-0.0879595, abs=2e-4)
    assert pair["ci_high"] == pytest.approx(0.0003589, abs=2e-4)
    assert pair["p_value"] == pytest.approx(result["p_value"])  # two methods: the t and the F test agree


def correlated_scores(seed: int = 3, n_readers: int = 4, n_methods: int = 3, n_cases: int = 25) -> np.ndarray:
    """Integer scores[reader, method, case] with case, method x case and reader effects."""
    rng = np.random.default_rng(seed)
    case = rng.normal(0, 1, n_cases) + rng.normal(0, 0.7, (n_methods, n_cases))
    reader = rng.normal(0, 0.4, n_readers)[:, None, None]
    latent = 3 + case[None] + reader + rng.normal(0, 0.6, (n_readers, n_methods, n_cases))
    return np.clip(np.round(latent), 1, 5)


#: (same reader?, same method?): the kind of covariance
KINDS = {(True, True): "var", (True, False): "cov1", (False, True): "cov2", (False, False): "cov3"}


def test_jackknife_covariances_equal_the_covariance_of_the_mean_by_hand():
    """For a mean score the leave-one-case-out jackknife covariance is the sample covariance of the
    case scores over the number of cases: np.cov(...) / c, averaged by hand over the reader and
    method pairs of each kind (Obuchowski & Rockette 1995)."""
    scores = correlated_scores()
    fom, covariances = jackknife_covariances(scores)
    readers, methods, cases = scores.shape
    assert np.allclose(fom, scores.mean(axis=2).T)
    full = np.cov(scores.reshape(readers * methods, cases)) / cases
    kinds = {"var": [], "cov1": [], "cov2": [], "cov3": []}
    for (j, i), (k, m) in itertools.product(itertools.product(range(readers), range(methods)), repeat=2):
        kind = KINDS[(j == k, i == m)]
        kinds[kind].append(full[j * methods + i, k * methods + m])
    for kind, values in kinds.items():
        assert covariances[kind] == pytest.approx(np.mean(values), rel=1e-12)


def test_the_or_test_equals_the_dbm_anova_of_the_scores():
    """With the jackknife, OR equals the Dorfman-Berbaum-Metz analysis of the pseudovalues (Hillis,
    Obuchowski, Schartz & Berbaum 2005, Stat Med 24:1579); a mean's pseudovalues are the scores
    themselves, so the three-way method x reader x case ANOVA written out here in numpy gives
    F = MS(T) / (MS(TR) + max(MS(TC) - MS(TRC), 0)) with Hillis' ddf, as the OR analysis must."""
    scores = correlated_scores()
    x = scores.transpose(1, 0, 2)  # method, reader, case
    t, r, c = x.shape
    m, mi, mj, mk = x.mean(), x.mean(axis=(1, 2)), x.mean(axis=(0, 2)), x.mean(axis=(0, 1))
    mij, mik, mjk = x.mean(axis=2), x.mean(axis=1), x.mean(axis=0)
    ms_t = r * c * ((mi - m) ** 2).sum() / (t - 1)
    ms_tr = c * ((mij - mi[:, None] - mj[None, :] + m) ** 2).sum() / ((t - 1) * (r - 1))
    ms_tc = r * ((mik - mi[:, None] - mk[None, :] + m) ** 2).sum() / ((t - 1) * (c - 1))
    residual = (x - mij[:, :, None] - mik[:, None, :] - mjk[None] + mi[:, None, None] + mj[None, :, None]
                + mk[None, None, :] - m)
    ms_trc = (residual ** 2).sum() / ((t - 1) * (r - 1) * (c - 1))
    assert ms_tc > ms_trc  # the max(., 0) does not hide anything here
    error = ms_tr + max(ms_tc - ms_trc, 0)
    result = obuchowski_rockette(*jackknife_covariances(scores))
    assert result["f_statistic"] == pytest.approx(ms_t / error, rel=1e-10)
    assert result["df_den"] == pytest.approx(error ** 2 * (t - 1) * (r - 1) / ms_tr ** 2, rel=1e-10)
    assert (result["ms_t"], result["ms_tr"]) == (pytest.approx(ms_t / c), pytest.approx(ms_tr / c))
    assert len(result["differences"]) == 3


def test_mrmc_keeps_a_complete_design_and_says_what_it_left_out():
    scores = {"r1": ([4, 5, 3, 4, 4, 5], [3, 4, 2, 3, 3, 4]), "r2": ([4, 4, 3, 5, 4, 4], [4, 4, 3, 5, 3, 4]),
              "r3": ([5, 5, 4, 4, 4, 5], [3, 4, 3, 3, 3, 4]), "r4": ([5, 5, None, None, None, None], [4] * 6)}
    ratings = rated(scores) + [Rating("r1", "eye0", "rise", 2, None, None)]
    result = mrmc_analysis(ratings, "location")
    assert (result["readers"], result["readers_left_out"]) == (["r1", "r2", "r3", "r4"], [])
    assert (result["methods"], result["methods_left_out"]) == (["a", "b"], ["rise"])
    assert result["fom"]["a"]["r4"] == 5.0 and result["fom"]["b"]["r4"] == 4.0
    assert "4 readers" in result["note"]
    without = mrmc_analysis(rated({**scores, "r4": ([5, None, None, None, None, None], [4] * 6)}), "location")
    assert without["readers_left_out"] == ["r4"] and without["readers"] == ["r1", "r2", "r3"]
    alone = mrmc_analysis(rated({"r1": scores["r1"]}), "location")
    assert alone["p_value"] is None and "two or more" in alone["note"]


# -- the rest of the report ----------------------------------------------------------------------


def test_readers_scores_follow_automatic_energy(low_noise):
    ratings, automatic, _ = low_noise
    correlations = automatic_vs_readers(ratings, automatic, "location")
    for method in ("adversarial", "gradcam"):
        assert correlations[method]["energy_in_truth"]["n"] == 60
        assert correlations[method]["energy_in_truth"]["rho"] > 0.5


def test_finding_breakdown_means():
    ratings = [Rating("r1", "eye1", "gradcam", 2, 1, None, "ANRS"), Rating("r2", "eye1", "gradcam", 5, 3, None, "ANRS"),
               Rating("r1", "eye2", "adversarial", 4, None, None, "RNFLDS"),
               Rating("r1", "eye3", "adversarial", 1, 1, None, None)]
    assert finding_breakdown(ratings, "location") == {
        "adversarial": {"RNFLDS": {"n": 1, "mean": 4.0}}, "gradcam": {"ANRS": {"n": 2, "mean": 3.5}}}
    assert finding_breakdown(ratings, "rationale") == {"gradcam": {"ANRS": {"n": 2, "mean": 2.0}}}


def test_analyse_is_strict_json(low_noise, tmp_path):
    ratings, automatic, _ = low_noise
    automatic = {**automatic, ("eye0", "adversarial"): {"energy_in_truth": math.nan, "validity": 1.0}}
    # a third method nobody scored on rationale: its means and intervals are undefined
    ratings = ratings + [Rating("r1", "eye0", "occlusion", 3, None, None)]
    report = analyse(ratings, automatic, n_bootstrap=200)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["methods"] == ["adversarial", "gradcam", "occlusion"]
    assert len(report["comparisons"]) == 3 * 2
    assert {c["analysis"].split(":")[0] for c in report["comparisons"]} == {"fixed readers"}
    assert report["scores"]["occlusion"]["rationale"] == {"n": 0, "n_blank": 1, "n_cases": 0, "mean": None,
                                                          "ci_low": None, "ci_high": None}
    for scale in ("location", "rationale"):
        random = report["mrmc"][scale]
        assert random["analysis"].startswith("random readers") and random["methods_left_out"] == ["occlusion"]
        assert random["p_value"] < 0.01
    assert set(report["agreement"]) == {"location", "rationale", "agree"}
    assert set(report["agreement"]["location"]) == {"adversarial", "gradcam", "occlusion"}
    assert report["agreement"]["agree"]["n_answers"] == 3 * 60
    assert report["automatic"]["location"]["adversarial"]["energy_in_truth"]["n"] == 59
    assert report["automatic"]["location"]["adversarial"]["validity"] == {"n": 1, "rho": None, "p_value": None}
    assert set(report["findings"]["location"]["gradcam"]) == {"ANRS", "RNFLDS"}
    assert plot_scores(ratings, tmp_path / "plots" / "scores.png").read_bytes()[:4] == b"\x89PNG"


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


HEADER = "reader,case,method,location,rationale,agree,finding"


def test_read_csv(tmp_path):
    path = write_csv(tmp_path / "ratings.csv", [HEADER, "r1,eye1,gradcam,4,,1,ANRS", "r2,eye1,gradcam,5.0,2,0,"])
    assert read_ratings(path) == [Rating("r1", "eye1", "gradcam", 4, None, 1, "ANRS"),
                                  Rating("r2", "eye1", "gradcam", 5, 2, 0, None)]


@pytest.mark.parametrize("bad_line, column, reason", [
    ("r2,eye1,gradcam,4,6,1,", "rationale", "6 is out of 1..5"),
    ("r2,eye1,gradcam,3.5,2,1,", "location", "'3.5' is not an integer"),
    ("r2,eye1,gradcam,good,2,1,", "location", "'good' is not an integer"),
    ("r2,eye1,gradcam,4,2,2,", "agree", "2 is out of 0..1"),
    ("r2,,gradcam,4,2,1,", "case", "is missing or empty"),
    ("r1,eye1,gradcam,4,2,1,", "reader", "already in"),
])
def test_csv_errors_name_row_and_column(tmp_path, bad_line, column, reason):
    path = write_csv(tmp_path / "ratings.csv", [HEADER, "r1,eye1,gradcam,4,2,1,", bad_line])
    with pytest.raises(InputError, match=reason) as error:
        read_ratings(path)
    assert error.value.name == f"{path} row 3, column {column!r}"


def test_csv_without_a_required_column(tmp_path):
    path = write_csv(tmp_path / "ratings.csv", ["reader,case,location", "r1,eye1,4"])
    with pytest.raises(InputError, match="row 1, column 'method'"):
        read_ratings(path)


def test_row_errors_name_the_list_index():
    rows = [dict(reader="r1", case="eye1", method="gradcam", location=4),
            dict(reader="r1", case="eye2", method="gradcam", location=True)]
    with pytest.raises(InputError, match=r"rows\[1\], column 'location': True is not an integer"):
        read_ratings(rows)


def test_agreement_without_any_variation_is_undefined():
    ratings = [Rating(reader, f"eye{case}", "gradcam", 4, None, 1) for reader in ("r1", "r2") for case in range(5)]
    agreement = reader_agreement(ratings, "location")
    assert (agreement["value"], agreement["n_items"], agreement["kappa_linear"]) == (None, 5, None)
    assert reader_agreement(ratings, "rationale")["value"] is None
    assert agree_agreement(ratings)["fleiss_kappa"] is None
