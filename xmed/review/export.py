"""A review session as static files to share: one self-contained, read-only ``report.html`` (every
image embedded as a ``data:`` URI, the style inline, no script, nothing fetched from anywhere) that
shows every case as the open review does — the model's reasons first, the photograph and the
heatmaps, the edits less glaucomatous | original | more glaucomatous with what each changed — and,
for the study's coordinator, each reader's progress and the study's statistics
(:func:`study_statistics`); and one composite PNG per case under ``cases/``, wide enough for a slide.

The export is written into a staged folder and renamed into place when complete, so ``out_dir``
holds either the whole export or its previous state. It only ever replaces a folder that is empty
or holds an earlier export; it never reads or copies the session's ``key.csv``.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from xmed.review.synthetic import synthetic_session
    >>> scratch = Path(tempfile.mkdtemp())
    >>> session = synthetic_session(scratch / "session", n_cases=2, size=64)
    >>> report = export_report(session, scratch / "export")
    >>> report.name, sorted(p.name for p in (scratch / "export" / "cases").iterdir())
    ('report.html', ['case-001.png', 'case-002.png'])
"""

from __future__ import annotations

import base64
import io
import math
import os
import sqlite3
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jinja2
import numpy as np

from xmed.errors import PathError
from xmed.review.analysis import SCALES, Rating, read_ratings
from xmed.review.panels import COLORMAP, FLAGS, colour_table, edit_changes, known_colormap
from xmed.review.session import SESSION_FILE, case_file, case_images, flags_in_words, load_session
from xmed.review.store import STORE_FILE, RatingStore
from xmed.runs import eye_file_stem, staged_folder

__all__ = ["REPORT_FILE", "PNG_DIR", "export_report", "ratings_summary", "reader_progress", "study_statistics",
           "case_png", "stored_ratings", "stored_rows", "check_out_dir"]

REPORT_FILE = "report.html"
PNG_DIR = "cases"
#: what an export folder may hold: this module's files and the ratings tables ``xmed-review export``
#: writes beside them; a folder holding anything else is not replaced
EXPORT_CONTENTS = (REPORT_FILE, PNG_DIR, "ratings.csv", "ratings.json")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the edits in the order they are shown, around the original: ``name -> (title, how it was made)``
EDIT_TITLES = {"toward_normal": ("Less glaucomatous", "edited toward normal"),
               "toward_glaucoma": ("More glaucomatous", "edited toward glaucoma")}
#: the composite PNG: the width of a tile (an image, its title and colour bar) in pixels, at this many
#: dots per inch, and the fewest tiles across (1600 px: a slide's width)
TILE_PIXELS, DPI, MIN_TILES = 400, 100, 4


# -- reading the session's images ----------------------------------------------------------------


def _png_bytes(folder: Path, relative: str) -> bytes:
    """The bytes of one of the session's PNG images; a missing or non-PNG file raises
    :class:`~xmed.errors.PathError` naming it."""
    path = case_file(folder, relative)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PathError(path, f"the session names this image but it cannot be read ({err.strerror})") from None
    if not data.startswith(PNG_SIGNATURE):
        raise PathError(path, "is not a PNG image; a review session keeps every image as PNG")
    return data


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- ratings -------------------------------------------------------------------------------------


