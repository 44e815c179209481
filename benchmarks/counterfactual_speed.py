"""Counterfactual speed: a k-step adversarial explanation against k forward + input-gradient
passes on the same batch.

``AdversarialExplainer(model, max_steps=k, early_stop=False)(images, "glaucoma", "decrease")``
(every image takes all k steps, checked; other options default) against k times, one after the
other, a forward pass with the graph recorded and ``torch.autograd.grad`` of the summed
``"glaucoma"`` logit with respect to the images — the floor the goal is stated against. The
explainer does k forward + input-gradient passes plus one plain forward pass, so the ratio's floor
is about ``1 + forward / (k × (forward + input gradient))``; the rest is the step arithmetic. The
model is a randomly initialised ``FundusClassifier("resnet18").eval()`` on ``torch.randn`` images.
Goal: adversarial <= 1.1 x the k input-gradient passes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmarks.timing import Context, Goal, Part, alternate, median, paired_ratio

GOAL = Goal("ratio", "<=", 1.1)
TARGET = "glaucoma"


def run(part: Part, ctx: Context) -> None:
    from xmed.explain.counterfactual import AdversarialExplainer
    from xmed.explain.targets import select_target
    from xmed.models import FundusClassifier

    device = ctx.device
    size, batch, k, repeats = ctx.size(64, 224), ctx.size(2, 8), ctx.size(3, 10), ctx.size(1, 5)
    part.settings.update({"model": f"resnet18 FundusClassifier, random init, {size} px", "batch": batch,
                          "steps k": k, "rounds": repeats})
    torch.manual_seed(ctx.seed)
    model = FundusClassifier("resnet18", input_size=size).eval().to(device)
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(ctx.seed)).to(device)
    explainer = AdversarialExplainer(model, max_steps=k, early_stop=False)

    def forward() -> Tensor:
        with torch.no_grad():
            return model(images)["logits"]

    def input_gradients() -> Tensor:
        for _ in range(k):
            with torch.enable_grad():
                x = images.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(select_target(model(x), TARGET).sum(), x)
        return grad

    times, last = alternate({"forward": forward, "gradients": input_gradients,
                             "adversarial": lambda: explainer(images, TARGET, "decrease")},
                            repeats, device, "adversarial")
    steps = last["adversarial"].steps
    part.check(f"every image took all {k} steps", steps.tolist(), f"all {k}", bool((steps == k).all()))
    part.check("no parameter got a gradient", all(p.grad is None for p in model.parameters()), "True",
               all(p.grad is None for p in model.parameters()))
    one_pass = median(times["gradients"]) / k
    part.figure(f"adversarial explanation, k={k}, batch {batch}", median(times["adversarial"]), "s/batch",
                f"{k} forward + input-gradient passes", median(times["gradients"]), goal=GOAL,
                paired=paired_ratio(times["adversarial"], times["gradients"]),
                note=f"expected floor {1 + median(times['forward']) / (k * one_pass):.3f}")
