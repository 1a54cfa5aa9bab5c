"""The deadline watcher, driven step by step with a FakeClock (plus a few real-thread checks)."""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import Clock, FakeClock
from coal_mine.models import Canary, StoreUnavailableError
from coal_mine.sqlite_store import SQLiteStore
from coal_mine.watcher import Watcher
from tests.helpers import wait_until


def kinds(store: AbstractStore) -> list[tuple[str, str]]:
    return [(n.canary_id, n.kind) for n in store.pending_notifications()]


def test_marks_late_only_after_the_deadline(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    cid = logic.create("Job", 60, emails=["ops@example.com"]).id
    watcher = Watcher(logic, rescan_interval=10)
    clock.advance(60)
    assert watcher.step() is False
    assert not logic.get(cid).late  # exactly at the deadline: not late
    clock.advance(0.001)
    assert watcher.step() is False
    assert logic.get(cid).late
    assert kinds(store) == [(cid, "late")]
    watcher.step()
    assert kinds(store) == [(cid, "late")]  # once only


def test_sleeps_until_the_earliest_watched_deadline(logic: BusinessLogic, clock: FakeClock) -> None:
    watcher = Watcher(logic, rescan_interval=10)
    assert watcher.seconds_until_next() == 10  # nothing watched: just the rescan
    logic.create("Slow", 3600)
    assert watcher.seconds_until_next() == 10  # capped by the rescan interval
    fast = logic.create("Fast", 4).id
    logic.create("Paused", 1, paused=True)
    assert watcher.seconds_until_next() == pytest.approx(4.001)
    clock.advance(5)
    assert watcher.seconds_until_next() == 0
    watcher.step()
    assert logic.get(fast).late
    assert watcher.seconds_until_next() == 10  # late canaries are not waited for


def test_works_in_batches(logic: BusinessLogic, clock: FakeClock, store: AbstractStore) -> None:
    for i in range(25):
        logic.create(f"Job {i}", 60 + i)
    clock.advance(100)
    watcher = Watcher(logic, batch_size=10)
    assert [watcher.step(), watcher.step(), watcher.step()] == [True, True, False]
    assert all(c.late for c in store.iter_canaries())


class Flaky(BusinessLogic):
    """mark_late fails for the canaries in `broken`."""

    broken: set[str] = set()

    def mark_late(self, canary: Canary) -> bool:
        if canary.id in self.broken:
            raise ValueError(f"cannot evaluate {canary.id}")
        return super().mark_late(canary)


def test_one_bad_canary_does_not_stop_the_others(
    store: AbstractStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    logic = Flaky(store, clock)
    bad = logic.create("Bad", 10, emails=["a@b"]).id
    good = logic.create("Good", 20, emails=["a@b"]).id
    logic.broken = {bad}
    watcher = Watcher(logic, rescan_interval=10, retry_max_delay=8)
    clock.advance(11)
    with caplog.at_level(logging.ERROR, logger="coal_mine.watcher"):
        watcher.step()
    assert bad in caplog.text and "ValueError" in caplog.text
    assert set(watcher.failing) == {bad}
    # The bad canary's past deadline does not make the watcher spin: it waits for
    # the retry (1 s) or the good canary's deadline, whichever is first.
    assert watcher.seconds_until_next() == pytest.approx(1.0)
    clock.advance(10)  # good is due now; bad's retries back off 1, 2, 4, 8, 8, ... s
    watcher.step()
    assert logic.get(good).late and not logic.get(bad).late
    delays = []
    for _ in range(5):
        clock.advance(watcher.seconds_until_next())
        before = clock.now()
        watcher.step()
        delays.append((watcher.failing[bad] - before).total_seconds())
    assert delays == [4, 8, 8, 8, 8]
    logic.broken = set()
    clock.advance(8)
    watcher.step()
    assert logic.get(bad).late and watcher.failing == {}
    assert kinds(store) == [(good, "late"), (bad, "late")]


def test_failure_of_a_canary_no_longer_due_is_forgotten(store: AbstractStore, clock: FakeClock) -> None:
    logic = Flaky(store, clock)
    bad = logic.create("Bad", 10).id
    logic.broken = {bad}
    watcher = Watcher(logic)
    clock.advance(11)
    watcher.step()
    assert bad in watcher.failing
    logic.trigger(bad)
    clock.advance(1)
    watcher.step()
    assert watcher.failing == {}


def test_many_bad_canaries_do_not_hide_a_good_one(store: AbstractStore, clock: FakeClock) -> None:
    logic = Flaky(store, clock)
    logic.broken = {logic.create(f"Bad {i}", 10 + i).id for i in range(5)}
    good = logic.create("Good", 30).id
    watcher = Watcher(logic, batch_size=2)
    clock.advance(20)
    while watcher.step():
        pass
    assert len(watcher.failing) == 5
    assert watcher.next_deadline() == logic.get(good).deadline
    clock.advance(11)
    while watcher.step():
        pass
    assert logic.get(good).late


def test_corrupt_sqlite_row_is_logged_and_others_go_late(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db.sqlite3"
    store = SQLiteStore(str(path))
    logic = BusinessLogic(store, clock)
    corrupt = logic.create("Corrupt", 10, emails=["a@b"]).id
    odd_periodicity = logic.create("Odd", 11, emails=["a@b"]).id
    good = logic.create("Good", 12, emails=["a@b"]).id
    with sqlite3.connect(path) as db:
        db.execute("UPDATE canaries SET emails = '{not json' WHERE id = ?", (corrupt,))
        db.execute("UPDATE canaries SET periodicity = 'garbage * *' WHERE id = ?", (odd_periodicity,))
    watcher = Watcher(logic)
    clock.advance(13)
    with caplog.at_level(logging.ERROR, logger="coal_mine.watcher"):
        watcher.step()
    assert corrupt in caplog.text
    assert logic.get(good).late and logic.get(odd_periodicity).late
    assert sorted(kinds(store)) == sorted([(odd_periodicity, "late"), (good, "late")])
    assert set(watcher.failing) == {corrupt}
    store.close()


# --- the thread ---------------------------------------------------------------------------


def test_thread_is_woken_by_writes_in_this_process(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "db.sqlite3"))
    logic = BusinessLogic(store, Clock())
    watcher = Watcher(logic, rescan_interval=60)  # only a wake can make it look in time
    logic.on_change = watcher.wake
    watcher.start()
    try:
        time.sleep(0.05)  # let it go to sleep for the full rescan interval
        cid = logic.create("Quick", 0.2).id
        wait_until(lambda: logic.get(cid).late, timeout=3)
    finally:
        assert watcher.stop()
        store.close()


def test_thread_sees_other_processes_writes_by_rescanning(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    ours, theirs = SQLiteStore(path), SQLiteStore(path)
    logic = BusinessLogic(ours, Clock())
    watcher = Watcher(logic, rescan_interval=0.2)
    watcher.start()
    try:
        time.sleep(0.05)
        cid = BusinessLogic(theirs, Clock()).create("Elsewhere", 0.1).id  # no wake for us
        wait_until(lambda: logic.get(cid).late, timeout=3)
    finally:
        assert watcher.stop()
        ours.close()
        theirs.close()


def test_thread_survives_store_errors(
    logic: BusinessLogic, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []
    real = store.due_canaries

    def flaky(now: datetime, limit: int) -> list[Canary]:
        calls.append(now)
        if len(calls) == 1:
            raise StoreUnavailableError("database is locked")
        return real(now, limit)

    store.due_canaries = flaky  # type: ignore[method-assign]
    logic.clock = Clock()
    cid = logic.create("Job", 0.05).id
    watcher = Watcher(logic, rescan_interval=0.05)
    with caplog.at_level(logging.ERROR):
        watcher.start()
        try:
            wait_until(lambda: logic.get(cid).late)
        finally:
            assert watcher.stop()
    assert "database is locked" in caplog.text


def test_stop_ends_a_sleeping_thread_at_once(logic: BusinessLogic) -> None:
    watcher = Watcher(logic, rescan_interval=3600)
    watcher.start()
    time.sleep(0.02)
    started = time.monotonic()
    assert watcher.stop(timeout=2)
    assert time.monotonic() - started < 1
    assert watcher._thread is not None and not watcher._thread.is_alive()
