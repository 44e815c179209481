"""Explanation speed: xmed's Grad-CAM against a forward pass and captum's, xmed's Integrated
Gradients against captum's, on the same model and batch, with a check that the maps agree.

The model is a randomly initialised ``FundusClassifier("resnet18").eval()``, the batch
``torch.randn`` images, both from the seed. Grad-CAM explains the ``"glaucoma"`` logit; captum's
``LayerGradCam`` runs on the layer xmed chose (``backbone.layer4``) with the same forward function,
then the same bilinear upsampling and ReLU, so both give the same maps (Pearson >= 0.99, over the
batch and per image before the ReLU). ``pytorch_grad_cam`` joins if it is installed (never
installed here). Integrated Gradients: both from a zero baseline with the same Gauss-Legendre
points and internal batch; their maps must agree to 1e-4 of the largest attribution. The variants
alternate round by round. Goals: Grad-CAM <= 1.2 x forward, xmed IG <= 1.05 x captum IG.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.timing import Context, Goal, Part, alternate, median, paired_ratio

GOAL_GRADCAM = Goal("ratio", "<=", 1.2)
GOAL_IG = Goal("ratio", "<=", 1.05)
MIN_PEARSON = 0.99
IG_TOLERANCE = 1e-4  # max |xmed - captum| relative to max |captum|
TARGET = "glaucoma"


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two tensors' values.

    Example:
        >>> round(pearson(torch.tensor([1., 2., 3.]), torch.tensor([2., 4., 7.])), 3)
        0.993
    """
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = (a.norm() * b.norm()).item()
    return float((a @ b).item() / denominator) if denominator > 0 else float("nan")


def pytorch_grad_cam_variant(model: nn.Module, layer: nn.Module, forward: Callable[[Tensor], Tensor],
                             images: Tensor) -> tuple[Callable[[], Tensor] | None, str]:
    """``pytorch_grad_cam.GradCAM`` on the same layer and score, or None and why not."""
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam import GradCAM as PGCGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return None, "not installed"

    class Scores(nn.Module):  # pytorch_grad_cam wants a module with a B×classes output
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x: Tensor) -> Tensor:
            return forward(x)[:, None]

    wrapper, targets = Scores(), [ClassifierOutputTarget(0)] * images.shape[0]

    def run() -> Tensor:
        # built per call: it hooks the layer while it exists, which would disturb the other variants
        with PGCGradCAM(model=wrapper, target_layers=[layer]) as cam:
            return torch.from_numpy(cam(input_tensor=images, targets=targets))[:, None]

    try:
        run()  # fails here, recorded, rather than in the middle of the timings
    except Exception as err:  # noqa: BLE001 - an optional third-party comparison
        return None, f"installed but failed: {type(err).__name__}: {err}"
    return run, f"pytorch_grad_cam {getattr(pytorch_grad_cam, '__version__', '(version unknown)')}"


