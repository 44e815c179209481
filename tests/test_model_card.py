"""The model card's metrics table: every headline metric with its bootstrap interval and its better side."""

from __future__ import annotations

import re

import numpy as np

from xmed.metrics import Predictions, evaluate_predictions, score_direction
from xmed.pipeline.card import METRIC_LABELS, metrics_table, render_model_card


def test_metrics_table_shows_each_metric_with_its_interval_and_arrow():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    p = np.clip(0.35 + 0.25 * y + 0.2 * rng.standard_normal(300), 0, 1)
    metrics = evaluate_predictions(Predictions(p, y), Predictions(p, y), n_bootstrap=50)
    rows = {row.split(" | ")[0].lstrip("| "): row for row in metrics_table(metrics).splitlines()[2:]}
    for key in ("auroc", "sens_at_95spec", "sens_at_95spec_justraigs", "brier", "ece"):
        arrow = {"higher": "↑", "lower": "↓"}[score_direction(key)]
        low, high = metrics["ci"][key]
        assert rows[f"{METRIC_LABELS[key]} {arrow}"].endswith(
            f"| {metrics[key]:.3f} ({low:.3f}–{high:.3f}) |"), key
    assert re.search(r"\| sensitivity at 95% specificity \(JustRAIGS rule\) ↑ \| [01]\.\d{3} \([01]\.\d{3}–[01]\.\d{3}\) \|",
                     metrics_table(metrics))
    card = render_model_card(title="t", metrics=metrics, data={"dataset": "d"}, config_yaml="seed: 0")
    assert "↑ higher is better, ↓ lower is better" in card
