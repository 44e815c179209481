"""The explanation study's statistics and report: from the long table of per-eye scores
(:mod:`xmed.pipeline.study`) to means with case-bootstrap intervals, paired differences against a
reference method on the same eyes (Wilcoxon signed-rank, Holm-corrected across the methods of a
model and score), forest plots and a Markdown report.

Example:
    >>> rows = [{"model": "m", "method": meth, "eye": f"e{i}", "score": "pointing_game", "value": v, "note": ""}
    ...         for i in range(8) for meth, v in (("gradcam", 0.0), ("edit", 1.0))]
    >>> s = summarise(rows, reference=["gradcam"], n_bootstrap=100)
    >>> d = s["differences"][0]
    >>> d["method"], d["reference"], d["difference"], d["n"], d["p_holm"]
    ('edit', 'gradcam', 1.0, 8, 0.0078125)
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from xmed.errors import ConfigError
from xmed.metrics.paired import bootstrap_mean, holm, paired_difference
from xmed.runs import write_text_atomic


@dataclass(frozen=True)
class StudyScore:
    """What one per-eye score measures: its ``category`` (location, rationale, validity), which
    values are better (``direction``) and a ``title`` for the report."""

    category: str
    direction: str
    title: str


#: every per-eye score of the study, in report order
SCORES: dict[str, StudyScore] = {
    "energy_in_evidence": StudyScore("location", "higher", "share of the energy in the evidence"),
    "pointing_game": StudyScore("location", "higher", "pointing game (peak in the evidence)"),
    "map_auroc": StudyScore("location", "higher", "AUROC of the map against the evidence"),
    "reason_precision": StudyScore("rationale", "higher", "named reasons that are present findings"),
    "reason_recall": StudyScore("rationale", "higher", "present findings named as reasons"),
    "findings_right_way": StudyScore("rationale", "higher", "present findings moved the asked way"),
    "vcdr_right_way": StudyScore("rationale", "higher", "vCDR moved the asked way"),
    "reached_goal": StudyScore("validity", "higher", "edit reached its goal"),
    "changed_fraction": StudyScore("validity", "lower", "share of the field of view changed"),
}


#: the long table's columns
COLUMNS = ("model", "method", "eye", "score", "value", "note")
#: the significance level of the report's plain-words findings (after Holm's correction)
ALPHA = 0.05


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def summarise(rows: Sequence[Mapping[str, Any]], reference: Sequence[str] | str = ("gradcam", "rationale"),
              n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``{"means", "differences", "accounting"}`` of the long table ``rows``.

    - means: per model, method and score, the mean over the eyes scored and its bootstrap interval;
    - differences: per model and score, every other method less the first of ``reference`` that
      has that score, on the eyes both scored (:func:`xmed.metrics.paired.paired_difference`),
      with Holm's correction over the methods compared (``p_holm``);
    - accounting: per model and method, the eyes scored and each reason an eye was not.
    """
    references = [reference] if isinstance(reference, str) else list(reference)
    values: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row["score"] and row["value"] is not None:
            values[(row["model"], row["method"], row["score"])][row["eye"]] = float(row["value"])
    models = _ordered(r["model"] for r in rows)
    methods = _ordered(r["method"] for r in rows)
    unknown = [m for m in references if m not in methods]
    if len(unknown) == len(references):
        raise ConfigError("reference", f"none of {references} is a method of the study ({', '.join(methods)})")
    means, differences = [], []
    for model in models:
        for score in SCORES:
            for method in methods:
                by_eye = values.get((model, method, score))
                if by_eye:
                    m = bootstrap_mean(list(by_eye.values()), n_bootstrap, seed)
                    means.append({"model": model, "method": method, "score": score, "n": m.n, "mean": m.mean,
                                  "low": m.low, "high": m.high})
            base = next((ref for ref in references if values.get((model, ref, score))), None)
            if base is None:
                continue
            family = []
            for method in methods:
                mine = values.get((model, method, score))
                if method == base or not mine:
                    continue
                theirs = values[(model, base, score)]
                eyes = sorted(set(mine) & set(theirs))
                d = paired_difference([mine[e] for e in eyes], [theirs[e] for e in eyes], n_bootstrap, seed)
                family.append({"model": model, "method": method, "reference": base, "score": score, **d.to_dict()})
            for entry, adjusted in zip(family, holm([e["p_value"] for e in family])):
                entry["p_holm"] = adjusted
            differences += family
    return {"means": means, "differences": differences, "accounting": accounting(rows)}


