"""Reader-study statistics on thousands of simulated studies: the type I error and coverage of
both analyses, and the power of a 400-eye, 3-specialist study.

Studies are drawn by :mod:`xmed.review.simulate` (a case's latent quality per method, readers with
a bias, a preference for a method and noise, scores rounded to 1-5) and analysed by
:mod:`xmed.review.analysis`. The case-level Wilcoxon test (readers fixed) is run on three fixed
readers, one strict and leaving 30 % of method B's scores blank, against the same test on case
means over whoever scored each method (the pairing the analysis used before). The
Obuchowski-Rockette analysis (readers random) is run with readers drawn anew for every study; its
95 % interval is set against the fixed-readers case-bootstrap interval of the same mean
difference, both judged on the true difference over all readers like them. A rate from S studies
is within 3 binomial standard errors of its target, or the band the goal names when that is
wider (full runs: 10000 studies, standard error 0.0022 at 5 %).
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.timing import Context, Goal, Part

ALPHA = 0.05
LEVEL_BAND = (0.035, 0.065)
COVERAGE_BAND = (0.93, 0.97)


def band(target: float, wanted: tuple[float, float], n: int) -> tuple[float, float]:
    """``wanted``, widened to 3 binomial standard errors around ``target`` when ``n`` studies are too
    few to judge it (a quick run).

    Example:
        >>> band(0.05, (0.035, 0.065), 4000), band(0.05, (0.035, 0.065), 100)
        ((0.035, 0.065), (0.0, 0.1154))
    """
    spread = 3 * math.sqrt(target * (1 - target) / n)
    return max(0.0, round(min(wanted[0], target - spread), 4)), min(1.0, round(max(wanted[1], target + spread), 4))


def check_rate(part: Part, name: str, value: float, target: float, wanted: tuple[float, float], n: int) -> None:
    low, high = band(target, wanted, n)
    part.check(name, round(value, 4), f"{low:g}-{high:g} ({n} studies)", low <= value <= high)


def unmatched_rejects(table) -> bool:
    """The case-level test on case means over whoever scored each method (not matched by reader)."""
    from scipy.stats import wilcoxon

    differences = np.nanmean(table.method("A"), axis=0) - np.nanmean(table.method("B"), axis=0)
    differences = differences[~np.isnan(differences)]
    return bool(np.any(differences)) and wilcoxon(differences, zero_method="pratt").pvalue < ALPHA


def run(part: Part, ctx: Context) -> None:
    from xmed.review.analysis import mrmc, paired_comparison
    from xmed.review.simulate import SimulatedReader, StudyPlan, draw_study, power, true_difference

    n, n_small = ctx.size(200, 10000), ctx.size(100, 2000)
    cases = ctx.size(100, 200)
    part.settings.update({"studies": f"{n} per rate ({n_small} for power and ordering)", "cases": cases,
                          "planned study": "400 eyes, 3 readers drawn anew, latent difference 0.25",
                          "noise": "case_sd 0.8 (correlation 0.6 between methods), reader_sd 0.4, preference_sd "
                                   "0.15, noise 0.7 (xmed.review.simulate.StudyPlan defaults)"})

    # readers fixed: no difference for these readers, one strict reader leaves B blank 30 % of the time
    strict = (SimulatedReader("strict", bias=-0.8, noise=0.7, blank={"B": 0.3}), SimulatedReader("middle", noise=0.7),
              SimulatedReader("lenient", bias=0.4, noise=0.7))
    plan = StudyPlan(n_cases=cases, difference=0.0, readers=strict)
    rng = np.random.default_rng(ctx.seed)
    matched, unmatched = [], []
    for _ in range(n):
        table = draw_study(plan, rng)
        p_value = paired_comparison(table, "A", "B", n_bootstrap=None)["p_value"]
        matched.append(p_value is not None and p_value < ALPHA)
        unmatched.append(unmatched_rejects(table))
    part.figure(f"case-level Wilcoxon, 3 fixed readers (one strict, B blank 30 %), {cases} cases, no difference: "
                "type I error", float(np.mean(matched)), "share", "case means over whoever scored (unmatched)",
                float(np.mean(unmatched)), goal=Goal("value", "<=", LEVEL_BAND[1]))
    check_rate(part, "reader-matched case-level test holds its 5 % level with blanks", float(np.mean(matched)),
               ALPHA, LEVEL_BAND, n)

    # readers drawn anew: 5 per study, 10 % blanks
    null = power(StudyPlan(n_cases=cases, n_readers=5, difference=0.0, blank=0.1), n_studies=n, seed=ctx.seed + 1)
    part.figure(f"Obuchowski-Rockette, 5 readers drawn anew, {cases} cases, 10 % blank, no difference: type I error",
                null["random_readers"]["power"], "share", "case-level Wilcoxon on the same studies",
                null["fixed_readers"]["power"], goal=Goal("value", "<=", LEVEL_BAND[1]),
                note="the case-level test answers for the study's own readers only")
    check_rate(part, "OR-MRMC holds its 5 % level with readers drawn anew", null["random_readers"]["power"],
               ALPHA, LEVEL_BAND, n)

    plan = StudyPlan(n_cases=cases, n_readers=5, difference=0.3, blank=0.1)
    truth, rng = true_difference(plan), np.random.default_rng(ctx.seed + 2)
    random_covers, fixed_covers = [], []
    for study in range(n):
        table = draw_study(plan, rng)
        pair = mrmc(table)["differences"][0]
        random_covers.append(pair["ci_low"] is not None and pair["ci_low"] <= truth <= pair["ci_high"])
        fixed = paired_comparison(table, "A", "B", n_bootstrap=ctx.size(100, 200), seed=study)
        fixed_covers.append(fixed["ci_low"] <= truth <= fixed["ci_high"])
    part.figure(f"Obuchowski-Rockette 95 % interval, 5 readers drawn anew, {cases} cases, latent difference 0.3 "
                f"(true {truth:.3f}): coverage", float(np.mean(random_covers)), "share",
                "fixed-readers case-bootstrap interval", float(np.mean(fixed_covers)),
                goal=Goal("value", ">=", COVERAGE_BAND[0]))
    check_rate(part, "OR-MRMC 95 % interval covers the true difference with readers drawn anew",
               float(np.mean(random_covers)), 0.95, COVERAGE_BAND, n)

    # the planned study, and what more readers would buy
    for n_readers in (3, 5, 8):
        planned = power(StudyPlan(n_cases=400, n_readers=n_readers, difference=0.25), n_studies=n_small,
                        seed=ctx.seed + 10 + n_readers)
        random = planned["random_readers"]
        part.figure(f"power, 400 eyes x {n_readers} readers drawn anew, latent difference 0.25 "
                    f"(true {planned['true_difference']:.3f}): Obuchowski-Rockette", random["power"], "share",
                    "case-level Wilcoxon", planned["fixed_readers"]["power"],
                    note=f"OR interval coverage {random['coverage']:.3f}, mean width {random['ci_width']:.2f}")
        if not ctx.quick and ctx.left() < 60:
            part.note("time budget nearly spent: the later rows are left out")
            return
    planned_null = power(StudyPlan(n_cases=400, n_readers=3, difference=0.0), n_studies=n, seed=ctx.seed + 20)
    part.figure("Obuchowski-Rockette, 400 eyes x 3 readers drawn anew, no difference: type I error",
                planned_null["random_readers"]["power"], "share", "case-level Wilcoxon on the same studies",
                planned_null["fixed_readers"]["power"],
                note="with 3 readers Hillis' ddf rests on few reader degrees of freedom: above 5 % (5 readers: above)")

    ordered = StudyPlan(n_cases=400, n_readers=3, n_methods=3, difference=0.25)
    rng = np.random.default_rng(ctx.seed + 30)
    right = []
    for _ in range(n_small):
        means = list(mrmc(draw_study(ordered, rng))["method_means"].values())
        right.append(means == sorted(means, reverse=True))
    part.figure("ordering A > B > C (latent steps 0.25) recovered by the means over 3 readers drawn anew, 400 eyes",
                float(np.mean(right)), "share", "chance (1 in 3!)", 1 / 6)
