"""The built-in HTTP server: the standard library's wsgiref with a bounded worker pool.

Connections are accepted by one thread and handed to a fixed number of
workers through a bounded queue; when the queue is full the client gets an
immediate 503 instead of waiting in an unbounded line. Each connection has a
read timeout, so a silent client only ever holds one worker for that long.
"""

from __future__ import annotations

import logging
import queue
import re
import socket
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

log = logging.getLogger("coal_mine.access")

_AUTH_KEY = re.compile(r"(auth_key=)[^&;\s\"]*")
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
         b"Connection: close\r\n\r\n"
         b'{\n    "status": "error",\n    "error": "Server is busy; try again"\n}\n')


def redact(text: str) -> str:
    """Hide the value of any auth_key parameter."""
    return _AUTH_KEY.sub(r"\1<redacted>", text)


class RequestHandler(WSGIRequestHandler):
    """wsgiref's handler with a read timeout and a redacted access log."""

    timeout = 10.0
    server_version = "CoalMine"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.client_address[0], redact(format % args))

    def handle(self) -> None:
        try:
            super().handle()
        except (TimeoutError, ConnectionError) as exc:
            log.info("%s connection dropped: %s", self.client_address[0], exc)


class PooledWSGIServer(WSGIServer):
    """A WSGIServer whose requests run on a fixed pool of worker threads."""

    request_queue_size = 1024  # listen backlog, sized for bursts at the top of the hour
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Any, *, workers: int = 16,
                 queue_size: int = 512, request_timeout: float = 10.0,
                 handler_class: type[RequestHandler] = RequestHandler) -> None:
        handler = type("Handler", (handler_class,), {"timeout": request_timeout})
        super().__init__(address, handler)
        self.set_app(app)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._workers = [
            threading.Thread(target=self._work, name=f"http-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall start-up.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port
        self.setup_environ()

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        try:
            self._queue.put_nowait((request, client_address))
        except queue.Full:
            log.warning("%s rejected: all workers busy", client_address[0])
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one bad request must not kill a worker
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("Error while serving %s", client_address[0])

    def server_close(self) -> None:
        """Stop accepting, let the workers finish what they hold, then close."""
        super().server_close()
        workers = getattr(self, "_workers", [])  # absent when binding failed in __init__
        for _ in workers:
            self._queue.put(None)
        for worker in workers:
            worker.join(timeout=15)
