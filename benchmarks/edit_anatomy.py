"""How anatomical the review's adversarial edits are, for each colour mode of the editor.

Not a timing: a study of one trained model, outside the suites of ``python -m benchmarks``. Fresh
phantom eyes (their cause known) go through the model's eval transform; the review's editor
(:func:`xmed.review.build._editor`'s settings: steps, smoothing) edits each toward normal and
toward glaucoma, the way the review did before (colour ``free``, budget 0.08, fixed goals P 0.05 /
0.95), with a logit step of 3 from each eye's start in each colour mode (``free``, ``lightness``,
``fundus`` with 2 and 1 colour axes) at that budget, and with the review's settings now. Per edit:

- **hue share** (:func:`xmed.metrics.counterfactual.hue_share`): the share of its CIELAB change
  energy in a and b rather than L, over the field of view (0: lightness only);
- **disc share**: the share of its change energy (pixel units) inside the optic disc (cup and
  rim), beside the disc's share of the field of view (what an edit spread evenly would score);
- **ideal correlation** (:func:`xmed.metrics.counterfactual.change_correlation`): the correlation
  of its per-pixel change with the change between the eye and *the same eye re-rendered with its
  cup moved by as much as the edit moved the predicted vCDR*
  (:func:`xmed.data.render_phantom`'s ``cup_vcdr``, clipped to the phantom's range), both through
  the eval transform with the crop of the eye's own photograph;
- whether it reached its goal, the share of the field of view it changed visibly (the review's
  measure: :func:`xmed.review.panels.edit_change`, 8 of 255 grey levels), its gradient steps, and
  whether the predicted vCDR moved the asked way.

An eye the editor left as it was (already past a fixed goal) has no edit to score and is counted
apart ("not edited").

Example (the run in ``benchmarks/results/edit_anatomy/``, its ``results.md`` the command)::

    python -m benchmarks.edit_anatomy --model outputs/demo/train/model --out benchmarks/results/edit_anatomy
    python -m benchmarks.edit_anatomy --work /tmp/edit_anatomy --out /tmp/edit_anatomy/results   # trains a model first
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from xmed.data import render_phantom
from xmed.data.phantom.cause import VCDR_HIGH, VCDR_LOW

#: eye seeds: far from those a written phantom data set draws
SEED = 3 * 10**9
#: the phantom's options for the eyes (both classes alike often) and their re-renderings
PHANTOM = {"prevalence": 0.5}
#: the budget of the review's edits before they were constrained to lightness
FREE_BUDGET = 0.08
#: the editor settings compared: (name, options on top of the review's); the colour modes at the
#: budget of the first row, today's review's, then the review's own settings
MODES = (
    ("before: free, fixed goals 0.05 / 0.95", {"colour": "free", "relative_epsilon": FREE_BUDGET, "goals": "fixed"}),
    ("free, logit step", {"colour": "free", "relative_epsilon": FREE_BUDGET}),
    ("lightness, logit step", {"colour": "lightness", "relative_epsilon": FREE_BUDGET}),
    ("fundus (2 axes), logit step", {"colour": "fundus", "colour_axes": 2, "relative_epsilon": FREE_BUDGET}),
    ("fundus (1 axis), logit step", {"colour": "fundus", "colour_axes": 1, "relative_epsilon": FREE_BUDGET}),
    ("the review's: lightness, logit step, its budget", {}),
)
DIRECTIONS = {"toward_normal": "decrease", "toward_glaucoma": "increase"}
#: the figures of each summary row, in the table's order: (key, title, format)
FIGURES = (("hue_share", "hue share", ".2f"), ("disc_share", "disc share", ".2f"),
           ("ideal_correlation", "ideal correlation", ".2f"), ("reached", "reached goal", ".0%"),
           ("changed_fraction", "changed FOV", ".1%"), ("steps", "steps", ".1f"),
           ("vcdr_right_way", "vCDR moved the asked way", ".0%"), ("vcdr_move", "|ΔvCDR|", ".3f"))


def train_model(work: Path, n: int) -> Path:
    """A ``phantom_smoke`` model (as the demo trains it) on an ``n``-eye phantom written into
    ``work``; returns its exported folder."""
    data, run = work / "data", work / "train"
    for command in ([sys.executable, "-m", "xmed.cli.data", "phantom", "--out", str(data), "--n", str(n),
                     "--size", "256", "--seed", "0"],
                    [sys.executable, "-m", "xmed.cli.train", "experiment=phantom_smoke", f"paths.data_dir={data}",
                     f"data.root={data}", f"paths.output_dir={run}", f"hydra.run.dir={run}"]):
        print("running", " ".join(command[2:]), flush=True)
        subprocess.run(command, check=True)
    return run / "model"


@contextlib.contextmanager
def crop_of(image: np.ndarray) -> Iterator[None]:
    """Within it, the eval transform's preprocessing crops every photograph where it crops
    ``image`` (the field of view and the optic disc as found in ``image``): a re-rendered eye is
    seen through the same window as the eye itself (found afresh, a changed cup moves the disc
    finder's answer by a pixel or two, and with it every pixel of the crop)."""
    from xmed.data import preprocess

    fov = preprocess.find_fov(image)
    disc = preprocess.find_disc(image, fov)
    saved = preprocess.find_fov, preprocess.find_disc
    preprocess.find_fov, preprocess.find_disc = (lambda *_, **__: fov), (lambda *_, **__: disc)
    try:
        yield
    finally:
        preprocess.find_fov, preprocess.find_disc = saved


def prepared(transform, eye, image: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The eye's photograph (or ``image``, a re-rendering of it) through ``transform``: the C×H×W
    input and the H×W optic-disc mask."""
    sample = {"image": eye.image if image is None else image, "label": float(eye.label),
              "findings": np.zeros(10, np.float32), "vcdr": eye.vcdr, "masks": {"disc": eye.masks["disc"]},
              "meta": {"id": str(eye.seed), "eye": eye.eye, "source": "phantom"}}
    out = transform(sample)
    return torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1).float(), out["masks"]["disc"]


def ideal_change(transform, eye, x0: torch.Tensor, move: float) -> tuple[torch.Tensor, float]:
    """The change, in the model's input space, from the eye to the same eye with its cup moved by
    ``move`` (its vCDR clipped to the phantom's range), and the vCDR it was rendered at."""
    vcdr = float(np.clip(eye.vcdr + move, VCDR_LOW, VCDR_HIGH))
    other = render_phantom(eye.seed, eye.image.shape[0], cup_vcdr=vcdr, **PHANTOM).image
    with crop_of(eye.image):
        x1, _ = prepared(transform, eye, other)
    return x1 - x0, vcdr


def editor_for(net, options: dict[str, Any]):
    """The review's editor with ``options`` (``goals="fixed"``: today's fixed goals, else the step)."""
    from xmed.explain.counterfactual import AdversarialExplainer
    from xmed.review.build import COUNTERFACTUAL_DEFAULTS, FIXED_GOALS, REVIEW_GOALS

    options = dict(options)
    goals = {"threshold": dict(FIXED_GOALS)} if options.pop("goals", None) == "fixed" else dict(REVIEW_GOALS)
    return AdversarialExplainer(net, **{**COUNTERFACTUAL_DEFAULTS, **options, **goals})


def edit_rows(net, transform, eyes, inputs: torch.Tensor, discs: torch.Tensor, editor, direction: str,
              batch_size: int) -> list[dict[str, Any]]:
    """One row of figures per eye for ``editor``'s edits in ``direction``."""
    from xmed.metrics.counterfactual import change_correlation, energy_in_mask, hue_share, mask_coverage
    from xmed.review.panels import edit_change
    from xmed.viz.overlay import to_uint8_image

    dc = net.data_config
    std = torch.tensor(dc.std).view(1, -1, 1, 1)
    sign = 1.0 if direction == "increase" else -1.0
    rows = []
    for start in range(0, len(eyes), batch_size):
        x0, disc = inputs[start:start + batch_size], discs[start:start + batch_size]
        cf = editor(x0, "glaucoma", direction)
        change = cf.images - x0
        hue = hue_share(x0, cf.images, cf.fov, dc.mean, dc.std)
        in_disc = energy_in_mask(change * std, disc)
        chance = mask_coverage(disc, cf.fov)
        goals = torch.as_tensor(cf.threshold).float().expand(x0.shape[0])
        for k in range(x0.shape[0]):
            eye = eyes[start + k]
            move = float(cf.vcdr[-1, k] - cf.vcdr[0, k])
            row = {"seed": eye.seed, "label": eye.label, "vcdr": round(eye.vcdr, 4), "direction": direction,
                   "probability_from": round(float(cf.probability[0, k]), 4),
                   "probability_to": round(float(cf.probability[-1, k]), 4), "goal": round(float(goals[k]), 4),
                   "steps": int(cf.steps[k]), "reached": bool(cf.reached[k]), "edited": int(cf.steps[k]) > 0,
                   "disc_coverage": round(float(chance[k]), 4)}
            if row["edited"]:
                ideal, rendered_at = ideal_change(transform, eye, x0[k], move)
                fov = cf.fov[k:k + 1]
                row.update(
                    hue_share=float(hue[k]), disc_share=float(in_disc[k]),
                    ideal_correlation=float(change_correlation(change[k:k + 1], ideal[None], fov, dc.std)[0]),
                    ideal_vcdr=round(rendered_at, 4),
                    ideal_hue_share=float(hue_share(x0[k:k + 1], x0[k:k + 1] + ideal[None], fov, dc.mean, dc.std)[0]),
                    changed_fraction=edit_change(to_uint8_image(x0[k], dc.mean, dc.std),
                                                 to_uint8_image(cf.images[k], dc.mean, dc.std),
                                                 cf.fov[k, 0].numpy())["changed_fraction"],
                    vcdr_move=abs(move), vcdr_right_way=float(sign * move > 0))
            rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means of the figures over the edited eyes' rows (NaN ignored), and the counts."""
    edited = [r for r in rows if r["edited"]]
    out: dict[str, Any] = {"edits": len(rows), "not_edited": len(rows) - len(edited)}
    for key, _, _ in FIGURES + (("ideal_hue_share", "", ""), ("disc_coverage", "", "")):
        values = [float(r[key]) for r in edited if key in r and not math.isnan(float(r[key]))]
        out[key] = round(float(np.mean(values)), 4) if values else None
        if key == "ideal_correlation":
            out["ideal_correlation_n"] = len(values)
            out["ideal_correlation_median"] = round(float(np.median(values)), 4) if values else None
    return out


def run(model: Path, n: int, size: int, batch_size: int) -> dict[str, Any]:
    from xmed.data.transforms import eval_transform
    from xmed.models.export import load_model

    net = load_model(model)
    dc = net.data_config
    transform = eval_transform(dc)
    eyes = [render_phantom(SEED + i, size, **PHANTOM) for i in range(n)]
    pairs = [prepared(transform, eye) for eye in eyes]
    inputs = torch.stack([x for x, _ in pairs])
    discs = torch.from_numpy(np.stack([d for _, d in pairs]))[:, None]
    with torch.no_grad():
        start_p = torch.sigmoid(net(inputs)["logits"].reshape(-1))
    modes = []
    for name, options in MODES:
        editor = editor_for(net, options)
        started = time.perf_counter()
        rows = {toward: edit_rows(net, transform, eyes, inputs, discs, editor, direction, batch_size)
                for toward, direction in DIRECTIONS.items()}
        seconds = time.perf_counter() - started
        every = rows["toward_normal"] + rows["toward_glaucoma"]
        modes.append({"name": name, "options": options, "seconds": round(seconds, 1),
                      "summary": {"both": summary(every), **{t: summary(r) for t, r in rows.items()}},
                      "rows": every})
        print(f"{name}: {json.dumps(modes[-1]['summary']['both'])} ({seconds:.0f} s)", flush=True)
    from xmed.review.build import COUNTERFACTUAL_DEFAULTS, REVIEW_GOALS

    threshold = getattr(net, "threshold", None)
    return {"review_settings": COUNTERFACTUAL_DEFAULTS, "review_goals": REVIEW_GOALS,
            "model": {"path": str(model), "backbone": net.config["backbone"], "input_size": dc.input_size,
                      "preprocess": dc.preprocess(), "threshold": threshold},
            "eyes": {"n": n, "size": size, "seeds": f"{SEED}..{SEED + n - 1}", "options": PHANTOM,
                     "glaucoma": sum(e.label for e in eyes),
                     "p_at_least_0.95": int((start_p >= 0.95).sum()), "p_at_most_0.05": int((start_p <= 0.05).sum())},
            "modes": modes}


def table(record: dict[str, Any], part: str) -> str:
    lines = ["| editor | edits (not edited) | " + " | ".join(t for _, t, _ in FIGURES) + " |",
             "|---|---|" + "---|" * len(FIGURES)]
    for mode in record["modes"]:
        s = mode["summary"][part]
        cells = ["–" if s[key] is None else format(s[key], fmt) for key, _, fmt in FIGURES]
        made = f"{s['edits'] - s['not_edited']} ({s['not_edited']})"
        lines.append(f"| {mode['name']} | {made} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(record: dict[str, Any]) -> str:
    """results.md of a record that results.json keeps."""
    eyes, model = record["eyes"], record["model"]
    both = record["modes"][1]["summary"]["both"]
    parts = ["# Adversarial edits: colour and anatomy, per colour mode", "",
             f"Command: `{record['command']}` ({record['seconds']:.0f} s, "
             f"{record['threads']} torch threads, load average at start {record['load']})", "",
             f"- **model**: {model['backbone']}, {model['input_size']} px, preprocessing "
             f"{json.dumps(model['preprocess'])}, `{model['path']}`",
             f"- **eyes**: {eyes['n']} fresh phantom eyes ({eyes['size']} px, prevalence 0.5: {eyes['glaucoma']} "
             f"glaucomatous), seeds {eyes['seeds']}; P ≥ 0.95 at the start: {eyes['p_at_least_0.95']}, "
             f"P ≤ 0.05: {eyes['p_at_most_0.05']}",
             f"- **editor**: the review's settings (`xmed.review.build.COUNTERFACTUAL_DEFAULTS`: "
             f"{json.dumps(record['review_settings'])}) and goals (`REVIEW_GOALS`: "
             f"{json.dumps(record['review_goals'])}); "
             f"the rows before the last at the review's earlier budget (`relative_epsilon` {FREE_BUDGET}), the first "
             f"with its earlier fixed goals",
             f"- **the ideal** (what a re-rendered cup changes) has a hue share of {both['ideal_hue_share']:.2f} "
             f"on average (free, logit step): a real cup change is not a pure lightness change", "",
             "Both edits of every eye (means over the edits made):", "", table(record, "both"), "",
             "Toward normal:", "", table(record, "toward_normal"), "", "Toward glaucoma:", "",
             table(record, "toward_glaucoma"), "",
             "Disc share: the disc covers "
             f"{record['modes'][0]['summary']['both']['disc_coverage']:.1%} of the field of view on average. "
             "Ideal correlation: Pearson correlation, over every channel of every field-of-view pixel in "
             "pixel units, of the edit's change with the re-rendered eye's; mean over the edits (median and "
             "count in results.json).", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edit_anatomy", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an exported model folder of phantom eyes (default: train one)")
    parser.add_argument("--work", type=Path, help="a new folder for the phantom and the model trained without --model")
    parser.add_argument("--out", type=Path, required=True, help="where results.json and results.md go")
    parser.add_argument("--n", type=int, default=48, help="phantom eyes edited")
    parser.add_argument("--size", type=int, default=256, help="their side in pixels (the demo's phantom: 256)")
    parser.add_argument("--train-eyes", type=int, default=600, help="phantom eyes to train on without --model")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.model is None and args.work is None:
        parser.error("give --model (an exported model folder) or --work (where to train one)")
    started, load = time.perf_counter(), " ".join(f"{v:.1f}" for v in os.getloadavg())
    model = args.model if args.model is not None else train_model(args.work, args.train_eyes)
    record = {"command": "python -m benchmarks.edit_anatomy " + " ".join(argv if argv is not None else sys.argv[1:]),
              **run(model, args.n, args.size, args.batch_size)}
    record.update(seconds=round(time.perf_counter() - started, 1), threads=torch.get_num_threads(), load=load)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    (args.out / "results.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
