"""The reports of an explanation run: per-method summaries, the comparison table (each metric's
better direction read from the metric registry), the comparison with an earlier run, the per-eye
CSV, the contact sheet of overlays and the model card's "Explanation checks" section.

Example:
    >>> print(comparison_table({"gradcam": {"n": 8, "energy_pointing_game": 0.61, "seconds": 0.02}}, "glaucoma"))
    Target `glaucoma`; ↑ higher is better, ↓ lower is better.
    <BLANKLINE>
    | method | eyes | energy pointing game ↑ | s / image |
    |---|---|---|---|
    | gradcam | 8 of 8 | 0.610 | 0.02 |
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from omegaconf import DictConfig

from xmed.checks import is_number, strict_json
from xmed.errors import ConfigError
from xmed.metrics import score_direction
from xmed.pipeline.card import NO_EXPLANATION_CHECKS
from xmed.runs import PER_IMAGE_TEXT, eye_file_stem, read_per_image, write_text_atomic
from xmed.viz.grid import image_grid

#: What every per-image record says of its eye besides the scores: the image-quality flags (``;``-joined,
#: empty when the image passed) and the status (``non-finite output`` when the model's output for
#: the eye is NaN or infinite: its scores are then left empty).
EYE_COLUMNS = PER_IMAGE_TEXT[2:]   # ("quality", "status"): the text columns after id and method


def summarise(records: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Mean of every metric per method over the eyes where it is defined, and how many those were."""
    summary: dict[str, dict[str, Any]] = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        keys = [k for k in rows[0] if k not in ("id", "method", *EYE_COLUMNS)] if rows else []
        entry: dict[str, Any] = {"n": len(rows)}
        for key in keys:
            values = [r[key] for r in rows if r.get(key) is not None]
            entry[key] = round(float(np.mean(values)), 6) if values else None
            if key not in ("seconds",) and len(values) != len(rows):
                entry[f"{key}_n"] = len(values)
        summary[method] = entry
    return summary


#: The metric whose count of defined eyes the table shows: localisation for saliency maps (on the
#: phantom only glaucomatous eyes have a region for `glaucoma`), validity for counterfactuals (only
#: eyes that were not already at the goal were edited).
HEADLINE_METRICS = ("energy_pointing_game", "validity")


def eyes_scored(entry: Mapping[str, Any]) -> str:
    """``"k of n"``: of the ``n`` eyes a method ran on, the ``k`` its headline metric is defined on.

    Example:
        >>> eyes_scored({"n": 32, "validity": 1.0, "validity_n": 11}), eyes_scored({"n": 8, "deletion": 0.1})
        ('11 of 32', '8')
    """
    for key in HEADLINE_METRICS:
        if key in entry:
            return f"{entry.get(f'{key}_n', entry['n'])} of {entry['n']}"
    return str(entry["n"])


