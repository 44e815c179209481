"""Reader-study analysis of a clinician review of explanations.

Readers rate, per eye (case) and per explanation method, *location* explainability and *rationale*
explainability on a 1-5 scale, and whether they agree with the model's decision (``agree``, 0/1).
This module reads those ratings and computes, per method, mean scores with case-bootstrap
intervals; paired Wilcoxon signed-rank comparisons of methods; agreement between readers
(weighted Cohen's kappa, Krippendorff's alpha, Fleiss' kappa); per-finding breakdowns; and the
rank correlation between readers' scores and automatic explanation metrics.

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

from xmed.errors import InputError

__all__ = [
    "SCALES", "Rating", "read_ratings", "method_scores", "compare_methods", "reader_agreement",
    "krippendorff_alpha", "fleiss_kappa", "finding_breakdown", "automatic_vs_readers", "analyse",
    "plot_scores",
]

SCALES = ("location", "rationale")
SCORE_RANGE = range(1, 6)
REQUIRED_COLUMNS = ("reader", "case", "method")
Scale = Literal["location", "rationale"]


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
    ``rows[i]``) and the column; so does a (reader, case, method) rated twice.

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
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path} row 1, column {missing[0]!r}", "the header lacks this column")
            located = [(f"{path} row {number}", row) for number, row in enumerate(reader, start=2)]
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


def _cluster_bootstrap_mean(scores_by_case: Sequence[Sequence[int]], n_bootstrap: int,
                            seed: int) -> tuple[float, float]:
    from xmed.metrics.classification import resample_indices  # the resamples every xmed interval uses

    sums = np.array([sum(scores) for scores in scores_by_case], dtype=float)
    counts = np.array([len(scores) for scores in scores_by_case], dtype=float)
    draws = resample_indices(len(sums), n_bootstrap, seed).numpy()
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def method_scores(ratings: Sequence[Rating], n_bootstrap: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Per method and scale: number of scores, mean and 95% case-bootstrap interval; share of ``agree``.

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
            summary = {"n": len(scores), "n_cases": len(by_case), "mean": None, "ci_low": None, "ci_high": None}
            if scores:
                low, high = _cluster_bootstrap_mean(list(by_case.values()), n_bootstrap, seed)
                summary.update(mean=float(np.mean(scores)), ci_low=low, ci_high=high)
            result[method][scale] = summary
        agrees = [rating.agree for rating in own if rating.agree is not None]
        result[method]["agree"] = {"n": len(agrees), "share": float(np.mean(agrees)) if agrees else None}
    return result


def compare_methods(ratings: Sequence[Rating], a: str, b: str, scale: Scale) -> dict[str, Any]:
    """Paired Wilcoxon signed-rank test of method ``a`` against ``b`` on per-case mean scores.

    Each case's score for a method is the mean over its readers; cases scored under both methods
    are the pairs. Zero differences (common with 1-5 scores) use scipy's ``zero_method="pratt"``:
    they take part in the ranking and are then dropped, which is more conservative than discarding
    them first (``"wilcox"``). ``median_difference`` is the median of ``a - b``. When every
    difference is zero the test is not run: statistic 0 and p-value 1.

    Example:
        >>> ratings = [Rating("r1", f"eye{case}", method, score, None, None)
        ...            for case in range(6) for method, score in (("adversarial", 4), ("gradcam", 2))]
        >>> compare_methods(ratings, "adversarial", "gradcam", "location")
        {'a': 'adversarial', 'b': 'gradcam', 'scale': 'location', 'n_pairs': 6, 'statistic': 0.0, 'p_value': 0.03125, 'median_difference': 2.0}
    """
    from scipy.stats import wilcoxon

    _check_scale(scale)
    means_a, means_b = _case_means(ratings, a, scale), _case_means(ratings, b, scale)
    cases = sorted(means_a.keys() & means_b.keys())
    differences = np.array([means_a[case] - means_b[case] for case in cases])
    result = {"a": a, "b": b, "scale": scale, "n_pairs": len(cases), "statistic": None, "p_value": None,
              "median_difference": None}
    if not cases:
        return result
    result["median_difference"] = float(np.median(differences))
    if np.all(differences == 0):
        result.update(statistic=0.0, p_value=1.0)
    else:
        test = wilcoxon(differences, zero_method="pratt")
        result.update(statistic=_number(test.statistic), p_value=_number(test.pvalue))
    return result


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
    readers = table.sum(axis=1)
    if len(table) == 0 or readers[0] < 2 or np.any(readers != readers[0]):
        raise InputError("counts", "needs items each rated by the same number (two or more) of readers")
    n = readers[0]
    observed = ((table * (table - 1)).sum(axis=1) / (n * (n - 1))).mean()
    shares = table.sum(axis=0) / table.sum()
    chance = (shares ** 2).sum()
    return float((observed - chance) / (1 - chance)) if chance < 1 else None


def reader_agreement(ratings: Sequence[Rating], scale: Scale) -> dict[str, Any]:
    """Agreement between readers on ``scale`` over the items (case, method) they rated, and on ``agree``.

    Two readers: Cohen's kappa with quadratic weights (scikit-learn) on the items both scored.
    Three or more: Krippendorff's ordinal alpha, which uses every item scored by two or more
    readers. ``agree``: Fleiss' kappa on the items every reader answered. A value that is undefined
    (e.g. no variation) is ``None``.

    Example:
        >>> ratings = [Rating(reader, f"eye{case}", "gradcam", score, None, int(score > 2))
        ...            for reader in ("r1", "r2") for case, score in enumerate([1, 3, 5, 2])]
        >>> reader_agreement(ratings, "location")
        {'scale': 'location', 'n_readers': 2, 'statistic': 'cohen_kappa_quadratic', 'value': 1.0, 'n_items': 4, 'agree_fleiss_kappa': 1.0, 'n_agree_items': 4}
    """
    _check_scale(scale)
    readers = sorted({rating.reader for rating in ratings})
    items = sorted({(rating.case, rating.method) for rating in ratings})
    scores = {(rating.reader, rating.case, rating.method): getattr(rating, scale) for rating in ratings}
    table = [[scores.get((reader, *item)) for item in items] for reader in readers]
    result = {"scale": scale, "n_readers": len(readers), "statistic": None, "value": None, "n_items": 0}
    if len(readers) == 2:
        from sklearn.metrics import cohen_kappa_score

        pairs = [(first, second) for first, second in zip(*table) if first is not None and second is not None]
        result.update(statistic="cohen_kappa_quadratic", n_items=len(pairs))
        if len({score for pair in pairs for score in pair}) > 1:  # else kappa is 0 / 0
            first, second = zip(*pairs)
            # the labels fix the weights to the 1-5 distances even when a score is never given
            value = cohen_kappa_score(first, second, labels=list(SCORE_RANGE), weights="quadratic")
            result["value"] = _number(value)
    elif len(readers) > 2:
        result.update(statistic="krippendorff_alpha_ordinal",
                      n_items=sum(sum(score is not None for score in column) >= 2 for column in zip(*table)),
                      value=krippendorff_alpha(table, "ordinal"))
    agrees = {(rating.reader, rating.case, rating.method): rating.agree for rating in ratings}
    answered = [[agrees.get((reader, *item)) for reader in readers] for item in items]
    complete = [[column.count(0), column.count(1)] for column in answered if None not in column]
    result["agree_fleiss_kappa"] = fleiss_kappa(complete) if complete and len(readers) >= 2 else None
    result["n_agree_items"] = len(complete)
    return result


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
            n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The whole reader study as one JSON-ready dict: every number finite or ``None``, never NaN.

    Keys: ``n_ratings``, ``readers``, ``methods``, ``n_cases``, ``scores`` (:func:`method_scores`),
    ``comparisons`` (:func:`compare_methods` for every pair of methods and both scales),
    ``agreement``, ``findings`` and ``automatic`` (per scale; ``automatic`` is ``None`` without
    automatic scores).

    Example:
        >>> import json
        >>> ratings = [Rating(reader, f"eye{case}", method, 3, None, 1)
        ...            for reader in ("r1", "r2") for case in range(3) for method in ("a", "b")]
        >>> report = analyse(ratings, n_bootstrap=100)
        >>> report["methods"], report["comparisons"][0]["p_value"], report["agreement"]["rationale"]["value"]
        (['a', 'b'], 1.0, None)
        >>> len(json.dumps(report, allow_nan=False)) > 0
        True
    """
    ratings = list(ratings)
    methods = _methods(ratings)
    report = {
        "n_ratings": len(ratings),
        "readers": sorted({rating.reader for rating in ratings}),
        "methods": methods,
        "n_cases": len({rating.case for rating in ratings}),
        "scores": method_scores(ratings, n_bootstrap=n_bootstrap, seed=seed),
        "comparisons": [compare_methods(ratings, a, b, scale)
                        for a, b in itertools.combinations(methods, 2) for scale in SCALES],
        "agreement": {scale: reader_agreement(ratings, scale) for scale in SCALES},
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
