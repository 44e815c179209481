"""Explanation, counterfactual and screening throughput, each against a plain forward pass of the
same model, with the peak device memory of each.

The model: a randomly initialised resnet18 ``FundusClassifier`` (its diagnosis head set to 0.1, so
that CAMs are not all zero), in eval mode. First the issue's goals, at the batch
``batch_size: auto`` chooses for the method on this device (:func:`xmed.runtime.choose_batch_size`
with :func:`xmed.pipeline.explanation.explanation_eye_bytes`; a batch of phantom eyes tiled to that
size):

- Grad-CAM in bf16 autocast (what ``xmed-explain`` runs where the GPU has native bf16, ``autocast:
  auto``) against a forward pass in bf16 autocast at the same batch (goal 20,000 eyes/s, and 0.7 of
  the forward pass), and in fp32;
- the adversarial edit, 20 steps (every eye runs them: ``early_stop`` off), in fp32 as
  ``xmed-explain`` runs it, and under an outer bf16 autocast (what autocast inside the edit could
  give at most; its probabilities would then be read in bf16 too) — goal 1,000 eyes/s;
- ``xmed-predict`` screening a folder of 3,000 phantom JPEG files as a user runs it (``python -m
  xmed.cli.predict``; wall time, start-up included; ``pipeline`` and ``batch_size`` auto) against
  forward passes at the batch it chose (goal 3,000 eyes/s), with what bounds it: its start-up (a
  folder of one eye) and the image-quality gate it runs on every eye on the CPU.

Then every registered saliency method (``xmed.explain.EXPLAINERS``) with the options of its
``explainer/<method>.yaml`` on a batch of 32 eyes in fp32, each against forward passes of the same
batch, while the time budget allows; and ``xmed-predict`` with ``pipeline=cpu`` for comparison.
"""

from __future__ import annotations


import torch
import yaml

from benchmarks.commands import run_command, write_phantom_jpegs
from xmed.cli.common import CONFIG_DIR
from benchmarks.timing import Context, Goal, Part, alternate, median, paired_ratio, peak_memory

CONFIGS = CONFIG_DIR / "explainer"   # the shipped configs, wherever the package reads them from
GRADCAM_GOAL = Goal("value", ">=", 20000)
EDIT_GOAL = Goal("value", ">=", 1000)
SCREENING_GOAL = Goal("value", ">=", 3000)
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
    part.settings.update({"model": f"resnet18 FundusClassifier, random init, {size} px", "batch (every method)": batch,
                          "rounds": repeats, "options": "explainer/<method>.yaml"
                          + (" (quick: fewer steps, samples and masks)" if ctx.quick else "")})

    def measure(label: str, call, eyes: torch.Tensor, bf16: bool = False, goal: Goal | None = None,
                note: str | None = None) -> dict:
        def forward():
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                return model(eyes)["logits"]

        with peak_memory(device) as memory:  # the method's peak: a forward pass needs less
            times, _ = alternate({"forward": forward, label: call}, repeats, device, label)
        n = eyes.shape[0]
        return part.figure(f"{label}, batch {n}", n / median(times[label]), "images/s",
                           "forward pass" + (" in bf16 autocast" if bf16 else ""), n / median(times["forward"]),
                           paired=paired_ratio(times["forward"], times[label]), peak_memory_mb=memory["mb"], goal=goal,
                           note=note)

    part.attempt("gradcam at the auto batch", lambda: gradcam_rows(part, ctx, model, images, measure))
    part.attempt("adversarial edit at the auto batch", lambda: edit_rows(part, ctx, model, images, measure))
    part.attempt("xmed-predict", lambda: screening(part, ctx, model, "auto"))
    every_method(part, ctx, model, images, measure)
    if ctx.quick:  # on a CPU, auto is cpu already
        return
    if ctx.left() > 40:
        part.attempt("xmed-predict, pipeline=cpu", lambda: screening(part, ctx, model, "cpu"))
    else:
        part.note(f"time budget: xmed-predict with pipeline=cpu not run ({ctx.left():.0f} s left)")


def auto_batch(ctx: Context, model, explainer_cfg: dict, quick_batch: int):
    """The batch ``batch_size: auto`` chooses on this device for these explainers (a CPU: ``quick_batch``)."""
    from xmed.pipeline.explanation import explanation_eye_bytes
    from xmed.runtime import choose_batch_size

    return choose_batch_size("auto", ctx.device, lambda: explanation_eye_bytes(model, explainer_cfg, ctx.device),
                             cpu_default=quick_batch)


