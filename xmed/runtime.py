"""Settings that depend on the machine, chosen when a run starts: never assumed by a config.

A config says ``auto`` for the numeric precision (``trainer.precision``), the memory format
(``model.channels_last``) and the loader workers (``data.num_workers``); the functions here
decide from the device the run will use and return a :class:`Choice` — the value and the reason,
which the run log and the model card repeat. A value set in the config wins.

Why by hand: Lightning's ``precision`` has no automatic choice, and torch only says what the
hardware has, not whether torch and oneDNN are allowed to use it (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``). bf16 autocast on a CPU without native bf16 was measured ~20x slower than
fp32 per training step (``benchmarks/machine_choices.py``), so it is chosen only where it is native.

Example:
    >>> choose_precision("cpu", cpu_bf16=(False, "torch uses AVX2 kernels")).value
    '32-true'
    >>> choose_precision("cpu", cpu_bf16=(True, "AVX512-BF16")).value
    'bf16-mixed'
    >>> choose_precision("cpu", requested="16-mixed").reason
    'set in the config'
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmed.errors import ConfigError

AUTO = "auto"

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still allow its native bf16 kernels
_ONEDNN_BF16_ISAS = {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                     "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}


@dataclass(frozen=True)
class Choice:
    """A machine-dependent setting: its value and why it was chosen."""

    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.value} ({self.reason})"


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.lower() == AUTO


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether bf16 autocast runs at native speed on this CPU, and why (not).

    Native means: torch runs its AVX-512 kernels (``ATEN_CPU_CAPABILITY`` may cap them), the CPU
    has AVX512-BF16 or AMX, and oneDNN is not capped below them (``ONEDNN_MAX_CPU_ISA``).
    """
    import torch

    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return False, f"bf16 autocast is not known to be fast on {machine} CPUs"
    capability = torch.backends.cpu.get_cpu_capability()  # honours ATEN_CPU_CAPABILITY
    if not capability.upper().startswith("AVX512"):
        return False, f"torch runs {capability} kernels on this CPU, without AVX-512: bf16 would be emulated"
    units = [name for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
             if getattr(torch.cpu, probe, lambda: False)()]
    if not units:
        return False, "the CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated"
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        isa = os.environ.get(variable, "").strip().upper()
        if isa and isa not in _ONEDNN_BF16_ISAS:
            return False, f"{variable}={isa} keeps oneDNN from its bf16 kernels"
    return True, f"the CPU runs bf16 natively: {', '.join(units)}"


def device_type(accelerator: str | None) -> str:
    """The torch device type a Lightning ``accelerator`` setting will run on (``cpu``, ``cuda``, ``mps``)."""
    import torch

    accelerator = (accelerator or AUTO).lower()
    if accelerator in ("cuda", "gpu", AUTO) and torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if accelerator in ("mps", "gpu", AUTO) and mps is not None and mps.is_available():
        return "mps"
    return "cpu" if accelerator in ("cpu", "gpu", AUTO) else accelerator


def choose_precision(accelerator: str | None = AUTO, requested: str | int | None = AUTO,
                     cpu_bf16: tuple[bool, str] | None = None) -> Choice:
    """Lightning ``precision`` for training on ``accelerator``: bf16-mixed where the device runs
    bf16 natively, 16-mixed on older GPUs with tensor cores, 32-true elsewhere.

    ``cpu_bf16`` replaces the probe of :func:`cpu_bf16_support` (tests pass a fixed answer).
    """
    if requested is not None and not is_auto(requested):
        return Choice(str(requested), "set in the config")
    kind = device_type(accelerator)
    if kind == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        try:
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.5 has no emulation to leave out
            native_bf16 = torch.cuda.is_bf16_supported()
        if native_bf16:
            return Choice("bf16-mixed", f"{name} runs bf16 natively")
        if torch.cuda.get_device_capability() >= (7, 0):
            return Choice("16-mixed", f"{name} has fp16 tensor cores but no native bf16")
        return Choice("32-true", f"{name} has no tensor cores")
    if kind == "cpu":
        native, why = cpu_bf16 if cpu_bf16 is not None else cpu_bf16_support()
        return Choice("bf16-mixed" if native else "32-true", why)
    return Choice("32-true", f"no reduced precision is chosen automatically on {kind}")


