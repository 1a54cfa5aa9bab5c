"""The built-in HTTP(S) server: the standard library's wsgiref, safe against slow and abusive clients.

One acceptor thread owns the listening socket and every connection that has
not yet sent its whole request head. It reads them without blocking (a
selector), so an idle or trickling client costs a file descriptor and a small
buffer, never a worker. With HTTPS it does the TLS handshake the same way. A
connection goes to the fixed pool of workers only once its request line and
headers are complete, all within one deadline (request_timeout) from its
accept; workers never wait for a client to speak. A request body (the
dashboard's forms) is collected the same way, up to its Content-Length.
Past the limits in coal_mine.limits the client gets an immediate JSON error:
414 (request line), 431 (head), 413 (body), 503 (all workers busy). A failed TLS handshake is closed silently
(and logged).
When too many connections are waiting for their head, the oldest is dropped,
so a flood of idle connections cannot lock new clients out.
"""

from __future__ import annotations

import io
import logging
import queue
import re
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from coal_mine.http_errors import JSON_CONTENT_TYPE, error_body
from coal_mine.limits import MAX_PENDING_CONNECTIONS, MAX_REQUEST_BODY, MAX_REQUEST_HEAD, MAX_REQUEST_LINE

log = logging.getLogger("coal_mine.access")

_PARAMETER = re.compile(r"(?<=[?&;])([^=&;\s\"]*)=([^&;\s\"]*)")
_MIN_SCRUBBED_SECRET = 6  # shorter secrets would blank out ordinary words
_ACCEPTS_PER_ROUND = 64
# A waiting connection's TLS state: none, handshake under way, handshake done.
_PLAIN, _HANDSHAKE, _OPEN = "plain", "handshake", "open"


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


_BUSY = error_response("503 Service Unavailable", "Server is busy; try again")
_LINE_TOO_LONG = error_response("414 URI Too Long", f"Request line longer than {MAX_REQUEST_LINE} bytes")
_HEAD_TOO_LARGE = error_response(
    "431 Request Header Fields Too Large", f"Request head longer than {MAX_REQUEST_HEAD} bytes"
)
_BODY_TOO_LARGE = error_response(
    "413 Content Too Large", f"Request body longer than {MAX_REQUEST_BODY} bytes (or of unknown length)"
)
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*([^\r\n]*)", re.I)
_CHUNKED = re.compile(rb"\ntransfer-encoding[ \t]*:", re.I)


def _head_complete(buffer: bytes | bytearray) -> bool:
    """Whether the buffer holds the blank line that ends a request head."""
    return b"\n\r\n" in buffer or b"\n\n" in buffer


def _request_size(buffer: bytes | bytearray) -> tuple[int, int | None]:
    """The size of the head `buffer` completes, and of the whole request with its
    Content-Length body: None when the body is too large or of unknown length (chunked)."""
    ends = [i + n for i, n in ((buffer.find(b"\n\r\n"), 3), (buffer.find(b"\n\n"), 2)) if i >= 0]
    head_end = min(ends)
    head = bytes(buffer[:head_end])
    if _CHUNKED.search(head):
        return head_end, None
    lengths = {value.strip() for value in _CONTENT_LENGTH.findall(head)}
    if not lengths:
        return head_end, head_end
    length = lengths.pop()
    if lengths or not length.isdigit() or int(length) > MAX_REQUEST_BODY:
        return head_end, None
    return head_end, head_end + int(length)


