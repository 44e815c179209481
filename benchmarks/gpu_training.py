"""Training throughput at the scales a large GPU is used at: resnet18, efficientnet_b0 and
convnext_nano at 256 and 512 px, in the precision :mod:`xmed.runtime` chooses (bf16 autocast on a
GPU with native bf16) and channels_last, with and without ``torch.compile``.

One step = forward + the three heads' losses + backward + AdamW on a batch of ``torch.randn``
images kept on the device. Eager and compiled steps alternate in rounds of several steps; the
compiled model's first step (the compilation) is timed apart and left out of its throughput. The
floating-point work of one eager step is counted with ``torch.utils.flop_counter.FlopCounterMode``;
achieved TFLOP/s is set against the GPU's peak dense bf16 rate where :data:`PEAK_BF16_TFLOPS` knows
the GPU (the eager row's baseline: the images/s that rate would give, so its ratio is the share
of peak achieved). Then the Lightning ``Trainer`` against a plain loop on the same work (see
:mod:`benchmarks.train_throughput`). Compiled rows run last, while the time budget allows.
"""

from __future__ import annotations

import time

import torch

from benchmarks.timing import (Context, Part, alternate, median, paired_ratio, peak_memory, random_batch, timed,
                               training_step)
from benchmarks.train_throughput import LoopSettings, compare_loops

