"""What the test modules share: with pytest-xdist (``make test`` runs two workers), each worker
computes with one thread, so that two workers on a 2-core CPU do not oversubscribe it; and two
exported tiny models, made once per test process (session scope) for every module that uses them:

- ``model_dir``: the model ``xmed-predict`` scores (tests/test_predict_cli.py,
  tests/faults/test_fault_folders.py); a module that defines a ``model_dir`` of its own uses its own;
- ``cam_model_dir``: an untrained classifier whose CAMs are not all zero (tests/test_explainer_registry.py,
  and the first model of tests/test_study.py).

Plain helpers (functions, constants) are in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the shared helpers' own asserts explain a failure as a test module's do
pytest.register_assert_rewrite("helpers")

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    import torch

    from helpers.predict import SIZE
    from xmed.models import FundusClassifier
    from xmed.models.export import export_model

    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE, threshold=0.5)
    return export_model(model, tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="session")
def cam_model_dir(tmp_path_factory) -> Path:
    """48 px, no field-of-view crop, every weight of the glaucoma head 0.1 (an untrained head can make
    every CAM negative: all zero after ReLU), no operating threshold; exported."""
    import torch

    from xmed.models import FundusClassifier
    from xmed.models.export import export_model

    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=48, data_config={"crop_fov": False})
    with torch.no_grad():
        model.glaucoma_head.weight.fill_(0.1)
    return export_model(model.eval(), tmp_path_factory.mktemp("model") / "model")
