"""The review page on a long session: a 200-case session shows its first case in under 1 s.

One reader's first visit, end to end, over HTTP from a real uvicorn server on a free port of
127.0.0.1: create the app (``xmed.review.server.create_app``), sign in with the reader's link
(which lands on the first case), then fetch every image and static file the case page references,
one after another. Timed in alternating rounds on a 200-case synthetic session and on a 10-case
one built the same way (the baseline: nothing on the way to the first case should grow with the
number of cases). Also timed: ``xmed.review.export.export_report`` per case, on a 512 px session
with three methods, against reading and base64-encoding the case's images alone (what embedding
them in the report costs at the least).
"""

from __future__ import annotations

import base64
import html
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import Context, Goal, Part, alternate, median, paired_ratio, timed

GOAL_FIRST_CASE = Goal("value", "<=", 1.0)
GOAL_EXPORT = Goal("value", "<=", 1.0)
#: what a page loads on its own: images and scripts (``src``) and stylesheets (``<link href>``)
REFERENCES = re.compile(r'\bsrc="(/[^"]*)"|<link\b[^>]*\bhref="(/[^"]*)"')


class LocalServer:
    """A uvicorn server on a free port of 127.0.0.1, in a thread, serving whichever ASGI app
    :attr:`app` holds at the time of each request (so that creating the app can be timed apart
    from starting the server). :attr:`url` is known once the block is entered."""

    def __init__(self):
        import uvicorn

        self.app: Any = None
        self.url = ""
        # as xmed.review.server.serve runs it (uvicorn binds the address itself, so its sockets
        # get TCP_NODELAY as there), less the lifespan events: the app is set later
        config = uvicorn.Config(self._dispatch, host="127.0.0.1", port=0, interface="asgi3", lifespan="off",
                                access_log=False, server_header=False, proxy_headers=False, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _dispatch(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local uvicorn server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def first_visit(server: LocalServer, folder: Path, token: str) -> dict[str, Any]:
    """Create the app of ``folder``, sign in with ``token`` and load the first case page with
    everything it references; returns the landing path and each response's status."""
    import httpx

    from xmed.review.server import create_app

    server.app = create_app(folder)
    with httpx.Client(base_url=server.url) as client:
        page = client.get(f"/login?token={token}", follow_redirects=True)
        references = sorted({html.unescape(a or b) for a, b in REFERENCES.findall(page.text)})
        statuses = {path: client.get(path).status_code for path in references}
    return {"landed": page.url.path, "page": page.status_code, "statuses": statuses}


def with_three_methods(folder: Path) -> Path:
    """The synthetic session with a second saliency method (a copy of Grad-CAM's panels), so that
    a case has three panels as a real study's might."""
    path = folder / "session.json"
    session = json.loads(path.read_text())
    session["methods"].insert(1, {"name": "gradcam_again", "kind": "saliency", "title": "Grad-CAM (again)"})
    for case in session["cases"]:
        case["panels"]["gradcam_again"] = case["panels"]["gradcam"]
    path.write_text(json.dumps(session))
    return folder


def run(part: Part, ctx: Context) -> None:
    from xmed.review.session import case_images, load_session
    from xmed.review.store import STORE_FILE, RatingStore
    from xmed.review.synthetic import synthetic_session

    small, large, size = ctx.size(3, 10), ctx.size(12, 200), ctx.size(64, 256)
    repeats = ctx.size(1, 5)
    part.settings.update({"sessions": f"{large} and {small} synthetic cases, {size} px, blinded",
                          "rounds": repeats, "server": "uvicorn on 127.0.0.1, one httpx client per visit"})
    folders, tokens = {}, {}
    for n in (small, large):
        folders[n] = synthetic_session(ctx.scratch / f"session-{n}", n_cases=n, seed=ctx.seed, size=size)
        tokens[n] = RatingStore(folders[n] / STORE_FILE).add_reader("bench")
    with LocalServer() as server:
        times, last = alternate({f"{n} cases": (lambda n=n: first_visit(server, folders[n], tokens[n]))
                                 for n in (small, large)}, repeats, ctx.device, "first case")
    visit = last[f"{large} cases"]
    part.check("the sign-in lands on case 1 and the page and all it references answer 200",
               f"{visit['landed']}: {visit['page']}; {len(visit['statuses'])} references, statuses "
               f"{sorted(set(visit['statuses'].values()))}",
               "/case/1: 200; every reference 200",
               visit["landed"] == "/case/1" and visit["page"] == 200 and len(visit["statuses"]) > 0
               and set(visit["statuses"].values()) == {200})
    loading = {n: median([timed(lambda n=n: load_session(folders[n]), ctx.device)[0] for _ in range(3)])
               for n in (small, large)}
    part.figure(f"{large}-case session: create the app, sign in, first case page and its "
                f"{len(visit['statuses'])} references", median(times[f"{large} cases"]), "s",
                f"{small}-case session", median(times[f"{small} cases"]), goal=GOAL_FIRST_CASE,
                paired=paired_ratio(times[f"{large} cases"], times[f"{small} cases"]),
                note=f"of which load_session (checks every image is there) {loading[large]:.3g} s vs "
                     f"{loading[small]:.3g} s")

    n_export, export_size = ctx.size(2, 10), ctx.size(64, 512)
    folder = with_three_methods(synthetic_session(ctx.scratch / "export-session", n_cases=n_export,
                                                  seed=ctx.seed, size=export_size))
    session = load_session(folder)
    part.settings["export"] = f"{n_export} cases, {export_size} px, 3 methods"

    def export() -> Path:
        from xmed.review.export import export_report

        return export_report(folder, ctx.scratch / "export")

    def encode() -> int:
        return sum(len(base64.b64encode((folder / path).read_bytes())) for case in session["cases"]
                   for path in case_images(case))

    times, _ = alternate({"export": export, "encode": encode}, repeats, ctx.device, "export")
    per_case = {name: median(t) / n_export for name, t in times.items()}
    part.figure(f"export_report per case ({export_size} px, 3 methods: HTML section and composite PNG)",
                per_case["export"], "s", "reading and encoding its images", per_case["encode"], goal=GOAL_EXPORT)
