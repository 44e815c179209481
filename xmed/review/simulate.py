"""Simulated readers of a review session, and the power of a planned reader study.

A simulated reader scores a panel ``round(quality + bias + preference + noise)`` clipped to 1-5:
``quality`` is the case's latent quality under the method (from the panel's automatic score, or
drawn), ``bias`` the reader's leniency (negative: strict), ``preference`` their liking for the
method, ``noise`` their inconsistency (normal, drawn per score); they may leave a method's scores
blank at random. They agree with the model's decision when the case's explanations, as they see
them, average 3 or more. They rate a session through :class:`~xmed.review.store.RatingStore`, as
the review page saves ratings (:func:`rate_session`), or give
:class:`~xmed.review.analysis.Rating` objects (:func:`simulate_ratings`).

:func:`power` is a power calculator: for a :class:`StudyPlan` (cases, readers, the smallest
difference worth finding, the noise levels) it simulates many studies, with readers drawn anew for
each, and runs both analyses of :mod:`xmed.review.analysis` on each: the share of studies in which
each finds the difference (its type I error when there is none), and how often the random-readers
interval covers the true difference (:func:`true_difference`).

Example:
    >>> readers = [SimulatedReader("strict", bias=-0.5), SimulatedReader("lenient", bias=0.5)]
    >>> ratings = simulate_ratings(readers, {"gradcam": [2.0, 4.5], "adversarial": [3.0, 3.0]}, seed=1)
    >>> [(r.reader, r.case, r.method, r.location) for r in ratings][:2]
    [('strict', 'case-001', 'adversarial', 3), ('strict', 'case-001', 'gradcam', 2)]
    >>> result = power(StudyPlan(n_cases=100, n_readers=3, difference=0.5), n_studies=20)
    >>> result["fixed_readers"]["power"], result["random_readers"]["power"]
    (1.0, 0.35)
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from xmed.errors import InputError
from xmed.review.analysis import FIXED_READERS, RANDOM_READERS, SCALES, Rating, ScoreTable, mrmc, paired_comparison

if TYPE_CHECKING:
    from xmed.review.store import RatingStore

__all__ = ["SimulatedReader", "StudyPlan", "simulate_ratings", "rate_session", "draw_study", "expected_score",
           "true_difference", "power"]

#: the latent quality of a panel without an automatic score (the middle of the scale)
NEUTRAL_QUALITY = 3.0


@dataclass(frozen=True)
class SimulatedReader:
    """A reader who scores ``round(quality + bias + preference[method] + noise)``, clipped to 1-5,
    with ``noise`` normal of standard deviation ``noise``, and leaves a score of ``method`` blank
    with chance ``blank[method]``.

    Example:
        >>> SimulatedReader("strict", bias=-0.8, blank={"gradcam": 0.3}).blank["gradcam"]
        0.3
    """

    name: str
    bias: float = 0.0
    noise: float = 0.5
    preference: Mapping[str, float] = field(default_factory=dict)
    blank: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyPlan:
    """A planned reader study, on the latent scale of :class:`SimulatedReader` (1-5 score points).

    ``n_methods`` methods named A, B, …: A's mean latent quality is ``difference`` above B's, B's
    above C's, and so on down to ``mean``. Each study draws its ``n_cases`` cases (a case's quality
    under a method is normal around the method's mean with spread ``case_sd``; its qualities under
    two methods correlate by ``case_correlation``) and, unless ``readers`` fixes them for every
    study, its ``n_readers`` readers: a bias of spread ``reader_sd``, a preference for each method
    of spread ``preference_sd`` (the reader x method interaction), noise ``noise``, each score left
    blank with chance ``blank``.

    Example:
        >>> StudyPlan(n_methods=3, difference=0.5).methods, StudyPlan(n_methods=3, difference=0.5).means().tolist()
        (('A', 'B', 'C'), [4.0, 3.5, 3.0])
    """

    n_cases: int = 400
    n_readers: int = 3
    difference: float = 0.25
    n_methods: int = 2
    mean: float = 3.0
    case_sd: float = 0.8
    case_correlation: float = 0.6
    reader_sd: float = 0.4
    preference_sd: float = 0.15
    noise: float = 0.7
    blank: float = 0.0
    readers: tuple[SimulatedReader, ...] = ()

    def __post_init__(self):
        for name, low, high in (("n_cases", 2, None), ("n_readers", 1, None), ("n_methods", 2, 26)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= (high or value):
                limits = f"from {low} to {high}" if high else f"of {low} or more"
                raise InputError(name, f"must be an integer {limits}, got {value!r}")
        for name in ("case_sd", "reader_sd", "preference_sd", "noise"):
            if not getattr(self, name) >= 0:
                raise InputError(name, f"must be 0 or more, got {getattr(self, name)!r}")
        if not 0 <= self.case_correlation <= 1 or not 0 <= self.blank < 1:
            raise InputError("case_correlation" if not 0 <= self.case_correlation <= 1 else "blank",
                             "must be in [0, 1] (blank: below 1)")

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(chr(ord("A") + index) for index in range(self.n_methods))

    def means(self) -> np.ndarray:
        """Each method's mean latent quality."""
        return self.mean + self.difference * np.arange(self.n_methods - 1, -1, -1, dtype=float)


