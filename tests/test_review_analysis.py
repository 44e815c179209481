"""Reader-study analysis (xmed.review.analysis) on simulated readers whose scoring rule is known,
and on published worked examples of the agreement statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xmed.errors import InputError
from xmed.review.analysis import (
    Rating, analyse, automatic_vs_readers, compare_methods, finding_breakdown, fleiss_kappa,
    krippendorff_alpha, method_scores, plot_scores, read_ratings, reader_agreement,
)

READERS = ("r1", "r2", "r3")
BIASES = (-0.2, 0.0, 0.2)


def simulate(noise: float, readers=READERS, biases=BIASES, n_cases: int = 60, seed: int = 1,
             pure_noise: bool = False):
    """Readers score ``clip(round(1 + 4 * energy + bias + noise), 1, 5)``; the adversarial method's
    energy in the truth region is higher on average than Grad-CAM's."""
    rng = np.random.default_rng(seed)
    energy = {"adversarial": rng.uniform(0.3, 0.9, n_cases), "gradcam": rng.uniform(0.0, 0.6, n_cases)}
    rows = []
    for reader, bias in zip(readers, biases):
        for method, energies in energy.items():
            for case, case_energy in enumerate(energies):
                if pure_noise:
                    location, rationale = (int(score) for score in rng.integers(1, 6, 2))
                else:
                    location, rationale = (int(np.clip(np.round(1 + 4 * case_energy + bias + rng.normal(0, noise)), 1, 5))
                                           for _ in range(2))
                rows.append(dict(reader=reader, case=f"eye{case}", method=method, location=location,
                                 rationale=rationale, agree=int(location >= 3),
                                 finding="ANRS" if case % 2 else "RNFLDS"))
    automatic = {(f"eye{case}", method): {"energy_in_truth": float(value)}
                 for method, energies in energy.items() for case, value in enumerate(energies)}
    return read_ratings(rows), automatic, energy


def expected_reliability(energy: dict, noise: float, biases=BIASES) -> float:
    """Share of score variance due to the cases: signal / (signal + noise + rounding + reader bias)."""
    signal = np.var(4 * np.concatenate(list(energy.values())))
    return signal / (signal + noise ** 2 + 1 / 12 + np.var(biases))


@pytest.fixture(scope="module")
def low_noise():
    return simulate(noise=0.3)


def test_recovers_method_ordering_with_intervals(low_noise):
    ratings, _, _ = low_noise
    scores = method_scores(ratings, n_bootstrap=1000)
    for scale in ("location", "rationale"):
        adversarial, gradcam = scores["adversarial"][scale], scores["gradcam"][scale]
        assert adversarial["n"] == gradcam["n"] == 180 and adversarial["n_cases"] == 60
        assert adversarial["mean"] > gradcam["mean"] + 0.8
        for summary in (adversarial, gradcam):
            assert summary["ci_low"] < summary["mean"] < summary["ci_high"]
            assert summary["ci_high"] - summary["ci_low"] < 0.6
        comparison = compare_methods(ratings, "adversarial", "gradcam", scale)
        assert comparison["n_pairs"] == 60
        assert comparison["p_value"] < 0.01
        assert comparison["median_difference"] > 0.8
    # adversarial scores are higher, so more ratings reach the "agree" threshold of 3
    assert scores["adversarial"]["agree"]["share"] > scores["gradcam"]["agree"]["share"] + 0.3


def test_bootstrap_resamples_cases_not_ratings():
    # every reader gives a case the same score: a case bootstrap of two cases only ever sees means 2, 3
    # or 4 and its percentile interval spans 2..4; resampling the six ratings would give a narrower one
    ratings = [Rating(reader, case, "gradcam", score, None, None)
               for reader in READERS for case, score in (("eye1", 2), ("eye2", 4))]
    location = method_scores(ratings, n_bootstrap=2000)["gradcam"]["location"]
    assert (location["mean"], location["ci_low"], location["ci_high"]) == (3.0, 2.0, 4.0)


def test_wilcoxon_with_all_zero_differences_finds_nothing():
    ratings = [Rating("r1", f"eye{case}", method, 3, None, None) for case in range(5) for method in ("a", "b")]
    comparison = compare_methods(ratings, "a", "b", "location")
    assert (comparison["n_pairs"], comparison["p_value"], comparison["median_difference"]) == (5, 1.0, 0.0)


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
    assert 0.05 < comparison["p_value"] < 0.2


@pytest.mark.parametrize("noise", [0.3, 0.5])
def test_agreement_matches_the_noise_level(noise):
    ratings, _, energy = simulate(noise=noise)
    agreement = reader_agreement(ratings, "location")
    assert agreement["statistic"] == "krippendorff_alpha_ordinal"
    assert (agreement["n_readers"], agreement["n_items"], agreement["n_agree_items"]) == (3, 120, 120)
    assert agreement["value"] > 0.5
    assert agreement["value"] == pytest.approx(expected_reliability(energy, noise), abs=0.1)
    assert agreement["agree_fleiss_kappa"] > 0.4


def test_agreement_is_near_zero_for_pure_noise():
    ratings, _, _ = simulate(noise=0.0, pure_noise=True)
    for scale in ("location", "rationale"):
        agreement = reader_agreement(ratings, scale)
        assert abs(agreement["value"]) < 0.1
        assert abs(agreement["agree_fleiss_kappa"]) < 0.15


def test_two_readers_use_weighted_kappa():
    ratings, _, energy = simulate(noise=0.3, readers=("r1", "r2"), biases=(0.0, 0.1))
    agreement = reader_agreement(ratings, "rationale")
    assert (agreement["statistic"], agreement["n_items"]) == ("cohen_kappa_quadratic", 120)
    assert agreement["value"] == pytest.approx(expected_reliability(energy, 0.3, (0.0, 0.1)), abs=0.1)


@pytest.mark.parametrize("readers", [("r1", "r2"), READERS])
def test_identical_readers_agree_perfectly(readers):
    ratings = [Rating(reader, f"eye{case}", "gradcam", case % 5 + 1, None, case % 2)
               for reader in readers for case in range(20)]
    agreement = reader_agreement(ratings, "location")
    assert agreement["value"] == 1.0
    assert agreement["agree_fleiss_kappa"] == 1.0


def test_two_readers_kappa_weighs_score_distances_on_the_1_to_5_scale():
    # one reader says 1 where the other says 5 on one of five items: weights (i - j)**2 of the full 1..5
    # scale, though score 4 is never given, as scikit-learn computes them with those labels
    from sklearn.metrics import cohen_kappa_score

    first, second = [1, 2, 3, 5, 5], [1, 2, 3, 5, 1]
    ratings = [Rating(reader, f"eye{case}", "gradcam", score, None, None)
               for reader, scores in (("r1", first), ("r2", second)) for case, score in enumerate(scores)]
    expected = cohen_kappa_score(first, second, labels=[1, 2, 3, 4, 5], weights="quadratic")
    assert reader_agreement(ratings, "location")["value"] == pytest.approx(expected)
    assert expected != pytest.approx(cohen_kappa_score(first, second, weights="quadratic"))


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
    assert report["scores"]["occlusion"]["rationale"] == {"n": 0, "n_cases": 0, "mean": None, "ci_low": None,
                                                          "ci_high": None}
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
    assert (agreement["value"], agreement["n_items"], agreement["agree_fleiss_kappa"]) == (None, 5, None)
    assert reader_agreement(ratings, "rationale")["value"] is None
