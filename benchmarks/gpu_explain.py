"""Explanation, counterfactual and screening throughput, each against a plain forward pass of the
same model, with the peak device memory of each.

The model: a randomly initialised resnet18 ``FundusClassifier`` (its diagnosis head set to 0.1, so
that CAMs are not all zero), in eval mode, in full precision as ``xmed-explain`` and
``xmed-predict`` run a trained model. Every registered saliency method
(``xmed.explain.EXPLAINERS``) runs with the options of its ``explainer/<method>.yaml`` (what
``xmed-explain`` uses) on a batch of phantom eyes; the adversarial explainer with those of
``explainer/adversarial.yaml`` (direction "decrease"). Each method's calls alternate with forward
passes of the same batch. Then ``xmed-predict`` screens a folder of phantom JPEG files as a user
runs it (``python -m xmed.cli.predict``; wall time, start-up included) against forward passes at
its batch size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from benchmarks.commands import run_command, write_phantom_jpegs
from benchmarks.timing import Context, Part, alternate, median, paired_ratio, peak_memory

CONFIGS = Path(__file__).resolve().parents[1] / "xmed" / "configs" / "explainer"
QUICK_OPTIONS = {"integrated_gradients": {"n_steps": 4}, "smoothgrad": {"n_samples": 2},
                 "smoothgrad_sq": {"n_samples": 2}, "rise": {"n_masks": 8}, "occlusion": {"window": 32, "stride": 32},
                 "adversarial": {"max_steps": 3}}


def method_options(method: str, quick: bool) -> dict:
    """The options ``xmed-explain`` uses for ``method`` (its config file), cut down in a quick run.

    Example:
        >>> method_options("rise", quick=True)["n_masks"], method_options("rise", quick=False)["n_masks"]
        (8, 500)
    """
    options = dict(yaml.safe_load((CONFIGS / f"{method}.yaml").read_text())[method])
    options.pop("method", None)
    return {**options, **(QUICK_OPTIONS.get(method, {}) if quick else {})}


def phantom_batch(n: int, size: int, model, device: torch.device) -> torch.Tensor:
    """``n`` rendered phantom eyes prepared as ``model`` expects them (``model.prepare``)."""
    from xmed.data import render_phantom

    return model.prepare([render_phantom(seed, size).image for seed in range(n)]).to(device)


def run(part: Part, ctx: Context) -> None:
    from xmed.explain import EXPLAINERS, get_counterfactual, get_explainer
    from xmed.models import FundusClassifier

    device = ctx.device
    size, batch = ctx.size(64, 256), ctx.size(2, 32)
    repeats = ctx.size(1, 3)
    torch.manual_seed(ctx.seed)
    model = FundusClassifier("resnet18", input_size=size, threshold=0.5)
    with torch.no_grad():
        model.glaucoma_head.weight.fill_(0.1)
    model = model.eval().to(device)
    images = phantom_batch(batch, size, model, device)
    part.settings.update({"model": f"resnet18 FundusClassifier, random init, {size} px, fp32", "batch": batch,
                          "rounds": repeats, "options": "explainer/<method>.yaml"
                          + (" (quick: fewer steps, samples and masks)" if ctx.quick else "")})

    def forward():
        with torch.no_grad():
            return model(images)["logits"]

    def measure(label: str, call) -> None:
        with peak_memory(device) as memory:  # the method's peak: a forward pass needs less
            times, _ = alternate({"forward": forward, label: call}, repeats, device, label)
        part.figure(f"{label}, batch {batch}", batch / median(times[label]), "images/s", "forward pass",
                    batch / median(times["forward"]), paired=paired_ratio(times["forward"], times[label]),
                    peak_memory_mb=memory["mb"])

    for method in EXPLAINERS:
        if ctx.left() < 0:
            part.note(f"time budget spent: {method} and the methods after it not run")
            break
        part.attempt(method, lambda: measure(method, lambda explainer=get_explainer(method)(
            model, **method_options(method, ctx.quick)): explainer(images, target="glaucoma").maps))

    def counterfactuals() -> None:
        options = method_options("adversarial", ctx.quick)
        options.pop("directions", None)
        explainer = get_counterfactual("adversarial")(model, **options)
        measure(f"adversarial counterfactual ({options['max_steps']} steps at most)",
                lambda: explainer(images, "glaucoma", "decrease"))

    part.attempt("adversarial", counterfactuals)
    if ctx.left() > 0:
        part.attempt("xmed-predict", lambda: screening(part, ctx, model))
    else:
        part.note("time budget spent: xmed-predict not run")


def screening(part: Part, ctx: Context, model) -> None:
    """``xmed-predict`` over a folder of phantom JPEG files against forward passes at its batch size."""
    from xmed.models import export_model

    device = ctx.device
    n, batch = ctx.size(64, 3000), ctx.size(16, 128)
    side = model.data_config.input_size
    folder, out = ctx.scratch / "eyes", ctx.scratch / "predict"
    write_phantom_jpegs(folder, n, side, ctx.seed)
    export_model(model.cpu(), ctx.scratch / "model")
    model.to(device)
    done = run_command("predict", [f"ckpt_path={ctx.scratch / 'model'}", f"input={folder / 'images'}",
                                   f"paths.output_dir={out}", f"batch_size={batch}", "num_workers=auto",
                                   f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}"],
                       ctx.scratch, timeout=max(ctx.left(), 120))
    if done.returncode != 0:
        raise RuntimeError(f"xmed-predict failed: {done.output}")
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    part.check("xmed-predict wrote one row per eye", len(rows), str(n), len(rows) == n)
    images = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(ctx.seed)).to(device)

    def forward():
        with torch.no_grad():
            return model(images)["logits"]

    times, _ = alternate({"forward": forward}, ctx.size(1, 5), device, "forward")
    part.figure(f"xmed-predict, {n} JPEG eyes of {side} px, batch {batch}", n / done.seconds, "images/s",
                f"forward pass, batch {batch}", batch / median(times["forward"]), peak_memory_mb=done.peak_memory_mb,
                note="wall time of the command, start-up and model loading included")
