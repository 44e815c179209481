"""Model cards: Markdown with YAML front matter, in the style of Hugging Face cards, written by
``xmed-train`` and completed by ``xmed-explain``.

The text lives in ``model_card.md`` beside this module, shipped in the package (``$name``
placeholders); this module fills it from plain dicts (metrics, data summary, config, compute).
Which values of a metric are better (the arrows of the metrics table) comes from
:func:`xmed.metrics.score_direction`.

Example:
    >>> text = render_model_card(title="demo", metrics={"auroc": 0.9, "ci": {"auroc": [0.85, 0.94]}},
    ...                          data={"dataset": "phantom", "splits": {"test": 10}}, config_yaml="seed: 0")
    >>> text.splitlines()[0], "| AUROC ↑ | 0.900 (0.850–0.940) |" in text
    ('---', True)
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any, Mapping

import yaml

from xmed.metrics import score_direction

TEMPLATE = Path(__file__).with_name("model_card.md")

METRIC_LABELS = {
    "auroc": "AUROC",
    "pauroc_90": "partial AUROC, FPR ≤ 0.1 (standardised)",
    "sens_at_95spec": "sensitivity at 95% specificity (AIROGS rule)",
    "sens_at_95spec_justraigs": "sensitivity at 95% specificity (JustRAIGS rule)",
    "sensitivity": "sensitivity (at the validation threshold)",
    "specificity": "specificity (at the validation threshold)",
    "accuracy": "accuracy (at the validation threshold)",
    "brier": "Brier score",
    "ece": "expected calibration error",
    "finding_auroc_mean": "mean per-finding AUROC",
    "finding_hamming": "finding Hamming loss (referable eyes)",
    "vcdr_mae": "vCDR mean absolute error",
}

ARROWS = {"higher": " ↑", "lower": " ↓"}

NO_EXPLANATION_CHECKS = (
    "No explanation method has been checked on this model yet. `xmed-explain ckpt_path=<run>/model "
    "explainer=all model_card=<this card>` scores saliency maps against the data set's masks and "
    "records the table here."
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """The headline metrics with their bootstrap 95% intervals, as a Markdown table; an arrow says
    whether higher (↑) or lower (↓) is better.

    Example:
        >>> print(metrics_table({"brier": 0.2, "sens_at_95spec_justraigs": 0.5,
        ...                      "ci": {"sens_at_95spec_justraigs": [0.4, 0.6]}}))
        | metric | value (95% CI) |
        |---|---|
        | sensitivity at 95% specificity (JustRAIGS rule) ↑ | 0.500 (0.400–0.600) |
        | Brier score ↓ | 0.200 |
    """
    ci = metrics.get("ci", {})
    rows = ["| metric | value (95% CI) |", "|---|---|"]
    for key, label in METRIC_LABELS.items():
        if key not in metrics:
            continue
        value = _fmt(metrics[key])
        if ci.get(key) and None not in ci[key]:
            value += f" ({ci[key][0]:.3f}–{ci[key][1]:.3f})"
        rows.append(f"| {label}{ARROWS.get(score_direction(key), '')} | {value} |")
    return "\n".join(rows)


def render_model_card(*, title: str, metrics: Mapping[str, Any], data: Mapping[str, Any],
                      config_yaml: str, architecture: Mapping[str, Any] | None = None,
                      files: Mapping[str, str] | None = None, explanation_checks: str | None = None,
                      limitations: list[str] | None = None, summary: str = "",
                      compute: Mapping[str, Any] | None = None, template: Path = TEMPLATE) -> str:
    """Fill the card template. ``files`` maps file names to sha256 digests; ``compute`` the
    devices, precision and other machine-dependent settings of the run, with their reasons."""
    architecture = dict(architecture or {})
    front = {
        "library_name": "xmed",
        "license": "apache-2.0",
        "pipeline_tag": "image-classification",
        "tags": ["glaucoma", "fundus", "explainability", "research-only"],
        "datasets": [data.get("dataset", "unknown")],
        "base_model": architecture.get("backbone"),
        "model-index": [{"name": title, "results": [{
            "task": {"type": "image-classification", "name": "referable glaucoma"},
            "dataset": {"name": data.get("dataset", "unknown"), "type": data.get("dataset", "unknown"),
                        "split": "test"},
            "metrics": [{"type": k, "value": round(float(metrics[k]), 4)}
                        for k in ("auroc", "pauroc_90", "sens_at_95spec", "vcdr_mae")
                        if isinstance(metrics.get(k), (int, float))],
        }]}],
    }
    data_lines = [f"- **Data set**: `{data.get('dataset', 'unknown')}`" + (f" at `{data['root']}`" if data.get("root") else "")]
    for key, label in (("splits", "Splits (eyes)"), ("prevalence", "Glaucoma prevalence per split"),
                       ("split_rule", "Split rule"), ("image_size", "Input size (px)"),
                       ("preprocess", "Preprocessing"), ("skipped", "Skipped files"),
                       ("quality_checks", "Image-quality checks"), ("feature_check", "Out-of-distribution check")):
        if key in data:
            data_lines.append(f"- **{label}**: {data[key]}")
    arch_lines = [f"- **{k}**: `{v}`" for k, v in architecture.items()] or ["- not recorded"]
    extra = []
    if metrics.get("oracle_auroc") is not None:
        extra.append(f"The phantom's oracle — the true P(glaucoma | findings, vCDR), the best any "
                     f"model can do — scores AUROC {metrics['oracle_auroc']:.3f} on the same test eyes; "
                     f"this model reaches {_fmt(metrics.get('auroc'))} "
                     f"({_fmt(metrics['auroc'] / metrics['oracle_auroc'] if metrics.get('auroc') else None)} of it).")
    if "intervention" in metrics:
        iv = metrics["intervention"]
        extra.append(f"Concept bottleneck: AUROC {_fmt(iv['auroc_predicted_concepts'])} from the predicted "
                     f"findings and vCDR, {_fmt(iv['auroc_true_concepts'])} when the true ones are given "
                     f"(test-time intervention).")
    extra += scoring_notes(metrics)
    finding_rows = ["| finding | AUROC |", "|---|---|"] + [
        f"| {code} | {_fmt(v)} |" for code, v in (metrics.get("finding_auroc") or {}).items()]
    threshold = (f"Threshold {_fmt(metrics.get('threshold'))} chosen on the validation split "
                 f"({metrics.get('threshold_rule', 'youden')}); test eyes: {metrics.get('n')} "
                 f"({metrics.get('n_positive')} glaucoma). 95% intervals: percentile bootstrap over test eyes; "
                 f"↑ higher is better, ↓ lower is better.")
    limitations = limitations or [
        "Trained and evaluated on one data set; performance on other cameras, populations and "
        "image qualities is unknown.",
        "Labels and findings are only as good as their source; findings unknown in the data were "
        "not learnt from.",
        "Calibration is measured on the test split of the same data set and may not transfer.",
    ]
    files_lines = [f"- `{name}` sha256 `{digest}`" for name, digest in (files or {}).items()] or ["- none"]
    return Template(template.read_text()).substitute(
        front_matter=yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(),
        title=title,
        summary=summary or f"A glaucoma screening model trained with xmed on `{data.get('dataset', 'unknown')}`.",
        data_section="\n".join(data_lines),
        architecture_section="\n".join(arch_lines),
        compute_section="\n".join(f"- **{k}**: {v}" for k, v in (compute or {}).items()) or "- not recorded",
        config_yaml=config_yaml.strip(),
        metrics_section="\n\n".join([metrics_table(metrics), threshold, *extra, "\n".join(finding_rows)]),
        explanation_section=explanation_checks or NO_EXPLANATION_CHECKS,
        limitations_section="\n".join(f"- {line}" for line in limitations),
        files_section="\n".join(files_lines),
    )


def scoring_notes(metrics: Mapping[str, Any]) -> list[str]:
    """Sentences on the test eyes not scored (a non-finite model output) and those that failed the
    image-quality check (scored, flagged), of them those the model's feature check flagged; none
    when every eye was clean.

    Example:
        >>> scoring_notes({"excluded": {"test": 1}, "quality_flagged": {"test": 0}})
        ['1 test eye was not scored: the model gave a non-finite output (`failed` in metrics.json).']
        >>> scoring_notes({"quality_flagged": {"test": 3}, "unfamiliar_features": {"test": 2}})[1]
        "2 of them by the model's feature check: their features are unlike the training eyes' (`unfamiliar_features`)."
    """
    notes = []
    excluded = (metrics.get("excluded") or {}).get("test", 0)
    flagged = (metrics.get("quality_flagged") or {}).get("test", 0)
    if excluded:
        notes.append(f"{excluded} test eye{'s were' if excluded > 1 else ' was'} not scored: the model gave a "
                     "non-finite output (`failed` in metrics.json).")
    if flagged:
        notes.append(f"{flagged} test eye{'s' if flagged > 1 else ''} failed the image-quality check and "
                     f"{'were' if flagged > 1 else 'was'} scored all the same (`quality` column of predictions.csv).")
    unfamiliar = (metrics.get("unfamiliar_features") or {}).get("test", 0)
    if unfamiliar:
        notes.append(f"{unfamiliar} of them by the model's feature check: {'their' if unfamiliar > 1 else 'its'} "
                     "features are unlike the training eyes' (`unfamiliar_features`).")
    return notes