def run(part: Part, ctx: Context) -> None:
    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import LayerGradCam

    import xmed.explain
    from xmed.explain.targets import target_function
    from xmed.models import FundusClassifier

    warnings.filterwarnings("ignore", message=".*Setting forward, backward hooks.*")
    device = ctx.device
    size, batch = ctx.size(64, 224), ctx.size(2, 8)
    repeats, ig_repeats, ig_steps = ctx.size(2, 5), ctx.size(1, 3), ctx.size(4, 16)
    ig_batch = batch * 8
    part.settings.update({"model": f"resnet18 FundusClassifier, random init, {size} px", "batch": batch,
                          "Grad-CAM rounds": repeats, "IG steps": ig_steps, "IG internal batch": ig_batch,
                          "IG rounds": ig_repeats})
    torch.manual_seed(ctx.seed)
    model = FundusClassifier("resnet18", input_size=size).eval().to(device)
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(ctx.seed)).to(device)
    forward = target_function(model, TARGET)

    # ---------------------------------------------------------------- Grad-CAM
    explainer = xmed.explain.GradCAM(model)
    explainer(images, target=TARGET)  # the one-off layer search, before the warm-up
    layer = explainer.layer
    captum_cam = LayerGradCam(forward, layer.module)

    def plain_forward() -> Tensor:
        with torch.no_grad():
            return model(images)["logits"]

    def captum_gradcam(relu: bool = True) -> Tensor:
        cam = F.interpolate(captum_cam.attribute(images).detach(), size=images.shape[-2:], mode="bilinear",
                            align_corners=False)
        return cam.clamp(min=0) if relu else cam

    variants: dict[str, Callable[[], Tensor]] = {
        "forward": plain_forward, "xmed Grad-CAM": lambda: explainer(images, target=TARGET).maps}
    if layer.layout == "NCHW":
        variants["captum LayerGradCam"] = captum_gradcam
    else:
        part.note(f"captum LayerGradCam skipped: layer {layer.name} has layout {layer.layout}")
    pgc_run, pgc_status = pytorch_grad_cam_variant(model, layer.module, forward, images)
    part.settings["pytorch_grad_cam"] = pgc_status
    if pgc_run is not None and layer.layout == "NCHW":
        variants["pytorch_grad_cam GradCAM"] = pgc_run
    times, maps = alternate(variants, repeats, device, "gradcam")
    for name in list(variants)[1:]:
        part.figure(f"{name}, batch {batch}", median(times[name]), "s/batch", "forward pass", median(times["forward"]),
                    goal=GOAL_GRADCAM if name == "xmed Grad-CAM" else None,
                    paired=paired_ratio(times[name], times["forward"]))
    if "captum LayerGradCam" in maps:
        raw_xmed = xmed.explain.GradCAM(model, layer=layer.module, relu=False)(images, target=TARGET).maps
        per_image = min(pearson(a, b) for a, b in zip(raw_xmed, captum_gradcam(relu=False)))
        batch_r = pearson(maps["xmed Grad-CAM"], maps["captum LayerGradCam"])
        part.check("Grad-CAM maps, xmed vs captum: Pearson (batch; per image before ReLU, min)",
                   f"{batch_r:.6f}; {per_image:.6f}", f">= {MIN_PEARSON}",
                   batch_r >= MIN_PEARSON and per_image >= MIN_PEARSON)

    # ---------------------------------------------------------------- Integrated Gradients
    zeros = torch.zeros_like(images)
    warm_steps = max(1, ig_batch // batch)  # one full chunk: the same shapes as the timed chunks

    def xmed_ig(steps: int = ig_steps) -> Tensor:
        return xmed.explain.IntegratedGradients(model, n_steps=steps, internal_batch_size=ig_batch)(
            images, target=TARGET).maps

    def captum_ig(steps: int = ig_steps) -> Tensor:
        return CaptumIG(forward).attribute(images, baselines=zeros, n_steps=steps,
                                           internal_batch_size=ig_batch).detach().sum(dim=1, keepdim=True)

    times, maps = alternate({"xmed": xmed_ig, "captum": captum_ig}, ig_repeats, device, "ig",
                            {"xmed": lambda: xmed_ig(warm_steps), "captum": lambda: captum_ig(warm_steps)})
    part.figure(f"xmed Integrated Gradients, {ig_steps} steps, batch {batch}", median(times["xmed"]), "s/batch",
                "captum IntegratedGradients", median(times["captum"]), goal=GOAL_IG,
                paired=paired_ratio(times["xmed"], times["captum"]))
    scale = float(maps["captum"].abs().max())
    difference = float((maps["xmed"] - maps["captum"]).abs().max())
    part.check("IG maps, xmed vs captum: max |difference| / max |attribution|",
               f"{difference / max(scale, 1e-12):.2e}", f"<= {IG_TOLERANCE:g}",
               difference <= IG_TOLERANCE * max(scale, 1e-12))
