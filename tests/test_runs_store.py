"""The store contract for run reporting, on every store: run fields, outputs, alarms."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from coal_mine.abstract_store import AbstractStore
from coal_mine.models import Output, PrunePolicy
from coal_mine.sqlite_schema import MIGRATIONS
from coal_mine.sqlite_store import SQLiteStore
from tests.test_store_contract import T0, make

RUNS = [("b", T0 + timedelta(seconds=5), False), (None, T0, True)]


def test_run_fields_round_trip(store: AbstractStore) -> None:
    canary = make(
        max_runtime=90.5,
        failed=True,
        late=True,
        runs=RUNS,
        last_duration=12.25,
        snooze_until=T0 + timedelta(hours=1),
        alarm=T0 + timedelta(minutes=1),
    )
    store.create(canary)
    assert store.get(canary.id) == canary
    assert next(store.iter_canaries(history=True)) == canary
    assert next(store.iter_canaries()).runs == RUNS


def test_run_fields_default_and_clear(store: AbstractStore) -> None:
    store.create(make())
    plain = store.get("aaaaaaaa")
    assert (plain.max_runtime, plain.failed, plain.runs, plain.last_duration) == (None, False, [], None)
    assert (plain.snooze_until, plain.alarm) == (None, None)
    changes = {"runs": RUNS, "max_runtime": 5.0, "alarm": T0, "snooze_until": T0, "failed": True}
    assert store.update("aaaaaaaa", changes)
    assert store.get("aaaaaaaa").runs == RUNS
    cleared = {"runs": [], "max_runtime": None, "alarm": None, "snooze_until": None, "failed": False}
    assert store.update("aaaaaaaa", cleared, expect={"runs": RUNS, "failed": True})
    assert store.get("aaaaaaaa") == plain


def test_expect_on_runs(store: AbstractStore) -> None:
    store.create(make())
    assert not store.update("aaaaaaaa", {"failed": True}, expect={"runs": RUNS})
    assert store.update("aaaaaaaa", {"runs": RUNS}, expect={"runs": []})
    assert not store.update("aaaaaaaa", {"failed": True}, expect={"runs": RUNS[:1]})
    assert not store.update("aaaaaaaa", {"failed": True}, expect={"runs": []})
    assert store.update("aaaaaaaa", {"failed": True}, expect={"runs": RUNS, "alarm": None})
    assert store.get("aaaaaaaa").failed is True


def test_outputs_are_kept_with_history_and_pruned_with_it(store: AbstractStore) -> None:
    store.create(make())
    policy = PrunePolicy(max_entries=3, min_entries=1, older_than=T0 - timedelta(days=1))
    for number in range(1, 5):
        when = T0 + timedelta(seconds=number)
        out = Output(f"out {number}", 10 * number, truncated=number == 2) if number % 2 == 0 else None
        assert store.update("aaaaaaaa", {}, history=(when, f"e{number}"), prune=policy, output=out)
    assert [comment for _, comment in store.get("aaaaaaaa").history] == ["e4", "e3", "e2"]
    assert store.outputs("aaaaaaaa") == [
        (T0 + timedelta(seconds=4), Output("out 4", 40, False)),
        (T0 + timedelta(seconds=2), Output("out 2", 20, True)),
    ]
    store.update("aaaaaaaa", {}, history=(T0 + timedelta(seconds=5), "e5"), prune=policy)
    assert [text for _, text in [(t, o.text) for t, o in store.outputs("aaaaaaaa")]] == ["out 4"]
    assert store.delete("aaaaaaaa")
    assert store.outputs("aaaaaaaa") == []


def test_output_of_a_failed_update_is_not_kept(store: AbstractStore) -> None:
    store.create(make())
    ok = store.update("aaaaaaaa", {}, expect={"late": True}, history=(T0, "x"), output=Output("o", 1))
    assert not ok and store.outputs("aaaaaaaa") == []


def test_alarm_queries(store: AbstractStore) -> None:
    assert store.earliest_alarm() is None and store.due_alarms(T0, 10) == []
    store.create(make("aaaaaaaa", "A", alarm=T0 + timedelta(seconds=30)))
    store.create(make("bbbbbbbb", "B", alarm=T0 + timedelta(seconds=10), paused=True, deadline=None))
    store.create(make("cccccccc", "C"))
    assert store.earliest_alarm() == T0 + timedelta(seconds=10)
    assert store.due_alarms(T0 + timedelta(seconds=9), 10) == []
    assert [c.id for c in store.due_alarms(T0 + timedelta(seconds=30), 10)] == ["bbbbbbbb", "aaaaaaaa"]
    assert [c.id for c in store.due_alarms(T0 + timedelta(seconds=30), 1)] == ["bbbbbbbb"]
    assert store.due_alarms(T0 + timedelta(seconds=30), 1)[0].history is None
    store.update("bbbbbbbb", {"alarm": None})
    assert store.earliest_alarm() == T0 + timedelta(seconds=30)


def test_sqlite_migrates_version_2_keeping_everything(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:
        conn.executescript(migration)
    conn.execute(
        "INSERT INTO canaries (id, name, slug, periodicity, deadline, history_count) "
        "VALUES ('aaaaaaaa', 'Old', 'old', 60.0, 1, 1)"
    )
    conn.execute("INSERT INTO history (canary_seq, ts, comment) VALUES (1, 0, 'Canary created')")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = SQLiteStore(str(path))
    old = store.get("aaaaaaaa")
    assert old is not None and old.name == "Old" and old.runs == [] and old.failed is False
    assert old.history is not None and old.history[0][1] == "Canary created"
    assert store.update("aaaaaaaa", {"failed": True}, history=(T0, "Failed"), output=Output("x", 1))
    assert store.outputs("aaaaaaaa") == [(T0, Output("x", 1))]
    store.close()
