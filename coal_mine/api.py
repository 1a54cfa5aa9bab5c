"""The HTTP API as a WSGI application: routing, parameter parsing and JSON.

It knows the business logic's operations and nothing about storage. Every
exception is turned into a response in one place (`Api.__call__`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import textwrap
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from coal_mine import alert_api, runs_api
from coal_mine.business_logic import BusinessLogic
from coal_mine.config import WebConfig
from coal_mine.http_errors import JSON_CONTENT_TYPE, HttpError, error_body, http_status
from coal_mine.models import BadRequestError, Canary, CoalMineError
from coal_mine.runs import parse_max_runtime, parse_until, run_json
from coal_mine.ops_routes import OpsRoutes
from coal_mine.prefetched_body import PrefetchedBody

__all__ = ["Api", "HttpError", "canary_to_json"]

log = logging.getLogger(__name__)

URL_PREFIX = "/coal-mine/v1/canary/"
_SHORT_TRIGGER = re.compile(r"/([a-z]{8})$")  # 0.7.1: `$` also matches before a final newline
_NUMBER = re.compile(r"[\d.]+$")  # as 0.7.1: "60\n" is a number too
_JSON_HEADERS = [("Content-Type", JSON_CONTENT_TYPE)]
_STREAM_CHUNK = 65536

Query = dict[str, list[str]]
StartResponse = Callable[..., Any]

# The parameters each command accepts (besides auth_key); openapi.yaml documents
# exactly these, and tests/test_openapi.py keeps the two in step.
PARAMETERS: dict[str, tuple[str, ...]] = {
    "create": (
        "name",
        "periodicity",
        "description",
        "email",
        "paused",
        "max_runtime",
        *alert_api.CANARY_PARAMETERS,
    ),
    "delete": ("id", "name", "slug"),
    "update": (
        "id",
        "name",
        "slug",
        "periodicity",
        "description",
        "email",
        "max_runtime",
        *alert_api.CANARY_PARAMETERS,
    ),
    "get": ("id", "name", "slug", "output"),
    "list": ("verbose", "paused", "late", "search", "state"),
    "trigger": ("id", "name", "slug", "comment", "m", "rid"),
    "pause": ("id", "name", "slug", "comment", "until"),
    "unpause": ("id", "name", "slug", "comment"),
    **runs_api.PARAMETERS,
}
PARAMETERS.update(alert_api.PARAMETERS)
# What the read-only key may do (trigger needs no key at all).
READ_ONLY_COMMANDS = frozenset({"get", "list"})


def canary_to_json(canary: Canary, schedule: list | None = None, *, full: bool = True) -> dict[str, Any]:
    """The API's JSON form of a canary (Coal Mine's field order; no deadline while paused).
    Without `full` access, secret parts of webhook and slack URLs are masked."""
    data: dict[str, Any] = {
        "id": canary.id,
        "name": canary.name,
        "slug": canary.slug,
        "periodicity": canary.periodicity,
        "description": canary.description,
        "emails": canary.emails,
        "paused": canary.paused,
    }
    if canary.history is not None:
        data["history"] = [[ts.isoformat(), comment] for ts, comment in canary.history]
    data["late"] = canary.late
    if canary.deadline is not None:
        data["deadline"] = canary.deadline.isoformat()
    data.update(run_json(canary))
    if schedule is not None:
        data["periodicity_schedule"] = [
            [start.isoformat(), end.isoformat(), value] for start, end, value in schedule
        ]
    data.update(alert_api.canary_fields(canary, full=full))
    return data


def _dumps(data: Any) -> str:
    # indent=4 keeps `"status": "ok"` greppable, as Coal Mine's README cron line expects.
    return json.dumps(data, indent=4) + "\n"


# The four possible trigger responses, encoded once.
_TRIGGER_BODIES = {
    (recovered, unpaused): _dumps({"status": "ok", "recovered": recovered, "unpaused": unpaused}).encode(
        "utf-8"
    )
    for recovered in (False, True)
    for unpaused in (False, True)
}
# One entry of a non-verbose list, as json.dumps(indent=4) writes it nested in the list.
_BRIEF_ENTRY = '        {{\n            "name": {},\n            "id": {}\n        }}'


def parse_boolean(name: str, value: str) -> bool:
    """Coal Mine's boolean words; anything else is a 400."""
    lowered = value.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0", ""):
        return False
    raise BadRequestError(f'Bad boolean value "{value}" for parameter "{name}"')


