"""Helpers for the hardening tests: an in-process server on 127.0.0.1 and raw HTTP."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any

from coal_mine.api import Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.http_server import PooledWSGIServer
from coal_mine.memory_store import MemoryStore


class InProcessServer:
    """The real Api on the real PooledWSGIServer, in this process, on a free 127.0.0.1 port."""

    def __init__(
        self,
        app: Any = None,
        *,
        auth_key: str | None = None,
        read_only_auth_key: str | None = None,
        **server_options: Any,
    ) -> None:
        self.logic = BusinessLogic(MemoryStore())
        self.app = app or Api(self.logic, auth_key=auth_key, read_only_auth_key=read_only_auth_key)
        self.httpd = PooledWSGIServer(("127.0.0.1", 0), self.app, **server_options)
        self.port = self.httpd.server_address[1]
        scheme = "https" if server_options.get("ssl_context") else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def path(self, command: str, **params: Any) -> str:
        path = command if command.startswith("/") else f"/coal-mine/v1/canary/{command}"
        query = urllib.parse.urlencode(params, doseq=True)
        return path + (f"?{query}" if query else "")

    def call(self, command: str, timeout: float = 10.0, **params: Any) -> tuple[int, dict[str, Any]]:
        """GET an API command over a fresh connection; (status, JSON body)."""
        status, body = raw_request(
            self.port, f"GET {self.path(command, **params)} HTTP/1.0\r\n\r\n".encode(), timeout=timeout
        )
        return status, json.loads(body) if body else {}


def raw_request(
    port: int, data: bytes, timeout: float = 10.0, context: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """Send raw bytes, read the whole answer; (HTTP status, body). Status 0: closed without answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain:
        sock = context.wrap_socket(plain, server_hostname="localhost") if context else plain
        sock.sendall(data)
        return parse_response(read_all(sock))


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, bytes]:
    if not raw:
        return 0, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def timed(func: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(seconds taken, result)."""
    start = time.monotonic()
    result = func(*args, **kwargs)
    return time.monotonic() - start, result
