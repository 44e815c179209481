"""Explanation speed: xmed's Grad-CAM and Integrated Gradients vs a forward pass and vs captum.

What is measured, in one process on one model and one batch (default: a randomly initialised
``FundusClassifier("resnet18", input_size=224).eval()``, batch 8 of ``torch.randn`` images, both
from ``--seed``), as seconds per batch — the median of ``--repeats`` timed calls after one
untimed warm-up call of each variant; the device is synchronised before and after each call:

1. Grad-CAM of the ``"glaucoma"`` logit, side by side with a plain forward pass:

   * ``forward``: ``with torch.no_grad(): model(images)`` — the floor;
   * ``xmed``: ``xmed.explain.GradCAM(model)(images, target="glaucoma")`` (built once; its
     automatic layer choice happens in a first call before the warm-up, timed and recorded apart);
   * ``captum``: ``captum.attr.LayerGradCam(forward, layer).attribute(images)`` on the layer xmed
     chose (``explainer.layer.module``: ``backbone.layer4`` for ResNets) with the same forward
     function (``xmed.explain.targets.target_function(model, "glaucoma")``), then the same
     bilinear upsampling to the input size and ReLU, so both give the same maps;
   * ``pytorch_grad_cam``: its ``GradCAM`` on the same layer and score, if it is importable
     (recorded as "not installed" otherwise; this script never installs it).

   Ratios: xmed / forward (target <= 1.2) and captum / forward (no target). The maps must agree
   (like-for-like check): Pearson correlation of xmed's and captum's maps >= 0.99, both over the
   whole batch of the timed (ReLU'd) maps and per image on the maps before the ReLU (an untimed
   extra call of each with the ReLU left out; all-zero ReLU'd maps would make per-image
   correlations undefined).

2. Integrated Gradients of the same target from a zero baseline, ``--ig-steps`` S points
   (Gauss-Legendre, both), ``--ig-internal-batch`` K points per forward pass (default batch x 8),
   the same S and K for both:

   * ``xmed``: ``xmed.explain.IntegratedGradients(model, n_steps=S, internal_batch_size=K)(images,
     target="glaucoma")``;
   * ``captum``: ``captum.attr.IntegratedGradients(forward).attribute(images,
     baselines=torch.zeros_like(images), n_steps=S, internal_batch_size=K)``, summed over the
     colour channels as xmed's maps are (negligible next to the S x B forward/backward passes).

   Ratio xmed / captum (target <= 1.05); the two maps must agree (max |difference| <= 1e-4 of the
   largest |attribution|). The warm-up call of each IG variant uses S = K // B steps (one full
   chunk of K points: the same tensor shapes as the timed chunks) to save time.
   ``--ig-repeats`` sets IG's repeats separately.

Within each part the variants alternate (forward, xmed, captum, forward, xmed, captum, ...), so a
noisy, shared machine slows all of them alike. Each ratio is reported as the ratio of medians and,
as a check, the median of the per-round ratios.

Run: ``python benchmarks/explain_speed.py [--device cuda] [--backbone resnet18] [--input-size 224]
[--batch 8] [--repeats 5] [--ig-steps 64] [--ig-repeats 3] [--out benchmarks/results]``.
Writes ``explain_speed.json`` and ``explain_speed.md``. Targets: xmed Grad-CAM <= 1.2 x forward,
xmed IG <= 1.05 x captum IG.

The results stored in ``benchmarks/results/`` come from a 2-core shared CPU, where the defaults'
IG part (8 images x 64 steps = 512 forward+backward passes, ~100 s per call) would take ~15 min;
they were made with ``--ig-steps 16`` (K = 64 kept: 128 points in 2 chunks), all else default:
``python benchmarks/explain_speed.py --ig-steps 16``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timing import add_run_arguments, alternate, paired_ratios, prepare_device, timed  # noqa: E402 - benchmarks/ is on sys.path
from timing import device_name as timing_device_name  # noqa: E402

TARGET_GRADCAM_OVER_FORWARD = 1.2
TARGET_IG_OVER_CAPTUM = 1.05
TARGET_PEARSON = 0.99
IG_TOLERANCE = 1e-4  # max |xmed - captum| relative to max |captum|
TARGET = "glaucoma"










def pearson(a: Tensor, b: Tensor) -> float:
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

    wrapper = Scores()
    targets = [ClassifierOutputTarget(0)] * images.shape[0]

    def run() -> Tensor:
        # built per call: it hooks the layer while it exists, which would disturb the other variants
        with PGCGradCAM(model=wrapper, target_layers=[layer]) as cam:
            return torch.from_numpy(cam(input_tensor=images, targets=targets))[:, None]

    try:
        run()  # fails here, recorded, rather than in the middle of the timings
    except Exception as err:  # noqa: BLE001 - an optional third-party comparison
        return None, f"installed but failed: {type(err).__name__}: {err}"
    return run, f"pytorch_grad_cam {getattr(pytorch_grad_cam, '__version__', '(version unknown)')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbone", default="resnet18", help="timm model name for the FundusClassifier")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of the Grad-CAM part")
    parser.add_argument("--ig-steps", type=int, default=64, help="Integrated Gradients points per image")
    parser.add_argument("--ig-internal-batch", type=int, default=None,
                        help="IG points per forward pass, both implementations (default: batch x 8)")
    parser.add_argument("--ig-repeats", type=int, default=3, help="timed rounds of the IG part")
    add_run_arguments(parser)
    args = parser.parse_args()
    device = prepare_device(parser, args)
    ig_batch = args.ig_internal_batch or args.batch * 8

    import captum
    import timm
    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import LayerGradCam

    import xmed.explain
    from xmed.explain.targets import target_function
    from xmed.models import FundusClassifier

    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    torch.manual_seed(args.seed)
    model = FundusClassifier(args.backbone, input_size=args.input_size).eval().to(device)
    images = torch.randn(args.batch, 3, args.input_size, args.input_size,
                         generator=torch.Generator().manual_seed(args.seed)).to(device)
    forward = target_function(model, TARGET)
    size = images.shape[-2:]

    # ---------------------------------------------------------------- 1. Grad-CAM
    explainer = xmed.explain.GradCAM(model)
    first_call, _ = timed(lambda: explainer(images, target=TARGET).maps, device)  # + the one-off layer search
    layer = explainer.layer
    captum_cam = LayerGradCam(forward, layer.module)

    def plain_forward() -> Tensor:
        with torch.no_grad():
            return model(images)["logits"]

    def xmed_gradcam() -> Tensor:
        return explainer(images, target=TARGET).maps

    def captum_gradcam(relu: bool = True) -> Tensor:
        cam = F.interpolate(captum_cam.attribute(images).detach(), size=size, mode="bilinear", align_corners=False)
        return cam.clamp(min=0) if relu else cam

    cam_variants: dict[str, Callable[[], Tensor]] = {"forward": plain_forward, "xmed_gradcam": xmed_gradcam}
    notes: list[str] = []
    if layer.layout == "NCHW":
        cam_variants["captum_layergradcam"] = captum_gradcam
    else:
        notes.append(f"captum LayerGradCam skipped: layer {layer.name} has layout {layer.layout} "
                     "(captum weighs B×C×h×w outputs only)")
    pgc_run, pgc_status = pytorch_grad_cam_variant(model, layer.module, forward, images)
    if pgc_run is not None and layer.layout == "NCHW":
        cam_variants["pytorch_grad_cam"] = pgc_run
    cam_times, cam_maps = alternate(cam_variants, args.repeats, device, "gradcam")

    agreement: dict[str, float | bool | None] = {}
    if "captum_layergradcam" in cam_maps:
        batch_r = pearson(cam_maps["xmed_gradcam"], cam_maps["captum_layergradcam"])
        raw_xmed = xmed.explain.GradCAM(model, layer=layer.module, relu=False)(images, target=TARGET).maps
        raw_captum = captum_gradcam(relu=False)
        per_image = [pearson(a, b) for a, b in zip(raw_xmed, raw_captum)]
        agreement = {
            "pearson_batch_relu_maps": round(batch_r, 6),
            "pearson_per_image_before_relu_min": round(min(per_image), 6),
            "max_abs_difference_relu_maps": float((cam_maps["xmed_gradcam"] - cam_maps["captum_layergradcam"]).abs().max()),
            "max_abs_relu_map": float(cam_maps["captum_layergradcam"].abs().max()),
        }
        agreement["meets_target"] = bool(batch_r >= TARGET_PEARSON and min(per_image) >= TARGET_PEARSON)
    if "pytorch_grad_cam" in cam_maps:  # per-image min-max scaled by pytorch_grad_cam: correlation only
        per_image = [pearson(a.cpu(), b.cpu()) for a, b in zip(cam_maps["xmed_gradcam"], cam_maps["pytorch_grad_cam"])]
        agreement["pytorch_grad_cam_pearson_per_image_min"] = round(min(per_image), 6)

    # ---------------------------------------------------------------- 2. Integrated Gradients
    zeros = torch.zeros_like(images)
    warm_steps = max(1, ig_batch // args.batch)

    def xmed_ig(steps: int = args.ig_steps) -> Tensor:
        return xmed.explain.IntegratedGradients(model, n_steps=steps, internal_batch_size=ig_batch)(
            images, target=TARGET).maps

    def captum_ig(steps: int = args.ig_steps) -> Tensor:
        return CaptumIG(forward).attribute(images, baselines=zeros, n_steps=steps,
                                           internal_batch_size=ig_batch).detach().sum(dim=1, keepdim=True)

    ig_variants = {"xmed_ig": xmed_ig, "captum_ig": captum_ig}
    ig_warmups = {"xmed_ig": lambda: xmed_ig(warm_steps), "captum_ig": lambda: captum_ig(warm_steps)}
    ig_times, ig_maps = alternate(ig_variants, args.ig_repeats, device, "ig", ig_warmups)
    ig_scale = float(ig_maps["captum_ig"].abs().max())
    ig_diff = float((ig_maps["xmed_ig"] - ig_maps["captum_ig"]).abs().max())
    ig_agree = ig_diff <= IG_TOLERANCE * max(ig_scale, 1e-12)

    # ---------------------------------------------------------------- results
    cam_median = {k: statistics.median(v) for k, v in cam_times.items()}
    ig_median = {k: statistics.median(v) for k, v in ig_times.items()}
    gradcam_ratio = paired_ratios(cam_times["xmed_gradcam"], cam_times["forward"])
    captum_ratio = paired_ratios(cam_times["captum_layergradcam"], cam_times["forward"]) if "captum_layergradcam" in cam_times else None
    pgc_ratio = paired_ratios(cam_times["pytorch_grad_cam"], cam_times["forward"]) if "pytorch_grad_cam" in cam_times else None
    ig_ratio = paired_ratios(ig_times["xmed_ig"], ig_times["captum_ig"])
    meets = {
        "gradcam_over_forward": gradcam_ratio["ratio_of_medians"] <= TARGET_GRADCAM_OVER_FORWARD,
        "ig_over_captum": ig_ratio["ratio_of_medians"] <= TARGET_IG_OVER_CAPTUM,
        "gradcam_maps_agree": agreement.get("meets_target"),
        "ig_maps_agree": ig_agree,
    }
    device_name = timing_device_name(device)

    def rounded(d):
        return None if d is None else {k: round(v, 4) for k, v in d.items()}

    record = {
        "benchmark": "explain_speed",
        "device": args.device, "device_name": device_name, "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average_start": load_start,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "machine": platform.machine(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "captum": captum.__version__, "timm": timm.__version__,
        "pytorch_grad_cam": pgc_status,
        "settings": {"backbone": args.backbone, "input_size": args.input_size, "batch": args.batch,
                     "model": f'FundusClassifier("{args.backbone}", input_size={args.input_size}).eval(), '
                              f"random init (seed {args.seed})",
                     "images": f"torch.randn({args.batch}, 3, {args.input_size}, {args.input_size}), seed {args.seed}",
                     "target": TARGET, "gradcam_layer": layer.name, "gradcam_repeats": args.repeats,
                     "ig_steps": args.ig_steps, "ig_internal_batch_size": ig_batch, "ig_method": "gausslegendre",
                     "ig_baseline": "zeros", "ig_warmup_steps": warm_steps, "ig_repeats": args.ig_repeats,
                     "warmup_calls_per_variant": 1, "seed": args.seed},
        "order": {"gradcam": "alternating: " + ", ".join(cam_variants) + f" x{args.repeats}",
                  "ig": "alternating: " + ", ".join(ig_variants) + f" x{args.ig_repeats}"},
        "notes": notes,
        "gradcam": {
            "seconds_per_batch": {k: [round(t, 4) for t in v] for k, v in cam_times.items()},
            "median_seconds_per_batch": {k: round(v, 4) for k, v in cam_median.items()},
            "xmed_first_call_seconds_with_layer_search": round(first_call, 4),
            "xmed_over_forward": rounded(gradcam_ratio),
            "captum_over_forward": rounded(captum_ratio),
            "pytorch_grad_cam_over_forward": rounded(pgc_ratio),
            "target_xmed_over_forward": TARGET_GRADCAM_OVER_FORWARD,
            "agreement_xmed_vs_captum": agreement, "target_pearson": TARGET_PEARSON,
        },
        "integrated_gradients": {
            "seconds_per_batch": {k: [round(t, 3) for t in v] for k, v in ig_times.items()},
            "median_seconds_per_batch": {k: round(v, 3) for k, v in ig_median.items()},
            "xmed_over_captum": rounded(ig_ratio),
            "target_xmed_over_captum": TARGET_IG_OVER_CAPTUM,
            "max_abs_difference": ig_diff, "max_abs_attribution": ig_scale,
            "agreement_tolerance_relative": IG_TOLERANCE, "maps_agree": ig_agree,
        },
        "meets_target": meets,
        "all_targets_met": all(v is not False for v in meets.values()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "explain_speed.json").write_text(json.dumps(record, indent=2))

    def verdict(ok) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT met")

    table = ["| part | variant | s / batch (median) | runs | ratio | target |", "|---|---|---|---|---|---|"]
    cam_target = f"<= {TARGET_GRADCAM_OVER_FORWARD}: {verdict(meets['gradcam_over_forward'])}"
    ratio_of = {"xmed_gradcam": (gradcam_ratio, "/ forward", cam_target),
                "captum_layergradcam": (captum_ratio, "/ forward", "—"),
                "pytorch_grad_cam": (pgc_ratio, "/ forward", "—"),
                "xmed_ig": (ig_ratio, "/ captum", f"<= {TARGET_IG_OVER_CAPTUM}: {verdict(meets['ig_over_captum'])}")}
    for part, times, median in (("Grad-CAM", cam_times, cam_median), ("IG", ig_times, ig_median)):
        for name, runs in times.items():
            r, what, target = ratio_of.get(name, (None, "", "—"))
            ratio_text = f"{r['ratio_of_medians']:.3f} {what}" if r else "—"
            table.append(f"| {part} | {name} | {median[name]:.3f} | {', '.join(f'{t:.3f}' for t in runs)} | "
                         f"{ratio_text} | {target} |")
        if part == "Grad-CAM" and "pytorch_grad_cam" not in times:
            table.append(f"| Grad-CAM | pytorch_grad_cam | — | {pgc_status} | — | — |")
    lines = table + [""]
    lines.append(f"Paired check (median of per-round ratios): xmed Grad-CAM / forward "
                 f"{gradcam_ratio['median_of_round_ratios']:.3f}"
                 + (f", captum / forward {captum_ratio['median_of_round_ratios']:.3f}" if captum_ratio else "")
                 + f", xmed IG / captum IG {ig_ratio['median_of_round_ratios']:.3f}.")
    if agreement:
        lines.append(f"Same maps: Grad-CAM xmed vs captum Pearson {agreement['pearson_batch_relu_maps']:.6f} (batch, "
                     f"ReLU'd), per-image min {agreement['pearson_per_image_before_relu_min']:.6f} (before ReLU); "
                     f"target >= {TARGET_PEARSON} — {verdict(meets['gradcam_maps_agree'])}.")
    lines.append(f"Same maps: IG xmed vs captum max |diff| {ig_diff:.2e} (largest |attribution| {ig_scale:.2e}) — "
                 f"{'agree' if ig_agree else 'DIFFER'}.")
    lines.append(f"\n{args.backbone} FundusClassifier (random init) at {args.input_size} px, batch {args.batch}, "
                 f"target {TARGET!r}, Grad-CAM layer {layer.name}; on {args.device} ({device_name}, "
                 f"{torch.get_num_threads()} torch threads). Grad-CAM: {args.repeats} rounds alternating "
                 f"{'/'.join(cam_variants)}; IG: {args.ig_steps} steps, internal batch {ig_batch}, zero baseline, "
                 f"{args.ig_repeats} rounds alternating {'/'.join(ig_variants)}; one warm-up call per variant.")
    lines.append(f"torch {torch.__version__}, captum {captum.__version__}, timm {timm.__version__}; "
                 f"pytorch_grad_cam: {pgc_status}." + (f" Load average at start {load_start[0]:.1f}."
                                                        if load_start else ""))
    lines += [f"Note: {n}." for n in notes]
    (args.out / "explain_speed.md").write_text("# Explanation speed: xmed vs forward pass and captum\n\n"
                                               + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out / 'explain_speed.json'} and {args.out / 'explain_speed.md'}")


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*Setting forward, backward hooks.*")
    main()