# peak dense bf16 tensor-core TFLOP/s (no sparsity), by a part of the GPU's name; first match wins
PEAK_BF16_TFLOPS = (("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("A10G", 70.0))


def peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """The device's peak dense bf16 TFLOP/s and its name, or None where it is not in the table.

    Example:
        >>> peak_tflops(torch.device("cpu"))
        (None, 'CPU: no peak rate tabled')
    """
    if device.type != "cuda":
        return None, "CPU: no peak rate tabled"
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None), name


def step_flops(step) -> int:
    """Floating-point operations of one call of ``step`` (matrix multiplications and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def configs(ctx: Context) -> list[tuple[str, int, int]]:
    """(model, input side, batch) rows: a large GPU's batches; a quick run's tiny ones."""
    if ctx.quick:
        return [("resnet18", 64, 4)]
    return [(model, size, 256 if size == 256 else 128) for size in (256, 512)
            for model in ("resnet18", "efficientnet_b0", "convnext_nano")]


class Row:
    """One model at one size on a batch of its own, with its eager training step."""

    def __init__(self, model: str, size: int, batch: int, ctx: Context):
        from xmed.models import FundusClassifier

        self.label, self.batch, self.ctx = f"{model} {size} px, batch {batch}", batch, ctx
        device = ctx.device
        torch.manual_seed(ctx.seed)
        self.model = FundusClassifier(model, input_size=size).to(device).train()
        self.model.to(memory_format=torch.channels_last)
        images, self.labels = random_batch(batch, size, device, ctx.seed)
        self.images = images.contiguous(memory_format=torch.channels_last)
        self.eager = training_step(self.model, self.images, self.labels, device, bf16=ctx.bf16)
        self.steps = ctx.size(1, 10)  # steps per timed call

    def repeated(self, step):
        def call():
            for _ in range(self.steps):
                loss = step()
            return loss
        return call

    def measure_eager(self, part: Part, peak: float | None, peak_note: str) -> float:
        """Eager images/s against what the GPU's peak rate would give for the same FLOPs (the ratio
        is the share of peak achieved); returns the step's FLOPs."""
        flops = step_flops(self.eager)  # also the first (warm-up) step
        with peak_memory(self.ctx.device) as memory:
            times, _ = alternate({"eager": self.repeated(self.eager)}, self.ctx.size(1, 3), self.ctx.device, self.label)
        step_s = median(times["eager"]) / self.steps
        part.figure(f"{self.label}: eager training", self.batch / step_s, "images/s",
                    f"at peak dense bf16 ({peak:g} TFLOP/s)" if peak else None,
                    peak * 1e12 * self.batch / flops if peak else None, peak_memory_mb=memory["mb"],
                    note=f"{flops / step_s / 1e12:.3g} TFLOP/s achieved, {flops / self.batch / 1e9:.2f} GFLOP per "
                         f"image (FlopCounterMode)" + ("" if peak else f"; {peak_note}: share of peak omitted"))
        return flops

    def measure_compiled(self, part: Part, peak: float | None, backend: str, flops: float) -> None:
        """Compiled against eager images/s (the compilation timed apart, against one eager step)."""
        device = self.ctx.device
        compiled = training_step(self.model, self.images, self.labels, device, bf16=self.ctx.bf16,
                                 forward=torch.compile(self.model, backend=backend))
        with peak_memory(device) as memory:
            compile_s, _ = timed(compiled, device)
            times, _ = alternate({"eager": self.repeated(self.eager), "compiled": self.repeated(compiled)},
                                 self.ctx.size(1, 3), device, self.label)
        tflops = flops / (median(times["compiled"]) / self.steps) / 1e12
        part.figure(f"{self.label}: torch.compile ({backend})", self.batch * self.steps / median(times["compiled"]),
                    "images/s", "eager", self.batch * self.steps / median(times["eager"]),
                    paired=paired_ratio(times["eager"], times["compiled"]), peak_memory_mb=memory["mb"],
                    note=f"compiled step {tflops:.3g} TFLOP/s" + (f" ({tflops / peak:.0%} of peak)" if peak else ""))
        part.figure(f"{self.label}: compilation (first compiled step)", compile_s, "s", "one eager step",
                    median(times["eager"]) / self.steps)

    def release(self) -> None:
        del self.model, self.images, self.eager
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run(part: Part, ctx: Context) -> None:
    device = ctx.device
    peak, peak_name = peak_tflops(device)
    backend = "inductor" if not ctx.quick else "aot_eager"
    part.settings.update({"precision": "bf16 autocast" if ctx.bf16 else "fp32", "memory format": "channels_last",
                          "torch.compile backend": backend, "peak dense bf16": f"{peak} TFLOP/s ({peak_name})"
                          if peak else f"unknown for {peak_name}"})
    if ctx.quick:
        part.note("quick run: torch.compile with the aot_eager backend (the same tracing, no kernel generation)")

    def with_row(config: tuple[str, int, int], measure):
        row = Row(*config, ctx)
        try:
            return measure(row)
        finally:
            row.release()

    flops = {}
    for config in configs(ctx):
        if ctx.left() < 0:
            part.note(f"time budget spent: {config[0]} {config[1]} px and later rows not run")
            break
        flops[config] = part.attempt(f"{config[0]} {config[1]} px eager",
                                     lambda: with_row(config, lambda row: row.measure_eager(part, peak, peak_name)))
    loops = LoopSettings(model="resnet18", size=ctx.size(64, 256), batch=ctx.size(4, 256), steps=ctx.size(3, 40),
                         warmup=ctx.size(1, 10), precision="bf16-mixed" if ctx.bf16 else "32-true",
                         channels_last=True, seed=ctx.seed)
    if ctx.left() > 0:
        part.attempt("Lightning vs plain loop", lambda: compare_loops(part, loops, device, ctx.size(1, 2)))
    expected_s = 60.0  # what one compiled row takes: the longest so far
    for config, count in flops.items():
        if count is None:
            continue
        if ctx.left() < expected_s and not ctx.quick:
            part.note(f"time budget: torch.compile of {config[0]} {config[1]} px not run ({ctx.left():.0f} s left, "
                      f"a compiled row takes about {expected_s:.0f} s)")
            continue
        started = time.perf_counter()
        part.attempt(f"{config[0]} {config[1]} px compiled",
                     lambda: with_row(config, lambda row: row.measure_compiled(part, peak, backend, count)))
        expected_s = max(expected_s, time.perf_counter() - started)
