"""HTTP routes for operators: /health, /metrics and /badge, and the per-process HTTP counters.

Registered by api.Api, which hands every request to `OpsRoutes.serve` first.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from coal_mine import badges, metrics
from coal_mine.health import DEFAULT_WORKER_TIMEOUT, check_health
from coal_mine.http_errors import http_status
from coal_mine.models import BadRequestError, Canary, CoalMineError

if TYPE_CHECKING:
    from coal_mine.api import Api

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

HEALTH_PATH = "/coal-mine/v1/health"
METRICS_PATH = "/coal-mine/v1/metrics"
# As openapi.yaml names them (tests/test_openapi.py keeps the two in step).
DOCUMENTED_PATHS = (
    HEALTH_PATH,
    METRICS_PATH,
    *(f"/coal-mine/v1/badge/{{badge_key}}.{fmt}" for fmt in ("svg", "json", "shields")),
)
_BADGE_PATH = re.compile(r"/coal-mine/v1/badge/([^/]*)\.(svg|json|shields)\Z")
_BADGE_PREFIX = "/coal-mine/v1/badge/"
_NO_BADGE = "404 Not Found: no such badge"
PROBLEM_CHECK_INTERVAL = timedelta(seconds=5)
_BADGE_HEADERS = [("Cache-Control", "no-cache"), ("Access-Control-Allow-Origin", "*")]


def _json(
    start_response: StartResponse,
    status: str,
    data: dict[str, Any],
    extra: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    start_response(
        status, [("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "no-cache"), *extra]
    )
    return [(json.dumps(data, indent=4) + "\n").encode("utf-8")]


class OpsRoutes:
    """Health, metrics and badges for one Api (its store, clock and keys)."""

    def __init__(self, api: Api, *, worker_timeout: float = DEFAULT_WORKER_TIMEOUT) -> None:
        self.api = api
        self.worker_timeout = worker_timeout
        self.registry = metrics.make_registry(api.logic.store, api.logic.clock, worker_timeout)
        self._server_badge_key: str | None = None
        self._problem: tuple[datetime, str | None] | None = None  # when checked, what was wrong
        # Called before each request when set: starts per-process work (see operations.PerProcess).
        self.per_process: Callable[[], None] | None = None

    # --- plumbing ---------------------------------------------------------------------

    def serve(
        self, environ: dict[str, Any], start_response: StartResponse, inner: WSGIApp
    ) -> Iterable[bytes]:
        """Answer an operations path, or pass the request on; count every response."""
        if self.per_process is not None:
            self.per_process()

        def counting(status: str, headers: list, exc_info: Any = None) -> Any:
            metrics.COUNTERS.response(status)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            handler = self.health
        elif path == METRICS_PATH:
            handler = self.metrics
        elif path.startswith(_BADGE_PREFIX):
            handler = self.badge
        else:
            return inner(environ, counting)
        try:
            return handler(environ, counting)
        except CoalMineError as exc:
            return _json(counting, http_status(exc), {"status": "error", "error": str(exc)})
        except Exception:
            log.exception("Unexpected error serving %s", path)
            error = {"status": "error", "error": "Internal server error; the details are in the server log"}
            return _json(counting, "500 Internal Server Error", error)

    @staticmethod
    def count(command: str) -> None:
        """Count a successful API command (triggers and creates are exported)."""
        if command == "trigger":
            metrics.COUNTERS.triggers.inc()
        elif command == "create":
            metrics.COUNTERS.creates.inc()

    @staticmethod
    def _query(environ: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, list[str]]:
        raw = environ.get("QUERY_STRING", "").encode("latin-1", errors="replace")
        query = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=False)
        for name in query:
            if name not in allowed:
                raise BadRequestError(f'Unexpected argument "{name}"')
        return query

    def _key_level(self, environ: dict[str, Any], query: dict[str, list[str]]) -> str | None:
        """ "full", "read-only", or None (no key, or a wrong one), from auth_key= or a Bearer token.
        Without a server auth key everyone has full access."""
        if not self.api.auth_key:
            return "full"
        given = query.get("auth_key", [None])[-1]
        header = environ.get("HTTP_AUTHORIZATION", "")
        if given is None and header[:7].lower() == "bearer ":
            given = header[7:].strip()
        supplied = (given or "").encode("utf-8", errors="surrogateescape")
        full = hmac.compare_digest(supplied, self.api.auth_key.encode())
        read_only = hmac.compare_digest(supplied, (self.api.read_only_auth_key or "").encode())
        if full:
            return "full"
        return "read-only" if read_only and self.api.read_only_auth_key else None

    def badge_key(self, canary: Canary) -> str:
        """The canary's badge key, shown by get (given to canaries made by Coal Mine 0.7)."""
        return badges.ensure_badge_key(self.api.logic.store, canary)

    def health_problem(self) -> str | None:
        """Why late canaries are not being detected, or None; for the dashboard's red banner.
        Asked of the store at most every PROBLEM_CHECK_INTERVAL, however many pages are shown."""
        now = self.api.logic.clock.now()
        if self._problem is None or now - self._problem[0] >= PROBLEM_CHECK_INTERVAL:
            report = check_health(self.api.logic.store, self.api.logic.clock, self.worker_timeout)
            self._problem = (now, None if report.ok else report.reason)
        return self._problem[1]

    def server_badge_key(self) -> str:
        if self._server_badge_key is None:
            self._server_badge_key = badges.server_badge_key(self.api.logic.store)
        return self._server_badge_key

    # --- routes ------------------------------------------------------------------------

    def health(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """200 when a live worker scans deadlines, else 503 with the reason; `check=live`
        answers 200 whenever this process serves. No auth, no canary data; with the full
        key (as `cmcli status` sends it) also the workers and the server badge key."""
        query = self._query(environ, ("check", "auth_key"))
        check = query.get("check", ["ready"])[-1]
        if check not in ("ready", "live"):
            raise BadRequestError(f'Bad value "{check}" for parameter "check" (use ready or live)')
        full = not self.api.auth_key  # an open server shows everything to everyone anyway
        if "auth_key" in query or environ.get("HTTP_AUTHORIZATION"):
            level = self._key_level(environ, query)
            if level is None:
                error = {"status": "error", "error": "401 Unauthorized: wrong auth_key"}
                return _json(start_response, "401 Unauthorized", error)
            full = level == "full"
        if check == "live":
            return _json(start_response, "200 OK", {"status": "ok", "check": "live"})
        report = check_health(self.api.logic.store, self.api.logic.clock, self.worker_timeout)
        data = report.to_json(detail=full)
        if full and report.outbox is not None:  # the store answers
            data["badge_key"] = self.server_badge_key()
        return _json(start_response, "200 OK" if report.ok else "503 Service Unavailable", data)

    def metrics(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """The Prometheus text format; needs the auth key or the read-only key."""
        query = self._query(environ, ("auth_key", "name[]"))
        if self._key_level(environ, query) is None:
            return _json(
                start_response,
                "401 Unauthorized",
                {"status": "error", "error": "401 Unauthorized: missing or wrong auth_key"},
                [("WWW-Authenticate", 'Bearer realm="coal-mine"')],
            )
        body = metrics.exposition(self.registry, query.get("name[]"))
        start_response("200 OK", [("Content-Type", metrics.CONTENT_TYPE), ("Cache-Control", "no-cache")])
        return [body]

    def badge(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """A canary's badge, or the server's with the server badge key; one 404 for all else."""
        match = _BADGE_PATH.match(environ.get("PATH_INFO", ""))
        key = match.group(1) if match else ""
        store = self.api.logic.store
        badge = None
        if badges.BADGE_KEY.match(key):
            if hmac.compare_digest(key, self.server_badge_key()):
                badge = badges.server_badge(store.canary_totals())
            else:
                canary = store.canary_for_badge(key)
                badge = badges.canary_badge(canary) if canary is not None else None
        if badge is None or match is None:
            return _json(
                start_response, "404 Not Found", {"status": "error", "error": _NO_BADGE}, _BADGE_HEADERS[1:]
            )
        content_type, body = badges.render(badge, match.group(2))
        start_response("200 OK", [("Content-Type", content_type), *_BADGE_HEADERS])
        return [body]
