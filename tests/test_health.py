"""Worker heartbeats, the health verdict and the no-worker warning (FakeClock, every store),
and GET /coal-mine/v1/health on the real HTTP server in this process."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.api import Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.health import Heartbeat, NoWorkerWarning, check_health, heartbeat_interval, human_duration
from coal_mine.memory_store import MemoryStore
from coal_mine.models import StoreUnavailableError
from coal_mine.watcher import Watcher
from tests.helpers import InProcessServer


def worker(store: AbstractStore, clock: FakeClock, timeout: float = 60.0) -> tuple[Heartbeat, Watcher]:
    """A heartbeat told of the scans of a watcher, as a background process wires them."""
    heartbeat = Heartbeat(store, clock, worker_timeout=timeout)
    watcher = Watcher(BusinessLogic(store, clock))
    watcher.scan_listeners.append(heartbeat.scanned)
    return heartbeat, watcher


def test_no_worker_ever(store: AbstractStore, clock: FakeClock) -> None:
    report = check_health(store, clock, 60)
    assert not report.ok
    assert report.reason == (
        "no background worker has ever reported to this database; late canaries are not being detected"
    )
    assert report.to_json()["status"] == "error" and report.to_json()["workers_alive"] == 0


def test_live_worker_that_scans_is_healthy(store: AbstractStore, clock: FakeClock) -> None:
    heartbeat, watcher = worker(store, clock)
    watcher.step()
    heartbeat.step()
    report = check_health(store, clock, 60)
    assert report.ok, report.reason
    assert report.reason == "1 background worker(s) alive; last deadline scan 0 s ago"
    data = report.to_json()
    assert data["status"] == "ok" and data["last_scan"] == clock.now().isoformat()
    assert data["workers_alive"] == 1 and "workers" not in data


def test_dead_worker_reason_says_how_long(store: AbstractStore, clock: FakeClock) -> None:
    heartbeat, watcher = worker(store, clock)
    watcher.step()
    heartbeat.step()
    clock.advance(60)
    assert check_health(store, clock, 60).ok  # exactly at the limit: still alive
    clock.advance(120)
    report = check_health(store, clock, 60)
    assert not report.ok
    assert report.reason == "no background worker has run for 3 min; late canaries are not being detected"
    assert report.to_json()["error"] == report.reason


def test_alive_but_not_scanning(store: AbstractStore, clock: FakeClock) -> None:
    heartbeat, watcher = worker(store, clock, timeout=30)
    heartbeat.step()
    assert "no deadline scan has finished ever" in check_health(store, clock, 30).reason
    watcher.step()
    clock.advance(40)
    heartbeat.step()  # the heartbeat thread lives on, the watcher is stuck
    report = check_health(store, clock, 30)
    assert not report.ok and report.live
    assert report.reason.startswith(
        "1 background worker(s) alive, but no deadline scan has finished for 40 s"
    )


def test_heartbeat_reports_outbox_depth_and_prunes_dead_workers(
    store: AbstractStore, clock: FakeClock
) -> None:
    logic = BusinessLogic(store, clock)
    logic.create("Mailed", 60.0, emails=["a@example.com"])
    clock.advance(61)
    Watcher(logic).step()  # late: one notification pending
    old = Heartbeat(store, clock, worker_timeout=60)
    old.step()
    clock.advance(61)
    new = Heartbeat(store, clock, worker_timeout=60)
    new.step()
    beats = store.heartbeats()
    assert [b.worker_id for b in beats] == [new.worker_id]
    assert beats[0].outbox_depth == 1 and beats[0].pid == new.pid and beats[0].started == clock.now()
    report = check_health(store, clock, 60)
    assert report.outbox is not None and report.outbox.pending == 1
    assert report.to_json()["outbox_oldest_age_seconds"] == 61.0


def test_store_failure_is_the_answer() -> None:
    class Broken(MemoryStore):
        def heartbeats(self):  # type: ignore[no-untyped-def]
            raise StoreUnavailableError("SQLite database is busy")

    report = check_health(Broken(), FakeClock(), 60)
    assert not report.ok
    assert report.reason.startswith("the database does not answer (StoreUnavailableError: SQLite")


def test_no_worker_warning_at_once_then_once_a_minute(
    store: AbstractStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coal_mine.health")
    warner = NoWorkerWarning(store, clock, worker_timeout=60)
    warner.step()
    clock.advance(30)
    warner.step()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no background worker has ever reported" in warnings[0].getMessage()
    clock.advance(30)
    warner.step()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    heartbeat, watcher = worker(store, clock)
    watcher.step()
    heartbeat.step()
    warner.step()
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].getMessage().startswith("Health: 1 background worker(s) alive")


def test_intervals_and_durations() -> None:
    assert heartbeat_interval(60) == 10 and heartbeat_interval(3) == 1
    assert [human_duration(s) for s in (0, 59.6, 119, 180, 7199, 7200, 172800)] == [
        "0 s",
        "60 s",
        "119 s",
        "3 min",
        "119 min",
        "2 h",
        "2 days",
    ]


# --- over HTTP ---------------------------------------------------------------------------


@pytest.fixture
def keyed() -> Iterator[InProcessServer]:
    api = Api(BusinessLogic(MemoryStore(), FakeClock()), auth_key="full", read_only_auth_key="ro")
    with InProcessServer(api) as server:
        yield server


def test_health_over_http(keyed: InProcessServer) -> None:
    status, body = keyed.call("/coal-mine/v1/health")
    assert status == 503 and body["status"] == "error" and "ever reported" in body["error"]
    assert "badge_key" not in body and "workers" not in body
    assert keyed.call("/coal-mine/v1/health", check="live") == (200, {"status": "ok", "check": "live"})
    logic = keyed.app.logic
    heartbeat, watcher = worker(logic.store, logic.clock)  # type: ignore[arg-type]
    watcher.step()
    heartbeat.step()
    status, body = keyed.call("/coal-mine/v1/health")
    assert status == 200 and body["status"] == "ok" and body["workers_alive"] == 1
    assert "workers" not in body and "badge_key" not in body
    status, full = keyed.call("/coal-mine/v1/health", auth_key="full")
    assert status == 200 and len(full["badge_key"]) == 32
    assert full["workers"][0]["pid"] == heartbeat.pid
    status, read_only = keyed.call("/coal-mine/v1/health", auth_key="ro")
    assert status == 200 and "badge_key" not in read_only and "workers" not in read_only


@pytest.mark.parametrize(
    "params, status, error",
    [
        ({"check": "deep"}, 400, 'Bad value "deep" for parameter "check" (use ready or live)'),
        ({"verbose": "1"}, 400, 'Unexpected argument "verbose"'),
        ({"auth_key": "wrong"}, 401, "401 Unauthorized: wrong auth_key"),
    ],
)
def test_health_errors(keyed: InProcessServer, params: dict, status: int, error: str) -> None:
    assert keyed.call("/coal-mine/v1/health", **params) == (status, {"status": "error", "error": error})


def test_health_never_shows_canary_data(keyed: InProcessServer) -> None:
    keyed.app.logic.create("Secret Job", 60.0)
    text = str(keyed.call("/coal-mine/v1/health")[1]) + str(keyed.call("/coal-mine/v1/health", check="live"))
    assert "Secret" not in text and "secret-job" not in text


def test_health_when_store_fails() -> None:
    class Broken(MemoryStore):
        def outbox_summary(self):  # type: ignore[no-untyped-def]
            raise StoreUnavailableError("MongoDB is unavailable (find): timed out")

    with InProcessServer(Api(BusinessLogic(Broken(), FakeClock()))) as server:
        status, body = server.call("/coal-mine/v1/health")
        assert status == 503 and "the database does not answer" in body["error"]
        assert server.call("/coal-mine/v1/health", check="live")[0] == 200


def test_first_scan_is_reported_at_once(store: AbstractStore, clock: FakeClock) -> None:
    heartbeat, watcher = worker(store, clock)
    heartbeat.step()  # the heartbeat thread's first round can come before the first scan
    heartbeat._wake.clear()
    watcher.step()
    assert heartbeat._wake.is_set()  # so the verdict is ok within moments, not one interval later
    heartbeat._wake.clear()
    watcher.step()
    assert not heartbeat._wake.is_set()
