"""Machine-dependent settings chosen at run time (``xmed.runtime``): precision, memory format, workers.

The CPU is mocked where torch asks it: the kernels torch runs (``get_cpu_capability``) and the
instructions the CPU has (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from xmed.cli.common import CONFIG_DIR
from xmed.errors import ConfigError
from xmed.runtime import choose_channels_last, choose_num_workers, choose_precision


def mock_cpu(monkeypatch, kernels: str, bf16: bool, amx: bool = False) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: kernels)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_without_native_bf16_trains_in_fp32(monkeypatch):
    mock_cpu(monkeypatch, "AVX2", bf16=False)
    choice = choose_precision("cpu")
    assert choice.value == "32-true"
    assert choice.reason == "torch runs AVX2 kernels on this CPU, without AVX-512: bf16 would be emulated"


def test_avx512_cpu_without_bf16_units_trains_in_fp32(monkeypatch):
    mock_cpu(monkeypatch, "AVX512", bf16=False, amx=False)
    assert choose_precision("auto").value == "32-true"
    assert "neither AVX512-BF16 nor AMX" in choose_precision("auto").reason


@pytest.mark.parametrize("bf16, amx, units", [(True, False, "AVX512-BF16"), (True, True, "AMX, AVX512-BF16")])
def test_cpu_with_native_bf16_trains_in_bf16(monkeypatch, bf16, amx, units):
    mock_cpu(monkeypatch, "AVX512", bf16=bf16, amx=amx)
    choice = choose_precision("cpu")
    assert (choice.value, choice.reason) == ("bf16-mixed", f"the CPU runs bf16 natively: {units}")


def test_a_capped_onednn_isa_means_fp32(monkeypatch):
    mock_cpu(monkeypatch, "AVX512", bf16=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    choice = choose_precision("cpu")
    assert choice.value == "32-true" and "ONEDNN_MAX_CPU_ISA=AVX2" in choice.reason
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert choose_precision("cpu").value == "bf16-mixed"


def test_a_precision_in_the_config_wins(monkeypatch):
    mock_cpu(monkeypatch, "AVX2", bf16=False)
    assert choose_precision("cpu", requested="bf16-mixed").value == "bf16-mixed"
    assert choose_precision("cpu", requested=32).value == "32"


def test_capped_instruction_sets_are_seen_by_the_real_probe():
    """The slow path a user's AVX2 machine takes, reproduced on any x86 CPU by capping torch and oneDNN."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = "from xmed.runtime import choose_precision; c = choose_precision('cpu'); print(c.value); print(c.reason)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    value, reason = out.stdout.splitlines()[:2]
    assert value == "32-true", out.stdout
    assert "without AVX-512" in reason or "ONEDNN_MAX_CPU_ISA" in reason or "not known to be fast" in reason


@pytest.mark.parametrize("bf16, capability, expected", [(True, (9, 0), "bf16-mixed"), (False, (7, 5), "16-mixed"),
                                                        (False, (6, 1), "32-true")])
def test_gpu_precision_follows_what_the_gpu_runs_natively(monkeypatch, bf16, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    for accelerator in ("gpu", "cuda", "auto"):
        choice = choose_precision(accelerator)
        assert choice.value == expected and choice.reason.startswith("Test GPU")
    assert choose_precision("cpu", cpu_bf16=(False, "no")).value == "32-true"  # a CPU run on a GPU machine


def test_channels_last_and_workers(monkeypatch):
    assert choose_channels_last("cuda").value is True
    assert choose_channels_last("cpu", requested=False).value is False
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert choose_channels_last("cpu").value is False
    assert choose_num_workers("auto", cpus=2).value == 2
    assert choose_num_workers("auto", cpus=64).value == 8
    assert choose_num_workers(3).value == 3


@pytest.mark.parametrize("bad", ["many", -1])
def test_bad_worker_count_names_the_key(bad):
    from xmed.errors import ConfigError

    with pytest.raises(ConfigError, match="data.num_workers"):
        choose_num_workers(bad)


def test_no_shipped_config_fixes_a_reduced_precision():
    """Reduced precision is a property of the machine: configs say `auto` (or full precision)."""
    found = {}

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "precision":
                    found[path] = value
                walk(value, path)

    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(files) > 40
    for file in files:
        walk(yaml.safe_load(file.read_text()), file.relative_to(CONFIG_DIR).as_posix())
    assert found.pop("trainer/default.yaml") == "auto"
    assert all(str(v) in ("auto", "32-true", "32") for v in found.values()), found


# ----------------------------------------------------------------------- the input pipeline
def test_the_pipeline_follows_the_device_and_the_data():
    from xmed.runtime import choose_pipeline

    assert choose_pipeline("auto", "cuda").value == "gpu" and "nvJPEG" in choose_pipeline("auto", "cuda").reason
    assert choose_pipeline("auto", "cpu").reason == "the model runs on cpu: the loader workers prepare the photographs"
    assert choose_pipeline("auto", None).reason == "no run's device is known yet: the loader workers prepare the photographs"
    assert choose_pipeline("CPU", "cuda").value == "cpu" and choose_pipeline("gpu", "cuda").reason == "set in the config"
    masks = "the data set's masks are read, and the device pipeline prepares images only"
    assert choose_pipeline("auto", "cuda", obstacle=masks).value == "cpu"
    with pytest.raises(ConfigError, match=r"'data.pipeline': gpu cannot prepare these photographs: the data set's masks"):
        choose_pipeline("gpu", "cuda", obstacle=masks)
    with pytest.raises(ConfigError, match=r"'pipeline': must be auto, cpu or gpu; got 'nvjpeg'"):
        choose_pipeline("nvjpeg", "cuda", key="pipeline")


# ----------------------------------------------------------------------- batch sizes by memory
def mock_gpu(monkeypatch, free_gib: float) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * 2**30), 141 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")


