"""The server's own WSGI exchange: the environment an app gets, answers in one write,
HTTP/1.1 keep-alive, errors, and the fallback to http.server for unusual requests."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import InProcessServer, read_all


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer with the parts of the environment a WSGI app relies on."""
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    keys = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "CONTENT_TYPE", "REMOTE_ADDR")
    data = {key: environ.get(key) for key in keys}
    data["HTTP_X_THING"] = environ.get("HTTP_X_THING")
    data["body"] = environ["wsgi.input"].read().decode()
    data["wsgi"] = [environ["wsgi.version"], environ["wsgi.url_scheme"], environ["wsgi.multithread"]]
    data["has_os_environ"] = "PATH" in environ
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(data).encode()]


@pytest.fixture
def echo() -> Iterator[InProcessServer]:
    with InProcessServer(echo_app, request_timeout=2.0) as server:
        yield server


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return read_all(sock)


def body_of(raw: bytes) -> dict[str, Any]:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def test_the_app_gets_a_complete_wsgi_environment(echo: InProcessServer) -> None:
    raw = exchange(
        echo.port,
        b"POST /a%20b/c?x=1&y=%41 HTTP/1.0\r\nX-Thing: one\r\nx-thing:  two \r\n"
        b"Content-Length: 5\r\n\r\nhello",
    )
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
    assert body_of(raw) == {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/a b/c",
        "QUERY_STRING": "x=1&y=%41",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "CONTENT_TYPE": "text/plain",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_THING": "one,two",
        "body": "hello",
        "wsgi": [[1, 0], "http", True],
        "has_os_environ": False,
    }


def test_an_answer_has_length_date_and_server_headers(echo: InProcessServer) -> None:
    raw = exchange(echo.port, b"GET /x HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.0 200 OK"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Server"] == "CoalMine" and headers["Date"].endswith(" GMT")
    assert headers["Content-Length"] == str(len(body))


def test_keep_alive_serves_many_requests_on_one_connection(echo: InProcessServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    try:
        for n in range(5):
            conn.request("GET", f"/n?{n}")
            response = conn.getresponse()
            assert response.status == 200 and response.version == 11
            assert json.loads(response.read())["QUERY_STRING"] == str(n)
            if n == 0:
                first = conn.sock
            assert conn.sock is first  # the same connection throughout
    finally:
        conn.close()


def test_http_1_0_and_connection_close_are_answered_and_closed(echo: InProcessServer) -> None:
    for request in (
        b"GET /x HTTP/1.0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as sock:
            sock.sendall(request)
            raw = read_all(sock)  # returns only because the server closes
        assert raw.startswith(b"HTTP/1.0 200 OK") and body_of(raw)["PATH_INFO"] == "/x"


def test_an_idle_kept_connection_is_closed_after_the_request_timeout(echo: InProcessServer) -> None:
    with socket.create_connection(("127.0.0.1", echo.port), timeout=10) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        began = time.monotonic()
        raw = read_all(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert 1.5 < time.monotonic() - began < 6


def streaming_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one "
    yield b"two"


def test_streamed_answers_close_the_connection() -> None:
    with (
        InProcessServer(streaming_app) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
        raw = read_all(sock)  # returns only because the server closes
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"Content-Length" not in head
    assert body == b"one two"


def test_a_complete_list_is_sent_with_its_length_and_keeps_the_connection() -> None:
    with InProcessServer() as server:
        server.logic.create("job", 3600)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for _ in range(2):
                conn.request("GET", "/coal-mine/v1/canary/list")
                response = conn.getresponse()
                assert response.version == 11 and response.getheader("Content-Length")
                assert json.loads(response.read())["canaries"][0]["name"] == "job"
        finally:
            conn.close()


def test_an_app_error_is_a_json_500(echo: InProcessServer) -> None:
    raw = exchange(echo.port, b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 500 ")
    assert body_of(raw)["status"] == "error"


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /x HTTP/1.0\r\nX-Folded: a\r\n b\r\n\r\n", b"GET /x\r\n\r\n", b"GET /x HTTP/2.0\r\n\r\n"],
)
def test_unusual_requests_are_left_to_http_server(echo: InProcessServer, request_bytes: bytes) -> None:
    raw = exchange(echo.port, request_bytes)
    # http.server folds the header, refuses HTTP/0.9 and 2 with a JSON 400/505: never a crash.
    assert raw.startswith(b"HTTP/1.0 ")


def test_triggers_over_one_kept_connection() -> None:
    with InProcessServer() as server:
        canary = server.logic.create("job", 3600)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for _ in range(3):
                conn.request("GET", f"/{canary.id}")
                response = conn.getresponse()
                assert response.status == 200 and b'"status": "ok"' in response.read()
        finally:
            conn.close()
        history = server.logic.get(canary.id).history
        assert history is not None and [c for _, c in history[:3]] == ["Triggered"] * 3
