"""The HTTP server against slow readers, and the details of its answers: HEAD, the Server
header, control characters in the access log (issue 19, items 5 to 7)."""

from __future__ import annotations

import importlib.util
import logging
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coal_mine.api import Api
from coal_mine.http_server import PooledWSGIServer
from coal_mine.limits import MAX_REQUEST_LINE
from tests.helpers import REPO, InProcessServer, parse_response, raw_request, read_all

BIG_PIECE = b"x" * 65536
BIG_PIECES = 1024  # 64 MiB: far more than any socket buffer holds


def load_slow_readers() -> Any:
    spec = importlib.util.spec_from_file_location("bench_slow_readers", REPO / "bench" / "slow_readers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def head_and_body(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return read_all(sock)


@pytest.fixture
def served() -> Iterator[InProcessServer]:
    with InProcessServer(quick=Api.is_trigger_path) as server:
        yield server


def make_canary(server: InProcessServer, name: str = "job") -> str:
    status, body = server.call("create", name=name, periodicity=3600)
    assert status == 200, body
    return body["canary"]["id"]


# --- HEAD and the Server header ------------------------------------------------------------


def test_head_on_a_trigger_url_triggers_and_sends_no_body(served: InProcessServer) -> None:
    canary_id = make_canary(served)
    for path in (f"/{canary_id}", f"/coal-mine/v1/canary/trigger?id={canary_id}&comment=via+head"):
        get = exchange(served.port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        head = exchange(served.port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
        get_headers, get_body = head_and_body(get)
        head_headers, head_body = head_and_body(head)
        assert head.startswith(b"HTTP/1.0 200 ")
        assert head_body == b"" and get_body
        assert head_headers["content-length"] == get_headers["content-length"] == str(len(get_body))
    history = served.logic.get(canary_id).history
    assert history is not None
    assert [comment for _, comment in history[:4]] == [
        "Triggered (via head)",
        "Triggered (via head)",
        "Triggered",
        "Triggered",
    ]


@pytest.mark.parametrize(
    "path",
    ["/coal-mine/v1/canary/list?verbose=1", "/coal-mine/v1/canary/nothing", "/coal-mine/v1/canary/get"],
)
def test_head_answers_carry_no_body(served: InProcessServer, path: str) -> None:
    make_canary(served)
    raw = exchange(served.port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.0 ")
    assert head_and_body(raw)[1] == b""


def test_head_gets_no_body_from_the_servers_own_errors(served: InProcessServer) -> None:
    too_long = f"HEAD /{'a' * MAX_REQUEST_LINE} HTTP/1.0\r\n\r\n".encode()
    raw = exchange(served.port, too_long)
    assert raw.startswith(b"HTTP/1.0 414 ") and head_and_body(raw)[1] == b""
    raw = exchange(served.port, b"HEAD / HTTP/9.x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 400 ") and head_and_body(raw)[1] == b""


@pytest.mark.parametrize(
    "request_bytes", [b"GET /coal-mine/v1/canary/list HTTP/1.0\r\n\r\n", b"GET / HTTP/9.x\r\n\r\n"]
)
def test_server_header_does_not_reveal_the_python_version(
    served: InProcessServer, request_bytes: bytes
) -> None:
    headers, _ = head_and_body(exchange(served.port, request_bytes))
    assert headers["server"] == "CoalMine"


# --- the access log ----------------------------------------------------------------------------


def test_access_log_escapes_control_characters(
    served: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coal_mine.access")
    exchange(served.port, b"GET /x\x1b[2J\rforged\x00\x7f HTTP/1.0\r\nX-A: \x1b\r\n\r\n")
    exchange(served.port, b"GET / HTTP/1.\x1b]0;pwned\x07\r\n\r\n")
    logged = [record.getMessage() for record in caplog.records if record.name == "coal_mine.access"]
    assert len(logged) >= 2
    for message in logged:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in message), repr(message)
    text = "\n".join(logged)
    assert r"/x\x1b[2J\x0dforged\x00\x7f" in text
    assert r"HTTP/1.\x1b]0;pwned\x07" in text


# --- slow readers ------------------------------------------------------------------------------


def big_list_app(api: Api) -> Any:
    """The real API, except that `list` answers 64 MiB: a long answer for slow readers."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"].endswith("/list"):
            start_response("200 OK", [("Content-Type", "application/json")])
            return (BIG_PIECE for _ in range(BIG_PIECES))
        return api(environ, start_response)

    return app


def stalled_reader(port: int) -> socket.socket:
    """A client that asks for the long answer and then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /coal-mine/v1/canary/list HTTP/1.0\r\n\r\n")
    return sock


def slow_server(**options: Any) -> InProcessServer:
    server = InProcessServer(quick=Api.is_trigger_path, workers=2, **options)
    server.httpd.set_app(big_list_app(server.app))
    return server


def test_a_response_must_be_written_within_its_deadline() -> None:
    with slow_server(response_timeout=1.0) as server:
        sock = stalled_reader(server.port)
        try:
            time.sleep(2.5)  # past the deadline, the server has given up on this client
            received = len(read_all(sock))
        finally:
            sock.close()
    assert 0 < received < BIG_PIECE.__len__() * BIG_PIECES


def test_triggers_never_wait_behind_slow_readers() -> None:
    with slow_server(response_timeout=60.0) as server:
        canary_id = make_canary(server)
        readers = [stalled_reader(server.port) for _ in range(6)]  # both workers, and a queue behind them
        try:
            time.sleep(0.5)
            for _ in range(20):
                # Without workers reserved for triggers this waits the readers' 60 s out.
                status, body = raw_request(
                    server.port, f"GET /{canary_id} HTTP/1.0\r\n\r\n".encode(), timeout=5
                )
                assert status == 200 and b'"status": "ok"' in body
                status, _ = raw_request(
                    server.port,
                    f"GET /coal-mine/v1/canary/trigger?id={canary_id} HTTP/1.0\r\n\r\n".encode(),
                    timeout=5,
                )
                assert status == 200
        finally:
            for sock in readers:
                sock.close()


def test_shutdown_does_not_wait_for_slow_readers() -> None:
    server = slow_server(response_timeout=60.0)
    server.httpd.shutdown_grace = 0.5
    readers = []
    with server:
        readers = [stalled_reader(server.port) for _ in range(6)]
        time.sleep(0.5)
        began = time.monotonic()
        server.httpd.shutdown()
        server.httpd.server_close()
        took = time.monotonic() - began
    try:
        # The readers held workers and the queue; all of them are cut off.
        answers = [parse_response(read_all(sock)) for sock in readers]
    finally:
        for sock in readers:
            sock.close()
    assert took < 5.0
    assert all(status in (0, 200, 503) for status, _ in answers)
    assert not any(worker.is_alive() for worker in server.httpd._workers)


def test_a_plain_server_without_quick_paths_has_no_reserved_workers() -> None:
    httpd = PooledWSGIServer(("127.0.0.1", 0), big_list_app(Api.__new__(Api)), workers=3)
    try:
        assert len(httpd._workers) == 3
    finally:
        httpd.server_close()


def test_forty_slow_readers_do_not_stall_triggers(tmp_path: Path) -> None:
    """Issue 19's test, over a real server process and a real SQLite file: 40 clients read a
    2.6 MB list at 16 KB/s while 4 clients trigger every 100 ms; trigger p99 under 100 ms.

    The machine running the suite may be busy with other work, which shows in the same
    run's triggers without slow readers: what they lose above 20 ms p99 is allowed on
    top, and a second try (before the fix it was 300 to 500 ms, every time)."""
    slow_readers = load_slow_readers()
    for attempt in range(2):
        result = slow_readers.measure(tmp_path / str(attempt), seconds=4.0, readers=40, canaries=20_000)
        print("alone:", result.alone.text(), "| with slow readers:", result.slowed.text())
        assert not result.alone.failures and not result.slowed.failures
        assert len(result.slowed.latencies) >= 4 * 30
        assert result.late == []
        assert result.shutdown_seconds < 10.0
        limit = 0.1 + max(0.0, result.alone.percentile(0.99) - 0.02)
        if result.slowed.percentile(0.99) < limit:
            break
    assert result.slowed.percentile(0.99) < limit, (result.alone.text(), result.slowed.text())


def test_late_lines_are_false_alarms_only_before_the_triggers_stop() -> None:
    slow_readers = load_slow_readers()
    log = (
        "2026-12-02 07:36:11,032 INFO coal_mine: Listening on 127.0.0.1:35101 (HTTP)\n"
        "2026-12-02 07:36:15,500 INFO coal_mine.business_logic: Canary a (often 0) is late\n"
        "2026-12-02 07:36:18,053 INFO coal_mine.business_logic: Canary b (often 1) is late\n"
    )
    stopped = slow_readers.datetime(2026, 12, 2, 7, 36, 17)
    late = slow_readers.late_lines(log, stopped)
    assert [line.split(": ", 1)[1] for line in late] == ["Canary a (often 0) is late"]
