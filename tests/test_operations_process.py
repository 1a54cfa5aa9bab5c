"""Real processes: a `--web` and a `--background` server on one SQLite file; health follows
the worker's life (SIGKILL, restart), the web process warns, the watchdog is pinged."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, http_get

WORKER_TIMEOUT = 2.0
# Polling and a loaded machine: how much later than the limit a change may be seen.
SLACK = 3.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition` holds; returns how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Receiver:
    """A local HTTP server that counts the requests it gets (the watchdog's target)."""

    def __init__(self, status: int = 200) -> None:
        self.hits: list[tuple[float, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                receiver.hits.append((time.monotonic(), self.path))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ping/abcdefgh"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[ServerProcess, Callable[..., ServerProcess]]]:
    """A --web process, and a maker of --background processes, on one SQLite file."""
    ini = (
        f"[sqlite]\npath = {tmp_path / 'shared.sqlite3'}\n"
        f"[health]\nworker_timeout = {WORKER_TIMEOUT}\n[watcher]\nrescan_interval = 0.3\n"
    )
    workers: list[ServerProcess] = []

    def worker(extra: str = "") -> ServerProcess:
        process = ServerProcess(
            tmp_path / f"worker{len(workers)}", ini_extra=ini + extra, args=("--background",)
        )
        workers.append(process)
        return process.start()

    with ServerProcess(tmp_path / "web", ini_extra=ini, args=("--web",)) as web:
        try:
            yield web, worker
        finally:
            for process in workers:
                process.stop()


def health(web: ServerProcess) -> tuple[int, dict]:
    return http_get(web.url("/coal-mine/v1/health"))


def test_health_follows_the_worker(shared: tuple[ServerProcess, Callable[..., ServerProcess]]) -> None:
    web, worker = shared
    status, body = health(web)
    assert status == 503 and "no background worker has ever reported" in body["error"]
    wait_for(lambda: "Health: no background worker has ever reported" in web.log(), 10, "the first warning")

    background = worker()
    wait_for(lambda: health(web)[0] == 200, 15, "health 200 with a worker")
    status, body = health(web)
    assert body["status"] == "ok" and body["workers_alive"] == 1 and body["last_scan_age_seconds"] < 2

    background.kill()  # SIGKILL: no goodbye, the heartbeat just stops
    took = wait_for(lambda: health(web)[0] == 503, WORKER_TIMEOUT + SLACK, "health 503 after SIGKILL")
    assert took <= WORKER_TIMEOUT + SLACK
    status, body = health(web)
    assert "no background worker has run for" in body["error"]
    assert body["error"].endswith("late canaries are not being detected")
    wait_for(
        lambda: "WARNING coal_mine.health: Health: no background worker has run for" in web.log(),
        10,
        "warning",
    )
    assert web.call("/coal-mine/v1/health", check="live")[0] == 200

    worker()
    wait_for(lambda: health(web)[0] == 200, 15, "health 200 after the restart")
    wait_for(
        lambda: "INFO coal_mine.health: Health: 1 background worker(s) alive" in web.log(), 10, "all clear"
    )


def test_watchdog_pinged_at_most_once_a_minute(
    shared: tuple[ServerProcess, Callable[..., ServerProcess]],
) -> None:
    web, worker = shared
    with Receiver() as receiver:
        background = worker(f"[watchdog]\nurl = {receiver.url}?key=secret\n")
        wait_for(lambda: len(receiver.hits) >= 1, 15, "the first watchdog ping")
        assert receiver.hits[0][1] == "/ping/abcdefgh?key=secret"
        # Scans run every 0.3 s; for the next few seconds none of them may ping again.
        time.sleep(3)
        assert len(receiver.hits) == 1
        assert "secret" not in background.log()
    wait_for(lambda: health(web)[0] == 200, 10, "health 200")


def test_watchdog_failures_are_logged_not_fatal(
    shared: tuple[ServerProcess, Callable[..., ServerProcess]],
) -> None:
    web, worker = shared
    with Receiver(status=500) as receiver:
        background = worker(f"[watchdog]\nurl = {receiver.url}\n")
        wait_for(lambda: "Watchdog http://127.0.0.1" in background.log(), 15, "the failure in the log")
        assert "answered HTTP 500" in background.log()
        wait_for(lambda: health(web)[0] == 200, 10, "health 200 despite the watchdog")
        assert background.process is not None and background.process.poll() is None


def test_json_log_format(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ini_extra="[logging]\nformat = json\n") as server:
        server.call("list")
        wait_for(lambda: "Listening on" in server.log(), 10, "start-up lines")
        lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
        assert {"time", "level", "logger", "message"} <= set(lines[0])
        assert any(line["message"].startswith("Listening on") for line in lines)


def test_cmcli_status(shared: tuple[ServerProcess, Callable[..., ServerProcess]], tmp_path: Path) -> None:
    from tests.test_cli import cmcli

    web, worker = shared
    home = tmp_path / "home"
    home.mkdir()
    where = ["--host", "127.0.0.1", "--port", str(web.port)]
    result = cmcli(home, "status", *where)
    assert result.returncode == 1
    assert "Health:     NOT OK: no background worker has ever reported" in result.stdout
    assert result.stderr == "cmcli: the server is not healthy\n"
    worker()
    wait_for(lambda: health(web)[0] == 200, 15, "health 200")
    result = cmcli(home, "status", *where)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Server:     http://127.0.0.1:{web.port}"
    assert lines[1].startswith("Health:     OK: 1 background worker(s) alive; last deadline scan")
    assert lines[2] == "Workers:    1 alive (dead after 2s without a heartbeat)"
    assert any(line.startswith("Badge key:  ") and len(line.split()[2]) == 32 for line in lines)
    assert any(" pid " in line and "up since" in line for line in lines)
    as_json = json.loads(cmcli(home, "status", *where, "--json").stdout)
    assert as_json["status"] == "ok" and as_json["badge_key"] in result.stdout


def test_cmcli_status_with_auth_key(tmp_path: Path) -> None:
    from tests.test_cli import cmcli

    home = tmp_path / "home"
    home.mkdir()
    with ServerProcess(tmp_path / "srv", auth_key="sekrit") as server:
        where = ["--host", "127.0.0.1", "--port", str(server.port)]
        wait_for(lambda: health(server)[0] == 200, 15, "health 200")
        keyed = cmcli(home, "status", *where, "--auth-key", "sekrit")
        assert keyed.returncode == 0 and "Badge key:" in keyed.stdout and " pid " in keyed.stdout
        plain = cmcli(home, "status", *where)
        assert plain.returncode == 0 and "Badge key:" not in plain.stdout and " pid " not in plain.stdout
        wrong = cmcli(home, "status", *where, "--auth-key", "nope")
        assert wrong.returncode == 1 and "401" in wrong.stderr and "wrong auth_key" in wrong.stderr


def test_deliveries_counted_logged_and_in_the_heartbeat(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.smtp_sink import SMTPSink

    with SMTPSink() as sink:
        ini = (
            f"[email]\nsender = coal@example.net\nhost = 127.0.0.1\nport = {sink.port}\ntimeout = 5\n"
            "[watcher]\nrescan_interval = 0.2\n[health]\nworker_timeout = 3\n"
        )
        with ServerProcess(tmp_path, ini_extra=ini) as server:
            status, body = server.call("create", name="Mailed", periodicity=0.3, email="ops@example.com")
            assert status == 200
            cid = body["canary"]["id"]
            sink.wait_for(1)
            wait_for(lambda: "event=delivered" in server.log(), 10, "the delivery line")
            with urllib.request.urlopen(server.url("/coal-mine/v1/metrics"), timeout=10) as response:
                text = response.read().decode()
            sent = {
                (s.labels.get("kind"), s.labels.get("channel")): s.value
                for family in text_string_to_metric_families(text)
                if family.name == "coal_mine_notifications_sent"
                for s in family.samples
            }
            assert sent == {("late", "email"): 1.0}
            wait_for(
                lambda: (health(server)[1].get("workers") or [{}])[0].get("last_delivery") is not None,
                10,
                "the heartbeat's last delivery",
            )
            log = server.log()
    line = next(line for line in log.splitlines() if "event=delivered" in line)
    assert f"event=delivered canary_id={cid} event_id=" in line and "kind=late channel=email" in line


def delivery_counters(server: ServerProcess) -> dict[str, dict[tuple[str, str], float]]:
    """coal_mine_notifications_{sent,failed}_total by (kind, channel), read by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.url("/coal-mine/v1/metrics"), timeout=10) as response:
        text = response.read().decode()
    counters: dict[str, dict[tuple[str, str], float]] = {"sent": {}, "failed": {}}
    for family in text_string_to_metric_families(text):
        outcome = family.name.removeprefix("coal_mine_notifications_")
        if outcome in counters:
            for sample in family.samples:
                counters[outcome][(sample.labels["kind"], sample.labels["channel"])] = sample.value
    return counters


def test_webhook_and_slack_deliveries_counted(tmp_path: Path) -> None:
    from tests.http_sink import HTTPSink

    with HTTPSink() as sink:
        sink.status_by_path["/gone"] = 410  # refused for good: counted as failed on every try
        ini = (
            "[watcher]\nrescan_interval = 0.2\nretry_max_delay = 0.4\n"
            "[webhook]\nallow_private = true\ntimeout = 2\n[health]\nworker_timeout = 3\n"
        )
        with ServerProcess(tmp_path, ini_extra=ini) as server:
            status, body = server.call(
                "create",
                name="Hooked",
                periodicity=0.3,
                webhook=[sink.url("/hook"), sink.url("/gone")],
                slack=sink.url("/chat"),
            )
            assert status == 200, body
            cid = body["canary"]["id"]
            sink.wait_for(2)  # late, to /hook and /chat
            assert server.call("update", id=cid, periodicity=3600)[0] == 200  # late stays late
            assert server.call("trigger", id=cid)[0] == 200  # resumed, next deadline in an hour
            sink.wait_for(4)
            expected = {
                (kind, channel): 1.0 for kind in ("late", "resumed") for channel in ("webhook", "slack")
            }
            wait_for(lambda: delivery_counters(server)["sent"] == expected, 10, "the sent counters")
            # The resumed event waits behind the refused late one (one target's events stay in order).
            wait_for(
                lambda: ("late", "webhook") in delivery_counters(server)["failed"], 10, "the failed counter"
            )
            counters = delivery_counters(server)
            assert list(counters["failed"]) == [("late", "webhook")]
            failures = sum(counters["failed"].values())
            wait_for(lambda: sum(delivery_counters(server)["failed"].values()) > failures, 10, "a retry")
            assert sorted(
                (post.path, post.json()["event"]) for post in sink.posts if post.path == "/hook"
            ) == [
                ("/hook", "late"),
                ("/hook", "resumed"),
            ]
            assert sum(post.path == "/chat" for post in sink.posts) == 2
            log = server.log()
    lines = [line for line in log.splitlines() if f"canary_id={cid}" in line]
    assert any("event=delivered" in line and "kind=resumed channel=slack" in line for line in lines)
    failed = next(line for line in lines if "event=delivery_failed" in line)
    assert "channel=webhook" in failed and "permanent=True" in failed and "event_id=" in failed


def test_failed_run_logged_as_json_with_the_event_its_delivery_carries(tmp_path: Path) -> None:
    from tests.http_sink import HTTPSink

    with HTTPSink() as sink:
        ini = (
            "[logging]\nformat = json\n[watcher]\nrescan_interval = 0.2\n"
            "[webhook]\nallow_private = true\ntimeout = 2\n"
        )
        with ServerProcess(tmp_path, ini_extra=ini) as server:
            status, body = server.call("create", name="Backup", periodicity=3600, webhook=sink.url("/hook"))
            assert status == 200, body
            cid = body["canary"]["id"]
            status, body = server.call("fail", id=cid, comment="disk full", exit_status=3)
            assert status == 200, body
            (post,) = sink.wait_for(1)
            assert post.json()["event"] == "failed"
            wait_for(lambda: '"event": "delivered"' in server.log(), 10, "the delivery line")
            lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    failed = next(line for line in lines if line.get("event") == "failed")
    delivered = next(line for line in lines if line.get("event") == "delivered")
    assert failed["canary_id"] == delivered["canary_id"] == cid
    assert failed["event_id"] == delivered["event_id"] and isinstance(failed["event_id"], int)
    assert failed["message"] == f"Canary {cid} (Backup) is failing" and failed["level"] == "INFO"
    assert (delivered["kind"], delivered["channel"]) == ("failed", "webhook")
