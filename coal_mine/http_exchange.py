"""One HTTP exchange on a connection whose request the acceptor has read whole: the
WSGI environment, the app's answer, the access log. And the pieces the server shares
with it: canned error replies, log redaction, the gate for streamed answers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import socket
import struct
import threading
import sys
import time
from collections.abc import Iterable, Iterator
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler

from coal_mine.http_errors import JSON_CONTENT_TYPE, error_body
from coal_mine.prefetched_body import PrefetchedBody
from coal_mine.limits import MAX_REQUEST_BODY, MAX_REQUEST_HEAD, MAX_REQUEST_LINE, RESPONSE_TIME_LIMIT

if TYPE_CHECKING:
    from coal_mine.http_server import PooledWSGIServer

log = logging.getLogger("coal_mine.access")

_PARAMETER = re.compile(r"(?<=[?&;])([^=&;\s\"]*)=([^&;\s\"]*)")
_MIN_SCRUBBED_SECRET = 6  # shorter secrets would blank out ordinary words
# Escapes for the access log, as http.server's own log_message writes them: a request line
# or header cannot forge log lines or send terminal escapes.
_CONTROL_CHARS = {c: rf"\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Hide the value of any auth_key parameter (however its name is spelled or
    percent-encoded) and any occurrence of the given secrets."""

    def hide(match: re.Match[str]) -> str:
        name = unquote_plus(match.group(1)).strip().lower().replace("-", "_")
        return f"{match.group(1)}=<redacted>" if name == "auth_key" else match.group(0)

    text = _PARAMETER.sub(hide, text)
    for secret in secrets:
        if secret and len(secret) >= _MIN_SCRUBBED_SECRET:
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                text = text.replace(form, "<redacted>")
    return text


