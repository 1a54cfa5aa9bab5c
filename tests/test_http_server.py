"""The HTTP server against hostile clients: oversized requests, tricklers, idle floods, saturation."""

from __future__ import annotations

import json
import logging
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from coal_mine.http_server import error_response, redact
from coal_mine.limits import MAX_REQUEST_HEAD, MAX_REQUEST_LINE
from tests.helpers import InProcessServer, parse_response, raw_request, read_all, timed

HEAD_TIMEOUT = 2.0


@pytest.fixture
def served() -> Iterator[InProcessServer]:
    with InProcessServer(workers=2, request_timeout=HEAD_TIMEOUT, max_pending=40) as server:
        yield server


def make_canary(server: InProcessServer, name: str = "job") -> str:
    status, body = server.call("create", name=name, periodicity=3600)
    assert status == 200, body
    return body["canary"]["id"]


def trigger_latencies(server: InProcessServer, canary_id: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        seconds, (status, body) = timed(server.call, f"/{canary_id}", timeout=10)
        assert status == 200 and body["status"] == "ok"
        latencies.append(seconds)
    return latencies


def error_json(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert data["status"] == "error" and data["error"]
    return data


def test_request_line_limit_is_a_json_414(served: InProcessServer) -> None:
    prefix, suffix = "GET /coal-mine/v1/canary/list?search=", " HTTP/1.0\r\n"
    fill = MAX_REQUEST_LINE - len(prefix) - len(suffix)
    status, body = raw_request(served.port, f"{prefix}{'a' * fill}{suffix}\r\n".encode())
    assert status == 400 and "Search is too long" in error_json(body)["error"]  # at the limit: served
    status, body = raw_request(served.port, f"{prefix}{'a' * (fill + 1)}{suffix}\r\n".encode())
    assert status == 414 and str(MAX_REQUEST_LINE) in error_json(body)["error"]
    # A client that never ends its request line is cut off at the limit too.
    status, body = raw_request(served.port, b"GET /" + b"x" * (MAX_REQUEST_LINE + 10))
    assert status == 414


def test_request_head_limit_is_a_json_431(served: InProcessServer) -> None:
    headers = "".join(f"X-Filler-{i}: {'v' * 1000}\r\n" for i in range(MAX_REQUEST_HEAD // 1000 + 1))
    status, body = raw_request(
        served.port, f"GET /coal-mine/v1/canary/list HTTP/1.0\r\n{headers}\r\n".encode()
    )
    assert status == 431 and str(MAX_REQUEST_HEAD) in error_json(body)["error"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",
        b"GET /coal-mine/v1/canary/list HTTP/9.x\r\n\r\n",
        b"GET /coal-mine/v1/canary/list HTTP/1.0\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        + b"\r\n",
    ],
    ids=["garbage", "bad-version", "too-many-headers"],
)
def test_malformed_requests_get_json_errors(served: InProcessServer, request_bytes: bytes) -> None:
    status, body = raw_request(served.port, request_bytes)
    assert 400 <= status < 500
    error_json(body)


def test_head_arriving_in_pieces_is_served(served: InProcessServer) -> None:
    canary_id = make_canary(served)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        for piece in (b"GET /", canary_id.encode(), b"?comment=slow HTTP/1.0\r\n", b"Host: x\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.05)
        status, body = parse_response(read_all(sock))
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert served.logic.get(canary_id).history[0][1] == "Triggered (slow)"


def test_client_closing_before_its_head_is_complete_costs_nothing(served: InProcessServer) -> None:
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(b"GET /coal-mine/v1/canary/li")
    canary_id = make_canary(served)
    assert trigger_latencies(served, canary_id, 1)


def trickle(port: int, results: list[float], stop: threading.Event) -> None:
    """Send a request head one byte at a time, each well inside the timeout, until cut off."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            for byte in b"GET /coal-mine/v1/canary/list?" + b"x" * 10000:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # the server closed the connection
        results.append(time.monotonic() - start)


def test_trickling_clients_are_cut_off_and_never_block_triggers(served: InProcessServer) -> None:
    canary_id = make_canary(served)
    baseline = trigger_latencies(served, canary_id, 10)
    cut_off: list[float] = []
    stop = threading.Event()
    tricklers = [threading.Thread(target=trickle, args=(served.port, cut_off, stop)) for _ in range(10)]
    for thread in tricklers:
        thread.start()
    try:
        time.sleep(0.3)
        under_attack = trigger_latencies(served, canary_id, 10)
    finally:
        for thread in tricklers:
            thread.join(HEAD_TIMEOUT + 10)
        stop.set()
    # Ten tricklers and only two workers: had they held workers, triggers would wait seconds.
    assert max(under_attack) < max(0.5, 20 * statistics.median(baseline))
    # The deadline is for the whole head, although each byte came well inside it.
    assert len(cut_off) == 10
    assert all(HEAD_TIMEOUT - 0.2 < seconds < HEAD_TIMEOUT + 2 for seconds in cut_off), cut_off


def test_idle_connection_flood_drops_the_oldest_and_triggers_go_on(served: InProcessServer) -> None:
    canary_id = make_canary(served)
    baseline = trigger_latencies(served, canary_id, 10)
    idle = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(200)]
    try:
        under_flood = trigger_latencies(served, canary_id, 10)
        # max_pending is 40: the oldest idle connections were told the server is busy and closed.
        status, body = parse_response(read_all(idle[0]))
        assert status == 503 and "busy" in error_json(body)["error"]
    finally:
        for sock in idle:
            sock.close()
    assert max(under_flood) < max(0.5, 20 * statistics.median(baseline))


def test_idle_connections_are_closed_after_the_head_deadline(served: InProcessServer) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=HEAD_TIMEOUT + 5) as sock:
        seconds, raw = timed(read_all, sock)
    assert raw == b"" and HEAD_TIMEOUT - 0.2 < seconds < HEAD_TIMEOUT + 2


def test_saturated_workers_answer_503_at_once() -> None:
    release = threading.Event()

    def slow_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        release.wait(20)
        start_response("200 OK", [("Content-Type", "application/json; charset=utf-8")])
        return [b'{"status": "ok"}']

    request = b"GET /coal-mine/v1/canary/list HTTP/1.0\r\n\r\n"
    with InProcessServer(slow_app, workers=1, queue_size=1, request_timeout=5) as server:
        held = []
        for _ in range(2):  # one in the worker, one in the queue
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
            sock.sendall(request)
            held.append(sock)
            time.sleep(0.2)
        try:
            seconds, (status, body) = timed(raw_request, server.port, request)
            assert status == 503 and "busy" in error_json(body)["error"]
            assert seconds < 1.0
        finally:
            release.set()
            answers = [parse_response(read_all(sock))[0] for sock in held]
            for sock in held:
                sock.close()
        assert answers == [200, 200]


def test_access_log_never_shows_the_key(caplog: pytest.LogCaptureFixture) -> None:
    key = "Key-Of-The-Mine/42+"
    caplog.set_level(logging.INFO, logger="coal_mine.access")
    with InProcessServer(auth_key=key, secrets=[key]) as server:
        canary_id = make_canary_with_key(server, key)
        for raw in (
            f"auth_key={key}",
            "auth_key=Key-Of-The-Mine%2F42%2B",
            f"AUTH%5Fkey={key}",
            f"Auth-Key={key}",
            f"name={key}",
            "name=Key-Of-The-Mine%2F42%2B",
            f"nonsense={key}",
        ):
            for path in ("/coal-mine/v1/canary/get", "/coal-mine/v1/canary/list", f"/{canary_id}"):
                status, body = raw_request(server.port, f"GET {path}?{raw} HTTP/1.0\r\n\r\n".encode())
                assert status in (200, 400, 401, 404)
                assert key.encode() not in body
        raw_request(server.port, f"GET /?auth_key={key} HTTP/9.x\r\n\r\n".encode())  # an http.server error
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "auth_key=<redacted>" in logged and "HTTP/9.x" in logged
    for form in (key, "Key-Of-The-Mine%2F42%2B", "Key-Of-The-Mine"):
        assert form not in logged


def make_canary_with_key(server: InProcessServer, key: str) -> str:
    status, body = server.call("create", name="job", periodicity=3600, auth_key=key)
    assert status == 200, body
    return body["canary"]["id"]


def test_redact_keeps_other_parameters() -> None:
    line = '"GET /coal-mine/v1/canary/get?name=a&auth_key=k1&x=auth_key HTTP/1.1" 200 -'
    assert redact(line) == line.replace("auth_key=k1", "auth_key=<redacted>")
    assert redact("get?name=abc", secrets=["abc"]) == "get?name=abc"  # too short to scrub blindly
    assert redact("get?name=abcdefg", secrets=["abcdefg"]) == "get?name=<redacted>"


def test_error_response_is_complete_http() -> None:
    status, body = parse_response(error_response("503 Service Unavailable", 'say "hi"'))
    assert status == 503 and json.loads(body) == {"status": "error", "error": 'say "hi"'}
