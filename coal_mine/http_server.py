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

Slow readers: a whole response must be written within one deadline; triggers
(the `quick` paths) go first in the queue and have workers of their own; other
requests compute one at a time (see PooledWSGIServer); shutdown cuts off the
clients still being answered after a short grace.
"""

from __future__ import annotations

import contextlib
import logging
import re
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from coal_mine.http_exchange import (  # noqa: F401 - error_response and redact are this module's API too
    BODY_TOO_LARGE,
    BUSY,
    HEAD_TOO_LARGE,
    LINE_TOO_LONG,
    HeavyGate,
    RequestHandler,
    error_response,
    for_method,
    redact,
)
from coal_mine.http_queue import WorkQueue
from coal_mine.limits import (
    MAX_PENDING_CONNECTIONS,
    MAX_REQUEST_BODY,
    MAX_REQUEST_HEAD,
    MAX_REQUEST_LINE,
    RESPONSE_TIME_LIMIT,
)

log = logging.getLogger("coal_mine.access")

_ACCEPTS_PER_ROUND = 64
# A waiting connection's TLS state: none, handshake under way, handshake done.
_PLAIN, _HANDSHAKE, _OPEN = "plain", "handshake", "open"
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


@dataclass(slots=True)
class _Waiting:
    """A connection the acceptor holds until its request head is complete."""

    sock: socket.socket
    address: Any
    head: bytearray
    deadline: float  # time.monotonic() by which the whole head must be in
    tls: str  # _PLAIN, _HANDSHAKE or _OPEN
    events: int  # what the selector waits for on it


class PooledWSGIServer(WSGIServer):
    """A WSGIServer: one acceptor thread (serve_forever) and a fixed pool of worker threads.

    `ssl_context` serves HTTPS; `secrets` are scrubbed from the access log.
    `quick(path)` picks out the requests that must never wait behind slow ones
    (triggers): they go first in the queue, and `reserved_workers` extra workers
    serve only them, so clients reading long answers slowly cannot stall them; and the
    other requests produce streamed answers `heavy_slots` at a time, so many long
    answers computing at once cannot starve them of the interpreter either.
    """

    request_queue_size = 1024  # listen backlog, sized for bursts at the top of the hour
    allow_reuse_address = True
    shutdown_grace = 5.0  # seconds server_close() lets workers finish before cutting clients off
    # Streamed answers produced at once, when `quick` is given. Python runs one thread at a
    # time: the more threads are busy producing long answers, the longer a trigger waits.
    heavy_slots = 1

    def __init__(
        self,
        address: tuple[str, int],
        app: Any,
        *,
        workers: int = 16,
        reserved_workers: int = 4,
        quick: Callable[[str], bool] | None = None,
        queue_size: int = 512,
        request_timeout: float = 10.0,
        response_timeout: float = RESPONSE_TIME_LIMIT,
        max_pending: int = MAX_PENDING_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        secrets: Iterable[str] = (),
        handler_class: type[RequestHandler] = RequestHandler,
        keep_alive: bool = True,
    ) -> None:
        # server_close() runs if binding fails: what it touches exists before.
        self._workers: list[threading.Thread] = []
        self._queue = WorkQueue(queue_size)
        self._active: set[socket.socket] = set()  # connections a worker is answering
        self._active_lock = threading.Lock()
        self._kept: deque[tuple[socket.socket, Any]] = deque()  # answered keep-alive connections
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        handler = type("Handler", (handler_class,), {"timeout": response_timeout})
        super().__init__(address, handler)
        self.set_app(app)
        self.ssl_context = ssl_context
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self.secrets = tuple(s for s in secrets if s)
        # HTTP/1.1 keep-alive, over plain HTTP: an idle kept connection waits with the
        # acceptor (under request_timeout and max_pending), never in a worker.
        self.keep_alive = keep_alive and ssl_context is None
        self.exchange_environ = dict(
            self.base_environ,
            CONTENT_TYPE="text/plain",
            SERVER_SOFTWARE="CoalMine",
            **{
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "https" if ssl_context else "http",
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            },
        )
        if ssl_context is not None:
            self.exchange_environ["HTTPS"] = "on"
        self.request_timeout = request_timeout
        self.max_pending = max_pending
        self.quick = quick
        self.heavy_gate = HeavyGate(self.heavy_slots)
        self._stopping = False
        self._stopped = threading.Event()
        self._workers = [
            threading.Thread(target=self._work, args=(False,), name=f"http-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        if quick is not None:
            self._workers += [
                threading.Thread(target=self._work, args=(True,), name=f"http-trigger-{i}", daemon=True)
                for i in range(reserved_workers)
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
        # In accept order, so the oldest comes first.
        pending: dict[int, _Waiting] = {}
        self.socket.setblocking(False)
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wake_read, selectors.EVENT_READ)
        try:
            while not self._stopping:
                timeout = None
                if pending:
                    oldest = next(iter(pending.values()))
                    timeout = max(0.0, oldest.deadline - time.monotonic())
                for key, _ in selector.select(timeout):
                    if key.fileobj is self.socket:
                        self._accept(selector, pending)
                    elif key.fileobj is self._wake_read:
                        with contextlib.suppress(BlockingIOError):
                            self._wake_read.recv(4096)
                        self._take_back(selector, pending)
                    elif key.fd in pending:
                        self._read(selector, pending, key.fd)
                now = time.monotonic()
                while pending and next(iter(pending.values())).deadline <= now:
                    self._drop(selector, pending, next(iter(pending)), b"")
        finally:
            for fd in list(pending):
                self._drop(selector, pending, fd, b"")
            selector.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever() and wait until it has returned."""
        if not self._stopping:
            self._stopping = True
            with contextlib.suppress(OSError):  # already closed by server_close()
                self._wake_write.send(b"x")
        self._stopped.wait()

    def keep(self, sock: socket.socket, address: Any) -> None:
        """Hand an answered keep-alive connection back to the acceptor (from a worker)."""
        self._kept.append((sock, address))
        with contextlib.suppress(OSError):  # a full wake-up pipe already wakes it
            self._wake_write.send(b"k")

    def _take_back(self, selector: selectors.BaseSelector, pending: dict[int, _Waiting]) -> None:
        while self._kept:
            sock, address = self._kept.popleft()
            if len(pending) >= self.max_pending:
                self._drop(selector, pending, next(iter(pending)), BUSY)
            sock.setblocking(False)
            deadline = time.monotonic() + self.request_timeout
            pending[sock.fileno()] = _Waiting(
                sock, address, bytearray(), deadline, _PLAIN, selectors.EVENT_READ
            )
            selector.register(sock, selectors.EVENT_READ)

    def _accept(self, selector: selectors.BaseSelector, pending: dict[int, _Waiting]) -> None:
        for _ in range(_ACCEPTS_PER_ROUND):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors
                log.warning("accept failed: %s", exc)
                if pending:
                    self._drop(selector, pending, next(iter(pending)), BUSY)
                else:
                    time.sleep(0.01)
                return
            if len(pending) >= self.max_pending:
                # The oldest waiting connection has had the longest chance to send its request.
                self._drop(selector, pending, next(iter(pending)), BUSY)
            sock.setblocking(False)
            # The listening socket is wrapped, so with HTTPS `sock` is an SSLSocket whose
            # handshake has not started.
            state = _PLAIN if self.ssl_context is None else _HANDSHAKE
            deadline = time.monotonic() + self.request_timeout
            pending[sock.fileno()] = _Waiting(
                sock, address, bytearray(), deadline, state, selectors.EVENT_READ
            )
            selector.register(sock, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, pending: dict[int, _Waiting], fd: int) -> None:
        """Go on with a connection the selector found ready: handshake, then head bytes."""
        entry = pending[fd]
        sock, head = entry.sock, entry.head
        if entry.tls is _HANDSHAKE and not self._handshake(selector, pending, fd, entry):
            return
        while True:
            try:
                data = sock.recv(MAX_REQUEST_HEAD + MAX_REQUEST_BODY + 1 - len(head))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                if entry.tls is not _PLAIN:
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
                self._drop(selector, pending, fd, LINE_TOO_LONG)
                return
            if _head_complete(head):
                head_size, size = _request_size(head)
                if head_size > MAX_REQUEST_HEAD:
                    self._drop(selector, pending, fd, HEAD_TOO_LARGE)
                    return
                if size is None:
                    self._drop(selector, pending, fd, BODY_TOO_LARGE)
                    return
                if len(head) >= size:
                    break
            elif len(head) > MAX_REQUEST_HEAD:
                self._drop(selector, pending, fd, HEAD_TOO_LARGE)
                return
            if entry.tls is _PLAIN:
                return
            # TLS: read on until OpenSSL wants more from the network, since the selector
            # does not see records (or plaintext, sock.pending()) that OpenSSL already holds.
        selector.unregister(sock)
        del pending[fd]
        request = bytes(head)
        quick = self._is_quick(request)
        if quick:
            self.heavy_gate.quick_begins()
        if not self._queue.put((sock, entry.address, request, quick), quick):
            if quick:
                self.heavy_gate.quick_ends()
            log.warning("%s rejected: all workers busy", entry.address[0])
            self._reply_and_close(sock, for_method(request, BUSY))

    def _is_quick(self, head: bytes) -> bool:
        """Whether the request's path is one that `quick` picks out."""
        if self.quick is None:
            return False
        parts = head[: head.find(b"\n")].split(None, 2)
        if len(parts) < 2:
            return False
        return self.quick(parts[1].partition(b"?")[0].decode("latin-1"))

    def _handshake(
        self, selector: selectors.BaseSelector, pending: dict[int, _Waiting], fd: int, entry: _Waiting
    ) -> bool:
        """Take the TLS handshake one step; whether it is done (a failed one drops the connection)."""
        try:
            entry.sock.do_handshake()  # type: ignore[attr-defined]  # an SSLSocket here
        except ssl.SSLWantReadError:
            self._wait_for(selector, entry, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._wait_for(selector, entry, selectors.EVENT_WRITE)
            return False
        except OSError as exc:  # ssl.SSLError too: not TLS at all, a bad hello, a reset
            log.info("%s TLS handshake failed: %s", entry.address[0], exc)
            self._drop(selector, pending, fd, b"")
            return False
        entry.tls = _OPEN
        return True

    @staticmethod
    def _wait_for(selector: selectors.BaseSelector, entry: _Waiting, events: int) -> None:
        if entry.events != events:
            selector.modify(entry.sock, events)
            entry.events = events

    def _drop(
        self, selector: selectors.BaseSelector, pending: dict[int, _Waiting], fd: int, reply: bytes
    ) -> None:
        entry = pending.pop(fd)
        selector.unregister(entry.sock)
        # Mid-handshake there is no channel to answer on.
        reply = b"" if entry.tls is _HANDSHAKE else for_method(entry.head, reply)
        self._reply_and_close(entry.sock, reply)

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

    def _work(self, reserved: bool) -> None:
        while True:
            item = self._queue.get(reserved)
            if item is None:
                return
            sock, client_address, head, quick = item
            with self._active_lock:
                self._active.add(sock)
            kept = False
            try:
                handler = self.RequestHandlerClass((sock, head, quick), client_address, self)  # type: ignore[arg-type]
                kept = handler.kept and not self._stopping  # type: ignore[attr-defined]
            except OSError as exc:  # timeouts and resets while answering
                log.info("%s connection dropped: %s", client_address[0], exc)
            except Exception:  # noqa: BLE001 - one bad request must not kill a worker
                self.handle_error(sock, client_address)
            finally:
                if quick:
                    self.heavy_gate.quick_ends()
                with self._active_lock:
                    self._active.discard(sock)
                if kept:
                    self.keep(sock, client_address)
                else:
                    self.shutdown_request(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("Error while serving %s", client_address[0])

    def server_close(self) -> None:
        """Stop accepting; let the workers finish what they hold for at most
        `shutdown_grace` seconds in all, then cut off the clients still being answered
        (slow readers) and refuse the requests still waiting."""
        super().server_close()
        self._queue.close()
        deadline = time.monotonic() + self.shutdown_grace
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        for sock, _, head, quick in self._queue.drain():
            if quick:
                self.heavy_gate.quick_ends()
            self._reply_and_close(sock, for_method(head, BUSY))
        with self._active_lock:
            held = list(self._active)
        for sock in held:
            # Wakes a worker blocked sending to it; the worker then closes it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # beneath TLS: no record to send
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline + 1.0 - time.monotonic()))
        while self._kept:
            self._kept.popleft()[0].close()
        self._wake_read.close()
        self._wake_write.close()
