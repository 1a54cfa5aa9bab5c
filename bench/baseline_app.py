"""The benchmark's baseline: a minimal WSGI app answering every request with a constant
trigger response, served by the same built-in server class (and access logging) as Coal Mine.

Usage: python bench/baseline_app.py PORT LOG_FILE
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coal_mine.api import Api
from coal_mine.config import LoggingConfig, WsgiConfig
from coal_mine.http_server import PooledWSGIServer
from coal_mine.server import setup_logging

BODY = b'{\n    "status": "ok",\n    "recovered": false,\n    "unpaused": false\n}\n'
HEADERS = [("Content-Type", "application/json; charset=utf-8")]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer anything with a constant trigger response."""
    start_response("200 OK", list(HEADERS))
    return [BODY]


def main(argv: list[str]) -> int:
    """Serve `app` on 127.0.0.1:PORT until SIGTERM."""
    port, log_file = int(argv[1]), argv[2]
    setup_logging(LoggingConfig(file=log_file))
    defaults = WsgiConfig()
    httpd = PooledWSGIServer(
        ("127.0.0.1", port),
        app,
        workers=defaults.workers,
        quick=Api.is_trigger_path,  # as the real server: the benchmark's /<id> paths are triggers
        request_timeout=defaults.request_timeout,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    stop.wait()
    httpd.shutdown()
    httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
