"""A checkpoint a user was handed never runs code: resuming reads it weights-only, local or remote,
whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says, and remote addresses need an explicit opt-in.

The payload is a pickled object whose ``__reduce__`` creates a file: if it ever ran, the file exists.
"""

from __future__ import annotations

import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from xmed.errors import CheckpointError, ConfigError

from helpers.commands import compose, tiny_overrides


class Payload:
    """Unpickling this creates ``marker`` (builtins.open in write mode)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path]:
    """(a checkpoint carrying the payload next to real-looking entries, the marker it would create)"""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "served" / "last.ckpt"
    path.parent.mkdir()
    torch.save({"epoch": 0, "global_step": 1, "state_dict": {"model.w": torch.zeros(1)},
                "hyper_parameters": {"lr": 1e-3}, "extra": Payload(marker)}, path)
    return path, marker


@pytest.fixture
def server(hostile):
    """A local HTTP server serving the hostile checkpoint's folder; yields (base address, requests seen)."""
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            seen.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(hostile[0].parent)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


@pytest.fixture(params=[False, True], ids=["default", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"])
def environment(request, monkeypatch):
    if request.param:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    else:
        monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    return request.param


def test_a_local_payload_never_runs(hostile, environment, tmp_path):
    from xmed.pipeline.training import train

    path, marker = hostile
    cfg = compose("train", tiny_overrides(tmp_path / "run") + [f"ckpt_path={path}"])
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint") as err:
        train(cfg)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_a_remote_address_is_refused_without_a_download(hostile, server, environment, tmp_path):
    from xmed.pipeline.training import train

    base, seen = server
    cfg = compose("train", tiny_overrides(tmp_path / "run") + [f"ckpt_path={base}/last.ckpt"])
    with pytest.raises(ConfigError, match="remote address") as err:
        train(cfg)
    assert err.value.key == "ckpt_path"
    assert seen == [] and not hostile[1].exists()


def test_a_remote_payload_the_user_allowed_is_downloaded_but_never_runs(hostile, server, environment, tmp_path):
    from xmed.pipeline.training import train

    base, seen = server
    cfg = compose("train", tiny_overrides(tmp_path / "run") + [f"ckpt_path={base}/last.ckpt",
                                                               "allow_remote_checkpoint=true"])
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        train(cfg)
    assert seen == ["/last.ckpt"]
    assert (tmp_path / "run" / "resume" / "last.ckpt").read_bytes() == hostile[0].read_bytes()
    assert not hostile[1].exists()


def test_a_missing_checkpoint_names_the_file(tmp_path):
    from xmed.pipeline.training import resume_checkpoint

    with pytest.raises(CheckpointError, match="no such file") as err:
        resume_checkpoint(tmp_path / "nope.ckpt", allow_remote=False, run_dir=tmp_path)
    assert "nope.ckpt" in str(err.value)


def test_an_honest_run_resumes_weights_only(environment, tmp_path):
    """xmed's own checkpoints hold nothing but tensors and plain containers: resuming works, and the
    resumed run continues the epoch count."""
    from xmed.pipeline.training import train

    first = tmp_path / "first"
    train(compose("train", tiny_overrides(first, epochs=1)))
    second = tmp_path / "second"
    train(compose("train", tiny_overrides(second, epochs=2) + [f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"]))
    saved = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1  # the second epoch, after the first one of the earlier run
