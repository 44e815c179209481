"""One threshold and one decision rule for every command: the model's own operating threshold unless
the user gives one, a probability at or above it reads as referable, and a NaN reads as nothing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xmed.decision import (DEFAULT_THRESHOLD, NOT_REFERABLE, REFERABLE, decision, is_referable,
                           operating_threshold)
from xmed.errors import ConfigError, InputError


def test_the_threshold_is_the_users_then_the_models_then_the_convention():
    tuned, plain = SimpleNamespace(threshold=0.31), torch.nn.Linear(2, 1)
    assert operating_threshold(tuned) == 0.31 and operating_threshold(tuned, 0.7) == 0.7
    assert operating_threshold(plain) == DEFAULT_THRESHOLD == 0.5
    assert operating_threshold(plain, 1) == 1.0
    with pytest.raises(ConfigError, match="config key 'threshold': the model carries no operating threshold"):
        operating_threshold(plain, fallback=None)
    with pytest.raises(ConfigError, match=r"config key 'explainer.rationale.threshold': must be a probability.*1.5"):
        operating_threshold(tuned, 1.5, key="explainer.rationale.threshold")
    with pytest.raises(ConfigError, match="got True"):
        operating_threshold(tuned, True)


def test_at_the_threshold_is_referable_and_a_nan_is_no_decision():
    assert [decision(p, 0.31) for p in (0.31, 0.3099, 1.0, 0.0)] == [REFERABLE, NOT_REFERABLE, REFERABLE, NOT_REFERABLE]
    np.testing.assert_array_equal(is_referable(np.array([0.2, 0.31, 0.9]), 0.31), [False, True, True])
    assert torch.equal(is_referable(torch.tensor([0.2, 0.31]), 0.31), torch.tensor([False, True]))
    for p in (math.nan, math.inf):
        with pytest.raises(InputError, match="gives no decision"):
            decision(p, 0.5)