def accounting(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model and method: how many eyes it was run on, how many got at least one score, and
    how many were not scored for each reason (a note's details in brackets, such as the eye's
    probability, left out of the count's reason).

    Example:
        >>> accounting([{"model": "m", "method": "a", "eye": "1", "score": "s", "value": 0.5, "note": ""},
        ...             {"model": "m", "method": "a", "eye": "2", "score": "", "value": None, "note": "no masks"}])
        [{'model': 'm', 'method': 'a', 'eyes': 2, 'scored': 1, 'not scored': {'no masks': 1}}]
    """
    eyes: dict[tuple[str, str], dict[str, str | None]] = defaultdict(dict)
    for row in rows:
        key, scored = (row["model"], row["method"]), row["value"] is not None
        previous = eyes[key].get(row["eye"], "unset")
        if scored:
            eyes[key][row["eye"]] = None
        elif previous == "unset":
            eyes[key][row["eye"]] = (row["note"] or "not scored").split(" (")[0]
    return [{"model": model, "method": method, "eyes": len(status),
             "scored": sum(v is None for v in status.values()),
             "not scored": dict(Counter(v for v in status.values() if v is not None))}
            for (model, method), status in eyes.items()]


# -- files -----------------------------------------------------------------------------------------


def write_long_table(path: Path, rows: Sequence[Mapping[str, Any]], parquet: bool = True) -> Path:
    """The long table as CSV (``model, method, eye, score, value, note``; an empty value is an
    eye not scored; a value as Python writes a float, which reads back exactly), and as Parquet
    beside it where pyarrow is installed (unless ``parquet`` is False)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if row[k] is None else row[k]) for k in COLUMNS} for row in rows)
    if not parquet:
        return path
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # Parquet is optional: the CSV holds the same table
        return path
    pq.write_table(pa.Table.from_pylist([{k: row[k] for k in COLUMNS} for row in rows]), path.with_suffix(".parquet"))
    return path


def read_long_table(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a study's ``scores.csv`` (:func:`write_long_table`), values as floats or None.

    Example::

        summarise(read_long_table("outputs/study/scores.csv"), reference=["integrated_gradients"])
    """
    with open(path, newline="", encoding="utf-8") as handle:
        return [{**row, "value": float(row["value"]) if row["value"] else None} for row in csv.DictReader(handle)]


def _table(path: Path, entries: Sequence[Mapping[str, Any]]) -> None:
    if not entries:
        return
    columns = _ordered(k for e in entries for k in e)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows({k: ("" if e.get(k) is None else e.get(k)) for k in columns} for e in entries)


def forest_plots(out_dir: Path, differences: Sequence[Mapping[str, Any]]) -> list[Path]:
    """``forest_<score>.png`` per score with differences: one line per model and method, filled
    where Holm's p < :data:`ALPHA`."""
    from xmed.viz.plots import plot_forest

    paths = []
    for score in _ordered(d["score"] for d in differences):
        entries = [d for d in differences if d["score"] == score]
        rows = [{"name": f"{d['model']} · {d['method']}", "estimate": d["difference"], "low": d["low"],
                 "high": d["high"], "marked": d["p_holm"] is not None and d["p_holm"] < ALPHA} for d in entries]
        reference = ", ".join(_ordered(d["reference"] for d in entries))
        paths.append(plot_forest(rows, out_dir / f"forest_{score}.png", f"{SCORES[score].title}: method − {reference}",
                                 label=f"difference ({SCORES[score].direction} is better)"))
    return paths


def write_study(out_dir: Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], *,
                eyes: Mapping[str, int], models: Mapping[str, str], seconds: float, command: str,
                attempts: int = 1) -> dict[str, Any]:
    """Every file of a study run (``scores.csv``, ``means.csv``, ``differences.csv``,
    ``forest_*.png``, ``report.md``, ``metrics.json``); returns what ``metrics.json`` holds.
    ``seconds``: the time of every attempt together (``attempts`` > 1: the study was resumed)."""
    from xmed.pipeline.reports import print_run_folder

    write_long_table(out_dir / "scores.csv", rows)
    _table(out_dir / "means.csv", summary["means"])
    _table(out_dir / "differences.csv", summary["differences"])
    plots = forest_plots(out_dir, summary["differences"])
    result = {"command": command, "seconds": round(seconds, 1), "attempts": attempts, "models": dict(models),
              "eyes": dict(eyes), **summary}
    write_text_atomic(out_dir / "report.md", study_markdown(result, [p.name for p in plots]))
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=2, allow_nan=False))
    print_run_folder(out_dir, {"report": out_dir / "report.md", "scores": out_dir / "scores.csv",
                               "differences": out_dir / "differences.csv"})
    return result


# -- the report --------------------------------------------------------------------------------------


def _attempts(count: int) -> str:
    """How many attempts a resumed study took, in words (nothing for one)."""
    return "" if count <= 1 else f" of computing, over {count} attempts (resume=true)"


