"""``cmcli``'s one HTTP request, bounded by one total deadline."""

from __future__ import annotations

import functools
import http.client
import io
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from coal_mine.cli_settings import (
    API_PATH,
    EXIT_CONNECT,
    EXIT_RESPONSE,
    EXIT_TIMEOUT,
    CliError,
    Settings,
    one_line,
)

try:
    from coal_mine import __version__
except ImportError:  # e.g. a stale editable install that sees a namespace package
    __version__ = "unknown"


class HttpFailure(Exception):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body


class Deadline:
    """A point in time by which everything must be done."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; TimeoutError once there are none."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


class _DeadlineReader(io.RawIOBase):
    """Reads from a socket, each read waiting only as long as the deadline leaves."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._sock = sock
        # The socket's own raw file: it keeps the socket open until the response is closed,
        # as http.client expects (urllib closes the connection before reading the body).
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """A connected socket whose reads and writes all end by one deadline: a server that
    trickles a byte now and then cannot stretch the request past it, as a per-read
    timeout would let it."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(self._deadline.left())
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection that connects, sends and reads within `deadline`."""

    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def connect(self) -> None:
        self.timeout = self.deadline.left()  # bounds the connect (and a TLS handshake)
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self.deadline)


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, http.client.HTTPSConnection):
    """The same, over TLS (HTTPSConnection.connect wraps the socket before ours does)."""


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_DeadlineHTTPConnection, deadline=self.deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self.deadline = deadline
        self.context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_DeadlineHTTPSConnection, deadline=self.deadline)
        return self.do_open(connection, req, context=self.context)


def call(settings: Settings, command: str, params: list[tuple[str, str]], send_key: bool = True) -> Any:
    """Send one API request and return the decoded JSON answer, all within settings.timeout."""
    params = list(params)
    if send_key and settings.auth_key:
        params.append(("auth_key", settings.auth_key))
    server = settings.base_url[: -len(API_PATH)] or settings.base_url
    # A command that is a path of its own (/coal-mine/v1/outbox) is not below API_PATH.
    url = server + command if command.startswith("/") else settings.base_url + command
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"cmcli/{__version__}"}
    )
    deadline = Deadline(settings.timeout)
    opener = urllib.request.build_opener(
        _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline, settings.ssl_context)
    )
    try:
        with opener.open(request, timeout=settings.timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        try:
            error_body = exc.read()
        except TimeoutError:
            raise _timed_out(server, settings.timeout) from None
        except (OSError, http.client.HTTPException):
            error_body = b""
        raise HttpFailure(exc.code, str(exc.reason or ""), error_body) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _timed_out(server, settings.timeout) from None
        raise CliError(f"cannot connect to {server}: {one_line(reason)}", EXIT_CONNECT) from None
    except TimeoutError:
        raise _timed_out(server, settings.timeout) from None
    except (OSError, http.client.HTTPException) as exc:
        detail = one_line(exc) or type(exc).__name__
        raise CliError(f"connection to {server} failed: {detail}", EXIT_CONNECT) from None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CliError(f"invalid response from {server}: not JSON", EXIT_RESPONSE) from None


def _timed_out(server: str, timeout: float) -> CliError:
    """The error for a server that did not answer in time."""
    return CliError(f"timed out after {timeout:g} s waiting for {server}", EXIT_TIMEOUT)
