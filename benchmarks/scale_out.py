"""Two processes instead of one: ``xmed-predict`` and ``xmed-explain`` with ``trainer=ddp_cpu``
(two CPU processes over gloo, the eyes shared between them) against ``trainer=cpu`` (one process),
on the same phantom eyes and model, run as a user runs them (``python -m xmed.cli.<command>``; wall
time, start-up included). Both must give the same outputs: the same rows of ``predictions.csv``
and ``per_image.csv``, every value within 1e-4 (other batch companions round differently in the
last digits).
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from benchmarks.commands import run_command, write_phantom_jpegs
from benchmarks.timing import Context, Part

TOLERANCE = 1e-4


def read_rows(path: Path, key: tuple[str, ...]) -> dict[tuple, dict[str, str]]:
    with open(path, newline="") as fh:
        return {tuple(row[k] for k in key): row for row in csv.DictReader(fh)}


def largest_difference(one: dict[tuple, dict[str, str]], two: dict[tuple, dict[str, str]],
                       ignore: tuple[str, ...] = ()) -> float:
    """The largest |difference| between the numeric cells of two tables with the same rows; inf
    where rows or non-numeric cells differ.

    Example:
        >>> largest_difference({("a",): {"p": "0.5", "s": ""}}, {("a",): {"p": "0.75", "s": ""}})
        0.25
        >>> largest_difference({("a",): {"p": "0.5"}}, {("b",): {"p": "0.5"}})
        inf
    """
    if one.keys() != two.keys():
        return float("inf")
    worst = 0.0
    for key, row in one.items():
        for column, value in row.items():
            other = two[key][column]
            if column in ignore or value == other:
                continue
            try:
                worst = max(worst, abs(float(value) - float(other)))
            except ValueError:
                return float("inf")
    return worst


def run(part: Part, ctx: Context) -> None:
    from xmed.models import FundusClassifier, export_model

    n, side, explained = ctx.size(20, 200), ctx.size(64, 128), ctx.size(2, 8)
    eyes, model = ctx.scratch / "eyes", ctx.scratch / "model"
    write_phantom_jpegs(eyes, n, side, ctx.seed)
    torch.manual_seed(ctx.seed)
    classifier = FundusClassifier("resnet18", input_size=side, threshold=0.5)
    with torch.no_grad():  # an untrained head can make every CAM negative (all zero after ReLU)
        classifier.glaucoma_head.weight.fill_(0.1)
    export_model(classifier.eval(), model)
    explain_options = ["data=phantom", f"data.root={eyes}", "data.num_workers=0", f"n={explained}",
                       f"batch_size={max(explained // 4, 1)}", "explainer=gradcam", "randomisation.n_images=0",
                       "overlays=0"]
    if ctx.quick:
        explain_options += ["metrics=[sparseness,deletion]", "faithfulness.n_steps=4"]
    commands = {"predict": ([f"input={eyes / 'images'}", "num_workers=0"], "predictions.csv", ("id",)),
                "explain": (explain_options, "per_image.csv", ("id", "method"))}
    part.settings.update({"eyes": f"{n} phantom JPEG eyes of {side} px (xmed-predict), {explained} test eyes "
                                  "(xmed-explain, Grad-CAM)", "model": f"resnet18, {side} px",
                          "processes": "trainer=cpu: 1; trainer=ddp_cpu: 2 (gloo)"})
    for command, (options, table, key) in commands.items():
        seconds, rows = {}, {}
        for trainer in ("cpu", "ddp_cpu"):
            out = ctx.scratch / f"{command}_{trainer}"
            done = run_command(command, [f"ckpt_path={model}", f"paths.output_dir={out}", f"trainer={trainer}",
                                         *options], ctx.scratch, timeout=max(ctx.left(), 300))
            if done.returncode != 0:
                raise RuntimeError(f"xmed-{command} trainer={trainer} failed:\n{done.output}")
            seconds[trainer], rows[trainer] = done.seconds, read_rows(out / table, key)
        difference = largest_difference(rows["cpu"], rows["ddp_cpu"], ignore=("seconds",))
        part.check(f"xmed-{command}: the same {table} from 2 processes as from 1 (rows; largest |difference|)",
                   f"{len(rows['ddp_cpu'])} of {len(rows['cpu'])} rows; {difference:.2g}", f"<= {TOLERANCE:g}",
                   difference <= TOLERANCE)
        part.figure(f"xmed-{command}, trainer=ddp_cpu (2 processes)", seconds["ddp_cpu"], "s",
                    "trainer=cpu (1 process)", seconds["cpu"], note="wall time of the command, start-up included")