def parse_periodicity(value: str) -> float | str:
    """Digits and dots make a number of seconds; anything else is a schedule."""
    if _NUMBER.match(value):
        try:
            return float(value)
        except ValueError:
            raise BadRequestError(f'Bad periodicity "{value}"') from None
    return value


class Request:
    """The query parameters of one API call (each name maps to all its values, in order)."""

    def __init__(self, query: Query, environ: dict[str, Any] | None = None, full: bool = True) -> None:
        self.query = query
        self.environ = environ  # for the body of a POST
        self.full = full  # the caller has the full auth key (or none is needed)

    def string(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def required(self, name: str) -> str:
        value = self.string(name)
        if value is None:
            raise BadRequestError(f'Missing argument "{name}"')
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.string(name)
        return None if value is None else parse_boolean(name, value)

    def only(self, *allowed: str) -> None:
        for name in self.query:
            if name not in allowed:
                raise BadRequestError(f'Unexpected argument "{name}"')


class Api:
    """The WSGI application. `auth_key`, if set, is required by every command but trigger;
    `read_only_auth_key`, if also set, is accepted instead of it for get and list.
    A POST body of up to `max_body` bytes is kept as a job's output."""

    def __init__(
        self,
        logic: BusinessLogic,
        auth_key: str | None = None,
        read_only_auth_key: str | None = None,
        web: WebConfig | None = None,
        *,
        worker_timeout: float = 60.0,
        max_body: int = runs_api.DEFAULT_MAX_BODY,
    ) -> None:
        from coal_mine.ui import Dashboard  # imported here: the dashboard uses this module

        self.logic = logic
        self.auth_key = auth_key
        self.read_only_auth_key = read_only_auth_key
        self.ui = Dashboard(self, web)
        self.ops = OpsRoutes(self, worker_timeout=worker_timeout)  # /health, /metrics, /badge
        self.max_body = max_body
        self.open_commands = {"trigger"}  # need no auth key
        self.commands: dict[str, Callable[[Request], Any]] = {
            "create": self.create,
            "delete": self.delete,
            "update": self.update,
            "get": self.get,
            "list": self.list_canaries,
            "trigger": self.trigger,
            "pause": self.pause,
            "unpause": self.unpause,
        }
        runs_api.register(self)
        self.alerts = alert_api.register(self)

    # --- WSGI ------------------------------------------------------------------

    @staticmethod
    def is_trigger_path(path: str) -> bool:
        """Whether a request for this path is a trigger, or a run report like one (for servers
        that serve those first)."""
        return (
            path == URL_PREFIX + "trigger"
            or _SHORT_TRIGGER.match(path) is not None
            or runs_api.is_run_path(path, URL_PREFIX)
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self.ops.serve(environ, start_response, self._serve)

    def _serve(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.ui.handles(environ.get("PATH_INFO", "")):
            return self.ui(environ, start_response)
        try:
            short = (
                None if environ.get("QUERY_STRING") else _SHORT_TRIGGER.match(environ.get("PATH_INFO", ""))
            )
            if short is not None and environ.get("REQUEST_METHOD") != "POST":
                # Cron's `curl .../<id>`: no parameters to parse or check, no output to keep.
                command, result = "trigger", _TRIGGER_BODIES[self.logic.trigger(short.group(1))]
            else:
                command, query, full = self._route(environ)
                result = self.commands[command](Request(query, environ, full))
            self.ops.count(command)
        except CoalMineError as exc:
            return self._error(start_response, http_status(exc), str(exc))
        except Exception:
            log.exception("Unexpected error serving %s", environ.get("PATH_INFO"))
            return self._error(
                start_response,
                "500 Internal Server Error",
                "Internal server error; the details are in the server log",
            )
        if isinstance(result, PrefetchedBody):
            length = [] if result.length is None else [("Content-Length", str(result.length))]
            start_response("200 OK", [*_JSON_HEADERS, *length])
            return result
        start_response("200 OK", list(_JSON_HEADERS))
        if isinstance(result, bytes):
            return [result]
        if isinstance(result, Iterator):
            return result
        return [_dumps(result).encode("utf-8")]

    @staticmethod
    def _error(start_response: StartResponse, status: str, message: str) -> list[bytes]:
        start_response(status, list(_JSON_HEADERS))
        return [error_body(message)]

    def _route(self, environ: dict[str, Any]) -> tuple[str, Query, bool]:
        """The command and its parameters, authenticated (401 comes before any 400)."""
        path = environ.get("PATH_INFO", "")
        short = _SHORT_TRIGGER.match(path)
        run_form = None if short else runs_api.short_form(path)
        if short:
            command = "trigger"
        elif run_form:
            command = run_form[0]
        elif path.startswith(URL_PREFIX) and path[len(URL_PREFIX) :] in self.commands:
            command = path[len(URL_PREFIX) :]
        elif path.startswith("/") and path in self.commands:  # a command with a path of its own
            command = path
        else:
            raise HttpError("404 Not Found", f"404 Not Found: no such endpoint {path!r}")
        query, problem = self._parse_query(environ.get("QUERY_STRING", ""))
        # 0.7.1 checks the first auth_key given (every other parameter: the last).
        full = self._authenticate(command, query.pop("auth_key", [None])[0])
        if problem is not None:
            raise problem
        if short:
            query.setdefault("id", []).append(short.group(1))
        if run_form:
            for name, values in {"id": [run_form[1]], **run_form[2]}.items():
                query.setdefault(name, []).extend(values)
        return command, query, full

    @staticmethod
    def _parse_query(raw: str) -> tuple[Query, BadRequestError | None]:
        """The parameters, and the 400 to answer if they are malformed. Malformed
        parameters are still parsed leniently so that the auth key can be checked first."""
        if not raw:
            return {}, None
        # WSGI hands over the raw bytes as latin-1; the API speaks UTF-8.
        text = raw.encode("latin-1", errors="replace").decode("utf-8", errors="replace")
        try:
            raw.encode("latin-1").decode("utf-8")
            # Blank values count as absent, as in Coal Mine.
            return parse_qs(text, keep_blank_values=False, errors="strict"), None
        except UnicodeError:
            problem = BadRequestError("Parameters must be valid UTF-8")
        return parse_qs(text, keep_blank_values=False, errors="replace"), problem

    def _authenticate(self, command: str, given: str | None) -> bool:
        """401 unless `given` is a key that allows `command`; True if it is the full key
        (or none is needed). Both keys are always compared, in constant time, so timing
        tells nothing about either."""
        if not self.auth_key or command in self.open_commands:
            return True  # a key sent where none is needed is ignored
        supplied = (given or "").encode("utf-8", errors="surrogateescape")
        full = hmac.compare_digest(supplied, self.auth_key.encode())
        read_only = hmac.compare_digest(supplied, (self.read_only_auth_key or "").encode())
        read_only = read_only and bool(self.read_only_auth_key)
        if full or (read_only and command in READ_ONLY_COMMANDS):
            return full
        if read_only:
            raise HttpError(
                "401 Unauthorized", f"401 Unauthorized: the read-only auth_key does not allow {command}"
            )
        raise HttpError("401 Unauthorized", "401 Unauthorized: missing or wrong auth_key")

    # --- commands ----------------------------------------------------------------

    def _identify(self, request: Request, name_ok: bool = True) -> str:
        identifier, slug = request.string("id"), request.string("slug")
        name = request.string("name") if name_ok else None
        if identifier:
            return self.logic.find_identifier(identifier=identifier)
        if slug:
            return self.logic.find_identifier(slug=slug)
        if name:
            return self.logic.find_identifier(name=name)
        raise BadRequestError("Must specify id, slug, or name" if name_ok else "Must specify id or slug")

    def _canary_response(self, canary: Canary, full: bool = True) -> dict[str, Any]:
        data = canary_to_json(canary, self.logic.periodicity_schedule(canary), full=full)
        data["badge_key"] = self.ops.badge_key(canary)  # for /coal-mine/v1/badge/<key>.svg
        return {"status": "ok", "canary": data}

    def create(self, request: Request) -> dict[str, Any]:
        name = request.required("name")
        periodicity = parse_periodicity(request.required("periodicity"))
        paused = request.boolean("paused")
        request.only(*PARAMETERS["create"])
        max_runtime = request.string("max_runtime")
        canary = self.logic.create(
            name,
            periodicity,
            request.string("description") or "",
            # email=- alone means no addresses here too, as it does for update.
            [] if request.query.get("email") == ["-"] else request.query.get("email", []),
            bool(paused),
            max_runtime=parse_max_runtime(max_runtime) if max_runtime is not None else None,
            **alert_api.canary_arguments(request, create=True),
        )
        return self._canary_response(canary)

    def delete(self, request: Request) -> dict[str, Any]:
        request.only(*PARAMETERS["delete"])
        self.logic.delete(self._identify(request))
        return {"status": "ok"}

    def update(self, request: Request) -> dict[str, Any]:
        request.only(*PARAMETERS["update"])
        periodicity = request.string("periodicity")
        max_runtime = request.string("max_runtime")
        emails = request.query.get("email")
        if emails == ["-"]:
            emails = []
        canary = self.logic.update(
            self._identify(request, name_ok=False),
            name=request.string("name"),
            periodicity=parse_periodicity(periodicity) if periodicity is not None else None,
            description=request.string("description"),
            emails=emails,
            max_runtime=parse_max_runtime(max_runtime) if max_runtime is not None else None,
            **alert_api.canary_arguments(request, create=False),
        )
        return self._canary_response(canary)

    def get(self, request: Request) -> dict[str, Any]:
        output = request.boolean("output")
        request.only(*PARAMETERS["get"])
        canary_id = self._identify(request)
        canary = self.logic.get(canary_id)
        response = self._canary_response(canary, request.full)
        if output:
            response["canary"]["outputs"] = self.logic.runs.outputs(canary_id)
        if request.full and (canary.webhooks or canary.slacks or canary.repeat):  # 0.7.1's answer else
            response["canary"].update(alert_api.delivery_status(self.logic, canary))
        return response

    def list_canaries(self, request: Request) -> PrefetchedBody:
        verbose, paused, late = (request.boolean(n) for n in ("verbose", "paused", "late"))
        request.only(*PARAMETERS["list"])
        canaries = self.logic.list_canaries(
            verbose=bool(verbose), paused=paused, late=late, search=request.string("search")
        )
        canaries = self.logic.runs.filter_state(canaries, request.string("state"))
        first = next(canaries, None)
        return PrefetchedBody.of(self._stream_list(first, canaries, bool(verbose), request.full))

    @staticmethod
    def _stream_list(
        first: Canary | None, rest: Iterator[Canary], verbose: bool, full: bool = True
    ) -> Iterator[bytes]:
        """`{"status": "ok", "canaries": [...]}` exactly as json.dumps(indent=4) writes it,
        produced a piece at a time so a list of any size needs little memory."""
        if first is None:
            yield _dumps({"status": "ok", "canaries": []}).encode("utf-8")
            return
        head = '{\n    "status": "ok",\n    "canaries": [\n'
        pieces, size = [head], len(head)
        canary: Canary | None = first
        while canary is not None:
            if verbose:
                piece = textwrap.indent(json.dumps(canary_to_json(canary, full=full), indent=4), " " * 8)
            else:  # the same text, without the slow pure-Python indenting encoder
                piece = _BRIEF_ENTRY.format(json.dumps(canary.name), json.dumps(canary.id))
            canary = next(rest, None)
            piece += ",\n" if canary is not None else "\n"
            pieces.append(piece)
            size += len(piece)
            if size >= _STREAM_CHUNK:
                yield "".join(pieces).encode("utf-8")
                pieces, size = [], 0
        pieces.append("    ]\n}\n")
        yield "".join(pieces).encode("utf-8")

    def trigger(self, request: Request) -> bytes:
        request.only(*PARAMETERS["trigger"])
        comment = request.string("comment")
        if comment is None:
            comment = request.string("m") or ""
        # Given an id, trigger() itself answers 404 for an unknown one: no separate look-up.
        canary_id = request.string("id") or self._identify(request)
        run = {"rid": request.string("rid"), "output": runs_api.read_output(request.environ, self.max_body)}
        result = self.logic.trigger(canary_id, comment, **{k: v for k, v in run.items() if v is not None})
        return _TRIGGER_BODIES[result]

    def pause(self, request: Request) -> dict[str, Any]:
        request.only(*PARAMETERS["pause"])
        comment, until = request.string("comment") or "", request.string("until")
        if until is None:
            canary = self.logic.pause(self._identify(request), comment)
        else:
            when = parse_until(until, self.logic.clock.now())
            canary = self.logic.runs.snooze(self._identify(request), comment, when)
        return self._canary_response(canary)

    def unpause(self, request: Request) -> dict[str, Any]:
        request.only(*PARAMETERS["unpause"])
        canary = self.logic.unpause(self._identify(request), request.string("comment") or "")
        return self._canary_response(canary)
