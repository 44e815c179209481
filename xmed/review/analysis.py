"""Reader-study analysis of a clinician review of explanations.

Readers rate, per eye (case) and per explanation method, *location* explainability and *rationale*
explainability on a 1-5 scale, and whether they agree with the model's decision (``agree``, 0/1).
This module reads those ratings and computes, per method, mean scores with case-bootstrap
intervals; every pair of methods compared in two analyses, labelled in the report: with the
readers fixed (a case-level Wilcoxon signed-rank test on reader-matched differences and the mean
difference with its case-bootstrap interval: conclusions about *these* readers) and with the
readers random (the Obuchowski-Rockette multi-reader multi-case analysis with Hillis' degrees of
freedom: conclusions about readers like them), the fixed-readers p-values Holm-corrected across
every comparison reported; agreement between readers per method (weighted Cohen's kappa with its
case-bootstrap interval, Krippendorff's alpha) and on ``agree`` (Fleiss' kappa, once per case);
each reader's agreement with the model's decision; the cases readers disagree on, with each other
or with the model (:func:`flagged_cases`); per-finding breakdowns; and the rank correlation between
readers' scores and automatic explanation metrics.
:mod:`xmed.review.simulate` has simulated readers and the power of a planned study.

Example:
    >>> rows = [dict(reader=reader, case=f"eye{case}", method=method, location=score,
    ...              rationale=score, agree=1)
    ...         for reader in ("r1", "r2")
    ...         for case, base in enumerate([5, 4, 5, 4, 5, 4])
    ...         for method, score in (("adversarial", base), ("gradcam", base - 2))]
    >>> report = analyse(read_ratings(rows))
    >>> report["scores"]["adversarial"]["location"]["mean"], report["scores"]["gradcam"]["location"]["mean"]
    (4.5, 2.5)
    >>> report["comparisons"][0]["p_value"]
    0.03125
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from xmed.errors import InputError, PathError

__all__ = [
    "SCALES", "Rating", "ScoreTable", "read_ratings", "method_scores", "compare_methods", "paired_comparison",
    "mrmc_analysis", "mrmc", "jackknife_covariances", "obuchowski_rockette", "reader_agreement",
    "agree_agreement", "decision_agreement", "flagged_cases", "krippendorff_alpha", "fleiss_kappa",
    "weighted_kappa", "finding_breakdown", "automatic_vs_readers", "analyse", "plot_scores",
]

SCALES = ("location", "rationale")
SCORE_RANGE = range(1, 6)
REQUIRED_COLUMNS = ("reader", "case", "method")
#: the most bootstrap resamples an interval draws (each is a row of case indices held in memory)
MAX_BOOTSTRAP = 100_000
Scale = Literal["location", "rationale"]
#: the two analyses of a comparison of methods, as the report labels them
FIXED_READERS = "fixed readers: case-level Wilcoxon signed-rank test of reader-matched differences"
RANDOM_READERS = "random readers: Obuchowski-Rockette MRMC with Hillis (2007) denominator degrees of freedom"
#: with fewer paired cases no outcome of a two-sided signed-rank test reaches p < 0.05 (6: p = 2 / 2**6);
#: the value of :data:`xmed.metrics.paired.MIN_PAIRS`, kept here so that this module does not import torch
MIN_PAIRS = 6
#: with fewer readers the random-readers test rejects more often than its level (simulated: about 8 % at 5 %
#: with 3 readers when readers' preferences for a method vary as much as the case-level noise)
FEW_READERS = 5
#: a case is flagged when two readers' scores of one method on it are this many points apart (1-5 scale)
SCORE_MARGIN = 3
#: … or when at least this share of the readers who answered disagree with the model's decision
DISAGREE_SHARE = 0.5
#: the family the fixed-readers p-values are corrected over, as the report states it
HOLM_FAMILY = "Holm over every comparison reported (each pair of methods on both scales)"


@dataclass(frozen=True)
class Rating:
    """One reader's rating of one explanation method on one case; a score left blank is ``None``.

    Example:
        >>> Rating("r1", "eye7", "gradcam", location=4, rationale=None, agree=1).location
        4
    """

    reader: str
    case: str
    method: str
    location: int | None
    rationale: int | None
    agree: int | None
    finding: str | None = None


# -- reading -------------------------------------------------------------------------------------


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _integer(value: Any, allowed: range, where: str, column: str) -> int | None:
    if _is_blank(value):
        return None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, np.integer)):
        number = int(value)
    else:
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            as_float = math.nan
        # tables written with missing values store integers as floats ("4.0")
        number = int(as_float) if math.isfinite(as_float) and as_float.is_integer() else None
    if number is None:
        raise InputError(f"{where}, column {column!r}", f"{value!r} is not an integer; "
                         f"give {allowed.start}..{allowed.stop - 1} or leave it blank")
    if number not in allowed:
        raise InputError(f"{where}, column {column!r}",
                         f"{number} is out of {allowed.start}..{allowed.stop - 1}; leave it blank if not rated")
    return number


def _rating(row: Mapping[str, Any], where: str) -> Rating:
    names = {}
    for column in REQUIRED_COLUMNS:
        value = row.get(column)
        if _is_blank(value):
            raise InputError(f"{where}, column {column!r}", "is missing or empty")
        names[column] = str(value).strip()
    finding = row.get("finding")
    return Rating(
        **names,
        location=_integer(row.get("location"), SCORE_RANGE, where, "location"),
        rationale=_integer(row.get("rationale"), SCORE_RANGE, where, "rationale"),
        agree=_integer(row.get("agree"), range(0, 2), where, "agree"),
        finding=None if _is_blank(finding) else str(finding).strip(),
    )


def read_ratings(path_or_rows: str | os.PathLike | Iterable[Mapping[str, Any]]) -> list[Rating]:
    """Read and check a ratings table: a CSV file or a list of dicts, one row per (reader, case, method).

    Columns: ``reader``, ``case``, ``method``, ``location`` and ``rationale`` (1-5 or blank),
    ``agree`` (0/1 or blank), optionally ``finding``. A wrong value raises
    :class:`~xmed.errors.InputError` naming the row (in a CSV file the header is row 1; in a list,
    ``rows[i]``) and the column; so does a (reader, case, method) rated twice. A file that cannot be
    read as a CSV table raises :class:`~xmed.errors.PathError` naming it.

    Example:
        >>> read_ratings([{"reader": "r1", "case": "eye1", "method": "gradcam",
        ...                "location": "4", "rationale": "", "agree": 1}])
        [Rating(reader='r1', case='eye1', method='gradcam', location=4, rationale=None, agree=1, finding=None)]
        >>> read_ratings([{"reader": "r1", "case": "eye1", "method": "gradcam", "location": 6}])
        Traceback (most recent call last):
        ...
        xmed.errors.InputError: rows[0], column 'location': 6 is out of 1..5; leave it blank if not rated
    """
    if isinstance(path_or_rows, (str, os.PathLike)):
        path = Path(path_or_rows)
        if path.exists() and not path.is_file():  # a folder, a FIFO or a device would block or never end
            raise PathError(path, "is not a file (give the ratings CSV an export wrote)")
        try:
            with path.open(newline="", encoding="utf-8-sig") as file:
                reader = csv.DictReader(file)
                missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
                if missing:
                    raise InputError(f"{path} row 1, column {missing[0]!r}", "the header lacks this column")
                located = [(f"{path} row {number}", row) for number, row in enumerate(reader, start=2)]
        except OSError as err:
            raise PathError(path, f"cannot read the ratings table ({err.strerror})") from None
        except (UnicodeDecodeError, csv.Error) as err:
            raise PathError(path, f"is not a CSV ratings table: {err}") from None
    else:
        located = [(f"rows[{index}]", row) for index, row in enumerate(path_or_rows)]
    ratings, first_seen = [], {}
    for where, row in located:
        rating = _rating(row, where)
        key = (rating.reader, rating.case, rating.method)
        if key in first_seen:
            reader, case, method = key
            raise InputError(f"{where}, column 'reader'", f"reader {reader!r} rated case {case!r} with "
                                                          f"method {method!r} already in {first_seen[key]}")
        first_seen[key] = where
        ratings.append(rating)
    return ratings


# -- helpers -------------------------------------------------------------------------------------


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise InputError("scale", f"{scale!r} is not one of {SCALES}")


def _methods(ratings: Sequence[Rating]) -> list[str]:
    return sorted({rating.method for rating in ratings})


def _check_methods(ratings: Sequence[Rating], *methods: str) -> None:
    known = _methods(ratings)
    for method in methods:
        if method not in known:
            raise InputError("method", f"{method!r} is not a method of these ratings "
                                       f"({', '.join(map(repr, known)) or 'there are none'})")


def _check_bootstrap(n_bootstrap: Any) -> None:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or not 1 <= n_bootstrap <= MAX_BOOTSTRAP:
        raise InputError("n_bootstrap", f"must be an integer from 1 to {MAX_BOOTSTRAP}, got {n_bootstrap!r}")


def _check_level(level: Any) -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise InputError("level", f"must be a number between 0 and 1, got {level!r}")


@dataclass(frozen=True)
class ScoreTable:
    """One scale's scores as an array ``scores[reader, method, case]``, NaN where none was given.

    Example:
        >>> table = ScoreTable.from_ratings([Rating("r1", "eye1", "gradcam", 4, None, None),
        ...                                  Rating("r2", "eye2", "gradcam", 2, 5, None)], "location")
        >>> table.readers, table.cases, table.method("gradcam").tolist()
        (('r1', 'r2'), ('eye1', 'eye2'), [[4.0, nan], [nan, 2.0]])
    """

    readers: tuple[str, ...]
    methods: tuple[str, ...]
    cases: tuple[str, ...]
    scores: np.ndarray

    @classmethod
    def from_ratings(cls, ratings: Sequence[Rating], scale: Scale, methods: Sequence[str] | None = None) -> ScoreTable:
        """The scores on ``scale`` of ``methods`` (default: every method rated), over the readers and
        cases with one of them."""
        _check_scale(scale)
        methods = tuple(_methods(ratings) if methods is None else methods)
        scored = [rating for rating in ratings if rating.method in methods and getattr(rating, scale) is not None]
        readers = tuple(sorted({rating.reader for rating in scored}))
        cases = tuple(sorted({rating.case for rating in scored}))
        index = [{name: position for position, name in enumerate(names)} for names in (readers, methods, cases)]
        scores = np.full((len(readers), len(methods), len(cases)), np.nan)
        for rating in scored:
            scores[index[0][rating.reader], index[1][rating.method], index[2][rating.case]] = getattr(rating, scale)
        return cls(readers, methods, cases, scores)

    def method(self, name: str) -> np.ndarray:
        """``scores[reader, case]`` of one method."""
        return self.scores[:, self.methods.index(name), :]


def _case_means(ratings: Sequence[Rating], method: str, scale: str) -> dict[str, float]:
    """Mean score of each case over the readers who gave one, for one method."""
    by_case = defaultdict(list)
    for rating in ratings:
        score = getattr(rating, scale)
        if rating.method == method and score is not None:
            by_case[rating.case].append(score)
    return {case: float(np.mean(scores)) for case, scores in by_case.items()}


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _json_ready(value: Any) -> Any:
    """The same structure with numpy scalars made plain and every NaN or infinity made ``None``."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _number(value)
    return value