def _line_too_long(buffer: bytes | bytearray) -> bool:
    """Whether the request line, with its line end, is longer than MAX_REQUEST_LINE."""
    end = buffer.find(b"\n")
    return end + 1 > MAX_REQUEST_LINE if end >= 0 else len(buffer) > MAX_REQUEST_LINE


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes straight to the socket (what wsgiref expects of wfile)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class RequestHandler(WSGIRequestHandler):
    """wsgiref's handler, fed a complete request head, answering errors in JSON,
    with a redacted access log. `timeout` bounds each write."""

    timeout = 10.0
    server_version = "CoalMine"
    default_request_version = "HTTP/1.0"  # answer even garbage with a status line and headers
    server: PooledWSGIServer

    def setup(self) -> None:
        sock, head = self.request
        self.connection = sock
        sock.settimeout(self.timeout)
        self.rfile: Any = io.BytesIO(head)
        self.wfile: Any = _SocketWriter(sock)

    def handle(self) -> None:
        self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline = self.request_version = self.command = ""
            self.connection.sendall(_LINE_TOO_LONG)
            return
        if not self.raw_requestline or not self.parse_request():
            return
        handler = ServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=False
        )
        handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref logs through it
        app = self.server.get_app()
        assert app is not None, "set_app() is called before serving"
        handler.run(app)

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
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.client_address[0], redact(format % args, self.server.secrets))