def stored_rows(session_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """Every row :meth:`xmed.review.store.RatingStore.rows` gives of ``<session>/ratings.sqlite``,
    or None when the session has no ratings file. The file is opened read-only: an export never
    changes a session, and never waits on a server saving ratings (the write-ahead log lets it
    read what is committed meanwhile)."""
    return _read_store(Path(session_dir), RatingStore.rows, "the ratings")


def stored_ratings(session_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The panel ratings of :func:`stored_rows` less the readers' notes (never in the report), or
    None when the session has no ratings file."""
    rows = stored_rows(session_dir)
    return None if rows is None else _panel_rows(rows)


def _panel_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of rated panels (a case answered without any panel rated has none), notes left out."""
    return [{k: v for k, v in row.items() if k != "note"} for row in rows if row.get("method")]


def _stored_readers(session_dir: Path) -> list[dict[str, Any]] | None:
    """The readers of ``<session>/ratings.sqlite`` (read-only), or None without one."""
    return _read_store(session_dir, RatingStore.reader_list, "the readers")


def _read_store(session_dir: Path, read: Callable[[RatingStore], Any], what: str) -> Any:
    """``read`` of ``<session>/ratings.sqlite`` opened read-only, or None when the session has no
    ratings file; a store that cannot be read raises :class:`PathError` saying ``what`` was read."""
    path = session_dir / STORE_FILE
    if not path.is_file():
        return None
    try:
        return read(RatingStore(path, read_only=True))
    except sqlite3.Error as err:
        raise PathError(path, f"cannot read {what}: {err}") from None


def reader_progress(rows: Iterable[Mapping[str, Any]], session: Mapping[str, Any],
                    readers: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """How far each reader got, by name: ``{"reader", "rated", "started", "total", "state"}`` —
    cases fully rated (every panel's location and rationale, and whether they agree with the
    model), cases with anything stored, all cases of the session. ``rows`` are a store's rows
    (:meth:`~xmed.review.store.RatingStore.rows`, a case answered without any panel included);
    ``readers`` (the store's :meth:`~xmed.review.store.RatingStore.reader_list`) adds those who
    stored nothing yet, and ``state``: ``"can sign in"`` or ``"revoked"`` (None without them).

    Example:
        >>> session = {"cases": [{"id": "c1", "panels": {"gradcam": {}}}, {"id": "c2", "panels": {"gradcam": {}}}]}
        >>> rows = [{"reader": "ana", "case": "c1", "method": "gradcam", "location": 4, "rationale": 3, "agree": 1},
        ...         {"reader": "ana", "case": "c2", "method": "gradcam", "location": 2, "rationale": None, "agree": 0}]
        >>> reader_progress(rows, session)
        [{'reader': 'ana', 'rated': 1, 'started': 2, 'total': 2, 'state': None}]
    """
    expected = {case["id"]: set(case["panels"]) for case in session["cases"]}
    scored: dict[str, set[tuple[str, str]]] = defaultdict(set)
    agreed: dict[str, set[str]] = defaultdict(set)
    started: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        reader, case = str(row["reader"]), str(row["case"])
        if case not in expected:
            continue
        started[reader].add(case)
        if row.get("method") and row.get("location") is not None and row.get("rationale") is not None:
            scored[reader].add((case, str(row["method"])))
        if row.get("agree") is not None:
            agreed[reader].add(case)
    states = {str(r["name"]): "revoked" if r.get("revoked") else "can sign in" for r in readers or []}
    return [{"reader": reader,
             "rated": sum(case in agreed[reader] and all((case, m) in scored[reader] for m in methods)
                          for case, methods in expected.items()),
             "started": len(started[reader]), "total": len(expected), "state": states.get(reader)}
            for reader in sorted({*states, *started})]


def study_statistics(session: Mapping[str, Any], rows: Iterable[Mapping[str, Any]], n_bootstrap: int = 2000,
                     seed: int = 0) -> dict[str, Any] | None:
    """The reader study of the session's rated panels (:func:`xmed.review.analysis.analyse`, each
    case's main finding and the model's decisions joined in: Holm-corrected Wilcoxon comparisons,
    weighted kappas with bootstrap intervals, agreement with the model once per case, the cases
    readers disagree on), or None without any. Rows of cases not in the session are left out."""
    from xmed.review.analysis import analyse
    from xmed.review.study import session_ratings

    known = {case["id"] for case in session["cases"]}
    kept = [row for row in _panel_rows(rows) if str(row["case"]) in known]
    if not kept:
        return None
    return analyse(session_ratings(session, kept), n_bootstrap=n_bootstrap, seed=seed,
                   decisions={case["id"]: case["decision"] for case in session["cases"]})


def _summary(ratings: Sequence[Rating]) -> dict[str, Any]:
    """Number of ratings, mean of each scale over the scores given, and the share of ``agree``."""
    summary: dict[str, Any] = {"n": len(ratings)}
    for scale in (*SCALES, "agree"):
        scores = [getattr(rating, scale) for rating in ratings if getattr(rating, scale) is not None]
        summary[scale] = float(np.mean(scores)) if scores else None
    return summary


def ratings_summary(rows: Iterable[Mapping[str, Any]], case_ids: Sequence[str]) -> dict[str, Any]:
    """The readers' scores per method, over all cases (``overall``) and per case (``cases``): for
    each, the number of ratings, the mean ``location`` and ``rationale`` score and the share of
    ``agree``. Rows are checked as :func:`xmed.review.analysis.read_ratings` checks them; rows of
    cases not in ``case_ids`` are counted in ``left_out``.

    Example:
        >>> rows = [{"reader": r, "case": "case-001", "method": "gradcam", "location": s, "agree": a}
        ...         for r, s, a in (("ana", 4, 1), ("ben", 2, 0))]
        >>> summary = ratings_summary(rows, ["case-001"])
        >>> summary["cases"]["case-001"]["gradcam"]
        {'n': 2, 'location': 3.0, 'rationale': None, 'agree': 0.5}
    """
    ratings = read_ratings(list(rows))
    known = set(case_ids)
    kept = [rating for rating in ratings if rating.case in known]
    methods = sorted({rating.method for rating in kept})
    grouped: dict[tuple[str, str], list[Rating]] = defaultdict(list)
    for rating in kept:
        grouped[rating.case, rating.method].append(rating)
    return {"methods": methods,
            "overall": {method: _summary([r for r in kept if r.method == method]) for method in methods},
            "cases": {case: {method: _summary(grouped[case, method]) for method in methods
                             if grouped.get((case, method))} for case in case_ids},
            "left_out": len(ratings) - len(kept)}


# -- the HTML report -----------------------------------------------------------------------------


def _gradient(colormap: str) -> str:
    """A CSS left-to-right gradient of a colour map (:func:`xmed.review.panels.colour_table`): the
    colour bar without an image."""
    colours = colour_table(colormap)[np.linspace(0, 255, 11).round().astype(int)]
    stops = ", ".join(f"#{r:02x}{g:02x}{b:02x} {i * 10}%" for i, (r, g, b) in enumerate(colours.tolist()))
    return f"linear-gradient(to right, {stops})"


def _scale(scale: Mapping[str, Any] | None, where: Path) -> dict[str, Any]:
    """A panel's colour scale with its colour map checked (a session from before the colour map
    was recorded is read with the one :mod:`xmed.review.panels` drew then)."""
    scale = dict(scale or {})
    scale.setdefault("low", 0.0)
    scale.setdefault("colormap", COLORMAP)
    if not known_colormap(scale["colormap"]):
        raise PathError(where, f"unknown colour map {scale['colormap']!r} in a panel's scale")
    return scale


def _fixed(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or a dash for a missing one."""
    if value is None or isinstance(value, bool) or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.{digits}f}"


def _signed(value: Any, digits: int = 2) -> str:
    return "—" if _fixed(value) == "—" else f"{float(value):+.{digits}f}"


def _interval(values: Sequence[Any] | None, digits: int = 2) -> str:
    """``[low, high]`` with ``digits`` decimals, or a dash."""
    if not values or any(_fixed(v) == "—" for v in values):
        return "—"
    return f"[{float(values[0]):.{digits}f}, {float(values[1]):.{digits}f}]"


def _p_value(value: Any) -> str:
    """A p-value as a report writes it (``< 0.001`` below that).

    Example:
        >>> _p_value(0.03125), _p_value(0.00001), _p_value(None)
        ('0.031', '< 0.001', '—')
    """
    if _fixed(value) == "—":
        return "—"
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _changes_text(case: Mapping[str, Any], edit: Mapping[str, Any]) -> str:
    """What an edit changed (:func:`xmed.review.panels.edit_changes`) in one line."""
    changes = edit_changes(case, edit)
    if changes:
        return ", ".join(f"{c['name']} {c['from']:.2f} → {c['to']:.2f}" for c in changes)
    known = any(edit.get(key) is not None for key in ("changes", "findings_to", "vcdr_to"))
    return "no finding and not the vCDR changed markedly" if known else "the model's findings after it not recorded"


_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                  lstrip_blocks=True)
_ENVIRONMENT.filters.update(fixed=_fixed, signed=_signed, in_words=flags_in_words, interval=_interval,
                            p_value=_p_value)
_ENVIRONMENT.globals.update(flag_reasons=FLAGS, edit_titles=EDIT_TITLES, changes_text=_changes_text)

_REPORT = _ENVIRONMENT.from_string("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ session.title }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1240px; padding: 0 1em; color: #222; }
header, section.case { border-bottom: 1px solid #ccc; padding-bottom: 1em; margin-bottom: 1.5em; }
.panels { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; width: 288px; }
figure img { width: 288px; height: auto; display: block; }
figure.photo { width: 384px; } figure.photo img { width: 384px; }
.counterfactual { border: 1px solid #ddd; padding: .5em; margin-top: 1em; }
.triptych { display: flex; gap: .8em; align-items: flex-start; }
.triptych figure img.difference { width: 144px; margin-top: .3em; }
figcaption, h3 { font-weight: bold; font-size: 14px; margin: 0; }
.note { font-weight: normal; font-size: 13px; }
.bar { height: 10px; margin-top: 4px; }
.ticks { display: flex; justify-content: space-between; font-size: 11px; color: #555; }
.flag { color: #a00; font-weight: bold; }
.decision { font-size: 16px; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.rationale { font-size: 15px; }
.why { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
</style>
</head>
<body>
{% macro scores_table(by_method, first_column) %}
<table class="scores">
<tr><th>{{ first_column }}</th><th>ratings</th><th>location (mean, 1-5)</th><th>rationale (mean, 1-5)</th>
<th>agree with the decision (share)</th></tr>
{% for method, scores in by_method.items() %}
<tr><td>{{ titles.get(method, method) }}</td><td class="number">{{ scores.n }}</td>
<td class="number">{{ scores.location | fixed(2) }}</td><td class="number">{{ scores.rationale | fixed(2) }}</td>
<td class="number">{{ scores.agree | fixed(2) }}</td></tr>
{% endfor %}
</table>
{% endmacro %}
{% macro colour_bar(unchecked) %}
{% set scale = checked(unchecked) %}
<div class="bar" style="background: {{ gradient(scale.colormap) }}"></div>
<div class="ticks"><span>{{ scale.low | fixed }}</span><span>{{ scale.high | fixed }}</span></div>
<div class="ticks">{{ scale.label }}</div>
{% endmacro %}
<header>
<h1>{{ session.title }}</h1>
<p>Model {{ session.model.name }} ({{ session.model.mode }}), operating threshold
{{ session.threshold | fixed }}; {{ session.cases | length }} cases, methods:
{% for method in session.methods %}{{ method.title }}{{ ", " if not loop.last }}{% endfor %}.
Created {{ session.created }}; a {{ session.mode }} session, shown here unblinded and read-only.
{% if session.get("skipped") %}
{{ session.skipped | length }} source images could not be read and are not in it.
{% endif %}
</p>
{% if progress is not none %}
<h2>Readers</h2>
{% if progress %}
<table class="readers">
<tr><th>reader</th><th>cases fully rated</th><th>cases started</th><th>sign-in</th></tr>
{% for reader in progress %}
<tr><td>{{ reader.reader }}</td><td class="number">{{ reader.rated }} / {{ reader.total }}</td>
<td class="number">{{ reader.started }}</td><td>{{ reader.state or "—" }}</td></tr>
{% endfor %}
</table>
{% else %}<p>No readers yet.</p>{% endif %}
{% endif %}
{% if summary %}
<h2>Readers' scores</h2>
{% if summary.methods %}{{ scores_table(summary.overall, "method") }}{% else %}<p>No ratings yet.</p>{% endif %}
{% if summary.left_out %}<p>{{ summary.left_out }} ratings of cases not in this session are left out.</p>{% endif %}
{% endif %}
{% if study %}
<h2>The study's statistics</h2>
<h3>Methods compared (readers fixed: case-level Wilcoxon signed-rank test of reader-matched differences)</h3>
<table class="comparisons">
<tr><th>methods</th><th>scale</th><th>paired cases</th><th>mean difference [95% CI]</th><th>Wilcoxon p</th>
<th>Holm p</th><th>readers random (Obuchowski-Rockette) p</th></tr>
{% for c in study.comparisons %}
<tr><td>{{ titles.get(c.a, c.a) }} − {{ titles.get(c.b, c.b) }}</td><td>{{ c.scale }}</td>
<td class="number">{{ c.n_pairs }}</td><td class="number">{{ c.mean_difference | signed }} {{ [c.ci_low, c.ci_high] | interval }}</td>
<td class="number">{{ c.p_value | p_value }}</td><td class="number">{{ c.p_holm | p_value }}</td>
<td class="number">{% set pair = random_pairs.get((c.scale, c.a, c.b)) %}{{ (pair.p_value if pair else none) | p_value }}</td></tr>
{% endfor %}
</table>
<p>Multiple comparisons: {{ study.multiple_comparisons }}. {% for c in study.comparisons if c.note %}{{ titles.get(c.a, c.a) }} − {{ titles.get(c.b, c.b) }} ({{ c.scale }}): {{ c.note }}. {% endfor %}</p>
<h3>Agreement between readers (Cohen's weighted kappa, mean over pairs of readers, 95% case-bootstrap interval)</h3>
<table class="agreement">
<tr><th>method</th><th>scale</th><th>readers</th><th>quadratic kappa [95% CI]</th><th>linear kappa [95% CI]</th></tr>
{% for scale in scales %}{% for method, a in study.agreement[scale].items() %}
<tr><td>{{ titles.get(method, method) }}</td><td>{{ scale }}</td><td class="number">{{ a.n_readers }}</td>
<td class="number">{{ a.kappa_quadratic | fixed(2) }} {{ a.kappa_quadratic_ci | interval }}</td>
<td class="number">{{ a.kappa_linear | fixed(2) }} {{ a.kappa_linear_ci | interval }}</td></tr>
{% endfor %}{% endfor %}
</table>
<h3>Agreement with the model's decision (each reader's answer counted once per case)</h3>
<table class="decision-agreement">
<tr><th>readers</th><th>answers</th><th>share agreeing</th></tr>
<tr><td>all</td><td class="number">{{ study.decision.overall.n }}</td><td class="number">{{ study.decision.overall.share | fixed(2) }}</td></tr>
{% for reader, d in study.decision.readers.items() %}
<tr><td>{{ reader }}</td><td class="number">{{ d.n }}</td><td class="number">{{ d.share | fixed(2) }}</td></tr>
{% endfor %}
{% for decision, d in study.decision.by_decision.items() %}
<tr><td>all, on cases the model called {{ decision }}</td><td class="number">{{ d.n }}</td><td class="number">{{ d.share | fixed(2) }}</td></tr>
{% endfor %}
</table>
<p>Between readers on this answer: Fleiss' kappa {{ study.agreement.agree.fleiss_kappa | fixed(2) }}
over the {{ study.agreement.agree.n_cases }} cases every reader answered.</p>
<h3>Cases to look at again</h3>
<p>Readers disagree with each other (two readers' scores of a method {{ margins.score }} or more points apart, or
answers both yes and no) or with the model (at least {{ (100 * margins.share) | fixed(0) }}% of the answers no).</p>
{% if study.flagged %}
<table class="flagged">
<tr><th>case</th><th>why</th></tr>
{% for f in study.flagged %}<tr><td>{{ f.case }}</td><td>{{ f.reasons | join("; ") }}</td></tr>{% endfor %}
</table>
{% else %}<p>None.</p>{% endif %}
{% endif %}
</header>
{% for case in cases %}
<section class="case" id="case-{{ case.stem }}">
<h2>{{ case.id }}{% if case.side %} ({{ case.side }} eye){% endif %}</h2>
<p class="decision">Probability of glaucoma <b>{{ case.probability | fixed }}</b>: <b>{{ case.decision }}</b>
(threshold {{ session.threshold | fixed }})</p>
{% if case.quality %}
<p class="flag">{{ case.quality | in_words }}</p>
{% endif %}
<div class="why">
<div>
<p class="rationale">{{ case.sentence }}</p>
<p>The findings and the vCDR explain {{ (100 * case.explained_share) | fixed(0) }}% of the evidence for the decision
(bias {{ case.bias | signed }}, unexplained {{ case.unexplained | signed }}
{%- if not case.contributions_exact %}; contributions approximate{% endif %}).</p>
</div>
<table class="findings">
<tr><th>finding</th><th>probability</th><th>contribution to the decision (logit units)</th></tr>
{% for finding in case.findings %}
<tr><td>{{ finding.name }} ({{ finding.code }})</td><td class="number">{{ finding.probability | fixed }}</td>
<td class="number">{{ finding.contribution | signed }}</td></tr>
{% endfor %}
<tr><td>vertical cup-to-disc ratio (vCDR)</td><td class="number">{{ case.vcdr | fixed(2) }}</td>
<td class="number">{{ case.vcdr_contribution | signed }}</td></tr>
</table>
</div>
<div class="panels">
<figure class="photo"><figcaption>Photograph</figcaption>
<img src="{{ case.images[case.photo] }}" alt="photograph of {{ case.id }}"></figure>
{% for method in session.methods if method.name in case.panels and case.panels[method.name].kind == "saliency" %}
{% set panel = case.panels[method.name] %}
<figure class="saliency"><figcaption>{{ method.title }}</figcaption>
<img src="{{ case.images[panel.overlay] }}" alt="{{ method.title }} over the photograph">
{{ colour_bar(panel.scale) }}</figure>
{% endfor %}
</div>
{% for method in session.methods if method.name in case.panels and case.panels[method.name].kind != "saliency" %}
{% set panel = case.panels[method.name] %}
<div class="counterfactual"><h3>{{ method.title }}</h3><div class="triptych">
{% for direction in ("toward_normal", "original", "toward_glaucoma") %}
{% if direction == "original" %}
<figure><figcaption>Original <span class="note">probability {{ case.probability | fixed }}</span></figcaption>
<img src="{{ case.images[case.photo] }}" alt="photograph of {{ case.id }}"></figure>
{% elif direction in panel.edits %}
{% set edit = panel.edits[direction] %}
<figure class="edit"><figcaption>{{ edit_titles[direction][0] }} <span class="note">({{ edit_titles[direction][1] }}):
probability {{ edit.probability_from | fixed }}
&rarr; {{ edit.probability_to | fixed }} (goal {{ edit.goal | fixed }}, {{ "reached" if edit.reached else "not reached" }},
{{ edit.steps }} steps; {{ (100 * edit.changed_fraction) | fixed(1) }}% of the eye changed)</span></figcaption>
<div class="changes">{{ changes_text(case, edit) }}</div>
{% if edit.flag %}<div class="flag">{{ edit.flag }}: {{ flag_reasons.get(edit.flag, "") }}</div>{% endif %}
{% if edit.image %}<img src="{{ case.images[edit.image] }}" alt="{{ edit_titles[direction][0] | lower }} edit">{% endif %}
{% if edit.difference %}<img class="difference" src="{{ case.images[edit.difference] }}" alt="what the edit changed">
{{ colour_bar(edit.difference_scale) }}{% endif %}
</figure>
{% endif %}
{% endfor %}
</div></div>
{% endfor %}
{% if summary %}
{% if summary.cases[case.id] %}
{{ scores_table(summary.cases[case.id], "readers' scores") }}
{% else %}
<p>Not rated yet.</p>
{% endif %}
{% endif %}
</section>
{% endfor %}
</body>
</html>
""")


def _exported_cases(folder: Path, session: Mapping[str, Any], png_dir: Path) -> Iterator[dict[str, Any]]:
    """Write each case's PNG and yield the case with its file stem and its images as data URIs,
    one case at a time: a long session's report is streamed to its file, never held in memory."""
    for case in session["cases"]:
        stem = eye_file_stem(case["id"])
        case_png(folder, session, case, png_dir / f"{stem}.png")
        yield dict(case, stem=stem, images={relative: _data_uri(_png_bytes(folder, relative))
                                            for relative in case_images(case)})


# -- the composite PNG of a case -----------------------------------------------------------------


def _fitted(folder: Path, relative: str, pixels: int) -> np.ndarray:
    """An image of the session resized (up or down, aspect kept) to fit ``pixels`` × ``pixels``."""
    from PIL import Image

    with Image.open(io.BytesIO(_png_bytes(folder, relative))) as image:
        image = image.convert("RGB")
        factor = pixels / max(image.size)
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


def _tiles(folder: Path, session: Mapping[str, Any], case: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """Rows of tiles: the edits of the first counterfactual method around the photograph (less
    glaucomatous | photograph | more glaucomatous), then the saliency panels, then each edit's
    difference map (and any further counterfactual method's edits)."""
    where = folder / SESSION_FILE
    photo = {"title": f"Photograph\nprobability {_fixed(case['probability'])}: {case['decision']}",
             "image": case["photo"]}
    first, saliency, later = [photo], [], []
    for method in session["methods"]:
        panel = (case.get("panels") or {}).get(method["name"])
        if panel is None:
            continue
        if panel["kind"] == "saliency":
            saliency.append({"title": method["title"], "image": panel.get("overlay"),
                             "scale": _scale(panel.get("scale"), where)})
            continue
        edits, differences = {}, []
        for direction, (title, made) in EDIT_TITLES.items():
            edit = panel["edits"].get(direction)
            if edit is None:
                continue
            heading = f"{method['title']}: {title.lower()} ({made})"
            edits[direction] = {"title": f"{heading}\nprobability {_fixed(edit['probability_from'])} → "
                                         f"{_fixed(edit['probability_to'])}\n{_changes_text(case, edit)}",
                                "image": edit.get("image"), "flag": edit.get("flag")}
            if edit.get("difference"):
                differences.append({"title": f"{heading}\nwhat it changed", "image": edit["difference"],
                                    "scale": _scale(edit["difference_scale"], where)})
        if len(first) == 1:
            first = [*([edits["toward_normal"]] if "toward_normal" in edits else []), photo,
                     *([edits["toward_glaucoma"]] if "toward_glaucoma" in edits else [])]
        else:
            later.append(list(edits.values()))
        later.append(differences)
    across = max(MIN_TILES, len(first) + 1)
    rows = [first, *(saliency[i:i + across] for i in range(0, len(saliency), across)), *later]
    rows = [row for row in rows if row]
    if len(rows) > 2 and len(rows[1]) + len(rows[2]) <= across:  # the difference maps beside few heatmaps
        rows[1:3] = [rows[1] + rows[2]]
    return rows


def _case_text(case: Mapping[str, Any]) -> tuple[str, str]:
    """The findings table (monospaced) and the rationale paragraph of a case's PNG."""
    lines = [f"{'finding':<35}{'prob.':>7}{'contrib.':>10}", f"{'':<35}{'':>7}{'(logit)':>10}"]
    lines += [f"{finding['name'][:34]:<35}{_fixed(finding['probability']):>7}{_signed(finding['contribution']):>10}"
              for finding in case["findings"]]
    lines.append(f"{'vertical cup-to-disc ratio':<35}{_fixed(case['vcdr'], 2):>7}"
                 f"{_signed(case['vcdr_contribution']):>10}")
    explained = (f"The findings and the vCDR explain {_fixed(100 * case['explained_share'], 0)}% of the evidence for "
                 "the decision"
                 + ("" if case.get("contributions_exact") else " (contributions approximate)") + ".")
    quality = [flags_in_words(case["quality"])] if case.get("quality") else []
    paragraph = "\n".join(textwrap.fill(text, 50) for text in [*quality, case["sentence"], explained])
    return "\n".join(lines), paragraph


def case_png(folder: str | os.PathLike, session: Mapping[str, Any], case: Mapping[str, Any],
             path: str | os.PathLike) -> Path:
    """Write one case as a composite PNG at ``path``, for a slide: a header line (pseudonym, side,
    probability, decision, threshold); the edits less glaucomatous | photograph | more glaucomatous,
    each titled with its probabilities and what it changed, beside the model's reasons (its
    sentence and the findings with their contributions); the saliency panels; each edit's
    difference map. Every image has its title, and its colour bar where it has a scale.
    ``session`` and ``case`` are as :func:`~xmed.review.session.load_session` returns them.

    Each tile is :data:`TILE_PIXELS` wide and there are at least :data:`MIN_TILES` across (1600 px);
    images are resized to their tile (a 128 px photograph enlarged about 3×)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(folder)
    rows = _tiles(folder, session, case)
    title_h, bar_h, label_h, header_h = 64, 14, 44, 50
    bar_w, image_side = TILE_PIXELS - 60, TILE_PIXELS - 12
    row_h = title_h + TILE_PIXELS + bar_h + label_h
    columns = max(MIN_TILES, *(len(row) for row in rows))
    width, height = columns * TILE_PIXELS, header_h + len(rows) * row_h
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)

    def text(x: float, y: float, words: str, **style: Any) -> None:
        """``words`` at ``x``, ``y`` pixels from the top left, never read as mathematics."""
        figure.text(x / width, 1 - y / height, words, parse_math=False, **style)

    def picture(image: np.ndarray, left: float, top: float) -> None:
        """``image`` with its top left corner ``left``, ``top`` pixels from the figure's."""
        figure.figimage(image, xo=round(left), yo=round(height - top - image.shape[0]), origin="upper")

    side = f", {case['side']} eye" if case.get("side") else ""
    text(12, 32, f"{case['id']}{side}: probability of glaucoma {_fixed(case['probability'])}, "
                 f"{case['decision']} (threshold {_fixed(session['threshold'])})", fontsize=16, weight="bold")
    for r, row in enumerate(rows):
        top = header_h + r * row_h
        for c, tile in enumerate(row):
            middle, image_top = (c + 0.5) * TILE_PIXELS, top + title_h
            text(middle, top + 2, "\n".join(textwrap.fill(line, 52) for line in tile["title"].split("\n")),
                 fontsize=9, ha="center", va="top", linespacing=1.2)
            if tile["image"]:
                image = _fitted(folder, tile["image"], image_side)
                picture(image, middle - image.shape[1] / 2, image_top + (TILE_PIXELS - image.shape[0]) / 2)
            if tile.get("flag") or not tile["image"]:
                text(middle, image_top + TILE_PIXELS - 20, tile.get("flag") or "no image", fontsize=10, ha="center",
                     color="white", weight="bold", bbox={"facecolor": "#a00", "edgecolor": "none", "pad": 3})
            scale = tile.get("scale")
            if scale:
                colours = colour_table(scale["colormap"])[np.linspace(0, 255, bar_w).round().astype(int)]
                picture(np.repeat(colours[None], bar_h, axis=0), middle - bar_w / 2, image_top + TILE_PIXELS)
                ticks_top = image_top + TILE_PIXELS + bar_h + 2
                text(middle - bar_w / 2, ticks_top, _fixed(scale["low"]), fontsize=8, ha="center", va="top")
                text(middle + bar_w / 2, ticks_top, _fixed(scale["high"]), fontsize=8, ha="center", va="top")
                text(middle, ticks_top + 14, textwrap.fill(scale.get("label", ""), 70), fontsize=7, ha="center",
                     va="top")
    findings, paragraph = _case_text(case)
    left = len(rows[0]) * TILE_PIXELS + 12  # the model's reasons beside the first row
    text(left, header_h + 4, paragraph, fontsize=11, va="top")
    text(left, header_h + 4 + 19 * (paragraph.count("\n") + 2), findings, fontsize=8, family="monospace", va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, pil_kwargs={"compress_level": 2})  # zlib's default takes as long as the drawing
    finally:
        figure.clear()  # drop the artists now; the figure is not registered with pyplot
    return path


# -- the export ----------------------------------------------------------------------------------


def _check_out_dir(out_dir: Path, session_dir: Path) -> None:
    """Refuse a folder the export would replace that is in the session, or not empty nor an earlier export."""
    if out_dir.resolve() == session_dir.resolve() or session_dir.resolve() in out_dir.resolve().parents:
        raise PathError(out_dir, "is inside the review session; export to a folder of its own")
    check_out_dir(out_dir, EXPORT_CONTENTS, "export")


def check_out_dir(out_dir: str | os.PathLike, contents: Sequence[str], what: str) -> None:
    """Refuse (:class:`~xmed.errors.PathError`) an output folder that is a file, or a folder holding
    anything but ``contents``: the files of an earlier ``what`` (``"export"``), which it replaces.

    Example:
        >>> check_out_dir("/", ("analysis.json", "scores.png"), "analysis")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xmed.errors.PathError: /: holds files that are not from an earlier analysis (...); choose an empty folder
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PathError(out_dir, f"is a file; give a folder for the {what}")
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in contents) if out_dir.exists() else []
    if others:
        raise PathError(out_dir, f"holds files that are not from an earlier {what} ({', '.join(others[:3])}); "
                                 "choose an empty folder")


def export_report(session_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  ratings: Iterable[Mapping[str, Any]] | None = None, n_bootstrap: int = 2000) -> Path:
    """Write the static export of a review session into ``out_dir`` (replacing an earlier export
    there) and return the path of its ``report.html``.

    ``report.html`` shows every case in session order, unblinded: header (pseudonym, side,
    probability, decision, threshold), the rationale sentence, explained share and findings table
    (contributions in logit units), the photograph and each saliency overlay with its colour scale,
    each counterfactual method's edits less glaucomatous | original | more glaucomatous with their
    probabilities, what each changed, flags and difference maps; and, when there are ratings
    (``ratings`` rows as :meth:`~xmed.review.store.RatingStore.rows` gives them, else
    ``<session>/ratings.sqlite`` if present), each reader's progress (:func:`reader_progress`), the
    readers' mean scores per method, overall and per case, and the study's statistics
    (:func:`study_statistics`, ``n_bootstrap`` resamples for its intervals). ``cases/<case stem>.png``
    is :func:`case_png` of each case (stem: :func:`xmed.runs.eye_file_stem` of its id).

    A missing or unreadable image raises :class:`~xmed.errors.PathError` naming it, and nothing of
    the export is written.
    """
    from xmed.review.analysis import DISAGREE_SHARE, SCORE_MARGIN

    session_dir, out_dir = Path(session_dir), Path(out_dir)
    session = load_session(session_dir)
    _check_out_dir(out_dir, session_dir)
    case_ids = [case["id"] for case in session["cases"]]
    rows = stored_rows(session_dir) if ratings is None else [dict(row) for row in ratings]
    readers = _stored_readers(session_dir) if ratings is None else None
    summary = None if rows is None else ratings_summary(_panel_rows(rows), case_ids)
    progress = None if rows is None else reader_progress(rows, session, readers)
    study = None if rows is None else study_statistics(session, rows, n_bootstrap=n_bootstrap)
    random_pairs = {(scale, pair["a"], pair["b"]): pair for scale, result in (study or {}).get("mrmc", {}).items()
                    for pair in result["differences"]}
    titles = {method["name"]: method["title"] for method in session["methods"]}
    where = session_dir / SESSION_FILE
    with staged_folder(out_dir) as staged:
        cases = _exported_cases(session_dir, session, staged / PNG_DIR)
        _REPORT.stream(session=session, cases=cases, summary=summary, progress=progress, study=study,
                       random_pairs=random_pairs, titles=titles, scales=SCALES, gradient=_gradient,
                       margins={"score": SCORE_MARGIN, "share": DISAGREE_SHARE},
                       checked=lambda scale: _scale(scale, where)).dump(str(staged / REPORT_FILE), encoding="utf-8")
    return out_dir / REPORT_FILE