def tiled(images: torch.Tensor, n: int) -> torch.Tensor:
    """``images`` repeated to a batch of ``n`` (rendering a thousand eyes would take longer than the row)."""
    return images.repeat((n + len(images) - 1) // len(images), 1, 1, 1)[:n].contiguous()


def gradcam_rows(part: Part, ctx: Context, model, images: torch.Tensor, measure) -> None:
    from xmed.explain import get_explainer

    choice = auto_batch(ctx, model, {"gradcam": {"method": "gradcam"}}, len(images))
    eyes = tiled(images, choice.value)
    gradcam = get_explainer("gradcam")(model, **method_options("gradcam", ctx.quick))

    def explain(bf16: bool):
        def call():
            with torch.autocast(ctx.device.type, torch.bfloat16, enabled=bf16):
                return gradcam(eyes, target="glaucoma").maps
        return call

    row = measure("gradcam (batch_size: auto), bf16 autocast", explain(True), eyes, bf16=True, goal=GRADCAM_GOAL,
                  note=f"batch: {choice.reason}")
    part.note(f"Grad-CAM in bf16 autocast: {row['ratio']} of a forward pass at the same batch (goal >= 0.7)")
    measure("gradcam (batch_size: auto), fp32", explain(False), eyes)


def edit_rows(part: Part, ctx: Context, model, images: torch.Tensor, measure) -> None:
    from xmed.explain import get_counterfactual

    options = {**method_options("adversarial", ctx.quick), "max_steps": ctx.size(3, 20), "early_stop": False}
    options.pop("directions", None)
    choice = auto_batch(ctx, model, {"adversarial": options}, len(images))
    eyes = tiled(images, choice.value)
    explainer = get_counterfactual("adversarial")(model, **options)

    def edit(bf16: bool):
        def call():
            with torch.autocast(ctx.device.type, torch.bfloat16, enabled=bf16):
                return explainer(eyes, "glaucoma", "decrease")
        return call

    steps = options["max_steps"]
    measure(f"adversarial edit, {steps} steps (batch_size: auto), fp32", edit(False), eyes, goal=EDIT_GOAL,
            note=f"batch: {choice.reason}")
    measure(f"adversarial edit, {steps} steps (batch_size: auto), under an outer bf16 autocast", edit(True), eyes,
            bf16=True, goal=EDIT_GOAL,
            note="what bf16 inside the edit could give at most: xmed-explain runs it in fp32")


def every_method(part: Part, ctx: Context, model, images: torch.Tensor, measure) -> None:
    from xmed.explain import EXPLAINERS, get_counterfactual, get_explainer

    for method in EXPLAINERS:
        if ctx.left() < 0:
            part.note(f"time budget spent: {method} and the methods after it not run at batch {len(images)}")
            return
        part.attempt(method, lambda: measure(method, lambda explainer=get_explainer(method)(
            model, **method_options(method, ctx.quick)): explainer(images, target="glaucoma").maps, images))

    def counterfactuals() -> None:
        options = method_options("adversarial", ctx.quick)
        options.pop("directions", None)
        explainer = get_counterfactual("adversarial")(model, **options)
        measure(f"adversarial counterfactual ({options['max_steps']} steps at most)",
                lambda: explainer(images, "glaucoma", "decrease"), images)

    if ctx.left() > 0:
        part.attempt("adversarial", counterfactuals)


def screening(part: Part, ctx: Context, model, pipeline: str) -> None:
    """``xmed-predict`` over a folder of phantom JPEG files against forward passes at the batch it chose;
    with ``pipeline=auto``, also its start-up and the image-quality gate's rate on the CPU."""
    import json

    from xmed.models import export_model

    device = ctx.device
    n = ctx.size(64, 3000)
    side = model.data_config.input_size
    folder, out, model_dir = ctx.scratch / "eyes", ctx.scratch / f"predict_{pipeline}", ctx.scratch / "model"
    if not folder.exists():
        write_phantom_jpegs(folder, n, side, ctx.seed)
        export_model(model.cpu(), model_dir)
        model.to(device)
    trainer = "gpu" if device.type == "cuda" else "cpu"

    def predict(images, out_dir):
        done = run_command("predict", [f"ckpt_path={model_dir}", f"input={images}", f"paths.output_dir={out_dir}",
                                       "num_workers=auto", f"pipeline={pipeline}", f"trainer={trainer}"],
                           ctx.scratch, timeout=max(ctx.left(), 120))
        if done.returncode != 0:
            raise RuntimeError(f"xmed-predict failed: {done.output}")
        return done

    done = predict(folder / "images", out)
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    part.check(f"xmed-predict (pipeline={pipeline}) wrote one row per eye", len(rows), str(n), len(rows) == n)
    summary = json.loads((out / "summary.json").read_text())
    batch = int(summary["batch_size"].split()[0])
    images = tiled(phantom_batch(ctx.size(2, 32), side, model, device), batch)

    def forward():
        with torch.no_grad():
            return model(images)["logits"]

    times, _ = alternate({"forward": forward}, ctx.size(1, 5), device, "forward")
    part.figure(f"xmed-predict, {n} JPEG eyes of {side} px, pipeline={pipeline}, batch_size=auto", n / done.seconds,
                "images/s", f"forward pass, batch {batch}", batch / median(times["forward"]),
                peak_memory_mb=done.peak_memory_mb, goal=SCREENING_GOAL,
                note=f"wall time of the command, start-up and model loading included; {summary['pipeline']}; "
                     f"batch {summary['batch_size']}")
    if pipeline != "auto":
        return
    one = ctx.scratch / "one_eye"
    one.mkdir(exist_ok=True)
    first = sorted((folder / "images").iterdir())[0]
    (one / first.name).write_bytes(first.read_bytes())
    alone = predict(one, ctx.scratch / "predict_one")
    part.figure("xmed-predict start-up: a folder of one eye", alone.seconds, "s", f"the {n}-eye run", done.seconds,
                note="imports, model, trainer and loader workers: what bounds a short run's rate")
    gate_rate(part, ctx, model, n / done.seconds)


def gate_rate(part: Part, ctx: Context, model, screening_rate: float) -> None:
    """The image-quality gate xmed-predict runs on every prepared eye (``assess_prepared``, on the CPU in
    the main process), eyes/s, against the screening goal."""
    import time

    from xmed.data.quality import assess_prepared

    images = phantom_batch(ctx.size(2, 64), model.data_config.input_size, model, torch.device("cpu"))
    start = time.perf_counter()
    assess_prepared(images, model.data_config)
    rate = len(images) / (time.perf_counter() - start)
    part.figure("image-quality gate alone (xmed.data.quality.assess_prepared, CPU, main process)", rate, "images/s",
                "xmed-predict's goal", float(SCREENING_GOAL.limit),
                note=f"xmed-predict ran at {screening_rate:,.0f} eyes/s; the gate alone caps it here")
