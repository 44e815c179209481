"""Shared test settings: with pytest-xdist (``make test`` runs two workers), each worker computes with
one thread, so that two workers on a 2-core CPU do not oversubscribe it."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
