"""A real HTTP server on 127.0.0.1 that records webhook and Slack-format POSTs, for tests.

`status` is what it answers (default 200); `hang` makes it hold each request
until released (or the test ends); it can be stopped and started again on the
same port to play a receiver that is down for a while.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers import free_port


@dataclass
class Post:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float

    def json(self) -> Any:
        return json.loads(self.body)


class HTTPSink:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.posts: list[Post] = []
        self.status = 200
        self.status_by_path: dict[str, int] = {}
        self.headers_out: dict[str, str] = {}
        self.hang = threading.Event()  # set: hold requests until released
        self.release = threading.Event()
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> HTTPSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if sink.hang.is_set():
                    sink.release.wait(30)
                post = Post(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                status = sink.status_by_path.get(self.path, sink.status)
                if 200 <= status < 300:
                    with sink._cond:
                        sink.posts.append(post)
                        sink._cond.notify_all()
                try:
                    self.send_response(status)
                    for name, value in sink.headers_out.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender is gone (killed, or it timed out)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Post]:
        """Wait until at least `count` accepted posts arrived; returns all of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} posts, got {len(self.posts)}")
                self._cond.wait(left)
            return list(self.posts)

    def __enter__(self) -> HTTPSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
