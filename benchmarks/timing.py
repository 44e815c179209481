"""What every benchmark shares: synchronised timings, alternating rounds, paired ratios, peak
device memory, and the record of a run (:class:`Report`: one ``results.json`` and one
``results.md``, rewritten after every figure so that a killed run keeps what it measured).

A figure is always written next to its baseline, measured in the same run, and their ratio: the
machine may be shared and noisy, and a ratio of two things timed side by side survives that far
better than either number alone.

Example:
    >>> import torch
    >>> report = Report(None, {"device": "cpu"})
    >>> part = report.part("demo", "two ways to add")
    >>> times, _ = alternate({"a": lambda: 1 + 1, "b": lambda: 2 + 2}, 2, torch.device("cpu"), "demo", quiet=True)
    >>> sorted(times), len(times["a"])
    (['a', 'b'], 2)
    >>> part.figure("b", 3.0, "s", "a", 2.0, goal=Goal("ratio", "<=", 1.2))["ratio"], part.figures[0]["met"]
    (1.5, False)
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.nn.functional as F

T = TypeVar("T")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")


# ---------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Seconds of one call of ``fn`` (device synchronised before and after) and its result."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def alternate(variants: dict[str, Callable[[], T]], repeats: int, device: torch.device, label: str,
              warmups: dict[str, Callable[[], T]] | None = None,
              quiet: bool = False) -> tuple[dict[str, list[float]], dict[str, T]]:
    """One untimed warm-up call of each variant (``warmups[name]`` if given), then ``repeats``
    rounds of A, B, C, … so that a noisy, shared machine affects every variant alike."""
    warmups = warmups or variants
    for name in variants:
        seconds, _ = timed(warmups[name], device)
        quiet or print(f"{label} warm-up {name:<24} {seconds:8.3f} s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in variants}
    last: dict[str, T] = {}
    for r in range(repeats):
        for name, fn in variants.items():
            seconds, last[name] = timed(fn, device)
            times[name].append(seconds)
            quiet or print(f"{label} round {r + 1}/{repeats} {name:<24} {seconds:8.3f} s", flush=True)
    return times, last


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """The median of the per-round ratios num / den: a check on the ratio of the medians."""
    return statistics.median(a / b for a, b in zip(num, den))


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """``{"mb": peak device memory allocated inside the block}`` (None off CUDA).

    Example:
        >>> with peak_memory(torch.device("cpu")) as peak:
        ...     _ = torch.ones(3)
        >>> peak["mb"] is None
        True
    """
    peak: dict[str, float | None] = {"mb": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield peak
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak["mb"] = torch.cuda.max_memory_allocated(device) / 2**20


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` torch CPU threads (None: as they are), then restore them."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_batch(batch: int, size: int, device: torch.device, seed: int) -> tuple[torch.Tensor, dict]:
    """``torch.randn`` images and random labels of the three heads, from ``seed``."""
    from xmed.findings import FINDINGS

    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator)
    labels = {"glaucoma": torch.randint(0, 2, (batch,), generator=generator).float(),
              "findings": torch.randint(0, 2, (batch, len(FINDINGS)), generator=generator).float(),
              "vcdr": torch.rand(batch, generator=generator)}
    return images.to(device), {k: v.to(device) for k, v in labels.items()}


def training_step(model, images: torch.Tensor, labels: dict[str, torch.Tensor], device: torch.device,
                  bf16: bool, forward: Callable | None = None) -> Callable[[], float]:
    """One optimiser step of ``model`` (forward, the three heads' losses, backward, AdamW), as a
    closure returning the loss: on ``images`` and ``labels``, or on those it is called with.
    ``forward`` replaces ``model`` in the forward pass (e.g. a compiled one)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = model if forward is None else forward  # a module's truth value may be its length
    default_images, default_labels = images, labels

    def step(images: torch.Tensor = default_images, labels: dict[str, torch.Tensor] = default_labels) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(images)
        loss = (F.binary_cross_entropy_with_logits(out["logits"].float(), labels["glaucoma"])
                + F.binary_cross_entropy_with_logits(out["finding_logits"].float(), labels["findings"])
                + F.l1_loss(out["vcdr"].float(), labels["vcdr"]))
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


# ---------------------------------------------------------------------------------- a run
@dataclass
class Context:
    """What a benchmark is run with: the device, quick or full sizes, the seed, a scratch folder,
    and its time budget (a benchmark checks :meth:`left` before optional rows)."""

    device: torch.device
    quick: bool
    seed: int
    scratch: Path
    budget_s: float
    started: float = 0.0

    def size(self, quick: T, full: T) -> T:
        """``quick`` in a quick run, else ``full``."""
        return quick if self.quick else full

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.budget_s - (time.perf_counter() - self.started)

    @property
    def bf16(self) -> bool:
        """Whether :func:`xmed.runtime.choose_precision` trains in bf16 autocast on this device."""
        from xmed.runtime import choose_precision

        return choose_precision(self.device.type).value == "bf16-mixed"


# ---------------------------------------------------------------------------------- the record
@dataclass(frozen=True)
class Goal:
    """A target on a figure's ``value`` or on its ``ratio`` to the baseline. A figure whose rounds
    were paired is judged on its paired ratio (the median of the per-round ratios), which a change
    of the machine's load between rounds does not skew as it skews the ratio of the medians.

    Example:
        >>> Goal("ratio", "<=", 1.2).met(value=3.0, ratio=1.1), str(Goal("value", ">=", 40))
        (True, 'value >= 40')
    """

    on: str     # "value" | "ratio"
    op: str     # "<=" | ">="
    limit: float

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = value if self.on == "value" else ratio
        if x is None or not math.isfinite(x):
            return None
        return x <= self.limit if self.op == "<=" else x >= self.limit

    def __str__(self) -> str:
        return f"{self.on} {self.op} {self.limit:g}"


def _number(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else float(f"{float(x):.{digits}g}")


class Part:
    """The figures, checks and notes of one benchmark; every addition rewrites the report."""

    def __init__(self, name: str, description: str, save: Callable[[], None]):
        self.name, self.description, self._save = name, description, save
        self.settings: dict[str, Any] = {}
        self.figures: list[dict] = []
        self.checks: list[dict] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.seconds: float | None = None
        self.budget_s: float | None = None

    def figure(self, name: str, value: float, unit: str, baseline_name: str | None = None,
               baseline: float | None = None, goal: Goal | None = None, paired: float | None = None,
               peak_memory_mb: float | None = None, note: str | None = None) -> dict:
        """Record ``value`` against ``baseline`` (same unit, measured in this run): ratio =
        value / baseline. ``paired``: the median of the per-round ratios (see :class:`Goal`)."""
        value, baseline = _number(value), _number(baseline)
        ratio = _number(value / baseline, 4) if baseline else None
        row = {"name": name, "value": value, "unit": unit, "baseline_name": baseline_name, "baseline": baseline,
               "ratio": ratio, "paired_ratio": _number(paired, 4), "goal": str(goal) if goal else None,
               "met": goal.met(value, ratio if paired is None else paired) if goal else None,
               "peak_memory_mb": _number(peak_memory_mb, 5), "note": note}
        self.figures.append(row)
        self._save()
        return row

    def check(self, name: str, value: Any, goal: str, met: bool | None) -> None:
        """Record a yes/no check (two implementations agree, every eye was scored, …)."""
        self.checks.append({"name": name, "value": value, "goal": goal, "met": met})
        self._save()

    def note(self, text: str) -> None:
        print(f"[{self.name}] {text}", flush=True)
        self.notes.append(text)
        self._save()

    def attempt(self, label: str, fn: Callable[[], T]) -> T | None:
        """``fn()``, or None with its error recorded: one failed row never loses the others."""
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - recorded, and the benchmark goes on
            self.error(f"{label}: {type(err).__name__}: {err}", traceback.format_exc())
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return None

    def error(self, text: str, trace: str = "") -> None:
        print(f"[{self.name}] ERROR {text}\n{trace}", flush=True)
        self.errors.append(text + ("\n" + trace[-3000:] if trace else ""))
        self._save()

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "settings": self.settings,
                "seconds": _number(self.seconds, 4), "budget_s": self.budget_s, "figures": self.figures,
                "checks": self.checks, "notes": self.notes, "errors": self.errors}


class Report:
    """One run's ``results.json`` and ``results.md`` in ``out`` (None: kept in memory only)."""

    def __init__(self, out: Path | None, header: dict[str, Any]):
        self.out, self.header = out, header
        self.parts: list[Part] = []

    def part(self, name: str, description: str) -> Part:
        part = Part(name, description, self.save)
        self.parts.append(part)
        return part

    def as_dict(self) -> dict:
        return {"header": self.header, "parts": [p.as_dict() for p in self.parts]}

    def save(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("results.json", json.dumps(self.as_dict(), indent=2) + "\n"),
                           ("results.md", self.markdown())):
            partial = self.out / f".{name}.partial"
            partial.write_text(text)
            os.replace(partial, self.out / name)

    def markdown(self) -> str:
        h = self.header
        lines = [f"# Benchmarks: {h.get('suite', '')} suite{' (quick)' if h.get('quick') else ''}", "",
                 f"Command: `{h.get('command', '')}`", ""]
        lines += [f"- **{key}**: {value}" for key, value in h.items() if key not in ("command", "suite", "quick")]
        lines += ["", "Ratio: value / baseline, both measured in this run; in brackets the median of the "
                      "per-round ratios, on which a goal on the ratio is judged.", "", figures_table(self.parts)]
        for part in self.parts:
            settings = ", ".join(f"{k} {v}" for k, v in part.settings.items())
            seconds = f"{part.seconds:.0f} s" if part.seconds is not None else "running"
            lines += ["", f"### {part.name}", "", f"{part.description} ({seconds}"
                      + (f" of a {part.budget_s:.0f} s budget" if part.budget_s else "") + ")",
                      "", f"Settings: {settings or 'none'}.", ""]
            lines += [f"- check: {c['name']}: {c['value']} (goal: {c['goal']}; {verdict(c['met'])})"
                      for c in part.checks]
            lines += [f"- note: {n}" for n in part.notes]
            lines += [f"- **error**: {e.splitlines()[0]}" for e in part.errors]
        return "\n".join(lines) + "\n"


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def figures_table(parts: list[Part]) -> str:
    """Every figure of ``parts`` as one Markdown table."""
    lines = ["| part | figure | value | baseline | ratio | goal | peak memory | note |",
             "|---|---|---|---|---|---|---|---|"]
    for part in parts:
        for f in part.figures:
            baseline = f"{f['baseline_name']}: {_fmt(f['baseline'])}" if f["baseline"] is not None else "—"
            ratio = _fmt(f["ratio"]) + (f" ({_fmt(f['paired_ratio'])})" if f["paired_ratio"] is not None else "")
            goal = f"{f['goal']}: {verdict(f['met'])}" if f["goal"] else "—"
            memory = f"{f['peak_memory_mb']:,.0f} MB" if f["peak_memory_mb"] is not None else "n/a"
            lines.append(f"| {part.name} | {f['name']} | {_fmt(f['value'])} {f['unit']} | {baseline} | {ratio} | "
                         f"{goal} | {memory} | {f['note'] or ''} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- the machine
def cpu_flags() -> list[str]:
    """The instruction sets of :data:`CPU_FLAGS` this CPU reports (``/proc/cpuinfo``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def gpu_driver() -> str | None:
    """The NVIDIA driver version (``nvidia-smi``), or None where it cannot be read."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_header(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: CPU, its instruction sets and cores, GPU, driver, versions,
    and the precision and memory format :mod:`xmed.runtime` chooses for ``device``."""
    from xmed.runtime import available_cpus, choose_channels_last, choose_precision, cpu_model

    precision = choose_precision(device.type)
    header = {"cpu": cpu_model(), "cpu instruction sets": ", ".join(cpu_flags()) or "none of " + "/".join(CPU_FLAGS),
              "torch cpu kernels": torch.backends.cpu.get_cpu_capability(),
              "cpu cores": f"{available_cpus()} available of {os.cpu_count()}",
              "torch threads": torch.get_num_threads(), "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "none used",
              "gpu driver": (gpu_driver() or "unknown") if device.type == "cuda" else "n/a",
              "python": platform.python_version(), "torch": torch.__version__,
              "cuda": torch.version.cuda or "none",
              "precision (xmed.runtime.choose_precision)": str(precision),
              "channels_last (xmed.runtime.choose_channels_last)": str(choose_channels_last(device.type)),
              "load average at start": load_average()}
    return header


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model."""
    from xmed.runtime import cpu_model

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


def command_line() -> str:
    return " ".join([Path(sys.executable).name, "-m", "benchmarks", *sys.argv[1:]])
