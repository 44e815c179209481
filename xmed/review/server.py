"""The review page (``xmed-review serve``): glaucoma specialists open a case — one large photograph
beside the model's reasons (its sentence, the findings with their contributions), the explanation
panels in a grid, a counterfactual pair as less glaucomatous | original | more glaucomatous with
what each edit changed — and rate the panels in a bar that stays in view (a case fits two screens
of 1280 × 800); every rating is stored in ``<session>/ratings.sqlite``
(:class:`~xmed.review.store.RatingStore`) before the page says "saved".

Routes (every one but ``/login`` and ``/static/…`` needs the reader's sign-in cookie):

==========================================  =====================================================
``GET /login?token=…``                      sign in with a personal link; sets the cookie, goes to ``/``
                                            (refused when another site started the request)
``GET /``                                   the first case not yet fully rated (or ``/summary``)
``GET /summary``                            every case with its state, and the export links
``GET /case/{n}``                           the n-th case (1-based) in the reader's order
``GET /case/{n}/next``                      the next case after it the reader has not fully rated
                                            (wrapping round; ``/summary`` when none is left)
``GET /case/{n}/photo``                     its photograph
``GET /case/{n}/image/{letter}/{kind}``     a panel image: ``overlay``, ``heatmap``, ``toward_normal``,
                                            ``toward_normal_difference``, ``toward_glaucoma``,
                                            ``toward_glaucoma_difference``
``POST /api/case/{n}/panel/{letter}``       ``{"location": 1-5, "rationale": 1-5}`` (either or both)
``POST /api/case/{n}``                      ``{"agree": 0 | 1, "note": "…"}`` (either or both)
``POST /api/intervene``                     ``{"case": n, "values": {"LC": 1, "vcdr": 0.4}}`` -> probability
``GET /export/ratings.csv`` / ``.json``     the reader's own ratings (blinded: by letter until the lock)
==========================================  =====================================================

In a blinded session (``mode: "blinded"``) each reader sees the cases in their own order
(:func:`~xmed.review.session.reader_order`) and the panels as "Explanation A, B, …"
(:func:`~xmed.review.session.panel_labels`); URLs carry positions and letters only, and the method
behind a letter is looked up on the server. Until the coordinator locks the study
(:meth:`~xmed.review.store.RatingStore.lock`, ``xmed-review lock``) nothing the browser receives
names a method: not a title, not an automatic score, not a colour scale's raw ends (they differ
between methods: the page says "0 … top of this map"), and the reader's download gives letters
(:func:`~xmed.review.store.letters_only`). After the lock the page and the download name the
methods, and every rating is refused with 409.

Safe by default: it listens on 127.0.0.1, answers only requests addressed to ``localhost`` or
``127.0.0.1`` (against DNS rebinding), takes state changes only as same-origin JSON POSTs with a
per-reader CSRF header, refuses a sign-in another site starts (login CSRF), and sends a strict
Content-Security-Policy (the page runs one local script and no inline code). A request the page
cannot serve is answered 4xx with the reason (JSON nested thousands deep, an integer of thousands
of digits, a lone surrogate, an image that is a link loop), never 500.

Example:
    >>> import tempfile
    >>> from starlette.testclient import TestClient
    >>> from xmed.review.synthetic import synthetic_session
    >>> folder = synthetic_session(tempfile.mkdtemp(), n_cases=2, size=64)
    >>> token = RatingStore(Path(folder) / STORE_FILE).add_reader("ana")
    >>> client = TestClient(create_app(folder), base_url="http://127.0.0.1")
    >>> client.get("/case/1").status_code
    401
    >>> client.get(f"/login?token={token}").url.path
    '/case/1'
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import mimetypes
import os
import secrets
import socket
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from xmed.errors import ConfigError, InputError, SecurityWarning
from xmed.review.session import (ADDRESS_FILE, DEFAULT_HOST, DEFAULT_PORT, case_file, intervene, load_session,
                                 panel_labels, reader_order, record_address, shown, strict_json)
from xmed.review.store import (COLUMNS, LETTER_COLUMNS, STORE_FILE, RatingStore, StudyLocked, letters_only,
                               ratings_csv, ratings_json)
from xmed.review.views import EDIT_TITLES, case_view, colour_bar, environment, panel_view

__all__ = ["create_app", "serve", "LOOPBACK_HOSTS", "COOKIE", "CSRF_HEADER"]

HERE = Path(__file__).parent
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
COOKIE = "xmed_reader"
CSRF_HEADER = "X-XMED-CSRF"
COOKIE_DAYS = 30
MAX_BODY = 64 * 1024
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
                           "base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Resource-Policy": "same-origin"}
#: the images of a panel a URL may ask for: ``kind -> (edit or None, key)``
IMAGE_KINDS = {"overlay": (None, "overlay"), "heatmap": (None, "heatmap"),
               **{f"{edit}{suffix}": (edit, key) for edit in EDIT_TITLES
                  for suffix, key in (("", "image"), ("_difference", "difference"))}}
CONCEPT_NAMES = {"vcdr": "vertical cup-to-disc ratio"}
#: a colour scale as a blinded reader sees it before the lock (low end, high end, label): the raw
#: ends differ between methods, and so would tell them apart
RELATIVE_SCALES = {
    "heatmap": ("0", "top of this map", "relative to this map's own top; transparent = none, opaque from half "
                                         "the top"),
    "difference": ("0", "largest change of this edit", "pixel change, amplified to fill the scale"),
}
#: what a reader rates on each kind of panel: ``kind -> {scale: question}``
QUESTIONS = {
    "saliency": {"location": "Location: does the colour mark where the evidence is?",
                 "rationale": "Rationale: do the marked regions show the findings behind the decision?"},
    "counterfactual": {"location": "Location: are the changes where the evidence is?",
                       "rationale": "Rationale: do the changes from less to more glaucomatous (the findings named "
                                    "above each edit) show why the model decided so?"},
}
#: the display width of the shared photograph and of a panel's image, in CSS pixels: at 1280 px, the photograph
#: and the findings beside three heatmap panels or one counterfactual panel (three images wide)
PHOTO_PIXELS, PANEL_PIXELS = 448, 224


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response, and ``Cache-Control: no-store`` to all
    but the static assets (pages and images hold patient data)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cacheable = scope["path"].startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if not cacheable:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _layout(size: Sequence[int], model_input: Sequence[int] | None = None) -> dict[str, Any]:
    """The display sizes of a case of ``size`` ([height, width]): the shared photograph
    :data:`PHOTO_PIXELS` wide, each panel's image :data:`PANEL_PIXELS` wide, how many times the
    photograph is enlarged, and the size the model saw (``model_input``, where the photograph is
    stored at the source's resolution; else ``size``).

    Example:
        >>> view = _layout([128, 128])
        >>> view["photo_width"], view["photo_height"], view["factor"], view["panel_width"]
        (448, 448, '3.5', 224)
        >>> _layout([512, 1024])["photo_height"], _layout([512, 1024])["factor"]
        (224, '0.44')
    """
    height, width = size

    def scaled(pixels: int) -> tuple[int, int]:
        return pixels, max(1, round(pixels * height / width))

    photo, panel = scaled(PHOTO_PIXELS), scaled(PANEL_PIXELS)
    model_height, model_width = model_input or size
    return {"photo_width": photo[0], "photo_height": photo[1], "factor": f"{PHOTO_PIXELS / width:.2g}",
            "width": width, "height": height, "panel_width": panel[0], "panel_height": panel[1],
            "model_width": model_width, "model_height": model_height}


def _scale_view(scale: Mapping[str, Any], relative: tuple[str, str, str] | None) -> dict[str, Any]:
    """A colour scale's view (:func:`xmed.review.views.scale_view`) as the page shows it: with its
    colour bar, and the raw ends or, given ``relative`` (one of :data:`RELATIVE_SCALES`), in
    relative terms only.

    Example:
        >>> from xmed.review.views import scale_view
        >>> view = _scale_view(scale_view({"low": 0.0, "high": 0.3217, "label": "attribution"}), None)
        >>> view["low"], view["high"], _scale_view(scale_view({"high": 0.3217}), RELATIVE_SCALES["heatmap"])["high"]
        ('0.000', '0.322', 'top of this map')
    """
    view = dict(scale)
    view["bar"] = colour_bar(view.pop("colormap"))
    if relative is not None:
        view.update(zip(("low", "high", "label"), relative))
    return view


class _Review:
    """The state the routes share: the session, its ratings and this process's CSRF secret."""

    def __init__(self, folder: Path, session: dict[str, Any], store: RatingStore):
        self.folder = folder
        self.session = session
        self.store = store
        self.blinded = self.session["mode"] == "blinded"
        self.secret = secrets.token_bytes(32)
        self.methods = {method["name"]: method for method in self.session["methods"]}
        self.cases = {case["id"]: case for case in self.session["cases"]}
        self.templates = environment()

    # -- who is asking -------------------------------------------------------------------------

    def reader(self, request: Request) -> tuple[str, str]:
        """The reader signed in by the request's cookie and their token: 401 without a cookie, 403
        with one of no reader."""
        token = request.cookies.get(COOKIE)
        if not token:
            raise HTTPException(401, "not signed in: open the personal link you were given")
        name = self.store.reader_for(token)
        if name is None:
            raise HTTPException(403, "this sign-in is not valid for this session: open your personal link again")
        return name, token

    def csrf(self, token: str) -> str:
        return hmac.new(self.secret, token.encode(), hashlib.sha256).hexdigest()

    async def posted(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The reader and JSON body of a state-changing request, refused (403) unless it is JSON,
        carries the reader's CSRF value and comes from this server's own page."""
        reader, token = await run_in_threadpool(self.reader, request)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise HTTPException(403, "send JSON (Content-Type: application/json)")
        sent = request.headers.get(CSRF_HEADER, "").encode("latin-1")  # as received: bytes compare safely
        if not hmac.compare_digest(sent, self.csrf(token).encode()):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header; reload the page")
        if not _same_origin(request):
            raise HTTPException(403, "request from another site refused")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise HTTPException(413, f"request larger than {MAX_BODY} bytes")
        try:
            data = strict_json(body)
        except ValueError as err:
            raise InputError("body", f"is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise InputError("body", "must be a JSON object")
        return reader, data

    # -- the reader's view of the session ------------------------------------------------------

    def order(self, reader: str) -> list[str]:
        """The case ids in the order ``reader`` sees them."""
        ids = [case["id"] for case in self.session["cases"]]
        return reader_order(ids, self.session["seed"], reader) if self.blinded else ids

    def case_at(self, reader: str, n: int) -> dict[str, Any]:
        order = self.order(reader)
        if not 1 <= n <= len(order):
            raise HTTPException(404, f"there is no case {n}; cases are numbered 1 to {len(order)}")
        return self.cases[order[n - 1]]

    def labels(self, reader: str, case: Mapping[str, Any]) -> dict[str, str]:
        """``{letter: method}`` of the case's panels as this reader sees them."""
        if self.blinded:
            return panel_labels(list(case["panels"]), self.session["seed"], reader, case["id"])
        shown = [name for name in self.methods if name in case["panels"]]
        return {chr(ord("A") + index): name for index, name in enumerate(shown)}

    def method_at(self, reader: str, case: Mapping[str, Any], letter: str) -> str:
        method = self.labels(reader, case).get(letter)
        if method is None:
            raise HTTPException(404, f"case has no panel {letter!r}")
        return method

    def progress(self, reader: str) -> dict[str, bool]:
        return self.store.progress(reader, {case_id: list(case["panels"]) for case_id, case in self.cases.items()})

    def first_unrated(self, reader: str, after: int = 0) -> int | None:
        """The position of the first case ``reader`` has not fully rated after position ``after``,
        wrapping round (``after`` itself last); None when every case is rated."""
        done, order = self.progress(reader), self.order(reader)
        positions = [*range(after + 1, len(order) + 1), *range(1, after + 1)]
        return next((n for n in positions if not done[order[n - 1]]), None)

    def hidden(self) -> bool:
        """Whether the methods are hidden from readers: a blinded session not locked yet."""
        return self.blinded and self.store.locked() is None

    def case_view(self, reader: str, n: int) -> dict[str, Any]:
        """What the case page shows: the case (:func:`xmed.review.views.case_view`), its panels by
        letter, the stored ratings."""
        from xmed.review.panels import DEFAULT_OPACITY

        case = self.case_at(reader, n)
        stored = self.store.case_ratings(reader, case["id"])
        hidden = self.hidden()
        panels = [self.panel_view(case, n, letter, method, stored["panels"].get(method, {}), hidden)
                  for letter, method in self.labels(reader, case).items()]
        intervention = self.intervention_view(case)
        return {"case": case_view(self.session, case), "n": n, "panels": panels, "agree": stored["agree"],
                "note": stored["note"] or "", "intervention": intervention,
                "concepts": {concept["code"]: concept for concept in intervention or []},
                "layout": _layout(case["size"], case.get("model_input")), "opacity": round(DEFAULT_OPACITY * 100)}

    def panel_view(self, case: Mapping[str, Any], n: int, letter: str, method: str, stored: Mapping[str, Any],
                   hidden: bool) -> dict[str, Any]:
        """One panel as the page shows it (:func:`xmed.review.views.panel_view`) under its letter, with
        its image URLs and the reader's ratings; ``hidden``: nothing that tells its method (:meth:`hidden`)."""
        image = f"/case/{n}/image/{letter}"
        view = panel_view(self.methods[method], case, case["panels"][method])
        del view["method"]  # the page names a method only by its title, and that only when not hidden
        view.update(letter=letter, location=stored.get("location"), rationale=stored.get("rationale"),
                    rating_url=f"/api/case/{n}/panel/{letter}", questions=QUESTIONS[view["kind"]])
        if self.blinded:
            view.update(title=f"Explanation {letter}" + ("" if hidden else f": {view['title']}"), automatic=None)
        if view["kind"] == "saliency":
            view.update(heatmap=f"{image}/heatmap",
                        scale=_scale_view(view["scale"], RELATIVE_SCALES["heatmap"] if hidden else None))
            return view
        for name, edit in view["edits"].items():
            edit.update(image=edit["image"] and f"{image}/{name}",
                        difference=edit["difference"] and f"{image}/{name}_difference",
                        scale=_scale_view(edit["scale"], RELATIVE_SCALES["difference"] if hidden else None))
        return view

    def intervention_view(self, case: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        head = self.session.get("bottleneck")
        if not head or case.get("concepts") is None:
            return None
        names = {finding["code"]: finding["name"] for finding in case.get("findings") or []}
        return [{"code": code, "name": names.get(code) or CONCEPT_NAMES.get(code, code), "predicted": value}
                for code, value in zip(head["concepts"], case["concepts"])]

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("reader", None)
        context.setdefault("locked", None)
        html = self.templates.get_template(name).render(title=self.session.get("title") or "Review",
                                                        blinded=self.blinded, session=self.session, **context)
        return HTMLResponse(html, status_code=status)


def _started_here(request: Request) -> bool:
    """False when the browser says another site started the request (``Sec-Fetch-Site``): a link
    typed or pasted into the address bar is ``none``."""
    return request.headers.get("sec-fetch-site", "none") in ("none", "same-origin")


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin (``Origin``, else
    ``Referer``, and ``Sec-Fetch-Site``); a request naming no origin at all is let through."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin, referer = request.headers.get("origin"), request.headers.get("referer")
    if origin is not None and origin != own:
        return False
    if origin is None and referer is not None and referer != own and not referer.startswith(own + "/"):
        return False
    return _started_here(request)


def _position(request: Request) -> int:
    """The case position a URL names (``/case/3``); 404 for anything but a number of a few digits
    (a path of thousands of digits is more than Python turns into an int)."""
    text = request.path_params["n"]
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise HTTPException(404, f"there is no case {shown(text)}")
    return int(text)


def _only(data: Mapping[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    """``data`` when its keys are among ``allowed`` (at least one); else InputError naming the key."""
    for key in data:
        if key not in allowed:
            raise InputError(key, f"is not accepted here; send {' and/or '.join(allowed)}")
    if not data:
        raise InputError(allowed[0], f"send {' and/or '.join(allowed)}")
    return dict(data)


def create_app(session_dir: str | os.PathLike, *, store: RatingStore | None = None,
               allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> Starlette:
    """The review page of the session in ``session_dir`` as an ASGI app; ratings go to ``store``
    (default ``<session_dir>/ratings.sqlite``). ``allowed_hosts``: the host names requests may be
    addressed to (others get 400)."""
    folder = Path(session_dir)
    session = load_session(folder)  # first: nothing is written beside a session that is refused
    review = _Review(folder, session, store or RatingStore(folder / STORE_FILE))

    def login(request: Request) -> Response:
        token = request.query_params.get("token", "")
        if not _started_here(request):  # else another site could sign a reader in as someone else
            return review.page("error.html", 403, message="A sign-in started by another site is refused. Copy your "
                                                          "personal link into the browser's address bar.")
        if review.store.reader_for(token) is None:
            return review.page("error.html", 403, message="This sign-in link is not valid for this session. "
                                                          "Ask the study coordinator for your personal link.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, max_age=COOKIE_DAYS * 86400, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    def home(request: Request) -> Response:
        reader, _ = review.reader(request)
        n = review.first_unrated(reader)
        return RedirectResponse("/summary" if n is None else f"/case/{n}", status_code=303)

    def next_unrated(request: Request) -> Response:
        reader, _ = review.reader(request)
        n = _position(request)
        review.case_at(reader, n)  # a 404 for a case that is not there
        found = review.first_unrated(reader, after=n)
        # the fragment asks the page to put the focus on its first unrated question
        return RedirectResponse("/summary" if found is None else f"/case/{found}#rate", status_code=303)

    def summary(request: Request) -> Response:
        reader, _ = review.reader(request)
        done = review.progress(reader)
        cases = [{"n": n, "id": case_id, "done": done[case_id]} for n, case_id in enumerate(review.order(reader), 1)]
        return review.page("summary.html", reader=reader, cases=cases, n_done=sum(done.values()),
                           locked=review.store.locked(), hidden=review.hidden())

    def case_page(request: Request) -> Response:
        reader, token = review.reader(request)
        view = review.case_view(reader, _position(request))
        total = len(review.cases)
        n = view["n"]
        data = {"csrf": review.csrf(token), "csrf_header": CSRF_HEADER, "n": n, "total": total,
                "previous": f"/case/{n - 1}" if n > 1 else None, "next": f"/case/{n + 1}" if n < total else "/summary",
                "next_unrated": f"/case/{n}/next", "case_url": f"/api/case/{n}",
                "intervene_url": "/api/intervene" if view["intervention"] else None}
        n_done = sum(review.progress(reader).values())
        return review.page("case.html", reader=reader, total=total, n_done=n_done, data=data,
                           locked=review.store.locked(), **view)

    def photo(request: Request) -> Response:
        reader, _ = review.reader(request)
        return _image(review.folder, review.case_at(reader, _position(request))["photo"])

    def panel_image(request: Request) -> Response:
        reader, _ = review.reader(request)
        case = review.case_at(reader, _position(request))
        panel = case["panels"][review.method_at(reader, case, request.path_params["letter"])]
        if request.path_params["kind"] not in IMAGE_KINDS:
            raise HTTPException(404, "no such image")
        edit, key = IMAGE_KINDS[request.path_params["kind"]]
        source = ((panel.get("edits") or {}).get(edit) or {}) if edit else panel
        relative = source.get(key)
        if not relative:
            raise HTTPException(404, "this panel has no such image")
        return _image(review.folder, relative)

    async def rate_panel(request: Request) -> Response:
        reader, data = await review.posted(request)
        case = review.case_at(reader, _position(request))
        letter = request.path_params["letter"]
        method = review.method_at(reader, case, letter)
        scores = _only(data, ("location", "rationale"))
        await run_in_threadpool(functools.partial(review.store.save_panel_rating, reader, case["id"], method,
                                                  panel=letter, mode=review.session["mode"], **scores))
        return JSONResponse({"saved": True, **scores})

    async def rate_case(request: Request) -> Response:
        reader, data = await review.posted(request)
        case = review.case_at(reader, _position(request))
        fields = _only(data, ("agree", "note"))
        await run_in_threadpool(functools.partial(review.store.save_case_rating, reader, case["id"], **fields))
        return JSONResponse({"saved": True, **fields})

    async def intervention(request: Request) -> Response:
        reader, data = await review.posted(request)
        data = _only(data, ("case", "values"))
        n, values = data.get("case"), data.get("values", {})
        if isinstance(n, bool) or not isinstance(n, int):
            raise InputError("case", f"must be the case's position (an integer), got {shown(n)}")
        if not isinstance(values, dict):
            raise InputError("values", "must be an object {concept: value}")
        case = review.case_at(reader, n)
        if review.intervention_view(case) is None:
            raise HTTPException(404, "no test-time intervention here: the session's model has no concept bottleneck")
        return JSONResponse(intervene(review.session, case, values))

    def export(render: Callable[[list, Sequence[str]], str], media_type: str,
               name: str) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            reader, _ = review.reader(request)
            rows, columns = review.store.rows(reader), COLUMNS
            if review.hidden():
                rows, columns = letters_only(rows), LETTER_COLUMNS
            return Response(render(rows, columns), media_type=media_type,
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return endpoint

    async def refused(request: Request, error: Exception) -> Response:
        if isinstance(error, (InputError, StudyLocked)):
            status, message = (400 if isinstance(error, InputError) else 409), str(error)
        else:
            status, message = error.status_code, error.detail
        if request.url.path.startswith(("/api/", "/export/")) or status in (405, 413):
            body = {"error": message, **({"field": error.name} if isinstance(error, InputError) else {})}
            # ASCII JSON: a message quoting what a request held is sent whatever it holds
            return Response(json.dumps(body), status_code=status, media_type="application/json")
        return review.page("error.html", status, message=message, signed_out=status in (401, 403))

    routes = [
        Route("/login", login),
        Route("/", home),
        Route("/summary", summary),
        Route("/case/{n}", case_page),
        Route("/case/{n}/next", next_unrated),
        Route("/case/{n}/photo", photo),
        Route("/case/{n}/image/{letter}/{kind}", panel_image),
        Route("/api/case/{n}/panel/{letter}", rate_panel, methods=["POST"]),
        Route("/api/case/{n}", rate_case, methods=["POST"]),
        Route("/api/intervene", intervention, methods=["POST"]),
        Route("/export/ratings.csv", export(ratings_csv, "text/csv; charset=utf-8", "ratings.csv")),
        Route("/export/ratings.json", export(lambda rows, _: ratings_json(rows), "application/json", "ratings.json")),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(_SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: refused, InputError: refused, StudyLocked: refused})


def _image(folder: Path, relative: str) -> Response:
    """The session image ``relative`` (resolved by :func:`case_file`: never outside ``cases/``);
    404 for anything else there: a missing or unreadable file, a folder, a link loop."""
    try:
        path = case_file(folder, relative)
        media_type = mimetypes.guess_type(path.name)[0] or ""
        if media_type.startswith("image/") and path.is_file():  # never opens a FIFO, which would block
            return Response(path.read_bytes(), media_type=media_type)
    except (InputError, OSError):
        pass
    raise HTTPException(404, "no such image")


def serve(session_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          allow_remote: bool = False, announce: Callable[[str], None] | None = None) -> None:
    """Serve the review page of ``session_dir`` with uvicorn until interrupted.

    Only this machine can reach it unless ``allow_remote`` (then a :class:`~xmed.errors.SecurityWarning`:
    the traffic is not encrypted; an SSH tunnel to 127.0.0.1 is the safer way to let readers in).
    The access log is off, so the sign-in tokens in ``/login`` URLs are not written anywhere.
    The address is recorded in ``<session_dir>/address.json`` (the readers' links point there) and
    given to ``announce`` before the page starts; a server that cannot start there (the port is
    taken) leaves the earlier record.

    Example::

        serve("outputs/review", port=9000, announce=print)   # http://127.0.0.1:9000
    """
    import uvicorn

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError("port", f"must be a port number from 1 to 65535, got {port!r}")
    host, allowed = host.strip(), list(LOOPBACK_HOSTS)
    if host not in LOOPBACK_HOSTS:
        if not allow_remote:
            raise ConfigError("host", f"{host!r} is not this machine's loopback address: the review page shows "
                                      "patient images, so it listens on 127.0.0.1 unless allowed otherwise "
                                      "(allow_remote=True, --allow-remote); an SSH tunnel is the safer way in")
        if _unspecified(host):
            raise ConfigError("host", "give the one address readers will use (e.g. 192.168.1.20), not a wildcard: "
                                      "requests are accepted only when addressed to it")
        warnings.warn(f"the review page is served on {host}:{port} to other machines, without encryption; "
                      "prefer an SSH tunnel to 127.0.0.1", SecurityWarning, stacklevel=2)
        allowed.append(host)
    app = create_app(session_dir, allowed_hosts=allowed)
    record = Path(session_dir) / ADDRESS_FILE
    earlier = record.read_bytes() if record.is_file() else None
    url = record_address(session_dir, host, port)
    if announce is not None:
        announce(url)
    try:
        uvicorn.run(app, host=host, port=port, access_log=False, server_header=False, proxy_headers=False,
                    log_level="info")
    except SystemExit:  # uvicorn could not listen there: the page is not at the recorded address
        _restore(record, earlier)
        raise


def _restore(path: Path, earlier: bytes | None) -> None:
    """Put back ``path`` as it was: ``earlier``'s bytes, or no file."""
    if earlier is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(earlier)


def _unspecified(host: str) -> bool:
    """Whether ``host`` is the wildcard address (every interface of the machine), however spelt:
    empty, ``0.0.0.0`` or what the C library reads as it (``0``, ``0x0``, ``0.0``), ``::``,
    ``0:0:0:0:0:0:0:0``, ``[::]``, ``::ffff:0.0.0.0``.

    Example:
        >>> [_unspecified(host) for host in ("0", "::0", " [::] ", "127.0.0.1", "review.example.org")]
        [True, True, True, False, False]
    """
    host = host.strip().removeprefix("[").removesuffix("]")
    if not host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return False  # a host name
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_unspecified or (mapped is not None and mapped.is_unspecified)
