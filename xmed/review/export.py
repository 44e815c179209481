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
import os
import sqlite3
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from xmed.errors import PathError
from xmed.review.analysis import SCALES, Rating, read_ratings
from xmed.review.panels import COLORMAP, colour_table, known_colormap
from xmed.review.session import SESSION_FILE, case_file, case_images, flags_in_words, load_session
from xmed.review.store import STORE_FILE, RatingStore, ratings_csv, ratings_json
from xmed.review.views import (EDIT_TITLES, case_view, changes_text, colour_gradient, environment, fixed, panel_view,
                               short_name, signed)
from xmed.runs import eye_file_stem, staged_folder, write_text_atomic

__all__ = ["REPORT_FILE", "PNG_DIR", "RATINGS_FILES", "export_report", "ratings_summary", "reader_progress",
           "study_statistics", "case_png", "stored_ratings", "stored_rows", "check_out_dir"]

REPORT_FILE = "report.html"
PNG_DIR = "cases"
#: the ratings tables an export holds with ``ratings_files=True`` (every stored row, notes included)
RATINGS_FILES = ("ratings.csv", "ratings.json")
#: what an export folder may hold; a folder holding anything else is not replaced
EXPORT_CONTENTS = (REPORT_FILE, PNG_DIR, *RATINGS_FILES)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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


def _scale(scale: Mapping[str, Any] | None, where: Path) -> dict[str, Any]:
    """A panel's colour scale with its colour map checked (a session from before the colour map
    was recorded is read with the one :mod:`xmed.review.panels` drew then)."""
    scale = dict(scale or {})
    scale.setdefault("low", 0.0)
    scale.setdefault("colormap", COLORMAP)
    if not known_colormap(scale["colormap"]):
        raise PathError(where, f"unknown colour map {scale['colormap']!r} in a panel's scale")
    return scale


def _with_gradient(view: dict[str, Any], where: Path) -> dict[str, Any]:
    """A scale's view (:func:`xmed.review.views.scale_view`) with its colour bar as a CSS gradient,
    its colour map checked (:func:`_scale`)."""
    return dict(view, gradient=colour_gradient(_scale({"colormap": view["colormap"]}, where)["colormap"]))


def _case_item(folder: Path, session: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """A case as the report shows it: its view (:func:`xmed.review.views.case_view`), its panels
    in session order (:func:`xmed.review.views.panel_view`, each scale with its gradient), its file
    stem, and every image it shows as a ``data:`` URI by its session path."""
    where = folder / SESSION_FILE
    panels = [panel_view(method, case, case["panels"][method["name"]]) for method in session["methods"]
              if method["name"] in case["panels"]]
    for panel in panels:
        if panel["kind"] == "saliency":
            panel["scale"] = _with_gradient(panel["scale"], where)
        for edit in (panel.get("edits") or {}).values():
            if edit["difference"]:
                edit["scale"] = _with_gradient(edit["scale"], where)
    return {"case": case_view(session, case), "panels": panels, "stem": eye_file_stem(case["id"]),
            "photo": case["photo"], "bias": case.get("bias"), "unexplained": case.get("unexplained"),
            "images": {relative: _data_uri(_png_bytes(folder, relative)) for relative in case_images(case)}}


def _exported_cases(folder: Path, session: Mapping[str, Any], png_dir: Path) -> Iterator[dict[str, Any]]:
    """Write each case's PNG and yield the case as the report shows it (:func:`_case_item`), one
    case at a time: a long session's report is streamed to its file, never held in memory."""
    for case in session["cases"]:
        case_png(folder, session, case, png_dir / f"{eye_file_stem(case['id'])}.png")
        yield _case_item(folder, session, case)


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
    photo = {"title": f"Photograph\nprobability {fixed(case['probability'])}: {case['decision']}",
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
            edits[direction] = {"title": f"{heading}\nprobability {fixed(edit['probability_from'])} → "
                                         f"{fixed(edit['probability_to'])}\n{changes_text(case, edit)}",
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
    lines += [f"{short_name(finding)[:34]:<35}{fixed(finding['probability']):>7}{signed(finding['contribution']):>10}"
              for finding in case["findings"]]
    lines.append(f"{'vertical cup-to-disc ratio':<35}{fixed(case['vcdr']):>7}{signed(case['vcdr_contribution']):>10}")
    explained = (f"The findings and the vCDR explain {fixed(100 * case['explained_share'], 0)}% of the evidence for "
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
    text(12, 32, f"{case['id']}{side}: probability of glaucoma {fixed(case['probability'])}, "
                 f"{case['decision']} (threshold {fixed(session['threshold'])})", fontsize=16, weight="bold")
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
                text(middle - bar_w / 2, ticks_top, fixed(scale["low"], 3), fontsize=8, ha="center", va="top")
                text(middle + bar_w / 2, ticks_top, fixed(scale["high"], 3), fontsize=8, ha="center", va="top")
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
                  ratings: Iterable[Mapping[str, Any]] | None = None, n_bootstrap: int = 2000,
                  ratings_files: bool = False) -> Path:
    """Write the static export of a review session into ``out_dir`` (replacing an earlier export
    there) and return the path of its ``report.html``.

    ``report.html`` (``templates/report.html``) shows every case in session order, unblinded, in
    the review page's words (the markup of ``templates/_case.html``, the text of
    :mod:`xmed.review.views`): header (pseudonym, side, probability, decision, threshold), the
    rationale sentence, findings table (contributions in logit units) and explained share, the
    photograph and each saliency overlay with its colour scale, each counterfactual method's edits
    less glaucomatous | original | more glaucomatous with their probabilities, what each changed,
    flags and difference maps; and, when there are ratings
    (``ratings`` rows as :meth:`~xmed.review.store.RatingStore.rows` gives them, else
    ``<session>/ratings.sqlite`` if present), each reader's progress (:func:`reader_progress`), the
    readers' mean scores per method, overall and per case, and the study's statistics
    (:func:`study_statistics`, ``n_bootstrap`` resamples for its intervals). ``cases/<case stem>.png``
    is :func:`case_png` of each case (stem: :func:`xmed.runs.eye_file_stem` of its id). With
    ``ratings_files``, the ratings rows (notes included, unlike the report) are written beside it
    as :data:`RATINGS_FILES` (:func:`~xmed.review.store.ratings_csv`, ``ratings_json``) when there
    are any (a session with a ratings file, or ``ratings`` given): the tables and the report come
    from one reading of the store, and are renamed into place together.

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
    with staged_folder(out_dir) as staged:
        cases = _exported_cases(session_dir, session, staged / PNG_DIR)
        environment().get_template("report.html").stream(
            session=session, cases=cases, summary=summary, progress=progress, study=study, random_pairs=random_pairs,
            titles=titles, scales=SCALES, margins={"score": SCORE_MARGIN, "share": DISAGREE_SHARE},
        ).dump(str(staged / REPORT_FILE), encoding="utf-8")
        if ratings_files and rows is not None:
            _write_ratings(rows, staged)
    return out_dir / REPORT_FILE


def _write_ratings(rows: list[dict[str, Any]], folder: Path) -> None:
    """Write ``rows`` into ``folder`` as :data:`RATINGS_FILES` (CSV and JSON)."""
    csv_name, json_name = RATINGS_FILES
    write_text_atomic(folder / csv_name, ratings_csv(rows))
    write_text_atomic(folder / json_name, ratings_json(rows))