def choose_channels_last(device: str, requested: bool | str = AUTO) -> Choice:
    """NHWC memory format for convolutions on ``device`` (a torch device type)."""
    if not is_auto(requested):
        return Choice(bool(requested), "set in the config")
    if device == "cuda":
        return Choice(True, "cuDNN convolutions run fastest on NHWC tensors")
    if device == "cpu":
        import torch

        if torch.backends.mkldnn.is_available():
            return Choice(True, "oneDNN convolutions run faster on NHWC tensors, with or without AVX-512, "
                                "as benchmarks/machine_choices.py measures")
        return Choice(False, "this torch has no oneDNN")
    return Choice(False, f"not chosen automatically on {device}")


def available_cpus() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_num_workers(requested: int | str = AUTO, cpus: int | None = None, limit: int = 8) -> Choice:
    """DataLoader worker processes: one per available core, at most ``limit`` (eyes with masks are
    kept prepared per worker, so more workers can cost memory)."""
    if not is_auto(requested):
        try:
            value = int(requested)
        except (TypeError, ValueError):
            value = -1
        if value < 0:
            raise ConfigError("data.num_workers", f"must be a whole number, 0 or more, or 'auto'; got {requested!r}")
        return Choice(value, "set in the config")
    cpus = cpus or available_cpus()
    return Choice(min(cpus, limit), f"{cpus} CPU core(s) available to this process")


def machine_summary() -> dict[str, Any]:
    """What a run's results depend on: CPU model and kernels, threads, GPU, torch and CUDA versions."""
    import torch

    summary = {"cpu": cpu_model(), "cpu kernels": torch.backends.cpu.get_cpu_capability(),
               "cpu cores available": available_cpus(), "torch threads": torch.get_num_threads(),
               "torch": torch.__version__}
    if torch.cuda.is_available():
        summary.update({"gpu": torch.cuda.get_device_name(), "gpus visible": torch.cuda.device_count(),
                        "cuda": torch.version.cuda})
    return summary


