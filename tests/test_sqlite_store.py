"""SQLite-specific behaviour: schema versions and migrations."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coal_mine.api import Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.models import Canary, NewNotification, Output, PrunePolicy, StoreUnavailableError
from coal_mine.sqlite_schema import MIGRATIONS as _MIGRATIONS
from coal_mine.sqlite_schema import SCHEMA_VERSION
from coal_mine.sqlite_store import SQLiteStore

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MICRO = timedelta(microseconds=1)


def micros(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // MICRO


def version_1_database(path: Path, entries: int) -> None:
    """A database as schema version 1 left it: one canary with `entries` history rows."""
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT INTO canaries (id, name, slug, periodicity, deadline, history_count) "
        "VALUES ('aaaaaaaa', 'Old', 'old', 60.0, ?, ?)",
        (micros(T0), entries),
    )
    conn.executemany(
        "INSERT INTO history (canary_seq, ts, comment) VALUES (1, ?, ?)",
        [(micros(T0 - timedelta(days=10, seconds=i)), f"e{i}") for i in range(entries)],
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    version_1_database(path, entries=150)
    store = SQLiteStore(str(path))
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    canary = store.get("aaaaaaaa")
    assert len(canary.history) == 150 and canary.history[0][1] == "e0"
    # The migrated oldest-entry time drives pruning: everything is 10 days old.
    policy = PrunePolicy(max_entries=1000, min_entries=100, older_than=T0 - timedelta(days=7))
    assert store.update("aaaaaaaa", {}, history=(T0, "new"), prune=policy)
    kept = store.get("aaaaaaaa").history
    assert len(kept) == 100 and kept[0] == (T0, "new") and kept[-1][1] == "e98"
    store.close()


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    SQLiteStore(str(path)).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreUnavailableError, match="newer"):
        SQLiteStore(str(path))


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError):
        SQLiteStore(str(tmp_path / "no-such-dir" / "x.sqlite3"))


def test_locked_database_is_a_503_and_changes_nothing(tmp_path: Path) -> None:
    """Another process holding the write lock past the busy timeout: a clear 503, no half write."""
    path = tmp_path / "locked.sqlite3"
    store = SQLiteStore(str(path), busy_timeout=0.2)
    logic = BusinessLogic(store)
    canary = logic.create("Locked", 60)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as another process mid-write would
    statuses = []
    body = b"".join(
        Api(logic)(
            {"PATH_INFO": f"/{canary.id}", "QUERY_STRING": "comment=x"},
            lambda status, headers: statuses.append(status),
        )
    )
    holder.execute("ROLLBACK")
    holder.close()
    assert statuses == ["503 Service Unavailable"]
    answer = json.loads(body)
    assert answer["status"] == "error" and "busy" in answer["error"]
    assert [c for _, c in logic.get(canary.id).history] == ["Canary created"]
    assert logic.trigger(canary.id, "after") == (False, False)  # works again once released
    store.close()


def test_schema_3_splits_each_pending_email_into_one_entry_per_recipient(tmp_path: Path) -> None:
    """A message pending when the server is upgraded is delivered per recipient afterwards,
    with its attempts kept; a payload without addresses had nothing to send."""
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:2]:
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
    rows = [
        ("aaaaaaaa", "late", {"name": "A", "emails": ["a@x", "b@y"]}, 3),
        ("bbbbbbbb", "late", {"name": "B", "emails": []}, 0),
        ("aaaaaaaa", "resumed", {"name": "A", "emails": ["a@x", "b@y"]}, 0),
    ]
    for cid, kind, payload, attempts in rows:
        conn.execute(
            "INSERT INTO notifications (canary_id, kind, created, payload, attempts, not_before) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (cid, kind, micros(T0), json.dumps(payload), attempts, micros(T0)),
        )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = SQLiteStore(str(path))
    pending = store.pending_notifications()
    assert [(n.canary_id, n.kind, n.target, n.attempts) for n in pending] == [
        ("aaaaaaaa", "late", "a@x", 3),
        ("aaaaaaaa", "late", "b@y", 3),
        ("aaaaaaaa", "resumed", "a@x", 0),
        ("aaaaaaaa", "resumed", "b@y", 0),
    ]
    assert pending[0].event == pending[1].event != pending[2].event == pending[3].event
    # New events get numbers of their own.
    store.create(Canary(id="cccccccc", name="C", slug="c", periodicity=60.0, history=[]))
    new = NewNotification("late", T0, {"name": "C"}, targets=(("email", "c@z"),))
    assert store.update("cccccccc", {"late": True}, notifications=[new])
    events = [n.event for n in store.pending_notifications()]
    assert len(set(events)) == 3
    store.close()


def test_a_usual_trigger_is_one_statement_and_leaves_no_transaction(tmp_path: Path) -> None:
    """One UPDATE (postpone), whose trigger (schema 6) appends the entry: committed on its
    own, seen whole by another connection (another process)."""
    path = tmp_path / "one.sqlite3"
    store = SQLiteStore(str(path))
    logic = BusinessLogic(store)
    canary = logic.create("One", 60)
    conn = store._connection()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert logic.trigger(canary.id, "hello") == (False, False)
    conn.set_trace_callback(None)
    # (the trace repeats the UPDATE for each statement its trigger runs)
    assert [s.split()[0] for s in dict.fromkeys(statements)] == ["UPDATE"]
    assert not conn.in_transaction
    other = sqlite3.connect(path)
    assert other.execute("SELECT history_count FROM canaries").fetchall() == [(2,)]
    assert [c for (c,) in other.execute("SELECT comment FROM history ORDER BY hid")] == [
        "Canary created",
        "Triggered (hello)",
    ]
    other.close()
    assert [c for _, c in logic.get(canary.id).history] == ["Triggered (hello)", "Canary created"]
    store.close()


def _kept(store: SQLiteStore) -> tuple[list, tuple]:
    conn = sqlite3.connect(store.path)
    try:
        row = conn.execute("SELECT history_count, history_oldest FROM canaries").fetchone()
        return [(ts, c) for ts, c in conn.execute("SELECT ts, comment FROM history ORDER BY ts, hid")], row
    finally:
        conn.close()


@pytest.mark.parametrize("seed", range(150))
def test_the_trigger_prunes_as_prune_rows_does(tmp_path: Path, seed: int) -> None:
    """The one-statement append (schema 6's trigger) leaves the same history, count and
    oldest time as the transaction with sql_shared.prune_rows (taken for an entry with
    output), whatever the ages, sizes and policy."""
    import random

    rng = random.Random(seed)
    size = rng.choice([0, 1, 3, 5, 8, 12])
    ages = sorted(
        (rng.choice([0, 1, 5, 6, 9, 30]) * 86400 + rng.randrange(60) for _ in range(size)), reverse=True
    )
    history = [(T0 - timedelta(seconds=age), f"e{n}") for n, age in enumerate(ages)][::-1]
    entry_age = rng.choice([0, 0, 0, 8 * 86400])
    entry = (T0 - timedelta(seconds=entry_age), "new")
    policy = PrunePolicy(
        max_entries=rng.randrange(1, 10),
        min_entries=rng.randrange(0, 6),
        older_than=T0 - timedelta(days=7),
    )
    results = []
    for name, output in (("one", None), ("txn", Output("", 0))):
        store = SQLiteStore(str(tmp_path / f"{name}.sqlite3"))
        store.create(
            Canary(id="aaaaaaaa", name="P", slug="p", periodicity=60.0, deadline=T0, history=history)
        )
        for _ in range(2):
            assert store.update("aaaaaaaa", {"late": False}, history=entry, prune=policy, output=output)
        results.append(_kept(store))
        store.close()
    assert results[0] == results[1]


def test_an_append_whose_expectation_fails_writes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "prune.sqlite3"))
    history = [(T0 - timedelta(seconds=i), f"e{i}") for i in range(1, 4)]
    store.create(Canary(id="aaaaaaaa", name="P", slug="p", periodicity=60.0, deadline=T0, history=history))
    policy = PrunePolicy(max_entries=3, min_entries=1, older_than=T0 - timedelta(days=7))
    before = _kept(store)
    assert not store.update(
        "aaaaaaaa", {"late": True}, expect={"late": True}, history=(T0, "no"), prune=policy
    )
    assert _kept(store) == before
    assert store.update("aaaaaaaa", {"late": True}, expect={"late": False}, history=(T0, "new"), prune=policy)
    canary = store.get("aaaaaaaa")
    assert canary.late and [c for _, c in canary.history] == ["new", "e1", "e2"]
    store.close()
