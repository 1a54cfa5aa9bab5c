"""HTTP routes of run reporting: `/<id>/start|fail|log|<0-255>` and their long forms.

Registered from api.py by `register(api)`. Like trigger, these need no auth key,
accept any method, and answer with trigger's JSON shape plus new keys. The body
of a POST is the job's output (up to `[wsgi] max_body` bytes).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from coal_mine.models import Output
from coal_mine.runs import STATES, parse_exit_status

if TYPE_CHECKING:
    from coal_mine.api import Api, Request

DEFAULT_MAX_BODY = 10000
_DRAIN_LIMIT = 1 << 20  # bytes of an over-long body read and dropped, so the client hears the answer
_SHORT_FORM = re.compile(r"/([a-z]{8})/([^/]+)\Z")
_WORDS = ("start", "fail", "log")

PARAMETERS: dict[str, tuple[str, ...]] = {
    "start": ("id", "name", "slug", "comment", "m", "rid"),
    "fail": ("id", "name", "slug", "comment", "m", "rid", "exit_status"),
    "log": ("id", "name", "slug", "comment", "m"),
}


def short_form(path: str) -> tuple[str, str, dict[str, list[str]]] | None:
    """(command, canary id, parameters the path adds) for `/<id>/<what>`, else None.
    A number other than 0, or any other word, is a failure whose exit status it is
    (so a bad one is a 400)."""
    match = _SHORT_FORM.match(path)
    if match is None:
        return None
    canary_id, what = match.groups()
    if what in _WORDS:
        return what, canary_id, {}
    if what.isascii() and what.isdigit() and int(what) == 0:
        return "trigger", canary_id, {}
    return "fail", canary_id, {"exit_status": [what]}


def is_run_path(path: str, prefix: str) -> bool:
    """Whether `path` is one of the run-reporting URLs (short or long form)."""
    return _SHORT_FORM.match(path) is not None or path[len(prefix) :] in _WORDS and path.startswith(prefix)


def read_output(environ: dict[str, Any] | None, max_body: int) -> Output | None:
    """The body of a POST as a job's output: at most `max_body` bytes are kept."""
    if not environ or environ.get("REQUEST_METHOD") != "POST":
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length <= 0:
        return None
    stream = environ["wsgi.input"]
    data = stream.read(min(length, max_body))
    left = min(length - len(data), _DRAIN_LIMIT)
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            break
        left -= len(chunk)
    # NUL becomes U+FFFD like undecodable bytes: PostgreSQL text cannot hold it.
    text = data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return Output(text, length, truncated=length > len(data))


def _answer(recovered: bool, unpaused: bool, state: str, duration: float | None) -> bytes:
    data: dict[str, Any] = {"status": "ok", "recovered": recovered, "unpaused": unpaused, "state": state}
    if duration is not None:
        data["duration"] = duration
    return (json.dumps(data, indent=4) + "\n").encode("utf-8")


# The answers without a duration, encoded once (the common case: start, log, an unpaired end).
_ANSWERS = {
    (recovered, unpaused, state): _answer(recovered, unpaused, state, None)
    for recovered in (False, True)
    for unpaused in (False, True)
    for state in STATES
}


class RunRoutes:
    """The handlers; `api` gives them its logic, canary lookup and body limit."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def _report(self, request: Request, event: str, exit_status: int | None = None) -> bytes:
        request.only(*PARAMETERS[event])
        comment = request.string("comment")
        if comment is None:
            comment = request.string("m") or ""
        canary_id = request.string("id") or self.api._identify(request)
        output = read_output(request.environ, self.api.max_body)
        recovered, unpaused, state, duration = self.api.logic.runs.report(
            canary_id, event, comment, rid=request.string("rid"), exit_status=exit_status, output=output
        )
        if duration is None:
            return _ANSWERS[recovered, unpaused, state]
        return _answer(recovered, unpaused, state, duration)

    def start(self, request: Request) -> bytes:
        return self._report(request, "start")

    def fail(self, request: Request) -> bytes:
        status = request.string("exit_status")
        exit_status = parse_exit_status(status) if status is not None else None
        if exit_status == 0:
            request.query.pop("exit_status")
            return self.api.trigger(request)
        return self._report(request, "fail", exit_status)

    def log(self, request: Request) -> bytes:
        return self._report(request, "log")


def register(api: Api) -> None:
    """Add the run commands to `api` (none of them needs the auth key)."""
    routes = RunRoutes(api)
    api.commands.update(start=routes.start, fail=routes.fail, log=routes.log)
    api.open_commands.update(PARAMETERS)
