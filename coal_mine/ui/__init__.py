"""The web dashboard: server-rendered pages under /coal-mine/ui/ in the API's WSGI application.

It calls the business rules (through the Api it is mounted in) and never a
store. Pages work without JavaScript; static/app.js only improves them.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader

from coal_mine.config import WebConfig
from coal_mine.http_errors import http_status
from coal_mine.models import CoalMineError
from coal_mine.ui import views
from coal_mine.ui.session import COOKIE, Session, SessionSigner
from coal_mine.ui.web import UI_PREFIX, BadForm, Request, Response, StartResponse, cookie_header, redirect

if TYPE_CHECKING:
    from coal_mine.api import Api

log = logging.getLogger(__name__)

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
STATIC_TYPES[".svg"] = "image/svg+xml"

View = Callable[["Page"], Response]
# (method, path pattern below UI_PREFIX, view, whether it changes anything)
ROUTES: list[tuple[str, re.Pattern[str], View, bool]] = [
    (method, re.compile(pattern + r"\Z"), view, write)
    for method, pattern, view, write in [
        ("GET", r"", views.canary_list, False),
        ("GET", r"new", views.new_form, False),
        ("POST", r"new", views.create, True),
        ("GET", r"canary/(?P<id>[^/]+)", views.canary_page, False),
        ("GET", r"canary/(?P<id>[^/]+)/edit", views.edit_form, False),
        ("POST", r"canary/(?P<id>[^/]+)/edit", views.edit, True),
        ("GET", r"canary/(?P<id>[^/]+)/delete", views.delete_confirmation, False),
        ("POST", r"canary/(?P<id>[^/]+)/delete", views.delete, True),
        ("POST", r"canary/(?P<id>[^/]+)/(?P<action>trigger|pause|unpause)", views.action, True),
        ("GET", r"zone", views.zone_form, False),
        ("POST", r"zone", views.set_zone, False),
    ]
]


class Page:
    """One request being served: the request, its session and what views need to answer it."""

    def __init__(self, dashboard: Dashboard, request: Request, session: Session, args: dict[str, str]):
        self.dashboard = dashboard
        self.request = request
        self.session = session
        self.args = args
        self.logic = dashboard.api.logic
        self.cookies: list[tuple[str, str]] = []
        self.fresh = False  # the session was made for this request

    def render(self, template: str, status: str = "200 OK", **context: Any) -> Response:
        return self.dashboard.render(self, template, status, **context)


class Dashboard:
    """The WSGI application for everything under UI_PREFIX (and the `/` redirect)."""

    def __init__(self, api: Api, web: WebConfig | None = None) -> None:
        self.api = api
        self.web = web or WebConfig()
        self.auth_key = api.auth_key
        self.read_only_auth_key = api.read_only_auth_key
        self.signer = SessionSigner(api.auth_key, api.read_only_auth_key, self.web.session_lifetime)
        self.env = Environment(
            loader=PackageLoader("coal_mine.ui", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.static: dict[str, tuple[bytes, str, str]] = {}
        for item in resources.files("coal_mine.ui").joinpath("static").iterdir():
            suffix = "." + item.name.rsplit(".", 1)[-1]
            if suffix in STATIC_TYPES:
                data = item.read_bytes()
                self.static[item.name] = (data, STATIC_TYPES[suffix], hashlib.sha256(data).hexdigest()[:12])
        self.env.globals["static"] = self.static_url
        self.env.globals["ui"] = UI_PREFIX

    def static_url(self, name: str) -> str:
        return f"{UI_PREFIX}static/{name}?v={self.static[name][2]}"

    @staticmethod
    def handles(path: str) -> bool:
        return path == "/" or path == UI_PREFIX[:-1] or path.startswith(UI_PREFIX)

    # --- WSGI ---------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "")
        if path in ("/", UI_PREFIX[:-1]):
            return redirect(UI_PREFIX, "302 Found").send(start_response, method)
        try:
            response = self._serve(environ, path)
        except Exception:
            log.exception("Unexpected error serving %s", path)
            response = Response("500 Internal Server Error", b"Internal server error", "text/plain")
        return response.send(start_response, method)

    def _serve(self, environ: dict[str, Any], path: str) -> Response:
        if path.startswith(UI_PREFIX + "static/"):
            return self._static(path[len(UI_PREFIX + "static/") :], environ)
        try:
            request = Request.from_environ(environ, UI_PREFIX)
        except BadForm as exc:
            return Response("400 Bad Request", str(exc).encode(), "text/plain; charset=utf-8")
        now = self.api.logic.clock.now()
        session = self.signer.load(request.cookies.get(COOKIE), now)
        fresh = session is None
        if session is None:
            session = self.signer.new("" if self.auth_key else "full", now)
        page = Page(self, request, session, {})
        page.fresh = fresh
        if fresh:
            page.cookies.append(self.session_cookie(request, session))
        try:
            response = self._dispatch(page)
        except CoalMineError as exc:  # e.g. the database is unavailable (503)
            response = page.render("message.html", http_status(exc), title="Error", message=str(exc))
        response.headers += page.cookies
        return response

    def _dispatch(self, page: Page) -> Response:
        request = page.request
        # A session made for this very request cannot have sent the form's token.
        if request.method == "POST" and (
            page.fresh or not self.signer.check_csrf(page.session, request.value("csrf"))
        ):
            return page.render("message.html", "403 Forbidden", title="Form expired", message=views.CSRF_TEXT)
        if request.path in ("signin", "signout"):
            return views.sign_in_or_out(page)
        if request.method not in ("GET", "HEAD", "POST"):
            return page.render("message.html", "405 Method Not Allowed", title="Not allowed", message="")
        method = "GET" if request.method == "HEAD" else request.method
        for route_method, pattern, view, write in ROUTES:
            match = pattern.match(request.path)
            if match is None or route_method != method:
                continue
            if not page.session.signed_in:
                return views.must_sign_in(page)
            if write and not page.session.can_write:
                return page.render(
                    "message.html",
                    "403 Forbidden",
                    title="Read-only",
                    message="You are signed in with the read-only key: nothing can be changed.",
                )
            page.args = match.groupdict()
            return view(page)
        return page.render("message.html", "404 Not Found", title="Not found", message="No such page.")

    def session_cookie(self, request: Request, session: Session) -> tuple[str, str]:
        return cookie_header(
            COOKIE,
            self.signer.dump(session),
            path=UI_PREFIX,
            max_age=int(self.web.session_lifetime),
            secure=request.https,
        )

    def render(self, page: Page, template: str, status: str, **context: Any) -> Response:
        context.setdefault("session", page.session)
        context.setdefault("csrf", self.signer.csrf_token(page.session))
        context.setdefault("auth", bool(self.auth_key))
        context.setdefault("health_problem", self.api.ops.health_problem())  # the red banner
        context.update(views.zone_context(page))
        body = self.env.get_template(template).render(**context)
        return Response(status, body.encode("utf-8"))

    def _static(self, name: str, environ: dict[str, Any]) -> Response:
        found = self.static.get(name)
        if found is None:
            return Response("404 Not Found", b"Not found", "text/plain")
        data, content_type, digest = found
        etag = f'"{digest}"'
        headers = [("Cache-Control", "public, max-age=31536000, immutable"), ("ETag", etag)]
        if environ.get("HTTP_IF_NONE_MATCH") == etag:
            return Response("304 Not Modified", b"", content_type, headers)
        return Response("200 OK", data, content_type, headers)