def _figure(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(entry: Mapping[str, Any], key: str = "mean") -> str:
    if entry.get(key) is None:
        return "–"
    if entry.get("low") is None:
        return _figure(entry[key])
    return f"{_figure(entry[key])} [{_figure(entry['low'])}, {_figure(entry['high'])}]"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def findings_in_words(differences: Sequence[Mapping[str, Any]], score: str = "energy_in_evidence") -> list[str]:
    """One plain sentence per model: which methods locate the evidence better or worse than the
    reference by ``score`` (Holm's p < :data:`ALPHA` and an interval that excludes zero), and which
    do not differ from it.

    Example:
        >>> d = [{"model": "r18", "method": "edit", "reference": "gradcam", "score": "energy_in_evidence",
        ...       "difference": 0.2, "low": 0.1, "high": 0.3, "p_holm": 0.001, "n": 30}]
        >>> findings_in_words(d)
        ['r18: by the share of the energy in the evidence, edit (+0.200 [0.100, 0.300], 30 eyes) is better than gradcam.']
    """
    better_is_higher = SCORES[score].direction == "higher"
    sentences = []
    for model in _ordered(d["model"] for d in differences):
        entries = [d for d in differences if d["model"] == model and d["score"] == score and d["difference"] is not None]
        if not entries:
            continue
        reference = entries[0]["reference"]
        groups: dict[str, list[str]] = {"better": [], "worse": [], "not different": []}
        for d in entries:
            clear = d["p_holm"] is not None and d["p_holm"] < ALPHA and d["low"] is not None and \
                (d["low"] > 0 or d["high"] < 0)
            verdict = "not different" if not clear else ("better" if (d["difference"] > 0) == better_is_higher
                                                         else "worse")
            groups[verdict].append(f"{d['method']} ({d['difference']:+.3f} [{_figure(d['low'])}, {_figure(d['high'])}], "
                                   f"{d['n']} eyes)")
        parts = [f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} {verdict} than {reference}"
                 if verdict != "not different" else
                 f"{', '.join(names)} {'does' if len(names) == 1 else 'do'} not differ clearly from {reference}"
                 for verdict, names in groups.items() if names]
        sentences.append(f"{model}: by the {SCORES[score].title}, " + "; ".join(parts) + ".")
    return sentences


def study_markdown(result: Mapping[str, Any], plots: Sequence[str]) -> str:
    """The study's report: how it was made, the eyes accounted for, the means of every score,
    the paired differences and what they say in plain words."""
    means, differences = result["means"], result["differences"]
    models = _ordered(m["model"] for m in means)
    lines = ["# Explanation study", "",
             f"Made by `{result['command']}` in {result['seconds'] / 60:.1f} min"
             f"{_attempts(result.get('attempts', 1))}.", "",
             "Models: " + ", ".join(f"`{name}` ({path})" for name, path in result["models"].items()) + ".", "",
             "Eyes per model: " + ", ".join(f"{name} {n}" for name, n in result["eyes"].items()) + ".", "",
             "## What it finds", ""]
    lines += [f"- {s}" for s in findings_in_words(differences)] or ["- No method could be compared with the reference."]
    lines += ["", "## Eyes accounted for", "", "| model | method | eyes | scored | not scored (reason: eyes) |",
              "|---|---|---|---|---|"]
    for entry in result["accounting"]:
        reasons = "; ".join(f"{reason}: {n}" for reason, n in entry["not scored"].items()) or "–"
        lines.append(f"| {entry['model']} | {entry['method']} | {entry['eyes']} | {entry['scored']} | {reasons} |")
    lines += ["", "## Means per eye (95% case-bootstrap intervals)", ""]
    for category in _ordered(s.category for s in SCORES.values()):
        scores = [name for name, s in SCORES.items() if s.category == category and any(m["score"] == name for m in means)]
        if not scores:
            continue
        lines += [f"### {category.capitalize()}", "", "| model | method | " + " | ".join(
            f"{SCORES[s].title} ({SCORES[s].direction} is better)" for s in scores) + " |",
            "|---|---|" + "---|" * len(scores)]
        for model in models:
            for method in _ordered(m["method"] for m in means if m["model"] == model):
                cells = []
                for score in scores:
                    entry = next((m for m in means if (m["model"], m["method"], m["score"]) == (model, method, score)), None)
                    cells.append("–" if entry is None else f"{_interval(entry)} (n={entry['n']})")
                if any(c != "–" for c in cells):
                    lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Paired differences against the reference", "",
              "Method less reference on the eyes both scored: mean difference with its 95% case-bootstrap interval, "
              "the two-sided Wilcoxon signed-rank test and Holm's correction across the methods of a model and score.",
              "", "| model | score | method − reference | pairs | difference | Wilcoxon p (test) | Holm p |",
              "|---|---|---|---|---|---|---|"]
    for d in differences:
        flag = " (too few pairs)" if d["underpowered"] else ""
        lines.append(f"| {d['model']} | {d['score']} | {d['method']} − {d['reference']} | {d['n']}{flag} | "
                     f"{_interval(d, 'difference')} | {_p(d['p_value'])} ({d['test']}) | {_p(d['p_holm'])} |")
    lines += ["", "## Forest plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)
