"""`import xmed.explain` and `import xmed.metrics` cost torch and little more (``benchmarks/import_time.py``
times them): timm, captum, torchmetrics, torchvision, Lightning and matplotlib load where they are used."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("timm", "captum", "torchmetrics", "torchvision", "torch._dynamo", "lightning", "matplotlib", "scipy")


@pytest.mark.parametrize("module", ["xmed", "xmed.explain", "xmed.metrics", "xmed.models", "xmed.runtime"])
def test_import_loads_no_heavy_package(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import {module} loaded {out}"


def test_heavy_packages_still_load_when_used():
    code = ("import sys, torch, xmed.explain, xmed.metrics; from xmed.models import FundusClassifier; "
            "m = FundusClassifier('test_resnet.r160_in1k', input_size=32).eval(); "
            "xmed.explain(m, torch.rand(1, 3, 32, 32), method='integrated_gradients', n_steps=2); "
            "print(xmed.metrics.auroc([0.1, 0.9], [0, 1])); print('timm' in sys.modules, 'captum' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1.0", "True", "True"]