# -- scores --------------------------------------------------------------------------------------


def _cluster_bootstrap_mean(sums: Sequence[float], counts: Sequence[float], n_bootstrap: int,
                            seed: int) -> tuple[float, float]:
    """The 2.5-97.5 percentile interval of ``sum(sums) / sum(counts)`` over resamples of the cases
    (each case its own sum and count)."""
    from xmed.metrics.classification import resample_indices  # the resamples every xmed interval uses

    sums, counts = np.asarray(sums, dtype=float), np.asarray(counts, dtype=float)
    draws = resample_indices(len(sums), n_bootstrap, seed).numpy()
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def method_scores(ratings: Sequence[Rating], n_bootstrap: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Per method and scale: number of scores (and of rating rows with this score blank), mean and
    95% case-bootstrap interval; share of ``agree``.

    The interval is the 2.5-97.5 percentile of the mean over ``n_bootstrap`` resamples of the cases
    (a cluster bootstrap: all readers' ratings of a case move together, as readers' scores of one
    eye are not independent).

    Example:
        >>> ratings = [Rating(reader, f"eye{case}", "gradcam", score, 3, agree)
        ...            for reader, agree in (("r1", 1), ("r2", 0)) for case, score in enumerate([2, 4])]
        >>> scores = method_scores(ratings, n_bootstrap=200)["gradcam"]
        >>> scores["location"]["n"], scores["location"]["mean"], scores["agree"]
        (4, 3.0, {'n': 4, 'share': 0.5})
        >>> scores["location"]["ci_low"] >= 2.0 and scores["location"]["ci_high"] <= 4.0
        True
    """
    _check_bootstrap(n_bootstrap)
    result = {}
    for method in _methods(ratings):
        own = [rating for rating in ratings if rating.method == method]
        result[method] = {}
        for scale in SCALES:
            by_case = defaultdict(list)
            for rating in own:
                if getattr(rating, scale) is not None:
                    by_case[rating.case].append(getattr(rating, scale))
            scores = [score for case_scores in by_case.values() for score in case_scores]
            summary = {"n": len(scores), "n_blank": len(own) - len(scores), "n_cases": len(by_case), "mean": None,
                       "ci_low": None, "ci_high": None}
            if scores:
                low, high = _cluster_bootstrap_mean([sum(s) for s in by_case.values()],
                                                    [len(s) for s in by_case.values()], n_bootstrap, seed)
                summary.update(mean=float(np.mean(scores)), ci_low=low, ci_high=high)
            result[method][scale] = summary
        agrees = [rating.agree for rating in own if rating.agree is not None]
        result[method]["agree"] = {"n": len(agrees), "share": float(np.mean(agrees)) if agrees else None}
    return result


def _wilcoxon(differences: np.ndarray) -> dict[str, Any]:
    """:func:`xmed.metrics.paired.signed_rank_test` as a comparison's fields."""
    from xmed.metrics.paired import signed_rank_test  # here: `import xmed.review.analysis` stays free of torch

    statistic, p_value, method = signed_rank_test(differences)
    return {"statistic": _number(statistic), "p_value": _number(p_value),
            "p_value_method": None if method == "none" else method}


def paired_comparison(table: ScoreTable, a: str, b: str, n_bootstrap: int | None = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Method ``a`` against ``b`` on a :class:`ScoreTable`, the readers fixed: see :func:`compare_methods`
    (``n_bootstrap=None``: no interval).

    Example:
        >>> ratings = [Rating(reader, f"eye{case}", method, score, None, None) for reader in ("r1", "r2")
        ...            for case in range(6) for method, score in (("a", 4), ("b", 2))]
        >>> result = paired_comparison(ScoreTable.from_ratings(ratings, "location"), "a", "b", n_bootstrap=None)
        >>> result["n_pairs"], result["mean_difference"], result["p_value"], result["p_value_method"]
        (6, 2.0, 0.03125, 'permutation')
    """
    first, second = table.method(a), table.method(b)
    scored_a, scored_b = ~np.isnan(first), ~np.isnan(second)
    matched = scored_a & scored_b
    per_case = matched.sum(axis=0)
    paired = per_case > 0
    sums, counts = np.where(matched, first - second, 0.0).sum(axis=0)[paired], per_case[paired]
    # integer sums and counts are exact and a division is correctly rounded, so equal mean
    # differences stay equal (ties for the ranks), as differences of two rounded means would not
    differences = sums / counts
    n_pairs = int(paired.sum())
    result = {"analysis": FIXED_READERS, "test": "Wilcoxon signed-rank, Pratt's zeros", "p_value_method": None,
              "n_pairs": n_pairs, "n_matched": int(matched.sum()),
              "unmatched": {a: int((scored_a & ~scored_b).sum()), b: int((scored_b & ~scored_a).sum())},
              "statistic": None, "p_value": None, "mean_difference": None, "ci_low": None, "ci_high": None,
              "median_difference": None, "can_reach_significance": n_pairs >= MIN_PAIRS, "note": None}
    if n_pairs < MIN_PAIRS:
        result["note"] = (f"{n_pairs} paired case(s): with fewer than {MIN_PAIRS} no outcome of a two-sided "
                          "signed-rank test reaches p < 0.05")
    if not n_pairs:
        return result
    result.update(_wilcoxon(differences), mean_difference=float(sums.sum() / counts.sum()),
                  median_difference=float(np.median(differences)))
    if n_bootstrap is not None:
        _check_bootstrap(n_bootstrap)
        result["ci_low"], result["ci_high"] = _cluster_bootstrap_mean(sums, counts, n_bootstrap, seed)
    return result


def compare_methods(ratings: Sequence[Rating], a: str, b: str, scale: Scale, n_bootstrap: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """Method ``a`` against ``b`` on ``scale`` with the readers fixed: a paired Wilcoxon signed-rank
    test over cases, and the mean difference with its 95% case-bootstrap interval.

    A case's difference is the mean of ``a - b`` over the readers who scored both there
    (reader-matched): a score whose reader left the other method blank on that case is left out,
    and counted in ``unmatched``. ``n_pairs`` is the number of cases with a difference,
    ``n_matched`` that of reader-matched pairs of scores. Zero differences use scipy's
    ``zero_method="pratt"`` (ranked, then dropped); ``p_value_method`` names how the p-value was
    found (``"exact"``, ``"permutation"``, ``"normal approximation"``). ``mean_difference`` is the
    mean of ``a - b`` over the matched pairs, ``ci_low``/``ci_high`` its interval over
    ``n_bootstrap`` resamples of the cases, ``median_difference`` the median of the case
    differences. ``can_reach_significance`` is false below 6 pairs. An unknown method raises
    :class:`~xmed.errors.InputError`. The conclusions hold for these readers; :func:`mrmc_analysis`
    generalises to readers like them.

    Example (three readers, every case's difference exactly +1 or -1, so all are tied):
        >>> ratings = [Rating(reader, f"eye{case}", method, score, None, None)
        ...            for case, pair in enumerate([((1, 4, 5), (3, 5, 5))] + [((1, 1, 4), (1, 1, 1))] * 6)
        ...            for method, scores in zip(("a", "b"), pair) for reader, score in zip(("r1", "r2", "r3"), scores)]
        >>> result = compare_methods(ratings, "a", "b", "location", n_bootstrap=200)
        >>> result["n_pairs"], result["statistic"], result["p_value"], result["p_value_method"]
        (7, 4.0, 0.125, 'permutation')
        >>> round(result["mean_difference"], 3), result["ci_low"] <= result["mean_difference"] <= result["ci_high"]
        (0.714, True)
    """
    _check_scale(scale)
    _check_methods(ratings, a, b)
    if a == b:
        raise InputError("method", f"compare {a!r} with another method, not with itself")
    _check_bootstrap(n_bootstrap)
    table = ScoreTable.from_ratings(ratings, scale, (a, b))
    return {"a": a, "b": b, "scale": scale, **paired_comparison(table, a, b, n_bootstrap, seed)}


# -- readers as a random effect ------------------------------------------------------------------


def jackknife_covariances(scores: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The figures of merit of a multi-reader study and the Obuchowski-Rockette covariances between
    them, estimated by case jackknife.

    ``scores[reader, method, case]`` (NaN: not given; every reader needs two or more scores of every
    method). A reader's figure of merit for a method is their mean score of it over the cases they
    scored, returned as ``fom[method, reader]``. The covariance of two figures of merit is
    ``(c - 1) / c`` times the sum over the ``c`` cases of the products of their deviations with
    that case left out (Hillis et al. 2005, Stat Med 24:1579-1607), averaged into ``var`` (each
    with itself), ``cov1`` (same reader, other method), ``cov2`` (other reader, same method) and
    ``cov3`` (other reader, other method); NaN where no pair is of that kind.

    Example:
        >>> scores = np.array([[[1, 2, 3, 4], [2, 2, 4, 4]], [[2, 3, 3, 5], [3, 3, 4, 5]]], dtype=float)
        >>> fom, covariances = jackknife_covariances(scores)
        >>> fom.tolist(), {name: round(value, 4) for name, value in covariances.items()}
        ([[2.5, 3.25], [3.0, 3.75]], {'var': 0.3438, 'cov1': 0.3021, 'cov2': 0.3125, 'cov3': 0.2708})
    """
    scores = np.asarray(scores, dtype=float)
    rated = ~np.isnan(scores)
    counts = rated.sum(axis=-1)
    if scores.ndim != 3 or np.any(counts < 2):
        raise InputError("scores", "needs scores[reader, method, case] with two or more scores per reader and method")
    given = np.where(rated, scores, 0.0)
    totals = given.sum(axis=-1)
    fom = totals / counts
    # each case left out in turn; a case the reader did not score leaves their mean as it is
    left_out = np.where(rated, (totals[..., None] - given) / (counts[..., None] - 1), fom[..., None])
    n_cases = scores.shape[-1]
    deviations = (left_out - left_out.mean(axis=-1, keepdims=True)).reshape(-1, n_cases)
    covariance = (n_cases - 1) / n_cases * deviations @ deviations.T
    readers, methods = (index.ravel() for index in np.indices(scores.shape[:2]))
    same_reader, same_method = np.equal.outer(readers, readers), np.equal.outer(methods, methods)
    kinds = {"var": same_reader & same_method, "cov1": same_reader & ~same_method,
             "cov2": ~same_reader & same_method, "cov3": ~same_reader & ~same_method}
    return fom.T, {name: float(covariance[kind].mean()) if kind.any() else math.nan for name, kind in kinds.items()}


def obuchowski_rockette(fom: Any, covariances: Mapping[str, float], methods: Sequence[str] | None = None,
                        level: float = 0.95) -> dict[str, Any]:
    """The Obuchowski-Rockette test that the methods are equal, readers and cases random, with
    Hillis' (2007) denominator degrees of freedom; and each pair's difference with its interval.

    ``fom[method, reader]``: the figures of merit, two or more methods and readers; ``covariances``:
    their ``cov2`` and ``cov3`` (:func:`jackknife_covariances`). With ``t`` methods, ``r`` readers::

        MS(T)  = r * sum_i (mean_i - mean)**2 / (t - 1)
        MS(TR) = sum_ij (fom_ij - mean_i - mean_j + mean)**2 / ((t - 1) * (r - 1))
        D      = MS(TR) + r * max(cov2 - cov3, 0)
        F      = MS(T) / D on t - 1 and ddf = D**2 * (t - 1) * (r - 1) / MS(TR)**2 degrees of freedom
        a - b  = mean_a - mean_b, interval  ± t_ddf * sqrt(2 * D / r)

    Written out here as no Python library has it (R has RJafroc and MRMCaov; the FDA's iMRMC is
    Java). A zero ``D`` (nothing varies) leaves the test undefined: ``None``, with a ``note``.

    Example:
        >>> result = obuchowski_rockette([[3.0, 3.5, 4.0, 3.5], [2.5, 2.5, 3.5, 3.0]],
        ...                              {"cov2": 0.01, "cov3": 0.005}, methods=["a", "b"])
        >>> round(result["f_statistic"], 2), round(result["df_den"], 2), round(result["p_value"], 4)
        (15.24, 8.07, 0.0044)
        >>> pair = result["differences"][0]
        >>> pair["difference"], round(pair["ci_low"], 3), round(pair["ci_high"], 3)
        (0.625, 0.256, 0.994)
    """
    from scipy import stats

    _check_level(level)
    fom = np.asarray(fom, dtype=float)
    if fom.ndim != 2 or min(fom.shape) < 2:
        raise InputError("fom", f"needs fom[method, reader] of two or more methods and readers, got shape {fom.shape}")
    n_methods, n_readers = fom.shape
    methods = [str(index) for index in range(n_methods)] if methods is None else list(methods)
    method_means, reader_means, grand = fom.mean(axis=1), fom.mean(axis=0), fom.mean()
    ms_t = n_readers * float(((method_means - grand) ** 2).sum()) / (n_methods - 1)
    interaction_df = (n_methods - 1) * (n_readers - 1)
    ms_tr = float(((fom - method_means[:, None] - reader_means[None, :] + grand) ** 2).sum()) / interaction_df
    error = ms_tr + n_readers * max(covariances["cov2"] - covariances["cov3"], 0.0)
    result = {"method_means": dict(zip(methods, method_means.tolist())), "ms_t": ms_t, "ms_tr": ms_tr,
              "f_statistic": None, "df_num": n_methods - 1, "df_den": None, "p_value": None, "level": level,
              "differences": [], "note": None}
    pairs = list(itertools.combinations(range(n_methods), 2))
    if not error > 0:
        result["note"] = "the error term MS(TR) + r * max(cov2 - cov3, 0) is zero: the test is undefined"
        result["differences"] = [{"a": methods[i], "b": methods[k],
                                  "difference": float(method_means[i] - method_means[k]), "std_error": None,
                                  "df": None, "ci_low": None, "ci_high": None, "p_value": None} for i, k in pairs]
        return result
    # MS(TR) zero up to rounding (every reader's differences the same): infinite degrees of freedom
    ddf = error ** 2 * interaction_df / ms_tr ** 2 if ms_tr > 1e-12 * error else math.inf
    f_statistic = ms_t / error
    p_value = (stats.f.sf(f_statistic, n_methods - 1, ddf) if math.isfinite(ddf)
               else stats.chi2.sf(f_statistic * (n_methods - 1), n_methods - 1))
    std_error = math.sqrt(2 * error / n_readers)
    quantile = float(stats.t.ppf((1 + level) / 2, ddf))
    result.update(f_statistic=f_statistic, df_den=ddf, p_value=float(p_value))
    for i, k in pairs:
        difference = float(method_means[i] - method_means[k])
        result["differences"].append({
            "a": methods[i], "b": methods[k], "difference": difference, "std_error": std_error, "df": ddf,
            "ci_low": difference - quantile * std_error, "ci_high": difference + quantile * std_error,
            "p_value": float(2 * stats.t.sf(abs(difference) / std_error, ddf))})
    return result


def mrmc(table: ScoreTable, level: float = 0.95) -> dict[str, Any]:
    """The random-readers analysis of a :class:`ScoreTable`: see :func:`mrmc_analysis`."""
    _check_level(level)
    counts = (~np.isnan(table.scores)).sum(axis=-1)  # readers x methods
    # the design must be complete: methods two readers scored, then readers who scored all of them
    kept_methods = (counts >= 2).sum(axis=0) >= 2
    kept_readers = np.all(counts[:, kept_methods] >= 2, axis=1) if kept_methods.any() else np.zeros(len(counts), bool)
    methods = [name for name, kept in zip(table.methods, kept_methods) if kept]
    readers = [name for name, kept in zip(table.readers, kept_readers) if kept]
    scores = table.scores[np.ix_(kept_readers, kept_methods)]
    scores = scores[:, :, ~np.isnan(scores).all(axis=(0, 1))]  # only the cases these readers scored
    result = {"analysis": RANDOM_READERS,
              "figure_of_merit": "a reader's mean score of the method over the cases they scored",
              "methods": methods, "readers": readers, "n_cases": scores.shape[-1],
              "methods_left_out": sorted(set(table.methods) - set(methods)),
              "readers_left_out": sorted(set(table.readers) - set(readers)),
              "fom": None, "covariance": None, "method_means": None, "ms_t": None, "ms_tr": None,
              "f_statistic": None, "df_num": None, "df_den": None, "p_value": None, "level": level,
              "differences": [], "note": None}
    if len(methods) < 2 or len(readers) < 2:
        result["note"] = ("needs two or more methods each scored by the same two or more readers, "
                          "each on two or more cases")
        return result
    fom, covariances = jackknife_covariances(scores)
    result.update(fom={method: dict(zip(readers, row.tolist())) for method, row in zip(methods, fom)},
                  covariance={"estimator": "case jackknife", **covariances},
                  **obuchowski_rockette(fom, covariances, methods, level))
    if result["note"] is None and len(readers) < FEW_READERS:
        result["note"] = (f"{len(readers)} readers: with fewer than {FEW_READERS} the test can reject more often "
                          f"than its level (about 8 % at 5 % with 3 readers, in simulation)")
    return result


def mrmc_analysis(ratings: Sequence[Rating], scale: Scale, level: float = 0.95) -> dict[str, Any]:
    """The methods compared on ``scale`` with readers *and* cases random: the Obuchowski-Rockette
    multi-reader multi-case analysis (as the FDA's iMRMC and RJafroc run it) with Hillis' (2007)
    denominator degrees of freedom, so that a conclusion holds for readers like these, not only
    for them.

    The figure of merit of a reader and a method is the reader's mean score of the method over the
    cases they scored (``fom``); their covariances come from a case jackknife
    (:func:`jackknife_covariances`); :func:`obuchowski_rockette` gives the F test of equal methods
    (``f_statistic``, ``df_num``, ``df_den``, ``p_value``; ``ms_t``, ``ms_tr``) and, per pair of
    methods, the difference of the means over readers with its ``level`` interval. Only a complete
    design enters: methods scored by two or more readers, readers who scored each of them on two or
    more cases (the others are listed in ``methods_left_out`` and ``readers_left_out``).

    Example (two readers score method ``a`` a point above ``b``, the third barely: significant for
    these readers, not for readers in general):
        >>> scores = {"r1": ([4, 5, 3, 4, 4, 5], [3, 4, 2, 3, 3, 4]), "r2": ([4, 4, 3, 5, 4, 4], [4, 4, 3, 5, 3, 4]),
        ...           "r3": ([5, 5, 4, 4, 4, 5], [3, 4, 3, 3, 3, 4])}
        >>> ratings = [Rating(reader, f"eye{case}", method, score, None, None) for reader, pair in scores.items()
        ...            for method, row in zip("ab", pair) for case, score in enumerate(row)]
        >>> result, fixed = mrmc_analysis(ratings, "location"), compare_methods(ratings, "a", "b", "location")
        >>> pair = result["differences"][0]
        >>> round(pair["difference"], 3), round(pair["ci_low"], 2), round(pair["ci_high"], 2), result["df_den"]
        (0.778, -0.55, 2.11, 2.0)
        >>> round(result["p_value"], 3), fixed["p_value"]
        (0.128, 0.03125)
    """
    return {"scale": scale, **mrmc(ScoreTable.from_ratings(ratings, scale), level)}


# -- agreement -----------------------------------------------------------------------------------


def krippendorff_alpha(reliability_data: Sequence[Sequence[float | None]],
                       level: Literal["nominal", "ordinal", "interval"] = "ordinal") -> float | None:
    """Krippendorff's alpha of ``reliability_data`` (one row per reader, one column per item; a
    missing value is ``None`` or NaN), ``None`` when undefined (no item with two values, or no
    variation at all).

    Written from Krippendorff (2011), "Computing Krippendorff's alpha-reliability": the
    ``krippendorff`` package on PyPI is GPL-3.0 licensed and so cannot be a dependency of this
    Apache-2.0 package. The example below is the paper's worked example (4 observers, 12 units).

    Example:
        >>> data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        ...         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        ...         [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        ...         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
        >>> [round(krippendorff_alpha(data, level), 3) for level in ("nominal", "ordinal", "interval")]
        [0.743, 0.815, 0.849]
    """
    data = np.array(reliability_data, dtype=float)
    values = np.unique(data[~np.isnan(data)])
    if len(values) == 0:
        return None
    counts = np.stack([(data == value).sum(axis=0) for value in values], axis=1)  # items x values
    counts = counts[counts.sum(axis=1) >= 2]  # only items with two or more values are pairable
    if len(counts) == 0:
        return None
    per_item = counts / (counts.sum(axis=1, keepdims=True) - 1)
    coincidences = per_item.T @ counts - np.diag(per_item.sum(axis=0))
    value_totals = coincidences.sum(axis=1)
    n_values = value_totals.sum()
    if level == "nominal":
        distance = 1.0 - np.eye(len(values))
    elif level == "interval":
        distance = np.subtract.outer(values, values) ** 2
    elif level == "ordinal":
        cumulative = np.cumsum(value_totals)
        index = np.arange(len(values))
        low, high = np.minimum.outer(index, index), np.maximum.outer(index, index)
        between = cumulative[high] - cumulative[low] + value_totals[low]  # totals of values low..high
        distance = (between - np.add.outer(value_totals, value_totals) / 2) ** 2
    else:
        raise InputError("level", f"{level!r} is not one of 'nominal', 'ordinal', 'interval'")
    observed = (coincidences * distance).sum()
    expected = (np.outer(value_totals, value_totals) * distance).sum() / (n_values - 1)
    return float(1.0 - observed / expected) if expected > 0 else None


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of a table with one row per item and one column per category, each cell the
    number of readers who chose that category; every row must have the same total (the readers).
    ``None`` when undefined (every reader chose one category throughout).

    Written by hand as statsmodels, which has it, is not a dependency. The example is the worked
    example of Fleiss' kappa (10 items, 14 readers, 5 categories; kappa 0.210).

    Example:
        >>> table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        ...          [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
        >>> round(fleiss_kappa(table), 3)
        0.21
    """
    table = np.asarray(counts, dtype=float)
    readers = table.sum(axis=1) if table.ndim == 2 else np.empty(0)
    if len(readers) == 0 or readers[0] < 2 or np.any(readers != readers[0]):
        raise InputError("counts", "needs one or more items, each rated by the same number (two or more) of readers")
    n = readers[0]
    observed = ((table * (table - 1)).sum(axis=1) / (n * (n - 1))).mean()
    shares = table.sum(axis=0) / table.sum()
    chance = (shares ** 2).sum()
    return float((observed - chance) / (1 - chance)) if chance < 1 else None


def weighted_kappa(pairs: np.ndarray, weights: Literal["linear", "quadratic"]) -> np.ndarray:
    """Cohen's weighted kappa of score pairs on the 1-5 scale, from ``pairs[..., 25]``: the counts
    of each (first score, second score) in row-major order (any leading shape: one table per
    bootstrap resample); NaN where undefined (one score throughout). As scikit-learn's
    ``cohen_kappa_score`` with ``labels=[1, …, 5]``, vectorised for the bootstrap.

    Example:
        >>> counts = np.zeros(25); counts[[0, 12, 18, 24]] = 1   # (1, 1), (3, 3), (4, 4), (5, 5)
        >>> counts[23] += 1                                       # (5, 4)
        >>> round(float(weighted_kappa(counts, "quadratic")), 4)
        0.9515
    """
    table = np.asarray(pairs, dtype=float).reshape(*np.shape(pairs)[:-1], 5, 5)
    index = np.arange(5)
    distance = np.abs(np.subtract.outer(index, index)).astype(float)
    weight = distance ** 2 if weights == "quadratic" else distance
    total = table.sum(axis=(-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = table.sum(axis=-1)[..., :, None] * table.sum(axis=-2)[..., None, :] / total[..., None, None]
        disagreement = (weight * expected).sum(axis=(-1, -2))
        return np.where(disagreement > 0, 1 - (weight * table).sum(axis=(-1, -2)) / disagreement, np.nan)


def _pair_codes(scores: np.ndarray) -> list[np.ndarray]:
    """Per pair of readers (rows of ``scores[reader, case]``, NaN: not scored), the code
    ``5 * (first - 1) + (second - 1)`` of each case, -1 where one of them did not score it."""
    codes = []
    for first, second in itertools.combinations(scores, 2):
        both = ~np.isnan(first) & ~np.isnan(second)
        codes.append(np.where(both, 5 * (np.nan_to_num(first) - 1) + np.nan_to_num(second) - 1, -1).astype(int))
    return codes


def _kappa_interval(scores: np.ndarray, weights: Literal["linear", "quadratic"], n_bootstrap: int,
                    seed: int) -> tuple[float | None, float | None]:
    """The 2.5-97.5 percentile interval of the mean weighted kappa over pairs of readers
    (``scores[reader, case]``) over resamples of the cases (all readers' scores of a case move
    together); a resample's mean is over the pairs where kappa is defined there."""
    from xmed.metrics.classification import resample_indices

    codes = _pair_codes(scores)
    if not codes or scores.shape[1] == 0:
        return None, None
    draws = resample_indices(scores.shape[1], n_bootstrap, seed).numpy()
    rows = np.arange(n_bootstrap)[:, None] * 25
    kappas = []
    for code in codes:
        drawn = code[draws]
        counts = np.bincount((rows + drawn)[drawn >= 0], minlength=n_bootstrap * 25).reshape(n_bootstrap, 25)
        kappas.append(weighted_kappa(counts, weights))
    stacked = np.stack(kappas)
    defined = ~np.isnan(stacked)
    means = np.nansum(stacked, axis=0)[defined.any(axis=0)] / defined.sum(axis=0)[defined.any(axis=0)]
    if len(means) == 0:
        return None, None
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _weighted_kappa(first: np.ndarray, second: np.ndarray, weights: str) -> float | None:
    """Cohen's kappa with ``weights`` (scikit-learn) of two readers' scores over the cases both
    scored (NaN: not scored); ``None`` when undefined."""
    from sklearn.metrics import cohen_kappa_score

    both = ~np.isnan(first) & ~np.isnan(second)
    first, second = first[both].astype(int), second[both].astype(int)
    if len(np.unique(np.concatenate([first, second]))) < 2:  # one score throughout: kappa is 0 / 0
        return None
    # the labels fix the weights to the 1-5 distances even when a score is never given
    return _number(cohen_kappa_score(first, second, labels=list(SCORE_RANGE), weights=weights))


def reader_agreement(ratings: Sequence[Rating], scale: Scale, method: str | None = None,
                     n_bootstrap: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Agreement between readers on ``scale`` over the cases of one ``method`` (it may be left out
    when the ratings have one method only: pooled over methods, the methods' own difference would
    count as agreement).

    ``statistic`` and ``value``: with two readers, Cohen's kappa with quadratic weights over the
    cases both scored; with three or more, Krippendorff's ordinal alpha, which uses every case
    scored by two or more readers (``n_items``). ``kappa_linear`` and ``kappa_quadratic``: Cohen's
    kappa with linear and quadratic weights (scikit-learn, on the 1-5 scale), with three or more
    readers averaged over the ``n_reader_pairs`` pairs of readers where it is defined. With
    ``n_bootstrap``, ``kappa_linear_ci`` and ``kappa_quadratic_ci``: their 95 % case-bootstrap
    intervals (``[low, high]``; all readers' scores of a case resampled together). An undefined
    value (e.g. no variation) is ``None``.

    Example:
        >>> ratings = [Rating(reader, f"eye{case}", "gradcam", score, None, None)
        ...            for reader, scores in (("r1", [1, 3, 5, 2]), ("r2", [1, 3, 4, 2]))
        ...            for case, score in enumerate(scores)]
        >>> agreement = reader_agreement(ratings, "location")
        >>> agreement["statistic"], agreement["n_items"], agreement["kappa_linear"], agreement["kappa_quadratic"]
        ('cohen_kappa_quadratic', 4, 0.8333333333333334, 0.9285714285714286)
    """
    _check_scale(scale)
    methods = _methods(ratings)
    if method is None and len(methods) != 1:
        raise InputError("method", f"give one of {', '.join(map(repr, methods)) or 'the methods rated'}: pooled "
                                   "over methods, their difference would count as agreement")
    method = methods[0] if method is None else method
    _check_methods(ratings, method)
    table = ScoreTable.from_ratings(ratings, scale, [method])
    scores = table.scores[:, 0, :]
    scored = ~np.isnan(scores)
    result = {"scale": scale, "method": method, "n_readers": len(table.readers), "statistic": None, "value": None,
              "n_items": 0, "kappa_linear": None, "kappa_quadratic": None, "n_reader_pairs": 0,
              "kappa_linear_ci": None, "kappa_quadratic_ci": None}
    kappas = [(_weighted_kappa(first, second, "linear"), _weighted_kappa(first, second, "quadratic"))
              for first, second in itertools.combinations(scores, 2)]
    defined = np.array([pair for pair in kappas if None not in pair])
    if len(defined):
        result.update(kappa_linear=float(defined[:, 0].mean()), kappa_quadratic=float(defined[:, 1].mean()),
                      n_reader_pairs=len(defined))
        if n_bootstrap is not None:
            _check_bootstrap(n_bootstrap)
            result.update({f"kappa_{weights}_ci": list(_kappa_interval(scores, weights, n_bootstrap, seed))
                           for weights in ("linear", "quadratic")})
    if len(table.readers) == 2:
        result.update(statistic="cohen_kappa_quadratic", n_items=int(scored.all(axis=0).sum()),
                      value=result["kappa_quadratic"])
    elif len(table.readers) > 2:
        result.update(statistic="krippendorff_alpha_ordinal", n_items=int((scored.sum(axis=0) >= 2).sum()),
                      value=krippendorff_alpha(scores, "ordinal"))
    return result


def _agree_answers(ratings: Sequence[Rating]) -> dict[tuple[str, str], int]:
    """``{(reader, case): agree}``: the answer repeats on each of the case's panel rows; one case
    answered both ways raises :class:`~xmed.errors.InputError`."""
    answers: dict[tuple[str, str], int] = {}
    for rating in ratings:
        if rating.agree is not None and answers.setdefault((rating.reader, rating.case), rating.agree) != rating.agree:
            raise InputError("agree", f"reader {rating.reader!r} answered both 0 and 1 on case {rating.case!r}")
    return answers


def agree_agreement(ratings: Sequence[Rating]) -> dict[str, Any]:
    """The readers' answers to "do you agree with the model's decision?", counted once per reader and
    case: their number, the share of yes, and Fleiss' kappa between the readers over the cases all
    of them answered (``None`` with fewer than two readers, or when undefined).

    Example:
        >>> ratings = [Rating(reader, f"eye{case}", method, 3, None, answer)
        ...            for reader, answers in (("r1", [1, 1, 0, 1]), ("r2", [1, 0, 0, 1]))
        ...            for case, answer in enumerate(answers) for method in ("gradcam", "adversarial")]
        >>> result = agree_agreement(ratings)
        >>> result["n_answers"], result["share"], result["n_cases"], round(result["fleiss_kappa"], 3)
        (8, 0.625, 4, 0.467)
    """
    answers = _agree_answers(ratings)
    readers = sorted({reader for reader, _ in answers})
    by_case = defaultdict(list)
    for (_, case), answer in answers.items():
        by_case[case].append(answer)
    complete = [[answers.count(0), answers.count(1)] for answers in by_case.values() if len(answers) == len(readers)]
    return {"n_readers": len(readers), "n_answers": len(answers),
            "share": float(np.mean(list(answers.values()))) if answers else None, "n_cases": len(complete),
            "fleiss_kappa": fleiss_kappa(complete) if complete and len(readers) >= 2 else None}


def decision_agreement(ratings: Sequence[Rating], decisions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """How often readers agree with the model's decision, each answer counted once per reader and
    case: overall, per reader and, given ``decisions`` (``{case: decision}``), per decision.
    Each entry is ``{"n": answers, "share": share of yes}`` (``share`` None without answers).

    Example:
        >>> ratings = [Rating(reader, f"eye{case}", method, None, None, answer)
        ...            for reader, answers in (("r1", [1, 1, 0, 1]), ("r2", [1, 0, 0, 0]))
        ...            for case, answer in enumerate(answers) for method in ("gradcam", "adversarial")]
        >>> result = decision_agreement(ratings, {"eye0": "referable", "eye1": "referable", "eye2": "not", "eye3": "not"})
        >>> result["overall"], result["readers"]["r2"]["share"], result["by_decision"]["not"]
        ({'n': 8, 'share': 0.5}, 0.25, {'n': 4, 'share': 0.25})
    """
    answers = _agree_answers(ratings)

    def share(keys: Iterable[tuple[str, str]]) -> dict[str, Any]:
        values = [answers[key] for key in keys]
        return {"n": len(values), "share": float(np.mean(values)) if values else None}

    readers = sorted({reader for reader, _ in answers})
    result = {"overall": share(answers), "readers": {r: share(k for k in answers if k[0] == r) for r in readers}}
    if decisions is not None:
        result["by_decision"] = {decision: share(k for k in answers if decisions.get(k[1]) == decision)
                                 for decision in sorted(set(decisions.values()))}
    return result


def flagged_cases(ratings: Sequence[Rating], score_margin: int = SCORE_MARGIN,
                  disagree_share: float = DISAGREE_SHARE) -> list[dict[str, Any]]:
    """The cases to look at again: where readers disagree with each other — two readers' scores of
    one method ``score_margin`` points or more apart, or readers answering both yes and no to
    "do you agree with the model's decision?" — or with the model (``disagree_share`` or more of
    the answers no). Each: ``{"case", "reasons": [str, …]}``, in case order.

    Example:
        >>> ratings = [Rating("r1", "eye1", "gradcam", 1, 3, 0), Rating("r2", "eye1", "gradcam", 4, 3, 0),
        ...            Rating("r1", "eye2", "gradcam", 3, 3, 1), Rating("r2", "eye2", "gradcam", 4, 4, 0)]
        >>> for flagged in flagged_cases(ratings):
        ...     print(flagged["case"], "|", "; ".join(flagged["reasons"]))
        eye1 | gradcam location scores 1 to 4 (3 points apart); 2 of 2 readers disagree with the model's decision
        eye2 | readers split on the model's decision (1 of 2 agree); 1 of 2 readers disagree with the model's decision
    """
    scores: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for rating in ratings:
        for scale in SCALES:
            if getattr(rating, scale) is not None:
                scores[rating.case, rating.method, scale].append(getattr(rating, scale))
    reasons: dict[str, list[str]] = defaultdict(list)
    for (case, method, scale), given in sorted(scores.items()):
        if max(given) - min(given) >= score_margin:
            reasons[case].append(f"{method} {scale} scores {min(given)} to {max(given)} "
                                 f"({max(given) - min(given)} points apart)")
    by_case: dict[str, list[int]] = defaultdict(list)
    for (_, case), answer in sorted(_agree_answers(ratings).items()):
        by_case[case].append(answer)
    for case, answers in sorted(by_case.items()):
        if 0 < sum(answers) < len(answers):
            reasons[case].append(f"readers split on the model's decision ({sum(answers)} of {len(answers)} agree)")
        if answers.count(0) >= disagree_share * len(answers):
            reasons[case].append(f"{answers.count(0)} of {len(answers)} readers disagree with the model's decision")
    return [{"case": case, "reasons": reasons[case]} for case in sorted(reasons)]


# -- breakdowns ----------------------------------------------------------------------------------


def finding_breakdown(ratings: Sequence[Rating], scale: Scale) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean score per method and per finding (ratings without a finding are left out).

    Example:
        >>> ratings = [Rating("r1", "eye1", "gradcam", 2, None, None, "ANRS"),
        ...            Rating("r2", "eye1", "gradcam", 4, None, None, "ANRS"),
        ...            Rating("r1", "eye2", "gradcam", 5, None, None, "RNFLDS")]
        >>> finding_breakdown(ratings, "location")
        {'gradcam': {'ANRS': {'n': 2, 'mean': 3.0}, 'RNFLDS': {'n': 1, 'mean': 5.0}}}
    """
    _check_scale(scale)
    grouped = defaultdict(lambda: defaultdict(list))
    for rating in ratings:
        score = getattr(rating, scale)
        if rating.finding is not None and score is not None:
            grouped[rating.method][rating.finding].append(score)
    return {method: {finding: {"n": len(scores), "mean": float(np.mean(scores))}
                     for finding, scores in sorted(by_finding.items())}
            for method, by_finding in sorted(grouped.items())}


def automatic_vs_readers(ratings: Sequence[Rating], automatic: Mapping[tuple[str, str], Mapping[str, float]],
                         scale: Scale) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and automatic score, Spearman's rank correlation (scipy) across cases between the
    readers' mean score and the automatic score, over the cases that have both (finite).

    ``automatic`` maps ``(case, method)`` to named scores, e.g. ``{"energy_in_truth": 0.7}``.
    ``rho`` is ``None`` for fewer than 3 cases or a constant column.

    Example:
        >>> ratings = [Rating("r1", f"eye{case}", "gradcam", score, None, None)
        ...            for case, score in enumerate([1, 2, 4, 5])]
        >>> automatic = {(f"eye{case}", "gradcam"): {"energy_in_truth": energy}
        ...              for case, energy in enumerate([0.1, 0.3, 0.2, 0.9])}
        >>> result = automatic_vs_readers(ratings, automatic, "location")["gradcam"]["energy_in_truth"]
        >>> result["n"], round(result["rho"], 3)
        (4, 0.8)
    """
    from scipy.stats import spearmanr

    _check_scale(scale)
    result = {}
    for method in _methods(ratings):
        means = _case_means(ratings, method, scale)
        names = sorted({name for (case, own), scores in automatic.items() if own == method for name in scores})
        result[method] = {}
        for name in names:
            pairs = [(means[case], float(scores[name])) for (case, own), scores in automatic.items()
                     if own == method and case in means and name in scores
                     and scores[name] is not None and math.isfinite(float(scores[name]))]
            entry = {"n": len(pairs), "rho": None, "p_value": None}
            reader_means, values = zip(*pairs) if pairs else ((), ())
            if len(pairs) >= 3 and len(set(reader_means)) > 1 and len(set(values)) > 1:
                test = spearmanr(reader_means, values)
                entry.update(rho=_number(test.statistic), p_value=_number(test.pvalue))
            result[method][name] = entry
    return result


# -- report --------------------------------------------------------------------------------------


def analyse(ratings: Sequence[Rating], automatic: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
            n_bootstrap: int = 2000, seed: int = 0, decisions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The whole reader study as one JSON-ready dict: every number finite or ``None``, never NaN.

    Keys: ``n_ratings``, ``readers``, ``methods``, ``n_cases``, ``scores`` (:func:`method_scores`),
    ``comparisons`` (:func:`compare_methods`, the readers fixed, for every pair of methods and both
    scales, each with ``p_holm``: its p-value Holm-corrected over them all, as ``multiple_comparisons``
    says), ``mrmc`` (per scale, :func:`mrmc_analysis`, the readers random), ``agreement`` (per
    scale and method :func:`reader_agreement` with the kappas' bootstrap intervals; under ``agree``,
    :func:`agree_agreement`), ``decision`` (:func:`decision_agreement`, per decision given
    ``decisions``, ``{case: decision}``), ``flagged`` (:func:`flagged_cases`), ``findings`` and
    ``automatic`` (per scale; ``automatic`` is ``None`` without automatic scores).

    Example:
        >>> import json
        >>> ratings = [Rating(reader, f"eye{case}", method, 3, None, 1)
        ...            for reader in ("r1", "r2") for case in range(3) for method in ("a", "b")]
        >>> report = analyse(ratings, n_bootstrap=100)
        >>> report["methods"], report["comparisons"][0]["p_value"], report["agreement"]["rationale"]["a"]["value"]
        (['a', 'b'], 1.0, None)
        >>> report["comparisons"][0]["p_holm"], report["decision"]["overall"], report["flagged"]
        (1.0, {'n': 6, 'share': 1.0}, [])
        >>> report["comparisons"][0]["analysis"].split(":")[0], report["mrmc"]["location"]["analysis"].split(":")[0]
        ('fixed readers', 'random readers')
        >>> len(json.dumps(report, allow_nan=False)) > 0
        True
    """
    from xmed.metrics.paired import holm

    _check_bootstrap(n_bootstrap)
    ratings = list(ratings)
    methods = _methods(ratings)
    comparisons = [compare_methods(ratings, a, b, scale, n_bootstrap=n_bootstrap, seed=seed)
                   for a, b in itertools.combinations(methods, 2) for scale in SCALES]
    for comparison, adjusted in zip(comparisons, holm([c["p_value"] for c in comparisons])):
        comparison["p_holm"] = adjusted
    report = {
        "n_ratings": len(ratings),
        "readers": sorted({rating.reader for rating in ratings}),
        "methods": methods,
        "n_cases": len({rating.case for rating in ratings}),
        "scores": method_scores(ratings, n_bootstrap=n_bootstrap, seed=seed),
        "comparisons": comparisons,
        "multiple_comparisons": HOLM_FAMILY,
        "mrmc": {scale: mrmc_analysis(ratings, scale) for scale in SCALES},
        "agreement": {**{scale: {method: reader_agreement(ratings, scale, method, n_bootstrap, seed)
                                 for method in methods} for scale in SCALES},
                      "agree": agree_agreement(ratings)},
        "decision": decision_agreement(ratings, decisions),
        "flagged": flagged_cases(ratings),
        "findings": {scale: finding_breakdown(ratings, scale) for scale in SCALES},
        "automatic": None if automatic is None
        else {scale: automatic_vs_readers(ratings, automatic, scale) for scale in SCALES},
    }
    return _json_ready(report)


def plot_scores(ratings: Sequence[Rating], path: str | os.PathLike) -> Path:
    """Bar chart of the score distribution (share of ratings at 1..5) per method, one panel per scale;
    written as an image at ``path`` (parent folders are created).

    Example:
        >>> import tempfile
        >>> ratings = [Rating("r1", f"eye{case}", "gradcam", case % 5 + 1, 3, 1) for case in range(10)]
        >>> plot_scores(ratings, Path(tempfile.mkdtemp()) / "scores.png").stat().st_size > 0
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = _methods(ratings)
    figure = Figure(figsize=(5 * len(SCALES), 3.5), dpi=100)
    FigureCanvasAgg(figure)
    width = 0.8 / max(len(methods), 1)
    for panel, scale in enumerate(SCALES):
        axes = figure.add_subplot(1, len(SCALES), panel + 1)
        for index, method in enumerate(methods):
            scores = [getattr(r, scale) for r in ratings if r.method == method and getattr(r, scale) is not None]
            shares = [scores.count(score) / len(scores) if scores else 0.0 for score in SCORE_RANGE]
            offsets = [score - 0.4 + width * (index + 0.5) for score in SCORE_RANGE]
            axes.bar(offsets, shares, width=width, label=f"{method} (n={len(scores)})")
        axes.set_xticks(list(SCORE_RANGE))
        axes.set_xlabel(f"{scale} score")
        axes.set_ylabel("share of ratings")
        axes.set_title(f"{scale} explainability")
        axes.legend(fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, bbox_inches="tight")
    finally:
        figure.clear()
    return path
