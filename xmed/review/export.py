"""A review session as static files to share: one self-contained, read-only ``report.html`` (every
image embedded as a ``data:`` URI, the style inline, no script, nothing fetched from anywhere) that
shows every case as the open review does, and one composite PNG per case under ``cases/``.

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
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jinja2
import numpy as np

from xmed.errors import PathError
from xmed.review.analysis import SCALES, Rating, read_ratings
from xmed.review.panels import COLORMAP, FLAGS
from xmed.review.session import SESSION_FILE, case_file, case_images, flags_in_words, load_session
from xmed.review.store import STORE_FILE, RatingStore
from xmed.runs import eye_file_stem, staged_folder

__all__ = ["REPORT_FILE", "PNG_DIR", "export_report", "ratings_summary", "case_png",
           "stored_ratings", "stored_rows", "check_out_dir"]

REPORT_FILE = "report.html"
PNG_DIR = "cases"
#: what an export folder may hold: this module's files and the ratings tables ``xmed-review export``
#: writes beside them; a folder holding anything else is not replaced
EXPORT_CONTENTS = (REPORT_FILE, PNG_DIR, "ratings.csv", "ratings.json")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EDIT_TITLES = {"toward_normal": "toward normal", "toward_glaucoma": "toward glaucoma"}
#: the composite PNG: the width of a tile (an image, its title and colour bar) in pixels, at this many dots per inch
TILE_PIXELS, DPI = 240, 100


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
    path = Path(session_dir) / STORE_FILE
    if not path.is_file():
        return None
    try:
        return RatingStore(path, read_only=True).rows()
    except sqlite3.Error as err:
        raise PathError(path, f"cannot read the ratings: {err}") from None


def stored_ratings(session_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The panel ratings of :func:`stored_rows` less the readers' notes (never in the report), or
    None when the session has no ratings file."""
    rows = stored_rows(session_dir)
    return None if rows is None else [{k: v for k, v in row.items() if k != "note"} for row in rows if row["method"]]


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
    """A CSS left-to-right gradient of a matplotlib colour map: the colour bar without an image."""
    import matplotlib

    colours = matplotlib.colormaps[colormap](np.linspace(0, 1, 11))
    stops = ", ".join(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x} {i * 10}%"
                      for i, (r, g, b, _) in enumerate(colours))
    return f"linear-gradient(to right, {stops})"


def _scale(scale: Mapping[str, Any] | None, where: Path) -> dict[str, Any]:
    """A panel's colour scale with its colour map checked (a session from before the colour map
    was recorded is read with the one :mod:`xmed.review.panels` draws)."""
    import matplotlib

    scale = dict(scale or {})
    scale.setdefault("low", 0.0)
    scale.setdefault("colormap", COLORMAP)
    if scale["colormap"] not in matplotlib.colormaps:
        raise PathError(where, f"unknown colour map {scale['colormap']!r} in a panel's scale")
    return scale


