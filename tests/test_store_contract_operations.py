"""The store contract, operations part: heartbeats, settings, badge keys and the scans
behind /health and /metrics. Runs on every store in tests/stores.py (the `store` fixture)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.models import AlreadyExistsError, CanaryStatus, CanaryTotals, WorkerHeartbeat
from tests.test_store_contract import T0, make, note


def beat(worker: str = "w1", seen_after: float = 0.0, **fields) -> WorkerHeartbeat:
    base = dict(
        worker_id=worker,
        host="host-a",
        pid=123,
        started=T0,
        seen=T0 + timedelta(seconds=seen_after),
        last_scan=None,
        last_delivery=None,
        outbox_depth=0,
    )
    base.update(fields)
    return WorkerHeartbeat(**base)


def test_heartbeat_round_trip_and_replace(store: AbstractStore) -> None:
    assert store.heartbeats() == []
    first = beat(last_scan=T0 + timedelta(seconds=1), outbox_depth=3)
    store.record_heartbeat(first)
    assert store.heartbeats() == [first]
    second = beat(
        seen_after=10,
        last_scan=T0 + timedelta(seconds=9, microseconds=123000),
        last_delivery=T0 + timedelta(seconds=5),
    )
    store.record_heartbeat(second)
    assert store.heartbeats() == [second]  # one entry per worker, replaced


def test_heartbeats_newest_first_and_pruned_by_age(store: AbstractStore) -> None:
    store.record_heartbeat(beat("old", seen_after=0))
    store.record_heartbeat(beat("new", seen_after=30, host="host-b", pid=7))
    store.record_heartbeat(beat("mid", seen_after=10))
    assert [b.worker_id for b in store.heartbeats()] == ["new", "mid", "old"]
    assert store.prune_heartbeats(T0 + timedelta(seconds=10)) == 1  # strictly older only
    assert [b.worker_id for b in store.heartbeats()] == ["new", "mid"]
    assert store.prune_heartbeats(T0) == 0
    assert store.heartbeats()[0].host == "host-b" and store.heartbeats()[0].pid == 7


def test_settings_set_once(store: AbstractStore) -> None:
    assert store.setting("badge_key") is None
    assert store.setting_setdefault("badge_key", "first") == "first"
    assert store.setting_setdefault("badge_key", "second") == "first"
    assert store.setting("badge_key") == "first"
    assert store.setting("other") is None


def test_settings_setdefault_concurrent_callers_agree(store: AbstractStore) -> None:
    results: list[str] = []

    def claim(value: str) -> None:
        results.append(store.setting_setdefault("race", value))

    threads = [threading.Thread(target=claim, args=(f"v{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and results[0] == store.setting("race")


def test_badge_key_round_trip_and_lookup(store: AbstractStore) -> None:
    store.create(make(badge_key="k" * 32))
    store.create(make("bbbbbbbb", "Other"))  # no key, as Coal Mine 0.7 makes them
    assert store.get("aaaaaaaa").badge_key == "k" * 32
    assert store.get("bbbbbbbb").badge_key is None
    found = store.canary_for_badge("k" * 32)
    assert found is not None and found.id == "aaaaaaaa" and found.history is None
    assert store.canary_for_badge("x" * 32) is None
    assert [c.badge_key for c in store.iter_canaries()] == ["k" * 32, None]


def test_badge_key_given_once_and_unique(store: AbstractStore) -> None:
    store.create(make(badge_key="k" * 32))
    store.create(make("bbbbbbbb", "Other"))
    assert store.update("bbbbbbbb", {"badge_key": "m" * 32}, expect={"badge_key": None})
    assert not store.update("bbbbbbbb", {"badge_key": "n" * 32}, expect={"badge_key": None})
    assert store.get("bbbbbbbb").badge_key == "m" * 32
    with pytest.raises(AlreadyExistsError):
        store.create(make("cccccccc", "Third", badge_key="k" * 32))


def test_canary_totals(store: AbstractStore) -> None:
    assert store.canary_totals() == CanaryTotals(0, 0, 0)
    store.create(make())
    store.create(make("bbbbbbbb", "Late", late=True))
    store.create(make("cccccccc", "Paused", paused=True, deadline=None))
    assert store.canary_totals() == CanaryTotals(3, 1, 1)


def test_outbox_summary(store: AbstractStore) -> None:
    assert store.outbox_summary().pending == 0 and store.outbox_summary().oldest is None
    store.create(make())
    store.create(make("bbbbbbbb", "Other"))
    store.update("aaaaaaaa", {"late": True}, notifications=[note(at=T0 + timedelta(seconds=5))])
    store.update("bbbbbbbb", {"late": True}, notifications=[note(at=T0 + timedelta(seconds=2))])
    summary = store.outbox_summary()
    assert summary.pending == 2 and summary.oldest == T0 + timedelta(seconds=2)


def test_canary_status_gives_last_trigger(store: AbstractStore) -> None:
    store.create(make(history=[(T0, "Canary created")]))
    store.create(make("bbbbbbbb", "Other", history=[(T0, "Canary created")]))
    trigger = T0 + timedelta(seconds=30)
    store.update("aaaaaaaa", {}, history=(trigger, "Triggered (nightly)"))
    store.update("aaaaaaaa", {"paused": True, "deadline": None}, history=(trigger + timedelta(1), "Paused"))
    status = list(store.iter_canary_status())
    assert [(s.id, s.last_trigger) for s in status] == [("aaaaaaaa", trigger), ("bbbbbbbb", None)]
    assert status[0] == CanaryStatus("aaaaaaaa", "Job", "job", True, False, None, trigger)
    assert status[1] == CanaryStatus(
        "bbbbbbbb", "Other", "other", False, False, T0 + timedelta(seconds=60), None
    )


def test_canary_metrics_rows_are_the_numbers_metrics_writes(store: AbstractStore) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    trigger = T0 + timedelta(seconds=30, microseconds=123000)  # MongoDB keeps milliseconds
    store.create(make(history=[(T0, "Canary created")]))
    store.update("aaaaaaaa", {}, history=(T0 + timedelta(seconds=5), "Triggered"))
    store.update("aaaaaaaa", {"deadline": trigger + timedelta(60)}, history=(trigger, "Triggered (nightly)"))
    store.update("aaaaaaaa", {"late": True}, history=(trigger + timedelta(1), "Late"))
    store.create(make("bbbbbbbb", "Other", history=[(T0, "Canary created")]))
    # Paused with a deadline still stored: /metrics shows no deadline while paused.
    store.create(make("cccccccc", "Held", paused=True, history=[(T0, "Canary created")]))
    rows = list(store.iter_canary_metrics())
    assert rows == [
        (
            "aaaaaaaa",
            "Job",
            "job",
            1.0,
            0.0,
            (trigger + timedelta(60) - epoch).total_seconds(),
            (trigger - epoch).total_seconds(),
        ),
        ("bbbbbbbb", "Other", "other", 0.0, 0.0, (T0 + timedelta(seconds=60) - epoch).total_seconds(), None),
        ("cccccccc", "Held", "held", 0.0, 1.0, None, None),
    ]
    assert all(type(value) is float for row in rows for value in row[3:] if value is not None)
    assert [tuple(row) for row in rows] == [
        (s.id, s.name, s.slug, float(s.late), float(s.paused), *row[5:])
        for s, row in zip(store.iter_canary_status(), rows, strict=True)
    ]