# -- scoring -------------------------------------------------------------------------------------


def _reader_arrays(readers: Sequence[SimulatedReader], methods: Sequence[str]) -> tuple[np.ndarray, ...]:
    """``bias[reader]``, ``preference[reader, method]``, ``noise[reader]``, ``blank[reader, method]``."""
    return (np.array([reader.bias for reader in readers], dtype=float),
            np.array([[reader.preference.get(method, 0.0) for method in methods] for reader in readers], dtype=float),
            np.array([reader.noise for reader in readers], dtype=float),
            np.array([[reader.blank.get(method, 0.0) for method in methods] for reader in readers], dtype=float))


def _scores(latent: np.ndarray, noise: np.ndarray, blank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scores 1-5 of ``latent[reader, method, case]`` plus each reader's noise; NaN where left blank."""
    scores = np.clip(np.round(latent + rng.standard_normal(latent.shape) * noise[:, None, None]), 1, 5)
    scores[rng.random(latent.shape) < blank[:, :, None]] = np.nan
    return scores


def simulate_ratings(readers: Sequence[SimulatedReader], quality: Mapping[str, Sequence[float]], seed: int = 0,
                     cases: Sequence[str] | None = None) -> list[Rating]:
    """The ratings ``readers`` give: ``quality[method]`` is each case's latent quality under the
    method (cases named ``case-001``, … unless ``cases`` names them). Location and rationale are
    scored independently from the same quality; a panel with both scores blank gives no rating.

    Example:
        >>> ratings = simulate_ratings([SimulatedReader("ana", noise=0.0)], {"gradcam": [1.2, 4.8]})
        >>> [(r.case, r.location, r.rationale, r.agree) for r in ratings]
        [('case-001', 1, 1, 0), ('case-002', 5, 5, 1)]
    """
    methods = sorted(quality)
    values = np.array([quality[method] for method in methods], dtype=float)
    cases = [f"case-{index + 1:03d}" for index in range(values.shape[1])] if cases is None else list(cases)
    if len(cases) != values.shape[1]:
        raise InputError("cases", f"names {len(cases)} cases for qualities of {values.shape[1]}")
    rng = np.random.default_rng(seed)
    bias, preference, noise, blank = _reader_arrays(readers, methods)
    latent = values[None] + bias[:, None, None] + preference[:, :, None]
    location, rationale = (_scores(latent, noise, blank, rng) for _ in SCALES)
    agree = latent.mean(axis=1) + rng.standard_normal(latent[:, 0].shape) * noise[:, None] >= NEUTRAL_QUALITY
    return [Rating(reader.name, case, method, *(None if math.isnan(s[j, i, k]) else int(s[j, i, k])
                                                  for s in (location, rationale)), int(agree[j, k]))
            for j, reader in enumerate(readers) for k, case in enumerate(cases) for i, method in enumerate(methods)
            if not (math.isnan(location[j, i, k]) and math.isnan(rationale[j, i, k]))]


def _panel_letters(session: Mapping[str, Any], reader: str, case: Mapping[str, Any]) -> dict[str, str]:
    """``{method: letter}`` of the case's panels as the page shows them to ``reader``."""
    from xmed.review.session import panel_labels

    if session["mode"] == "blinded":
        labels = panel_labels(list(case["panels"]), session["seed"], reader, case["id"])
    else:
        labels = dict(zip((chr(ord("A") + i) for i in range(26)),
                          [m["name"] for m in session["methods"] if m["name"] in case["panels"]]))
    return {method: letter for letter, method in labels.items()}


def rate_session(session_dir: str | os.PathLike, readers: Sequence[SimulatedReader], seed: int = 0,
                 quality: Mapping[tuple[str, str], float] | None = None) -> RatingStore:
    """Let ``readers`` rate every panel and case of a session, saving through its
    :class:`~xmed.review.store.RatingStore` as the review page does (readers not yet registered
    are added). ``quality[(case, method)]`` is a panel's latent quality; by default
    ``1 + 4 * automatic score`` (:func:`xmed.review.study.automatic_scores`), or 3 for a panel
    without one. Returns the store.

    Example:
        >>> import tempfile
        >>> from xmed.review.synthetic import synthetic_session
        >>> folder = synthetic_session(tempfile.mkdtemp(), n_cases=2, size=64)
        >>> store = rate_session(folder, [SimulatedReader("ana"), SimulatedReader("ben", bias=-1)])
        >>> store.readers(), len(store.rows())
        (['ana', 'ben'], 8)
    """
    from xmed.review.session import load_session
    from xmed.review.store import STORE_FILE, RatingStore
    from xmed.review.study import automatic_scores

    session = load_session(session_dir)
    if quality is None:
        quality = {key: 1 + 4 * scores["automatic"] for key, scores in automatic_scores(session).items()}
    cases = {case["id"]: case for case in session["cases"]}
    methods = [method["name"] for method in session["methods"]]
    ratings = simulate_ratings(readers, {method: [quality.get((case, method), NEUTRAL_QUALITY) for case in cases]
                                         for method in methods}, seed=seed, cases=list(cases))
    store = RatingStore(Path(session_dir) / STORE_FILE)
    for name in sorted({reader.name for reader in readers} - set(store.readers())):
        store.add_reader(name)
    answered = set()
    for rating in ratings:
        case = cases[rating.case]
        if rating.method not in case["panels"]:
            continue
        scores = {scale: getattr(rating, scale) for scale in SCALES if getattr(rating, scale) is not None}
        store.save_panel_rating(rating.reader, rating.case, rating.method, mode=session["mode"],
                                panel=_panel_letters(session, rating.reader, case)[rating.method], **scores)
        if (rating.reader, rating.case) not in answered:
            answered.add((rating.reader, rating.case))
            store.save_case_rating(rating.reader, rating.case, agree=rating.agree)
    return store


# -- planned studies -----------------------------------------------------------------------------


def draw_study(plan: StudyPlan, rng: np.random.Generator) -> ScoreTable:
    """One simulated study of ``plan`` on one scale: its cases and, unless the plan fixes them, its
    readers drawn anew.

    Example:
        >>> table = draw_study(StudyPlan(n_cases=5, n_readers=2), np.random.default_rng(0))
        >>> table.readers, table.methods, table.scores.shape
        (('reader-1', 'reader-2'), ('A', 'B'), (2, 2, 5))
    """
    shape = (plan.n_methods, plan.n_cases)
    # a shared part and a part of each method's own make two methods' qualities correlate as planned
    shared, own = rng.standard_normal(plan.n_cases), rng.standard_normal(shape)
    quality = plan.means()[:, None] + plan.case_sd * (math.sqrt(plan.case_correlation) * shared
                                                      + math.sqrt(1 - plan.case_correlation) * own)
    if plan.readers:
        names = tuple(reader.name for reader in plan.readers)
        bias, preference, noise, blank = _reader_arrays(plan.readers, plan.methods)
    else:
        names = tuple(f"reader-{index + 1}" for index in range(plan.n_readers))
        bias = plan.reader_sd * rng.standard_normal(plan.n_readers)
        preference = plan.preference_sd * rng.standard_normal((plan.n_readers, plan.n_methods))
        noise, blank = np.full(plan.n_readers, plan.noise), np.full((plan.n_readers, plan.n_methods), plan.blank)
    latent = quality[None] + bias[:, None, None] + preference[:, :, None]
    return ScoreTable(names, plan.methods, tuple(map(str, range(plan.n_cases))), _scores(latent, noise, blank, rng))


def expected_score(mean: float, sd: float) -> float:
    """The expected 1-5 score of a latent value normal with ``mean`` and ``sd``:
    ``1 + sum_k P(latent >= k + 0.5)`` for k = 1..4 (the rounding thresholds).

    Example:
        >>> expected_score(3.0, 1.0), round(expected_score(3.5, 1.0), 4)
        (3.0, 3.4772)
    """
    from scipy.stats import norm

    if sd == 0:
        return float(np.clip(np.round(mean), 1, 5))
    return 1 + float(norm.sf((np.arange(1, 5) + 0.5 - mean) / sd).sum())


def true_difference(plan: StudyPlan) -> float:
    """The expected difference of the mean scores of methods A and B over the plan's readers (over
    all readers like them when drawn anew) and cases: the estimand of both analyses.

    Example:
        >>> round(true_difference(StudyPlan(difference=0.25)), 4)
        0.2316
    """
    means = plan.means()[:2]
    if not plan.readers:
        sd = math.sqrt(plan.case_sd ** 2 + plan.reader_sd ** 2 + plan.preference_sd ** 2 + plan.noise ** 2)
        return expected_score(means[0], sd) - expected_score(means[1], sd)
    bias, preference, noise, _ = _reader_arrays(plan.readers, plan.methods[:2])
    return float(np.mean([expected_score(means[0] + b + p[0], math.hypot(plan.case_sd, n))
                          - expected_score(means[1] + b + p[1], math.hypot(plan.case_sd, n))
                          for b, p, n in zip(bias, preference, noise)]))


def _share(hits: Sequence[bool]) -> dict[str, float]:
    """The share of ``hits`` and its binomial standard error."""
    share = float(np.mean(hits))
    return {"share": share, "se": math.sqrt(share * (1 - share) / len(hits))}


def power(plan: StudyPlan, n_studies: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """The power of both analyses of method A against B for a planned study, by simulating
    ``n_studies`` studies (seeded: the same numbers for the same arguments).

    ``fixed_readers``: the case-level Wilcoxon test (:func:`~xmed.review.analysis.paired_comparison`);
    ``random_readers``: the Obuchowski-Rockette analysis (:func:`~xmed.review.analysis.mrmc`) with
    its ``1 - alpha`` interval's ``coverage`` of :func:`true_difference` and mean ``ci_width``.
    ``power`` is the share of studies with p < ``alpha`` (the type I error when the plan's
    difference is 0), each share with its binomial standard error (``*_se``).

    Example:
        >>> result = power(StudyPlan(n_cases=60, difference=0.0), n_studies=40, seed=1)
        >>> result["true_difference"], result["fixed_readers"]["power"] <= 0.2
        (0.0, True)
    """
    if isinstance(n_studies, bool) or not isinstance(n_studies, int) or n_studies < 1:
        raise InputError("n_studies", f"must be an integer of 1 or more, got {n_studies!r}")
    rng = np.random.default_rng(seed)
    truth = true_difference(plan)
    a, b = plan.methods[:2]
    fixed, random, covered, widths = [], [], [], []
    for _ in range(n_studies):
        table = draw_study(plan, rng)
        wilcoxon = paired_comparison(table, a, b, n_bootstrap=None)
        pair = mrmc(table, level=1 - alpha)["differences"]
        pair = pair[0] if pair else {}  # A against B comes first
        fixed.append(wilcoxon["p_value"] is not None and wilcoxon["p_value"] < alpha)
        random.append(pair.get("p_value") is not None and pair["p_value"] < alpha)
        defined = pair.get("ci_low") is not None
        covered.append(defined and pair["ci_low"] <= truth <= pair["ci_high"])
        if defined:
            widths.append(pair["ci_high"] - pair["ci_low"])
    fixed_share, random_share, coverage = _share(fixed), _share(random), _share(covered)
    return {"plan": dataclasses.asdict(plan), "n_studies": n_studies, "alpha": alpha, "true_difference": truth,
            "fixed_readers": {"analysis": FIXED_READERS, "power": fixed_share["share"], "power_se": fixed_share["se"]},
            "random_readers": {"analysis": RANDOM_READERS, "power": random_share["share"],
                               "power_se": random_share["se"], "coverage": coverage["share"],
                               "coverage_se": coverage["se"],
                               "ci_width": float(np.mean(widths)) if widths else None}}