def _fixed(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or a dash for a missing one."""
    if value is None or isinstance(value, bool) or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.{digits}f}"


def _signed(value: Any, digits: int = 2) -> str:
    return "—" if _fixed(value) == "—" else f"{float(value):+.{digits}f}"


_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                  lstrip_blocks=True)
_ENVIRONMENT.filters.update(fixed=_fixed, signed=_signed, in_words=flags_in_words)
_ENVIRONMENT.globals.update(flag_reasons=FLAGS, edit_titles=EDIT_TITLES)

_REPORT = _ENVIRONMENT.from_string("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ session.title }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
header, section.case { border-bottom: 1px solid #ccc; padding-bottom: 1em; margin-bottom: 1.5em; }
.panels { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; width: 256px; }
figure img { width: 256px; height: auto; display: block; }
.pair { display: flex; gap: .5em; }
.pair figure { width: 180px; } .pair figure img { width: 180px; }
.counterfactual { border: 1px solid #ddd; padding: .5em; }
.edits { display: flex; flex-wrap: wrap; gap: 1em; } .edit { width: 370px; }
figcaption, h3 { font-weight: bold; font-size: 14px; margin: 0; }
.bar { height: 10px; margin-top: 4px; }
.ticks { display: flex; justify-content: space-between; font-size: 11px; color: #555; }
.flag { color: #a00; font-weight: bold; }
.decision { font-size: 16px; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.rationale { font-style: italic; }
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
{% if summary %}
<h2>Readers' scores</h2>
{% if summary.methods %}{{ scores_table(summary.overall, "method") }}{% else %}<p>No ratings yet.</p>{% endif %}
{% if summary.left_out %}<p>{{ summary.left_out }} ratings of cases not in this session are left out.</p>{% endif %}
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
<div class="panels">
<figure><figcaption>Photograph</figcaption>
<img src="{{ case.images[case.photo] }}" alt="photograph of {{ case.id }}"></figure>
{% for method in session.methods if method.name in case.panels %}
{% set panel = case.panels[method.name] %}
{% if panel.kind == "saliency" %}
<figure class="saliency"><figcaption>{{ method.title }}</figcaption>
<img src="{{ case.images[panel.overlay] }}" alt="{{ method.title }} over the photograph">
{{ colour_bar(panel.scale) }}</figure>
{% else %}
<div class="counterfactual"><h3>{{ method.title }}</h3><div class="edits">
{% for direction, edit in panel.edits.items() %}
<div class="edit"><div>Edit {{ edit_titles.get(direction, direction) }}: probability {{ edit.probability_from | fixed }}
&rarr; {{ edit.probability_to | fixed }} (goal {{ edit.goal | fixed }},
{{ "reached" if edit.reached else "not reached" }}, {{ edit.steps }} steps;
{{ (100 * edit.changed_fraction) | fixed(1) }}% of the eye changed)</div>
{% if edit.flag %}<div class="flag">{{ edit.flag }}: {{ flag_reasons.get(edit.flag, "") }}</div>{% endif %}
<div class="pair">
{% if edit.image %}
<figure><figcaption>edited</figcaption><img src="{{ case.images[edit.image] }}" alt="edited photograph"></figure>
{% endif %}
{% if edit.difference %}
<figure><figcaption>difference</figcaption><img src="{{ case.images[edit.difference] }}" alt="difference map">
{{ colour_bar(edit.difference_scale) }}</figure>
{% endif %}
</div></div>
{% endfor %}
</div></div>
{% endif %}
{% endfor %}
</div>
<table class="findings">
<tr><th>finding</th><th>probability</th><th>contribution (logit)</th></tr>
{% for finding in case.findings %}
<tr><td>{{ finding.name }} ({{ finding.code }})</td><td class="number">{{ finding.probability | fixed }}</td>
<td class="number">{{ finding.contribution | signed }}</td></tr>
{% endfor %}
<tr><td>vertical cup-to-disc ratio (vCDR)</td><td class="number">{{ case.vcdr | fixed(2) }}</td>
<td class="number">{{ case.vcdr_contribution | signed }}</td></tr>
</table>
<p class="rationale">{{ case.sentence }}</p>
<p>The findings and the vCDR explain {{ (100 * case.explained_share) | fixed(0) }}% of the decision
(bias {{ case.bias | signed }}, unexplained {{ case.unexplained | signed }}
{%- if not case.contributions_exact %}; contributions approximate{% endif %}).</p>
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


def _thumbnail(folder: Path, relative: str, pixels: int) -> np.ndarray:
    """An image of the session shrunk to fit ``pixels`` × ``pixels`` (drawing is then cheap)."""
    from PIL import Image

    with Image.open(io.BytesIO(_png_bytes(folder, relative))) as image:
        image = image.convert("RGB")
        image.thumbnail((pixels, pixels), Image.Resampling.LANCZOS)
        return np.asarray(image)


def _tiles(folder: Path, session: Mapping[str, Any], case: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """Rows of tiles: the photograph and the saliency panels, then one row per counterfactual
    method (each edit and its difference map)."""
    where = folder / SESSION_FILE
    first = [{"title": "Photograph", "image": case["photo"]}]
    rows = [first]
    for method in session["methods"]:
        panel = (case.get("panels") or {}).get(method["name"])
        if panel is None:
            continue
        if panel["kind"] == "saliency":
            first.append({"title": method["title"], "image": panel.get("overlay"),
                          "scale": _scale(panel.get("scale"), where)})
            continue
        row = []
        for direction, edit in panel["edits"].items():
            heading = f"{method['title']}, {EDIT_TITLES.get(direction, direction)}"
            row.append({"title": f"{heading}\n{_fixed(edit['probability_from'])} → {_fixed(edit['probability_to'])}",
                        "image": edit.get("image"), "flag": edit.get("flag")})
            row.append({"title": f"{heading}\ndifference", "image": edit.get("difference"),
                        "scale": _scale(edit["difference_scale"], where) if edit.get("difference") else None})
        rows.append(row)
    return rows


def _case_text(case: Mapping[str, Any]) -> tuple[str, str]:
    """The findings table (monospaced) and the rationale paragraph of a case's PNG."""
    lines = [f"{'finding':<48}{'prob.':>7}{'contrib.':>10}"]
    lines += [f"{finding['name'][:47]:<48}{_fixed(finding['probability']):>7}{_signed(finding['contribution']):>10}"
              for finding in case["findings"]]
    lines.append(f"{'vertical cup-to-disc ratio':<48}{_fixed(case['vcdr'], 2):>7}"
                 f"{_signed(case['vcdr_contribution']):>10}")
    explained = (f"The findings and the vCDR explain {_fixed(100 * case['explained_share'], 0)}% of the decision"
                 + ("" if case.get("contributions_exact") else " (contributions approximate)") + ".")
    quality = [flags_in_words(case["quality"])] if case.get("quality") else []
    paragraph = "\n".join(textwrap.fill(text, 70) for text in [*quality, case["sentence"], explained])
    return "\n".join(lines), paragraph


def case_png(folder: str | os.PathLike, session: Mapping[str, Any], case: Mapping[str, Any],
             path: str | os.PathLike) -> Path:
    """Write one case as a composite PNG at ``path``: a header line (pseudonym, side, probability,
    decision, threshold), the photograph, each saliency panel and each counterfactual edit with its
    difference map, each with its colour bar and flag, then the findings table and the sentence.
    ``session`` and ``case`` are as :func:`~xmed.review.session.load_session` returns them.

    Each tile is :data:`TILE_PIXELS` wide: 960 px for a row of a counterfactual method's two edits
    and their difference maps. Images are placed pixel for pixel (no axes: drawing stays cheap)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(folder)
    rows = _tiles(folder, session, case)
    title_h, bar_h, label_h, header_h, text_h = 50, 12, 50, 45, 180
    bar_w, image_side = TILE_PIXELS - 50, TILE_PIXELS - 10
    row_h = title_h + TILE_PIXELS + bar_h + label_h
    width, height = max(len(row) for row in rows) * TILE_PIXELS, header_h + len(rows) * row_h + text_h
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)

    def text(x: float, y: float, words: str, **style: Any) -> None:
        """``words`` at ``x``, ``y`` pixels from the top left, never read as mathematics."""
        figure.text(x / width, 1 - y / height, words, parse_math=False, **style)

    def picture(image: np.ndarray, left: float, top: float) -> None:
        """``image`` with its top left corner ``left``, ``top`` pixels from the figure's."""
        figure.figimage(image, xo=round(left), yo=round(height - top - image.shape[0]), origin="upper")

    side = f", {case['side']} eye" if case.get("side") else ""
    text(10, 30, f"{case['id']}{side}: probability of glaucoma {_fixed(case['probability'])}, "
                 f"{case['decision']} (threshold {_fixed(session['threshold'])})", fontsize=12, weight="bold")
    for r, row in enumerate(rows):
        top = header_h + r * row_h
        for c, tile in enumerate(row):
            middle, image_top = (c + 0.5) * TILE_PIXELS, top + title_h
            text(middle, top + 2, "\n".join(textwrap.fill(line, 34) for line in tile["title"].split("\n")),
                 fontsize=8, ha="center", va="top")
            if tile["image"]:
                image = _thumbnail(folder, tile["image"], image_side)
                picture(image, middle - image.shape[1] / 2, image_top + (TILE_PIXELS - image.shape[0]) / 2)
            if tile.get("flag") or not tile["image"]:
                text(middle, image_top + TILE_PIXELS - 15, tile.get("flag") or "no image", fontsize=8, ha="center",
                     color="white", weight="bold", bbox={"facecolor": "#a00", "edgecolor": "none", "pad": 2})
            scale = tile.get("scale")
            if scale:
                import matplotlib

                colours = matplotlib.colormaps[scale["colormap"]](np.linspace(0, 1, bar_w))[:, :3]
                picture(np.repeat((colours * 255 + 0.5).astype(np.uint8)[None], bar_h, axis=0),
                        middle - bar_w / 2, image_top + TILE_PIXELS)
                ticks_top = image_top + TILE_PIXELS + bar_h + 2
                text(middle - bar_w / 2, ticks_top, _fixed(scale["low"]), fontsize=7, ha="center", va="top")
                text(middle + bar_w / 2, ticks_top, _fixed(scale["high"]), fontsize=7, ha="center", va="top")
                text(middle, ticks_top + 14, textwrap.fill(scale.get("label", ""), 56), fontsize=6, ha="center",
                     va="top")
    findings, paragraph = _case_text(case)
    text_top = header_h + len(rows) * row_h + 10
    text(10, text_top, findings, fontsize=7, family="monospace", va="top")
    text(0.55 * width, text_top, paragraph, fontsize=8, va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path)
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
                  ratings: Iterable[Mapping[str, Any]] | None = None) -> Path:
    """Write the static export of a review session into ``out_dir`` (replacing an earlier export
    there) and return the path of its ``report.html``.

    ``report.html`` shows every case in session order, unblinded: header (pseudonym, side,
    probability, decision, threshold), photograph, each method's panel (saliency overlay with its
    colour scale; counterfactual edits with their difference maps, scales, probabilities and
    flags), the findings table, vCDR, sentence and explained share; and, when there are ratings
    (``ratings`` rows, else ``<session>/ratings.sqlite`` if present), the readers' mean scores per
    method, overall and per case. ``cases/<case stem>.png`` is :func:`case_png` of each case
    (stem: :func:`xmed.runs.eye_file_stem` of its id).

    A missing or unreadable image raises :class:`~xmed.errors.PathError` naming it, and nothing of
    the export is written.
    """
    session_dir, out_dir = Path(session_dir), Path(out_dir)
    session = load_session(session_dir)
    _check_out_dir(out_dir, session_dir)
    case_ids = [case["id"] for case in session["cases"]]
    rows = stored_ratings(session_dir) if ratings is None else ratings
    summary = None if rows is None else ratings_summary(rows, case_ids)
    titles = {method["name"]: method["title"] for method in session["methods"]}
    where = session_dir / SESSION_FILE
    with staged_folder(out_dir) as staged:
        cases = _exported_cases(session_dir, session, staged / PNG_DIR)
        _REPORT.stream(session=session, cases=cases, summary=summary, titles=titles, gradient=_gradient,
                       checked=lambda scale: _scale(scale, where)).dump(str(staged / REPORT_FILE), encoding="utf-8")
    return out_dir / REPORT_FILE
