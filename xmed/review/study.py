"""The reader study of one review session: its stored ratings joined with what the session knows
about each case (the finding that drove the decision; the explanations' automatic scores), run
through :func:`xmed.review.analysis.analyse`.

Example::

    report = analyse_session("outputs/demo/review", out="outputs/demo/review/analysis")
    report["comparisons"][0]["p_value"]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from xmed.decision import REFERABLE
from xmed.errors import InputError
from xmed.review.analysis import Rating, analyse, plot_scores, read_ratings
from xmed.review.session import load_session
from xmed.runs import write_text_atomic

#: the automatic scores put beside the readers' (the first a panel has): the share of a saliency
#: map's energy in the ground truth, and whether the counterfactual edits reached their goals
AUTOMATIC_KEYS = ("energy_pointing_game", "energy_in_truth", "validity")


def main_finding(case: Mapping[str, Any]) -> str | None:
    """The code of the finding with the largest contribution toward the case's decision (None when
    no finding pushes that way).

    Example:
        >>> main_finding({"decision": "referable glaucoma", "findings": [
        ...     {"code": "LC", "contribution": 0.8}, {"code": "DH", "contribution": 1.2}]})
        'DH'
    """
    sign = 1 if case.get("decision", REFERABLE) == REFERABLE else -1
    toward = [f for f in case.get("findings") or [] if sign * f["contribution"] > 0]
    return max(toward, key=lambda f: sign * f["contribution"])["code"] if toward else None


def automatic_scores(session: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """``{(case, method): {"automatic": value}}`` from the session's panels: a saliency map's
    energy in the ground truth, a counterfactual pair's share of edits that reached their goal."""
    scores = {}
    for case in session["cases"]:
        for method, panel in case["panels"].items():
            automatic = dict(panel.get("automatic") or {})
            if panel["kind"] == "counterfactual" and "validity" not in automatic:
                made = [e for e in panel["edits"].values() if e["steps"] > 0]
                if made:
                    automatic["validity"] = sum(e["reached"] for e in made) / len(made)
            value = next((automatic[k] for k in AUTOMATIC_KEYS if automatic.get(k) is not None), None)
            if value is not None:
                scores[(case["id"], method)] = {"automatic": float(value)}
    return scores


def session_ratings(session: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[Rating]:
    """The rating rows of panels (a store's or a CSV's) as :class:`Rating` objects, each with its
    case's main finding; rows of a case answered without any panel rated carry no method score."""
    rows = [r for r in rows if str(r.get("method") or "").strip()]  # a case answered with no panel rated
    findings = {case["id"]: main_finding(case) for case in session["cases"]}
    unknown = sorted({str(r["case"]) for r in rows} - set(findings))
    if unknown:
        raise InputError("ratings", f"cases not in this session: {', '.join(unknown[:5])}")
    return [Rating(**{**vars(r), "finding": findings[r.case]}) for r in read_ratings(rows)]


def analyse_session(session_dir: str | os.PathLike, ratings: str | os.PathLike | None = None,
                    out: str | os.PathLike | None = None, n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Analyse a session's ratings (its ``ratings.sqlite``, or a ratings CSV); with ``out``, write
    ``analysis.json`` and ``scores.png`` there."""
    from xmed.review.store import RatingStore

    session = load_session(session_dir)
    if ratings is None:
        rows = RatingStore(Path(session_dir) / "ratings.sqlite").rows()
    else:
        rows = [vars(r) for r in read_ratings(ratings)]
    study = session_ratings(session, rows)
    if not study:
        raise InputError("ratings", f"no ratings yet in {ratings or Path(session_dir) / 'ratings.sqlite'}")
    report = analyse(study, automatic_scores(session), n_bootstrap=n_bootstrap, seed=seed)
    if out is not None:
        out = Path(out)
        write_text_atomic(out / "analysis.json", json.dumps(report, indent=2, allow_nan=False))
        plot_scores(study, out / "scores.png")
    return report
