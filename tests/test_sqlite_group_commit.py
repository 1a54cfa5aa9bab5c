"""Group commit in the SQLite store: batched writes, each caller released after its COMMIT,
one caller's integrity error its own, a failed batch failing every caller."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coal_mine.business_logic import BusinessLogic
from coal_mine.sqlite_group_commit import GroupCommit, _Pending
from coal_mine.sqlite_store import SQLiteStore


def test_concurrent_triggers_all_land_and_are_committed(tmp_path: Path) -> None:
    path = tmp_path / "group.sqlite3"
    store = SQLiteStore(str(path))
    logic = BusinessLogic(store)
    ids = [logic.create(f"job {n}", 3600).id for n in range(4)]
    errors: list[BaseException] = []

    def client(canary_id: str) -> None:
        try:
            for _ in range(25):
                logic.trigger(canary_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(cid,)) for cid in ids for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    # A second connection sees every acknowledged trigger: each was committed before it returned.
    other = SQLiteStore(str(path))
    try:
        for cid in ids:
            canary = other.get(cid)
            assert canary is not None and canary.history is not None
            assert sum(1 for _, comment in canary.history if comment == "Triggered") == 50
    finally:
        other.close()
        store.close()


@pytest.fixture
def connection() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (k TEXT UNIQUE)")
    yield conn
    conn.close()


def transaction_on(conn: sqlite3.Connection, fail_commit: bool = False) -> object:
    @contextlib.contextmanager
    def transaction() -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            if fail_commit:
                raise sqlite3.OperationalError("disk I/O error")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    return transaction


def insert(key: str) -> object:
    return lambda conn: conn.execute("INSERT INTO t VALUES (?)", (key,)).rowcount


def test_an_integrity_error_is_only_its_callers(connection: sqlite3.Connection) -> None:
    group = GroupCommit(transaction_on(connection))  # type: ignore[arg-type]
    batch = [_Pending(insert("a")), _Pending(insert("a")), _Pending(insert("b"))]
    group._apply(batch)
    assert [p.result for p in batch] == [1, None, 1]
    assert isinstance(batch[1].error, sqlite3.IntegrityError)
    assert batch[0].error is None and batch[2].error is None
    assert sorted(r[0] for r in connection.execute("SELECT k FROM t")) == ["a", "b"]


def test_a_failed_batch_fails_every_caller_and_keeps_nothing(connection: sqlite3.Connection) -> None:
    group = GroupCommit(transaction_on(connection, fail_commit=True))  # type: ignore[arg-type]
    batch = [_Pending(insert("a")), _Pending(insert("b"))]
    group._apply(batch)
    assert all(isinstance(p.error, sqlite3.OperationalError) and p.result is None for p in batch)
    assert connection.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_run_raises_the_callers_error_and_close_stops_the_writer(connection: sqlite3.Connection) -> None:
    group = GroupCommit(transaction_on(connection))  # type: ignore[arg-type]
    assert group.run(insert("a")) == 1
    with pytest.raises(sqlite3.IntegrityError):
        group.run(insert("a"))
    writer = group._thread
    group.close()
    assert writer is not None and not writer.is_alive()