@pytest.mark.parametrize("free_gib, per_eye_mib, expected", [
    (100.0, 30.0, 1024),     # 1,706 fit in half: capped at the limit
    (10.0, 30.0, 128),       # 170 fit: the power of two below
    (1.0, 30.0, 16),         # 17 fit
    (0.01, 30.0, 1),         # not one fits: one all the same (the method says if it runs out)
])
def test_the_batch_is_what_half_the_free_memory_holds(monkeypatch, free_gib, per_eye_mib, expected):
    from xmed.runtime import choose_batch_size

    mock_gpu(monkeypatch, free_gib)
    choice = choose_batch_size("auto", "cuda", lambda: per_eye_mib * 2**20, cpu_default=8)
    assert choice.value == expected
    assert choice.reason.startswith(f"{free_gib:.1f} GiB free on Test GPU, {per_eye_mib:.1f} MiB per eye")


def test_a_batch_size_in_the_config_wins_and_a_bad_one_is_named(monkeypatch):
    from xmed.runtime import choose_batch_size

    mock_gpu(monkeypatch, 10.0)
    never = lambda: pytest.fail("the cost model is not needed")  # noqa: E731
    assert choose_batch_size(48, "cuda", never, cpu_default=8).value == 48
    assert choose_batch_size("auto", "cpu", never, cpu_default=8).value == 8
    for bad in (0, -2, "many", 2.5, True):
        with pytest.raises(ConfigError, match="'batch_size'"):
            choose_batch_size(bad, "cuda", never, cpu_default=8)


def test_the_cost_of_an_eye_counts_every_module_output():
    from xmed.models import FundusClassifier
    from xmed.runtime import EyeCost, eye_cost

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    assert eye_cost(net, 16) == EyeCost(graph=8 * 16 * 16 * 4 * 2 + 8 * 8 * 8 * 4, transient=2 * 8 * 16 * 16 * 4,
                                        input=3 * 16 * 16 * 4)
    small, large = (eye_cost(FundusClassifier("test_resnet.r160_in1k", input_size=s).eval(), s) for s in (32, 64))
    assert 3.5 < large.graph / small.graph < 4.5 and large.transient == 4 * small.transient   # grows with the area


def test_explanation_cost_model_takes_the_most_demanding_method(monkeypatch):
    from xmed.models import FundusClassifier
    from xmed.pipeline.explanation import explanation_eye_bytes
    from xmed.runtime import eye_cost

    model = FundusClassifier("test_resnet.r160_in1k", input_size=32).eval()
    cost = eye_cost(model, 32)
    gradcam = explanation_eye_bytes(model, {"gradcam": {"method": "gradcam"}}, "cpu")
    smooth = explanation_eye_bytes(model, {"gradcam": {}, "smoothgrad": {"n_samples": 25, "batch_size": None}}, "cpu")
    edit = explanation_eye_bytes(model, {"adversarial": {"max_steps": 50, "record_every": 10}}, "cpu")
    assert gradcam == max(cost.graph, 4 * cost.transient) + cost.input
    assert smooth == max(25 * cost.graph, 4 * cost.transient) + cost.input
    assert edit == gradcam + 7 * cost.input                          # the six frames of its path and the last


@pytest.mark.parametrize("bf16, expected", [(True, True), (False, False)])
def test_autocast_of_explanations_where_the_gpu_runs_bf16(monkeypatch, bf16, expected):
    from xmed.runtime import choose_autocast

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    choice = choose_autocast("auto", "cuda")
    assert choice.value is expected and choice.reason.startswith(("Test GPU runs bf16 natively", "full precision"))
    assert (choose_autocast("auto", "cpu").value, choose_autocast("auto", "cpu").reason) == (False, "full precision on cpu")
    assert choose_autocast(False, "cuda").value is False
    with pytest.raises(ConfigError, match="'autocast'"):
        choose_autocast("sometimes", "cuda")
