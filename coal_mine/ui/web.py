"""The dashboard's small HTTP layer: one parsed request, one response, security headers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

from coal_mine.limits import MAX_REQUEST_BODY
from coal_mine.links import UI_PREFIX

__all__ = ["UI_PREFIX", "BadForm", "Request", "Response", "cookie_header", "redirect"]

StartResponse = Callable[..., Any]

SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]


class BadForm(Exception):
    """The request body is not a form this dashboard sent (wrong type, too large, not UTF-8)."""


@dataclass
class Request:
    """What a dashboard view needs of one HTTP request."""

    method: str
    path: str  # below the dashboard's prefix, e.g. "canary/abcdefgh"
    full_path: str  # the path with its query string, for coming back after signing in
    query: dict[str, str]
    cookies: dict[str, str]
    https: bool
    host_url: str  # scheme://host as the browser addressed us
    remote: str
    cross_site: bool  # a navigation from another site (no SameSite=Strict cookie comes along)
    form: dict[str, list[str]] = field(default_factory=dict)

    def value(self, name: str) -> str:
        """A form field's (last) value, "" when absent."""
        values = self.form.get(name)
        return values[-1] if values else ""

    @classmethod
    def from_environ(cls, environ: dict[str, Any], prefix: str) -> Request:
        path = environ.get("PATH_INFO", "")
        raw_query = environ.get("QUERY_STRING", "")
        query_text = raw_query.encode("latin-1", errors="replace").decode("utf-8", errors="replace")
        query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
        cookies: dict[str, str] = {}
        try:
            jar: SimpleCookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
            cookies = {name: morsel.value for name, morsel in jar.items()}
        except CookieError:
            pass
        https = environ.get("wsgi.url_scheme") == "https" or environ.get("HTTPS", "").lower() in ("on", "1")
        scheme = "https" if https else "http"
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', 'localhost')}"
        request = cls(
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            path=path[len(prefix) :],
            full_path=quote(path) + (f"?{raw_query}" if raw_query else ""),
            query=query,
            cookies=cookies,
            https=https,
            host_url=f"{scheme}://{host}",
            remote=environ.get("REMOTE_ADDR", "-"),
            cross_site=environ.get("HTTP_SEC_FETCH_SITE", "") == "cross-site",
        )
        if request.method == "POST":
            request.form = _read_form(environ)
        return request


def _read_form(environ: dict[str, Any]) -> dict[str, list[str]]:
    kind = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadForm("Forms must be sent as application/x-www-form-urlencoded")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadForm("Bad Content-Length") from None
    if not 0 <= length <= MAX_REQUEST_BODY:
        raise BadForm(f"The form is larger than {MAX_REQUEST_BODY} bytes")
    body = environ["wsgi.input"].read(length) if length else b""
    try:
        return parse_qs(body.decode("ascii"), keep_blank_values=True, errors="strict")
    except UnicodeError:
        raise BadForm("The form is not valid UTF-8") from None


@dataclass
class Response:
    status: str
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def send(self, start_response: StartResponse, method: str) -> Iterable[bytes]:
        headers = [("Content-Type", self.content_type), ("Content-Length", str(len(self.body)))]
        headers += SECURITY_HEADERS + self.headers
        if not any(name == "Cache-Control" for name, _ in self.headers):
            headers.append(("Cache-Control", "no-store"))
        start_response(self.status, headers)
        return [b""] if method == "HEAD" else [self.body]


def redirect(location: str, status: str = "303 See Other") -> Response:
    return Response(status, headers=[("Location", location)])


def cookie_header(
    name: str, value: str, *, path: str, max_age: int, secure: bool, http_only: bool = True
) -> tuple[str, str]:
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "SameSite=Strict"]
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    return ("Set-Cookie", "; ".join(parts))
