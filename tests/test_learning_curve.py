"""The learning curve of a training run: per-epoch values read from the CSV log and plotted."""

from __future__ import annotations

import logging

import pytest
from PIL import Image

import xmed.viz.plots as plots
from xmed.viz.plots import plot_learning_curve, read_learning_curve

# Lightning's CSV log: learning-rate rows (no epoch), train/loss per step, one validation row per epoch
CLASSIFIER_LOG = """epoch,lr-AdamW,step,train/loss,val/auroc,val/loss
,0.001,0,,,
0,,0,2.0,,
0,,1,1.0,,
0,,1,,0.5,1.9
1,,2,0.75,,
1,,3,0.25,,
1,,3,,0.75,1.2
2,,5,,0.875,1.0
"""
AUTOENCODER_LOG = """epoch,step,train/loss,val/loss
0,0,0.5,
0,0,,0.4
1,1,0.3,
1,1,,0.2
"""


@pytest.mark.parametrize(("log", "validation", "expected"), [
    pytest.param(CLASSIFIER_LOG, "val/auroc",
                 {"train/loss": {0: 1.5, 1: 0.5}, "val/auroc": {0: 0.5, 1: 0.75, 2: 0.875},
                  "val/loss": {0: 1.9, 1: 1.2, 2: 1.0}}, id="classifier-val-auroc"),
    pytest.param(AUTOENCODER_LOG, "val/loss", {"train/loss": {0: 0.5, 1: 0.3}, "val/loss": {0: 0.4, 1: 0.2}},
                 id="autoencoder-val-loss"),
])
def test_learning_curve_plots_the_logs_per_epoch_values(tmp_path, monkeypatch, log, validation, expected):
    metrics_csv = tmp_path / "metrics.csv"
    metrics_csv.write_text(log)
    assert read_learning_curve(metrics_csv) == expected

    drawn = {}
    save = plots._save

    def record(fig, path):  # what the panels hold, just before the figure is written
        drawn.update({ax.get_title(): [tuple(map(float, xy)) for xy in ax.lines[0].get_xydata()] for ax in fig.axes})
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", record)
    out_png = tmp_path / "plots" / "learning_curve.png"
    epochs = plot_learning_curve(metrics_csv, out_png)
    assert epochs == sorted(set(expected["train/loss"]) | set(expected[validation]))
    assert drawn == {
        "training loss (epoch mean)": [(float(e), v) for e, v in expected["train/loss"].items()],
        f"validation {validation.split('/')[1]}": [(float(e), v) for e, v in expected[validation].items()],
    }
    assert out_png.stat().st_size > 0
    with Image.open(out_png) as image:
        assert image.format == "PNG" and image.width > 0


@pytest.mark.parametrize("metrics_csv", [pytest.param(None, id="no-csv-logger"),
                                         pytest.param("missing.csv", id="csv-file-missing")])
def test_learning_curve_is_skipped_without_a_csv_log(tmp_path, caplog, metrics_csv):
    out_png = tmp_path / "learning_curve.png"
    with caplog.at_level(logging.INFO, logger="xmed.viz.plots"):
        epochs = plot_learning_curve(None if metrics_csv is None else tmp_path / metrics_csv, out_png)
    assert epochs == [] and not out_png.exists()
    assert caplog.messages == ["no learning curve: the run kept no CSV log (logger=csv writes csv/metrics.csv)"]


def test_a_training_run_with_the_csv_logger_writes_its_learning_curve(tmp_path):
    from helpers.commands import compose, tiny_overrides

    from xmed.pipeline.training import train

    overrides = [o for o in tiny_overrides(tmp_path, epochs=2) if o != "logger=none"]
    train(compose("train", overrides + ["logger=csv", "trainer.log_every_n_steps=1", "test=false"]))
    curve = read_learning_curve(tmp_path / "csv" / "metrics.csv")
    assert list(curve["train/loss"]) == [0, 1] and list(curve["val/auroc"]) == [0, 1]
    assert (tmp_path / "plots" / "learning_curve.png").stat().st_size > 0