def comparison_table(summary: Mapping[str, Mapping[str, Any]], target: str) -> str:
    """Markdown: one row per method, one column per metric, each metric's better side marked
    (:func:`xmed.metrics.score_direction`)."""
    columns: list[str] = ["eyes"]
    for entry in summary.values():
        for key in entry:
            if key not in columns and key not in ("n", "seconds") and not key.endswith("_n") \
                    and not key.startswith("randomisation_curve"):
                columns.append(key)
    columns.append("seconds")

    def header(key: str) -> str:
        if key == "seconds":
            return "s / image"
        arrow = {"higher": " ↑", "lower": " ↓"}.get(score_direction(key) or "", "")
        return key.replace("_", " ") + arrow

    lines = [f"Target `{target}`; ↑ higher is better, ↓ lower is better.", "",
             "| method | " + " | ".join(header(c) for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for method, entry in summary.items():
        cells = []
        for key in columns:
            if key == "eyes":
                cells.append(eyes_scored(entry))
                continue
            value = entry.get(key)
            cells.append("–" if value is None else (f"{value:.3f}" if key != "seconds" else f"{value:.3g}"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The metrics put side by side with an earlier run (``compare_run=``), where a method has them.
COMPARED_METRICS = ("shortcut_energy", "energy_pointing_game", "validity", "energy_in_mask", "l1_in_mask",
                    "vcdr_falls", "proximity_l2")


def run_comparison(summary: Mapping[str, Mapping[str, Any]], other_run: Path, out_dir: Path | None = None,
                   records: list[dict[str, Any]] | None = None) -> str:
    """Markdown: per method, the :data:`COMPARED_METRICS` of this run's model next to those of the
    model of an earlier run on the same eyes (e.g. a standard vs an adversarially trained model,
    or a model trained with the shortcut marker vs one without). With this run's per-eye
    ``records`` and the earlier run's ``per_image.csv``, a last column pairs the eyes: on how many
    of the eyes both scored this model's value is the higher. With ``out_dir``, also writes
    ``compare/<method>/<id>.png``: this run's overlay (left) and the earlier run's (right) of
    every eye both have.

    Example:
        >>> run_comparison({}, Path("/nowhere"))
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'compare_run': no metrics.json in /nowhere (give an xmed-explain run folder)
    """
    path = other_run / "metrics.json"
    if not path.is_file():
        raise ConfigError("compare_run", f"no metrics.json in {other_run} (give an xmed-explain run folder)")
    try:
        other = strict_json(path.read_bytes())["methods"]
        if not isinstance(other, dict) or not all(isinstance(v, dict) for v in other.values()):
            raise TypeError("methods is not a mapping of method names to their figures")
    except (ValueError, KeyError, TypeError) as err:  # bad JSON (a ValueError) or another shape
        raise ConfigError("compare_run", f"{path} is not an xmed-explain metrics.json ({type(err).__name__}: "
                                         f"{err})") from None
    paired = _paired_counts(records, other_run / "per_image.csv") if records is not None else None
    lines = [f"This model vs the model of `{other_run}`, on the same eyes.", "",
             "| method | metric | this model | comparison model |" + (" this model higher |" if paired else ""),
             "|---|---|---|---|" + ("---|" if paired else "")]
    for method, entry in summary.items():
        for key in COMPARED_METRICS:
            mine, theirs = entry.get(key), other.get(method, {}).get(key)
            theirs = theirs if is_number(theirs) else None  # the other run's file is data: text is no figure
            if mine is None and theirs is None:
                continue
            cells = ["–" if v is None else f"{v:.3f}" for v in (mine, theirs)]
            if paired:
                higher, equal, both = paired.get((method, key), (0, 0, 0))
                cells.append("–" if not both else f"{higher} of {both} eyes" + (f" ({equal} equal)" if equal else ""))
            lines.append(f"| {method} | {key.replace('_', ' ')} | " + " | ".join(cells) + " |")
    if out_dir is not None:
        pictures = _side_by_side(out_dir, other_run, [m for m in summary if m in other])
        if pictures:
            lines += ["", f"Side by side (this model left): `compare/<method>/<eye>.png` in the run folder "
                          f"({pictures} pictures)."]
    return "\n".join(lines)


def _paired_counts(records: list[dict[str, Any]], other_csv: Path) -> dict[tuple[str, str], tuple[int, int, int]] | None:
    """``{(method, metric): (eyes where this run's value is higher, eyes where both are equal, eyes
    both runs scored)}`` from this run's records and the earlier run's ``per_image.csv`` (None when
    that file is missing)."""
    if not other_csv.is_file():
        return None
    theirs = read_per_image(other_csv)
    counts: dict[tuple[str, str], list[int]] = {}
    for record in records:
        row = theirs.get((record["id"], record["method"]))
        if row is None:
            continue
        for key in COMPARED_METRICS:
            mine, other = record.get(key), row.get(key)
            if mine is None or other is None:
                continue
            count = counts.setdefault((record["method"], key), [0, 0, 0])
            count[0] += int(float(mine) > other)
            count[1] += int(float(mine) == other)
            count[2] += 1
    return {k: tuple(v) for k, v in counts.items()}


def _side_by_side(out_dir: Path, other_run: Path, methods: list[str]) -> int:
    """``compare/<method>/<id>.png`` for every overlay both runs wrote; returns how many."""
    from PIL import Image

    written = 0
    for method in methods:
        for mine in sorted((out_dir / "overlays" / method).glob("*.png")):
            theirs = other_run / "overlays" / method / mine.name
            if not theirs.is_file():
                continue
            left, right = np.asarray(Image.open(mine).convert("RGB")), np.asarray(Image.open(theirs).convert("RGB"))
            height = max(left.shape[0], right.shape[0])
            pad = [np.pad(x, ((0, height - x.shape[0]), (0, 0), (0, 0)), constant_values=255) for x in (left, right)]
            gap = np.full((height, 6, 3), 255, np.uint8)
            folder = out_dir / "compare" / method
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([pad[0], gap, pad[1]], axis=1)).save(folder / mine.name)
            written += 1
    return written


CARD_LEGEND = (
    "Each run of `xmed-explain … model_card=<this card>` keeps its own subsection below (a rerun with the "
    "same methods, target, split and eyes replaces it). Localisation is scored against the data set's "
    "masks — for `glaucoma` the disc plus the masks of the findings present, on glaucomatous eyes only "
    "(`eyes` says how many; for counterfactuals, how many were edited: an eye already at the goal is "
    "not; an edit is scored against the disc of every eye plus the findings present); faithfulness: deletion/insertion AUC of the target's probability and ROAD "
    "(noisy linear imputation); randomisation: Spearman between the maps of the trained model and of a "
    "copy with every layer re-initialised (near 0 is good; Adebayo et al., 2018); counterfactuals: flip "
    "rate, proximity, changed fraction, the shares of the change inside the masks — of its energy (Σδ², what the "
    "L2 budget bounds) and of its absolute size (L1) — and the vCDR's movement."
)


def run_heading(cfg: DictConfig) -> str:
    """The card subsection heading of a run: the command that reproduces it (model aside).

    Example:
        >>> from omegaconf import OmegaConf
        >>> run_heading(OmegaConf.create({"explainer": {"gradcam": {}}, "target": "glaucoma",
        ...                               "split": "test", "n": 8, "label": None}))
        "### `xmed-explain 'explainer=[gradcam]' target=glaucoma split=test n=8`"
    """
    command = f"xmed-explain 'explainer=[{','.join(cfg.explainer)}]' target={cfg.target} split={cfg.split} n={cfg.n}"
    if cfg.get("label") is not None:
        command += f" label={cfg.label}"
    return f"### `{command}`"


def update_model_card(card: Path, table: str, cfg: DictConfig) -> None:
    """Put this run's table into the card's "Explanation checks" section, in a subsection of its own.

    Free text at the top of the section is kept; the subsection of an earlier run with the same
    heading (:func:`run_heading`) is replaced, other runs' subsections are kept.
    """
    if not card.is_file():
        raise ConfigError("model_card", f"no such file: {card}")
    text = card.read_text()
    heading = "## Explanation checks"
    found = re.search(rf"{re.escape(heading)}\n(.*?)(?=\n## |\Z)", text, flags=re.S)
    if found is None:
        raise ConfigError("model_card", f"{card} has no '{heading}' section")
    body = found.group(1).replace(NO_EXPLANATION_CHECKS, "").strip()
    # the legend of whichever xmed version wrote the card is replaced by this one's
    legend_start = CARD_LEGEND[:CARD_LEGEND.index("(")]
    body = re.sub(rf"^{re.escape(legend_start)}.*?(?:\n\n|\Z)", "", body, flags=re.S | re.M).strip()
    body = f"{CARD_LEGEND}\n\n{body}".strip()
    title = run_heading(cfg)
    subsection = f"{title}\n\nModel `{cfg.ckpt_path}`.\n\n{table.strip()}"
    earlier = re.search(rf"^{re.escape(title)}\n.*?(?=^### |\Z)", body, flags=re.S | re.M)
    if earlier:
        body = body[:earlier.start()] + subsection + "\n\n" + body[earlier.end():].lstrip()
    else:
        body = f"{body}\n\n{subsection}"
    section = f"{heading}\n\n{body.strip()}\n"
    write_text_atomic(card, text[:found.start()] + section + text[found.end():])
    print(f"model card      {card.resolve()} (explanation checks: {title[4:]})")


def write_per_image(path: Path, records: list[dict[str, Any]]) -> None:
    columns = ["id", "method", *EYE_COLUMNS]
    for record in records:
        columns += [k for k in record if k not in columns]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if v is None else v) for k, v in record.items()})


def comparison_sheet(out_dir: Path, methods: list[str], ids: list[str]) -> None:
    """overlays/comparison.png: one row per eye, one column per method."""
    from PIL import Image

    tiles, captions = [], []
    for eye_id in ids:
        for method in methods:
            path = out_dir / "overlays" / method / f"{eye_file_stem(eye_id)}.png"
            if path.is_file():
                tiles.append(np.asarray(Image.open(path).convert("RGB")))
                captions.append(method.replace("_", " "))
    if tiles:
        Image.fromarray(image_grid(tiles, columns=len(methods), captions=captions, caption_scale=0.35)).save(
            out_dir / "overlays" / "comparison.png")