def error_response(status: str, message: str) -> bytes:
    """A complete HTTP/1.0 JSON error response, for answers sent outside the WSGI app."""
    body = error_body(message)
    return (
        f"HTTP/1.0 {status}\r\nContent-Type: {JSON_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


BUSY = error_response("503 Service Unavailable", "Server is busy; try again")
LINE_TOO_LONG = error_response("414 URI Too Long", f"Request line longer than {MAX_REQUEST_LINE} bytes")
HEAD_TOO_LARGE = error_response(
    "431 Request Header Fields Too Large", f"Request head longer than {MAX_REQUEST_HEAD} bytes"
)
BODY_TOO_LARGE = error_response(
    "413 Content Too Large", f"Request body longer than {MAX_REQUEST_BODY} bytes (or of unknown length)"
)


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes straight to the socket (what wsgiref expects of wfile), all of
    them within one deadline: a client that reads too slowly is cut off, however
    steadily it reads."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("response not read within the time limit")
        # Since Python 3.5 a socket timeout bounds a whole sendall(), not each send().
        self.sock.settimeout(remaining)
        self.sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _Handler(ServerHandler):
    """wsgiref's handler; for HEAD it sends the headers a GET would get, and no body."""

    server_software = "CoalMine"
    head_only = False
    status: str | None  # set by wsgiref
    headers_sent: bool
    request_handler: RequestHandler  # wsgiref logs through it

    def write(self, data: bytes) -> None:
        if not self.head_only:
            super().write(data)
            return
        if not self.status:
            raise AssertionError("write() before start_response()")
        if not self.headers_sent:
            self.bytes_sent = len(data)
            self.send_headers()
        else:
            self.bytes_sent += len(data)

    def handle_error(self) -> None:
        # A body that fails after its status went out: end the connection with a reset,
        # so the client sees a broken answer, not a complete-looking 200.
        if self.headers_sent:
            self.request_handler.broken = True
        super().handle_error()


class RequestHandler(WSGIRequestHandler):
    """wsgiref's handler, fed a complete request head, answering errors in JSON,
    with a redacted access log free of control characters. `timeout` is the
    time limit for writing a whole response."""

    timeout = RESPONSE_TIME_LIMIT
    server_version = "CoalMine"
    sys_version = ""  # the Server header names no Python version
    default_request_version = "HTTP/1.0"  # answer even garbage with a status line and headers
    server: PooledWSGIServer
    broken = False  # the answer failed after its status was sent

    kept = False  # whether the connection stays open for the client's next request

    def setup(self) -> None:
        sock, head, self.quick = self.request
        self.connection = sock
        self.head = head
        self.rfile: Any = io.BytesIO(head)
        self.wfile: Any = _SocketWriter(sock, time.monotonic() + self.timeout)

    def handle(self) -> None:
        if _fast_exchange(self):
            return
        # Anything unusual (a malformed line or header, folded headers, HTTP/0.9 or 2):
        # http.server's parser and wsgiref, which answer it as they always have.
        self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline = self.request_version = self.command = ""
            self.connection.sendall(LINE_TOO_LONG)
            return
        if not self.raw_requestline or not self.parse_request():
            return
        handler = _Handler(self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=False)
        handler.head_only = self.command == "HEAD"
        handler.request_handler = self  # wsgiref logs through it
        app = self.server.get_app()
        assert app is not None
        if self.server.quick is not None and not self.quick:
            app = _gated(app, self.server.heavy_gate)
        handler.run(app)
        if self.broken:
            reset(self.connection)

    def version_string(self) -> str:
        return self.server_version

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        if self.server.ssl_context is not None:
            environ["HTTPS"] = "on"
        return environ

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's errors (bad request line, bad headers) as JSON, like the API's."""
        short = self.responses.get(code, ("Error", ""))[0]
        text = f"{code} {short}" + (f": {message}" if message and message != short else "")
        self.log_error("code %d, message %s", code, message or short)
        body = error_body(text)
        self.send_response(code, short)
        self.send_header("Content-Type", JSON_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        # http.server has not set self.command yet when the request line is bad.
        if not getattr(self, "raw_requestline", b"").startswith(b"HEAD "):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        message = redact(format % args, self.server.secrets).translate(_CONTROL_CHARS)
        log.info("%s %s", self.client_address[0], message)


_HTTP_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
_MAX_HEADERS = 100  # as http.server; more go the slow way, which answers 431
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header's value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def _fast_exchange(handler: RequestHandler) -> bool:
    """Serve a well-formed HTTP/1.x request without http.server's and wsgiref's per-request
    machinery (an email.parser parse of the head, two copies of os.environ, one socket
    write per header line): the acceptor has the whole request already. Returns False,
    having sent nothing, for anything it does not handle."""
    head: bytes = handler.head
    line_end = head.find(b"\n")
    line = head[:line_end].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[2] not in _HTTP_VERSIONS or not parts[1].startswith(b"/"):
        return False
    method, target, version = parts
    if not method.isalpha() or not method.isupper():
        return False
    blank = head.find(b"\n\r\n", line_end)
    end = head.find(b"\n\n", line_end)
    ends = [i for i in ((blank + 3) if blank >= 0 else -1, (end + 2) if end >= 0 else -1) if i >= 0]
    if not ends:
        return False
    body_start = min(ends)
    server = handler.server
    environ = server.exchange_environ.copy()
    connection = ""
    lines = head[line_end + 1 : body_start].split(b"\n")
    if len(lines) > _MAX_HEADERS + 1:
        return False
    for raw in lines:
        raw = raw.rstrip(b"\r")
        if not raw:
            continue
        name, colon, value = raw.partition(b":")
        if not colon or not name or raw[0] in b" \t" or name != name.strip():
            return False
        key = name.decode("latin-1").upper().replace("-", "_")
        text = value.strip().decode("latin-1")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = text
            continue
        if key == "CONNECTION":
            connection = text.lower()
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    if target.startswith(b"//"):  # as http.server: never a scheme-relative URL
        target = b"/" + target.lstrip(b"/")
    path, _, query = target.decode("latin-1").partition("?")
    command = method.decode()
    environ["REQUEST_METHOD"] = command
    environ["PATH_INFO"] = unquote(path, "iso-8859-1")
    environ["QUERY_STRING"] = query
    environ["SERVER_PROTOCOL"] = version.decode()
    environ["REMOTE_ADDR"] = handler.client_address[0]
    length = int(environ.get("CONTENT_LENGTH") or 0) if environ.get("CONTENT_LENGTH", "0").isdigit() else 0
    environ["wsgi.input"] = io.BytesIO(head[body_start : body_start + length])
    environ["wsgi.errors"] = sys.stderr
    leftover = len(head) > body_start + length  # a pipelined request behind this one
    keep = "close" not in connection if version == b"HTTP/1.1" else "keep-alive" in connection
    keep = keep and server.keep_alive and not leftover
    handler.requestline, handler.command, handler.request_version = (
        line.decode("latin-1"),
        command,
        "HTTP/1.0",
    )
    _Exchange(handler, environ, command == "HEAD", keep).run()
    return True


class _Exchange:
    """One WSGI call and its answer, written with as few socket writes as possible."""

    def __init__(self, handler: RequestHandler, environ: dict[str, Any], head_only: bool, keep: bool) -> None:
        self.handler = handler
        self.environ = environ
        self.head_only = head_only
        self.keep = keep
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.sent = 0

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None:
            if self.headers_sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status is not None:
            raise AssertionError("start_response() called twice")
        self.status, self.headers = status, headers
        return self.write

    def head_bytes(self, length: int | None) -> bytes:
        keep = self.keep and length is not None
        lines = [
            f"{'HTTP/1.1' if keep else 'HTTP/1.0'} {self.status}",
            f"Date: {_http_date()}",
            "Server: CoalMine",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if length is not None and not any(name.lower() == "content-length" for name, _ in self.headers):
            lines.append(f"Content-Length: {length}")
        self.keep = keep
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def write(self, data: bytes) -> None:
        """The body in pieces (also the legacy write() callable of start_response)."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        out = b""
        if not self.headers_sent:
            out = self.head_bytes(None)
            self.headers_sent = True
        self.sent += len(data)
        if not self.head_only:
            out += data
        if out:
            self.handler.wfile.write(out)

    def run(self) -> None:
        handler = self.handler
        app = handler.server.get_app()
        assert app is not None
        if handler.server.quick is not None and not handler.quick:
            app = _gated(app, handler.server.heavy_gate)
        try:
            result = app(self.environ, self.start_response)
            try:
                if isinstance(result, list | tuple) or (
                    isinstance(result, PrefetchedBody) and result.complete
                ):
                    body = b"".join(result)
                    if self.status is None:
                        raise AssertionError("the app returned without calling start_response()")
                    if self.headers_sent:
                        self.write(body)
                    else:
                        self.headers_sent, self.sent = True, len(body)
                        out = self.head_bytes(len(body))
                        handler.wfile.write(out if self.head_only else out + body)
                else:
                    for data in result:
                        if data:
                            self.write(data)
                    if not self.headers_sent:
                        self.write(b"")
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except OSError:
            raise
        except Exception:
            log.exception("Error while serving %s", self.environ.get("PATH_INFO"))
            if self.headers_sent:  # a broken answer must not look complete: reset
                self.keep = False
                handler.broken = True
                reset(handler.connection)
                return
            body = error_body("Internal server error; the details are in the server log")
            self.status, self.headers = "500 Internal Server Error", [("Content-Type", JSON_CONTENT_TYPE)]
            self.keep, self.headers_sent, self.sent = False, True, len(body)
            out = self.head_bytes(len(body))
            handler.wfile.write(out if self.head_only else out + body)
        handler.kept = self.keep
        handler.log_request(int((self.status or "500")[:3]), self.sent)


class HeavyGate:
    """Turns for producing streamed answers: `slots` at a time, and none while a trigger is
    being answered (for at most `yield_at_most` seconds per piece, so that a steady stream
    of triggers cannot starve them)."""

    yield_at_most = 0.05

    def __init__(self, slots: int) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._quick = 0
        self._quick_done = threading.Condition(threading.Lock())

    def quick_begins(self) -> None:
        with self._quick_done:
            self._quick += 1

    def quick_ends(self) -> None:
        with self._quick_done:
            self._quick -= 1
            if not self._quick:
                self._quick_done.notify_all()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        with self._slots:
            with self._quick_done:
                if self._quick:
                    self._quick_done.wait_for(lambda: not self._quick, self.yield_at_most)
            yield


class _GatedIterable:
    """A response body whose every piece is produced in a turn of the gate."""

    def __init__(self, result: Iterable[bytes], gate: HeavyGate) -> None:
        self.result = result
        self.pieces = iter(result)
        self.gate = gate

    def __iter__(self) -> _GatedIterable:
        return self

    def __next__(self) -> bytes:
        with self.gate.turn():
            return next(self.pieces)

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


def _gated(app: Any, gate: HeavyGate) -> Any:
    """`app`, producing each piece of a streamed body only in a turn of the gate. The call
    itself and a body already computed need no turn, nor does sending."""

    def call(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        result = app(environ, start_response)
        if isinstance(result, list | tuple) or (isinstance(result, PrefetchedBody) and result.complete):
            return result
        return _GatedIterable(result, gate)

    return call


def reset(sock: socket.socket) -> None:
    """Close with a reset now: the usual shutdown would first send a clean end (FIN)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def for_method(head: bytes | bytearray, reply: bytes) -> bytes:
    """A canned reply as is, or only its head for a HEAD request."""
    if head.startswith(b"HEAD ") and reply:
        return reply[: reply.index(b"\r\n\r\n") + 4]
    return reply
