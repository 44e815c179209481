"""``xmed-predict`` run in-process: ``predict`` (its summary and its rows by eye id) and the input size
``SIZE`` of the model it scores (the ``model_dir`` fixture of tests/conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path

from helpers.commands import compose

SIZE = 64


def predict(model: Path, folder: Path, out: Path, *extra: str) -> tuple[dict, dict[str, dict[str, str]]]:
    from xmed.pipeline.prediction import predict_run

    summary = predict_run(compose("predict", [f"ckpt_path={model}", f"input={folder}", f"paths.output_dir={out}",
                                              "num_workers=0", *extra]))
    with open(out / "predictions.csv", newline="") as fh:
        return summary, {row["id"]: row for row in csv.DictReader(fh)}
