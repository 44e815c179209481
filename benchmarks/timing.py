"""What the benchmark scripts share: synchronised timings, alternating rounds, paired ratios, the
device's name. Run a benchmark as ``python benchmarks/<name>.py``; this module is imported from there.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F

from xmed.explain.base import synchronize

T = TypeVar("T")


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Seconds of one call of ``fn`` (device synchronised before and after) and its result."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def alternate(variants: dict[str, Callable[[], T]], repeats: int, device: torch.device, label: str,
              warmups: dict[str, Callable[[], T]] | None = None) -> tuple[dict[str, list[float]], dict[str, T]]:
    """One untimed warm-up call of each variant (``warmups[name]`` if given), then ``repeats``
    rounds of A, B, C, … so that a noisy, shared machine affects every variant alike."""
    warmups = warmups or variants
    for name in variants:
        seconds, _ = timed(warmups[name], device)
        print(f"{label} warm-up {name:<22} {seconds:8.3f} s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in variants}
    last: dict[str, T] = {}
    for r in range(repeats):
        for name, fn in variants.items():
            seconds, last[name] = timed(fn, device)
            times[name].append(seconds)
            print(f"{label} round {r + 1}/{repeats} {name:<22} {seconds:8.3f} s", flush=True)
    return times, last


def paired_ratios(num: list[float], den: list[float], scale: float = 1.0) -> dict[str, float]:
    """Ratio of the medians, and the median of the per-round (paired) ratios, of num / (scale × den)."""
    return {"ratio_of_medians": statistics.median(num) / (scale * statistics.median(den)),
            "median_of_round_ratios": statistics.median(a / (scale * b) for a, b in zip(num, den))}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model."""
    from xmed.runtime import cpu_model

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def add_run_arguments(parser) -> None:
    """The options every benchmark takes: ``--seed``, ``--threads``, ``--out``."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")


def prepare_device(parser, args) -> torch.device:
    """``args.device`` checked (a parser error if CUDA is asked for and absent), CPU threads set."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    return device


def training_step(model, images: torch.Tensor, labels: dict[str, torch.Tensor], device: torch.device,
                  bf16: bool) -> Callable[[], float]:
    """One optimiser step of ``model`` on the batch, as a closure returning the loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(images)
        loss = (F.binary_cross_entropy_with_logits(out["logits"].float(), labels["glaucoma"])
                + F.binary_cross_entropy_with_logits(out["finding_logits"].float(), labels["findings"])
                + F.l1_loss(out["vcdr"].float(), labels["vcdr"]))
        loss.backward()
        optimizer.step()
        return float(loss)

    return step
