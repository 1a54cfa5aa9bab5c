"""Coal Mine 0.7.1 requests for canaries that never use run reporting, and their answers.

`python -m tests.runs_compat_script OUT.json` with PYTHONPATH at a checkout from before
run reporting (main at 4ff9d73) wrote tests/fixtures/runs_compat_golden.json; the test
replays the same requests over HTTP on every store and expects the same bytes. It uses
only interfaces that both versions have.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Call = Callable[[str, str, bytes | None], tuple[int, bytes]]  # (method, path?query, body)

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
REQUESTS: list[tuple[float, str, str, bytes | None]] = [
    # (seconds to move the clock first, method, path and query, body)
    (0, "GET", "/coal-mine/v1/canary/create?name=Nightly+Backup&periodicity=60&email=a@x.org", None),
    (0, "GET", "/coal-mine/v1/canary/create?name=Sched&periodicity=*+*+*+*+*+120&description=d", None),
    (0, "POST", "/coal-mine/v1/canary/create?name=Third&periodicity=30&paused=true", b"name=ignored"),
    (1, "GET", "/coal-mine/v1/canary/get?id=<id0>", None),
    (0, "GET", "/coal-mine/v1/canary/get?slug=sched", None),
    (0, "GET", "/coal-mine/v1/canary/list", None),
    (0, "GET", "/coal-mine/v1/canary/list?verbose=1", None),
    (0, "GET", "/coal-mine/v1/canary/list?paused=true&verbose=true", None),
    (1, "GET", "/<id0>?comment=hello", None),
    (1, "POST", "/<id0>", b"a POST body is ignored"),
    (1, "GET", "/coal-mine/v1/canary/trigger?name=Nightly+Backup&m=via+m", None),
    (0, "GET", "/coal-mine/v1/canary/pause?id=<id0>&comment=maint", None),
    (0, "GET", "/coal-mine/v1/canary/pause?id=<id0>", None),
    (5, "GET", "/<id0>", None),
    (0, "GET", "/coal-mine/v1/canary/unpause?id=<id2>", None),
    (0, "GET", "/coal-mine/v1/canary/update?id=<id2>&periodicity=45&description=new", None),
    (0, "GET", "/coal-mine/v1/canary/update?id=<id2>&description=new", None),
    (120, "GET", "/coal-mine/v1/canary/list?late=true", None),
    (0, "GET", "/coal-mine/v1/canary/get?id=<id0>", None),
    (1, "GET", "/<id0>", None),
    (0, "GET", "/coal-mine/v1/canary/list?verbose=1&search=^night", None),
    (0, "GET", "/coal-mine/v1/canary/trigger?id=<id1>&bogus=1", None),
    (0, "GET", "/coal-mine/v1/canary/get?id=abcdefgh", None),
    (0, "GET", "/abcdefgh", None),
    (0, "GET", "/coal-mine/v1/canary/list?late=maybe", None),
    (0, "GET", "/coal-mine/v1/canary/delete?id=<id1>", None),
    (0, "GET", "/coal-mine/v1/canary/list?verbose=yes", None),
]


def run(call: Call, tick: Callable[[float], None]) -> list[dict[str, Any]]:
    """Send REQUESTS; each answer with canary ids replaced by <idN> in creation order."""
    ids: list[str] = []
    answers = []
    for seconds, method, template, body in REQUESTS:
        tick(seconds)
        target = template
        for number, cid in enumerate(ids):
            target = target.replace(f"<id{number}>", cid)
        status, data = call(method, target, body)
        text = data.decode("utf-8")
        if "/create?" in target and status == 200:
            ids.append(json.loads(text)["canary"]["id"])
        for number, cid in enumerate(ids):
            text = re.sub(rf"\b{cid}\b", f"<id{number}>", text)
        text = re.sub(r'"badge_key": "[0-9a-f]+"', '"badge_key": "<badge>"', text)  # random too
        answers.append({"request": f"{method} {template}", "status": status, "body": text})
    return answers


def wsgi_caller(app: Any) -> Call:
    """Call a WSGI application directly (how the golden file was made)."""

    def call(method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
        path, _, query = target.partition("?")
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body or b"")),
            "wsgi.input": io.BytesIO(body or b""),
        }
        status: list[str] = []
        chunks = app(environ, lambda s, headers: status.append(s))
        return int(status[0].split()[0]), b"".join(chunks)

    return call


def main(out: str) -> None:
    from coal_mine.api import Api
    from coal_mine.business_logic import BusinessLogic
    from coal_mine.clock import FakeClock
    from coal_mine.memory_store import MemoryStore
    from coal_mine.watcher import Watcher

    clock = FakeClock(START)
    logic = BusinessLogic(MemoryStore(), clock)
    watcher = Watcher(logic)

    def tick(seconds: float) -> None:
        clock.advance(seconds)
        while watcher.step():
            pass

    with open(out, "w") as handle:
        json.dump(run(wsgi_caller(Api(logic)), tick), handle, indent=1)
        handle.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
