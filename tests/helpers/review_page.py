"""The review page's helpers: ``Reader`` (a signed-in reader of the Starlette test client), what a
page holds (``page_data``, ``checked``), scale ends no other number on a page has
(``with_distinct_scales``, ``RAW_SCALE_TEXTS``), and ``running_server`` (the page served by a real
process on a free port)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
from starlette.testclient import TestClient

from xmed.review.server import CSRF_HEADER
from xmed.review.store import RatingStore

BASE = "http://127.0.0.1"
METHOD_WORDS = ("gradcam", "grad-cam", "adversarial")  # the synthetic session's method names and titles


class Reader:
    """A signed-in reader: their client, name and the page's CSRF value."""

    def __init__(self, app, store: RatingStore, name: str):
        self.name = name
        self.client = TestClient(app, base_url=BASE)
        assert self.client.get("/login", params={"token": store.add_reader(name)}).status_code == 200
        self.csrf = page_data(self.client.get("/case/1").text)["csrf"]

    def post(self, url: str, body, **headers):
        return self.client.post(url, json=body, headers={CSRF_HEADER: self.csrf, **headers})


def page_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S).group(1))


def checked(html: str, name: str) -> str | None:
    found = re.search(rf'name="{re.escape(name)}" value="(\d)" checked', html)
    return found and found.group(1)


#: how the raw scale ends :func:`with_distinct_scales` gives may be written
RAW_SCALE_TEXTS = ("0.322", "0.3217", "0.049", "0.0493", "7.25", "13 of 255", "0.871", "0.8713")


def with_distinct_scales(folder):
    """Give a synthetic session's colour scales ends no other number on its pages has; returns it."""
    session = json.loads((folder / "session.json").read_text())
    for case in session["cases"]:
        case["panels"]["gradcam"]["scale"].update(high=0.3217, max=0.8713)
        for edit in case["panels"]["adversarial"]["edits"].values():
            edit["difference_scale"].update(high=0.0493, gain=7.25,
                                            label="pixel change, amplified 7.25×: full colour = 13 of 255 grey levels")
    (folder / "session.json").write_text(json.dumps(session))
    return folder


SERVE = "import sys; from xmed.review.server import serve; serve(sys.argv[1], port=int(sys.argv[2]))"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(folder: Path, timeout: float = 30.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``xmed.review.server.serve(folder)`` in a subprocess on a free port: yields its base URL
    once it answers, and the process; killed when the block ends."""
    port = free_port()
    log = open(folder.parent / f"server-{port}.log", "w")
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(folder), str(port)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"the server exited: {Path(log.name).read_text()}"
            try:
                if httpx.get(f"{base}/static/review.css", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not answer in {timeout} s"
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()