def cpu_model() -> str:
    """The CPU's model name, e.g. ``AMD EPYC 9R14``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


#: where photographs are decoded and prepared (``data.pipeline``; ``pipeline`` for xmed-predict)
PIPELINES = ("auto", "cpu", "gpu")


def check_pipeline(requested: Any, key: str = "data.pipeline") -> str:
    """``requested`` as one of :data:`PIPELINES` (any case); anything else is a :class:`ConfigError` on ``key``.

    Example:
        >>> check_pipeline("GPU")
        'gpu'
    """
    value = requested.lower() if isinstance(requested, str) else requested
    if value not in PIPELINES:
        raise ConfigError(key, f"must be auto, cpu or gpu; got {requested!r}")
    return value


def choose_pipeline(requested: Any, device: str | None, obstacle: str | None = None,
                    key: str = "data.pipeline") -> Choice:
    """Where a run's photographs are decoded and prepared: ``gpu`` — the loader workers only read
    the files, and the batch is decoded (nvJPEG for JPEG files) and prepared on the device the model
    runs on (:mod:`xmed.data.device_pipeline`); ``cpu`` — in the loader workers.

    ``auto`` is ``gpu`` when the model runs on CUDA (``device``, a torch device type; None when no
    run's device is known, e.g. a loader used before training starts) and nothing stands in the
    way (``obstacle``: why the photographs cannot be prepared on the device — masks read, contrast
    normalisation, eyes rendered rather than read), else ``cpu``. ``gpu`` where an obstacle stands is a
    :class:`ConfigError` on ``key``; ``gpu`` on a CPU-only run prepares the batch with the same
    tensor code on the CPU (slower than the workers: for checking, not for speed).

    Example:
        >>> choose_pipeline("auto", "cuda").value, choose_pipeline("auto", "cpu").value
        ('gpu', 'cpu')
        >>> choose_pipeline("auto", "cuda", obstacle="the data set's masks are read").reason
        "the data set's masks are read"
    """
    value = check_pipeline(requested, key)
    if value == "cpu":
        return Choice("cpu", "set in the config")
    if obstacle is not None:
        if value == "gpu":
            raise ConfigError(key, f"gpu cannot prepare these photographs: {obstacle}; use {key}=cpu")
        return Choice("cpu", obstacle)
    if value == "gpu":
        slower = f"; on {device}, the tensor pipeline is slower than the loader workers"
        return Choice("gpu", "set in the config" + ("" if device in (None, "cuda") else slower))
    if device == "cuda":
        return Choice("gpu", "the model runs on CUDA: the loader workers read the files, the GPU decodes (nvJPEG) and "
                             "prepares each batch")
    return Choice("cpu", f"the model runs on {device}: the loader workers prepare the photographs" if device
                  else "no run's device is known yet: the loader workers prepare the photographs")


@dataclass(frozen=True)
class EyeCost:
    """Device memory one eye takes in a model's passes, in bytes, measured by :func:`eye_cost`:
    ``graph`` — every module output of its forward pass, what a backward pass keeps;
    ``transient`` — twice the largest module output, what a forward pass without gradients holds
    at once (a layer's input and its output); ``input`` — the eye as the model takes it (float32)."""

    graph: int
    transient: int
    input: int


def eye_cost(model: Any, input_size: int, device: Any = "cpu", channels: int = 3) -> EyeCost:
    """:class:`EyeCost` of ``model`` at ``input_size``: one forward pass of one zero eye on ``device``
    (without gradients), every leaf module's tensor output counted in float32.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        >>> eye_cost(net, 8)    # two outputs of 4×8×8 float32 (1 KiB each); the eye, 3×8×8
        EyeCost(graph=2048, transient=2048, input=768)
    """
    import torch

    sizes: list[int] = []

    def count(_module, _inputs, output) -> None:
        for tensor in (output if isinstance(output, (tuple, list)) else [output]):
            if isinstance(tensor, torch.Tensor):
                sizes.append(tensor.numel() * 4)

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return EyeCost(sum(sizes), 2 * max(sizes, default=0), channels * input_size * input_size * 4)


def choose_batch_size(requested: Any, device: Any, eye_bytes: Any, cpu_default: int, limit: int = 1024,
                      share: float = 0.5, key: str = "batch_size") -> Choice:
    """How many eyes a batch of explanations or screening holds: the number set in the config, or,
    for ``auto``, on a CUDA device the largest power of two up to ``limit`` whose eyes fit in ``share``
    of the memory the device has free now (``torch.cuda.mem_get_info``), at ``eye_bytes()`` bytes per
    eye (the caller's cost model, e.g. from :func:`eye_cost`; called only there); elsewhere
    ``cpu_default`` (on a CPU a larger batch is no faster, and memory is not what limits it).

    Example:
        >>> choose_batch_size("auto", "cpu", lambda: 1.0, cpu_default=8).value
        8
        >>> choose_batch_size(12, "cuda", lambda: 1.0, cpu_default=8)
        Choice(value=12, reason='set in the config')
    """
    import torch

    if not is_auto(requested):
        whole = (isinstance(requested, int) and not isinstance(requested, bool)) or (
            isinstance(requested, str) and requested.strip().isdigit())
        if not whole or int(requested) < 1:
            raise ConfigError(key, f"must be a whole number, 1 or more, or 'auto'; got {requested!r}")
        return Choice(int(requested), "set in the config")
    device = torch.device(device)
    if device.type != "cuda":
        return Choice(cpu_default, f"on {device.type}: a larger batch is no faster there")
    free, _ = torch.cuda.mem_get_info(device)
    per_eye = float(eye_bytes())
    fits = int(share * free // max(per_eye, 1.0))
    value = 1 << max(0, min(fits, limit).bit_length() - 1) if fits >= 1 else 1
    return Choice(value, f"{free / 2**30:.1f} GiB free on {torch.cuda.get_device_name(device)}, "
                         f"{per_eye / 2**20:.1f} MiB per eye: {fits} eyes fit in {share:.0%} of it; "
                         f"the largest power of two up to {limit}")


def choose_autocast(requested: Any, device: Any) -> Choice:
    """Whether explanation methods run their forward and backward passes in bf16 autocast
    (``autocast`` of ``xmed-explain``): ``auto`` on a CUDA device that runs bf16 natively (the maps
    are still summed and scored in fp32), never on a CPU, where full precision keeps maps and
    scores as they were; true or false as set.

    Example:
        >>> choose_autocast("auto", "cpu").value, choose_autocast(True, "cpu").value
        (False, True)
    """
    import torch

    if isinstance(requested, bool):
        return Choice(requested, "set in the config")
    if not is_auto(requested):
        raise ConfigError("autocast", f"must be true, false or auto; got {requested!r}")
    device = torch.device(device)
    if device.type != "cuda":
        return Choice(False, f"full precision on {device.type}")
    precision = choose_precision("cuda")
    if precision.value == "bf16-mixed":
        return Choice(True, f"{precision.reason}: forward and backward passes in bf16, maps summed in fp32")
    return Choice(False, f"full precision: {precision.reason}")
