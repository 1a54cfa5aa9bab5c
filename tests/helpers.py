"""The test harness: real servers on 127.0.0.1 (a `coal-mine` process, or the real Api on the
real PooledWSGIServer in this process), the WSGI application called directly, raw HTTP,
and waiting for conditions."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coal_mine.api import Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.http_server import PooledWSGIServer
from coal_mine.memory_store import MemoryStore

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Return as soon as `condition()` is true; fail the test if it is not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """GET a URL; returns (status, decoded JSON body) for success and error statuses alike."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body else {}


class ApiPaths:
    """The one builder of API request paths, shared by every way of calling the API."""

    def path(self, command: str, **params: Any) -> str:
        """The path and query of an API command (or of a path starting with '/')."""
        path = command if command.startswith("/") else f"/coal-mine/v1/canary/{command}"
        query = urllib.parse.urlencode(params, doseq=True)
        return path + (f"?{query}" if query else "")


class WsgiClient(ApiPaths):
    """Calls the WSGI application directly, with the environ a server would build: for
    rule-level API tests, which need no socket (the real servers below have their own)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """(status, headers, whole body) of one request."""
        path_info, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": urllib.parse.unquote(path_info, encoding="latin-1"),  # as wsgiref does
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
        }
        started: list[tuple[str, list[tuple[str, str]]]] = []
        result = self.app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
        try:
            data = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        ((status, headers),) = started
        return int(status.split()[0]), dict(headers), data

    def call(self, command: str, **params: Any) -> tuple[int, dict[str, Any]]:
        """Call an API command (or a path starting with '/'); returns (status, JSON)."""
        status, _, data = self.request("GET", self.path(command, **params))
        return status, json.loads(data) if data else {}


class RealServer(ApiPaths):
    """What both kinds of real server offer: URLs for API commands and calling them."""

    base_url: str
    port: int

    def url(self, command: str, **params: Any) -> str:
        return self.base_url + self.path(command, **params)

    def call(self, command: str, timeout: float = 10.0, **params: Any) -> tuple[int, dict[str, Any]]:
        """Call an API command (or a path starting with '/'); returns (status, JSON)."""
        return http_get(self.url(command, **params), timeout=timeout)


class ServerProcess(RealServer):
    """A real `coal-mine` process on a free 127.0.0.1 port, with its SQLite file in `workdir`
    (unless `ini_extra` names another store).

    Use as a context manager; the process is stopped (SIGTERM, then SIGKILL) on exit.
    """

    def __init__(
        self,
        workdir: Path,
        auth_key: str | None = None,
        ini_extra: str = "",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = env
        self.ini = self.workdir / "coal-mine.ini"
        wsgi = f"[wsgi]\nhost = 127.0.0.1\nport = {self.port}\n"
        if auth_key:
            wsgi += f"auth_key = {auth_key}\n"
        if not any(f"[{name}]" in ini_extra for name in ("sqlite", "mongodb", "postgresql")):
            ini_extra = f"[sqlite]\npath = {self.workdir / 'coal-mine.sqlite3'}\n" + ini_extra
        self.ini.write_text(wsgi + ini_extra)
        self.log_path = self.workdir / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for name in ("MONGODB_URI", "POSTGRESQL_URI", "DATABASE_URL"):
            env.pop(name, None)
        env.update(self.env or {})
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coal_mine.server", "--config", str(self.ini), *self.args],
            cwd=self.workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if "--background" not in self.args:
            wait_for_port(self.port, process=self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class InProcessServer(RealServer):
    """The real Api on the real PooledWSGIServer, in this process, on a free 127.0.0.1 port.

    By default the rules run on a MemoryStore with the wall clock; pass `logic` for another
    store or clock, and `api_options` (e.g. web=...) for the Api."""

    def __init__(
        self,
        app: Any = None,
        *,
        auth_key: str | None = None,
        read_only_auth_key: str | None = None,
        logic: BusinessLogic | None = None,
        api_options: dict[str, Any] | None = None,
        **server_options: Any,
    ) -> None:
        self.logic = logic or BusinessLogic(MemoryStore())
        self.app = app or Api(
            self.logic, auth_key=auth_key, read_only_auth_key=read_only_auth_key, **(api_options or {})
        )
        server_options.setdefault("quick", Api.is_trigger_path)  # as coal_mine.server does
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