class PooledWSGIServer(WSGIServer):
    """A WSGIServer: one acceptor thread (serve_forever) and a fixed pool of worker threads.

    `ssl_context` serves HTTPS; `secrets` are scrubbed from the access log.
    """

    request_queue_size = 1024  # listen backlog, sized for bursts at the top of the hour
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: Any,
        *,
        workers: int = 16,
        queue_size: int = 512,
        request_timeout: float = 10.0,
        max_pending: int = MAX_PENDING_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        secrets: Iterable[str] = (),
        handler_class: type[RequestHandler] = RequestHandler,
    ) -> None:
        self._workers: list[threading.Thread] = []  # server_close() runs if binding fails
        self._wake_read, self._wake_write = socket.socketpair()
        handler = type("Handler", (handler_class,), {"timeout": request_timeout})
        super().__init__(address, handler)
        self.set_app(app)
        self.ssl_context = ssl_context
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self.secrets = tuple(s for s in secrets if s)
        self.request_timeout = request_timeout
        self.max_pending = max_pending
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stopping = False
        self._stopped = threading.Event()
        self._workers = [
            threading.Thread(target=self._work, name=f"http-worker-{i}", daemon=True) for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall start-up.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port
        self.setup_environ()

    # --- acceptor ---------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections and collect request heads until shutdown()."""
        self._stopped.clear()
        selector = selectors.DefaultSelector()
        # fd -> [socket, address, head bytes so far, deadline, TLS state (_PLAIN, _HANDSHAKE,
        # _OPEN), events the selector waits for]; in accept order, so the oldest comes first.
        pending: dict[int, list[Any]] = {}
        self.socket.setblocking(False)
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wake_read, selectors.EVENT_READ)
        try:
            while not self._stopping:
                timeout = None
                if pending:
                    oldest = next(iter(pending.values()))
                    timeout = max(0.0, oldest[3] - time.monotonic())
                for key, _ in selector.select(timeout):
                    if key.fileobj is self.socket:
                        self._accept(selector, pending)
                    elif key.fileobj is self._wake_read:
                        self._wake_read.recv(64)
                    elif key.fd in pending:
                        self._read(selector, pending, key.fd)
                now = time.monotonic()
                while pending and next(iter(pending.values()))[3] <= now:
                    self._drop(selector, pending, next(iter(pending)), b"")
        finally:
            for fd in list(pending):
                self._drop(selector, pending, fd, b"")
            selector.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever() and wait until it has returned."""
        self._stopping = True
        self._wake_write.send(b"x")
        self._stopped.wait()

    def _accept(self, selector: selectors.BaseSelector, pending: dict[int, list[Any]]) -> None:
        for _ in range(_ACCEPTS_PER_ROUND):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors
                log.warning("accept failed: %s", exc)
                if pending:
                    self._drop(selector, pending, next(iter(pending)), _BUSY)
                else:
                    time.sleep(0.01)
                return
            if len(pending) >= self.max_pending:
                # The oldest waiting connection has had the longest chance to send its request.
                self._drop(selector, pending, next(iter(pending)), _BUSY)
            sock.setblocking(False)
            # The listening socket is wrapped, so with HTTPS `sock` is an SSLSocket whose
            # handshake has not started.
            state = _PLAIN if self.ssl_context is None else _HANDSHAKE
            pending[sock.fileno()] = [
                sock,
                address,
                bytearray(),
                time.monotonic() + self.request_timeout,
                state,
                selectors.EVENT_READ,
            ]
            selector.register(sock, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, pending: dict[int, list[Any]], fd: int) -> None:
        """Go on with a connection the selector found ready: handshake, then head bytes."""
        entry = pending[fd]
        sock, address, head, _, state, _ = entry
        if state is _HANDSHAKE and not self._handshake(selector, pending, fd, entry):
            return
        while True:
            try:
                data = sock.recv(MAX_REQUEST_HEAD + MAX_REQUEST_BODY + 1 - len(head))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                if state is not _PLAIN:
                    self._wait_for(selector, entry, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._wait_for(selector, entry, selectors.EVENT_WRITE)
                return
            except OSError:
                data = b""
            if not data:
                self._drop(selector, pending, fd, b"")
                return
            head += data
            if _line_too_long(head):
                self._drop(selector, pending, fd, _LINE_TOO_LONG)
                return
            if _head_complete(head):
                head_size, size = _request_size(head)
                if head_size > MAX_REQUEST_HEAD:
                    self._drop(selector, pending, fd, _HEAD_TOO_LARGE)
                    return
                if size is None:
                    self._drop(selector, pending, fd, _BODY_TOO_LARGE)
                    return
                if len(head) >= size:
                    break
            elif len(head) > MAX_REQUEST_HEAD:
                self._drop(selector, pending, fd, _HEAD_TOO_LARGE)
                return
            if state is _PLAIN:
                return
            # TLS: read on until OpenSSL wants more from the network, since the selector
            # does not see records (or plaintext, sock.pending()) that OpenSSL already holds.
        selector.unregister(sock)
        del pending[fd]
        try:
            self._queue.put_nowait((sock, address, bytes(head)))
        except queue.Full:
            log.warning("%s rejected: all workers busy", address[0])
            self._reply_and_close(sock, _BUSY)

    def _handshake(
        self, selector: selectors.BaseSelector, pending: dict[int, list[Any]], fd: int, entry: list[Any]
    ) -> bool:
        """Take the TLS handshake one step; whether it is done (a failed one drops the connection)."""
        try:
            entry[0].do_handshake()
        except ssl.SSLWantReadError:
            self._wait_for(selector, entry, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._wait_for(selector, entry, selectors.EVENT_WRITE)
            return False
        except OSError as exc:  # ssl.SSLError too: not TLS at all, a bad hello, a reset
            log.info("%s TLS handshake failed: %s", entry[1][0], exc)
            self._drop(selector, pending, fd, b"")
            return False
        entry[4] = _OPEN
        return True

    @staticmethod
    def _wait_for(selector: selectors.BaseSelector, entry: list[Any], events: int) -> None:
        if entry[5] != events:
            selector.modify(entry[0], events)
            entry[5] = events

    def _drop(
        self, selector: selectors.BaseSelector, pending: dict[int, list[Any]], fd: int, reply: bytes
    ) -> None:
        entry = pending.pop(fd)
        selector.unregister(entry[0])
        # Mid-handshake there is no channel to answer on.
        self._reply_and_close(entry[0], b"" if entry[4] is _HANDSHAKE else reply)

    @staticmethod
    def _reply_and_close(sock: socket.socket, reply: bytes) -> None:
        """Best effort, never blocking: these replies fit in an empty socket buffer
        (with TLS: in one record)."""
        try:
            if reply:
                sock.setblocking(False)
                sock.send(reply)
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    # --- workers ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            sock, client_address, head = item
            try:
                self.finish_request((sock, head), client_address)
            except OSError as exc:  # timeouts and resets while answering
                log.info("%s connection dropped: %s", client_address[0], exc)
            except Exception:  # noqa: BLE001 - one bad request must not kill a worker
                self.handle_error(sock, client_address)
            finally:
                self.shutdown_request(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("Error while serving %s", client_address[0])

    def server_close(self) -> None:
        """Stop accepting, let the workers finish what they hold, then close."""
        super().server_close()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=15)
        self._wake_read.close()
        self._wake_write.close()
