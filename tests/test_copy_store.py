"""`coal-mine copy-store`: every canary, its history and pending notifications, equal field by
field after the copy; idempotent; refuses to overwrite a differing canary without --force.

SQLite to SQLite always runs; the PostgreSQL round trips need COAL_MINE_TEST_POSTGRESQL_URI.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coal_mine import copy_store
from coal_mine.abstract_store import AbstractStore
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.mongo_store import MongoStore
from coal_mine.postgres_store import PostgresStore
from coal_mine.sqlite_store import SQLiteStore
from tests.helpers import REPO, free_port
from tests.stores import ThrowAwaySchema, mongomock_database
from tests.test_mongo_fixture import load_fixture


def populate(store: AbstractStore) -> dict[str, str]:
    """Canaries of every kind, with history, and pending notifications (one of a deleted canary)."""
    clock = FakeClock(datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC))
    logic = BusinessLogic(store, clock)
    ids = {
        "plain": logic.create("Plain", 60).id,
        "mailed": logic.create("Nightly ✓ backup", 3600, description="d\nx", emails=["ops@example.com"]).id,
        "schedule": logic.create("Weekdays", "* * * * 1-5 600", emails=["a@example.com", "b@example.org"]).id,
        "paused": logic.create("Paused", 0.5, paused=True).id,
        "gone": logic.create("Gone", 30, emails=["gone@example.com"]).id,
    }
    for i in range(5):
        clock.advance(7.25)
        logic.trigger(ids["mailed"], comment=f"run {i} ünï")
    clock.advance(4000)
    for canary in store.due_canaries(clock.now(), 100):
        logic.mark_late(canary)
    logic.trigger(ids["mailed"], comment="back")
    logic.delete(ids["gone"])
    store.setting_setdefault("badge_key", "5e" * 16)  # as a server's first start makes it
    return ids


def snapshot(store: AbstractStore) -> tuple[list[Any], list[Any]]:
    """Every canary with its history, and every pending notification (without store-made ids)."""
    canaries = list(store.iter_canaries(history=True))
    notes = [
        (n.canary_id, n.kind, n.created, n.payload, n.channel, n.target)
        for n in store.pending_notifications()
    ]
    return canaries, notes


def by_id(canary: Any) -> str:
    return canary.id


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coal_mine.server", "copy-store", *args],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def source(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "source.sqlite3"))
    populate(store)
    yield store
    store.close()


def test_sqlite_to_sqlite_is_equal_and_idempotent(tmp_path: Path, source: SQLiteStore) -> None:
    dest_path = tmp_path / "dest.sqlite3"
    first = run("--from", f"sqlite://{source.path}", "--to", f"sqlite://{dest_path}")
    assert first.returncode == 0, first.stderr
    expected = snapshot(source)
    # One per event and recipient: gone's late, mailed's late + resumed, the schedule's late to a@ and b@.
    assert len(expected[0]) == 4 and len(expected[1]) == 5
    assert first.stdout.strip() == (
        "copy-store: 4 canaries copied (4 new, 0 replaced), 0 already there unchanged; "
        f"{sum(len(c.history or []) for c in expected[0])} history entries; "
        "5 pending notifications copied, 0 already there"
    )
    dest = SQLiteStore(str(dest_path))
    assert snapshot(dest) == expected
    assert source.setting("badge_key") == dest.setting("badge_key") is not None  # badges keep their URLs
    assert [c.badge_key for c in dest.iter_canaries()] == [c.badge_key for c in source.iter_canaries()]
    again = run("--from", f"sqlite://{source.path}", "--to", f"sqlite://{dest_path}")
    assert again.returncode == 0, again.stderr
    assert "0 canaries copied (0 new, 0 replaced), 4 already there unchanged" in again.stdout
    assert "0 pending notifications copied, 5 already there" in again.stdout
    assert snapshot(dest) == expected
    dest.close()


def test_differing_canary_refused_without_force(tmp_path: Path, source: SQLiteStore) -> None:
    dest_path = tmp_path / "dest.sqlite3"
    assert run("--from", f"sqlite://{source.path}", "--to", f"sqlite://{dest_path}").returncode == 0
    dest = SQLiteStore(str(dest_path))
    changed = next(dest.iter_canaries())
    dest.update(changed.id, {"description": "edited in the destination"})
    newcomer = BusinessLogic(source, FakeClock()).create("Newcomer", 60).id
    before = snapshot(dest)
    refused = run("--from", f"sqlite://{source.path}", "--to", f"sqlite://{dest_path}")
    assert refused.returncode == 1
    assert f"canary {changed.id} ({changed.name}) differs in the destination" in refused.stderr
    assert "refused: 1 conflict(s); nothing was written (--force replaces them)" in refused.stderr
    assert snapshot(dest) == before and dest.get(newcomer) is None
    forced = run("--from", f"sqlite://{source.path}", "--to", f"sqlite://{dest_path}", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "2 canaries copied (1 new, 1 replaced), 3 already there unchanged" in forced.stdout
    # A replaced canary is created anew, so it moves to the end of the list order.
    assert sorted(snapshot(dest)[0], key=by_id) == sorted(snapshot(source)[0], key=by_id)
    dest.close()


def test_slug_taken_by_another_canary_is_a_conflict(tmp_path: Path, source: SQLiteStore) -> None:
    dest = SQLiteStore(str(tmp_path / "dest.sqlite3"))
    other = BusinessLogic(dest, FakeClock()).create("Plain", 5).id
    summary = copy_store.copy(source, dest, out=io.StringIO())
    assert any(f"slug 'plain' belongs to {other}" in c for c in summary.conflicts)
    assert dest.get(other) is not None and summary.created == 0
    forced = copy_store.copy(source, dest, force=True, out=io.StringIO())
    assert forced.replaced == 1 and dest.get(other) is None
    assert sorted(snapshot(dest)[0], key=by_id) == sorted(snapshot(source)[0], key=by_id)
    dest.close()


def test_progress_lines(tmp_path: Path, source: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_store, "PROGRESS_SECONDS", 0.0)
    out = io.StringIO()
    dest = SQLiteStore(str(tmp_path / "dest.sqlite3"))
    copy_store.copy(source, dest, out=out)
    assert out.getvalue().splitlines() == [f"copy-store: {i} of 4 canaries" for i in range(1, 5)]
    dest.close()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("--from", "nope://x", "--to", "sqlite:///tmp/x"), 1, "--from: not a store URI"),
        (
            ("--from", "sqlite:///no/such/file.sqlite3", "--to", "sqlite:///tmp/x"),
            1,
            "--from: no such SQLite",
        ),
        (("--from", "sqlite://", "--to", "sqlite:///tmp/x"), 1, "--from: sqlite:// needs a path"),
        (("--from", "sqlite:///tmp/x", "--to", "sqlite:///tmp/x"), 2, "--from and --to name the same store"),
        (("--from", "mongodb://db.example.com", "--to", "sqlite:///tmp/x"), 1, "--from: "),
    ],
)
def test_bad_arguments_are_one_line(args: tuple[str, ...], code: int, message: str) -> None:
    result = run(*args)
    assert result.returncode == code
    (line,) = result.stderr.strip().splitlines()
    assert message in line and "Traceback" not in result.stderr


def test_unreachable_postgresql_is_one_line_without_the_password(source: SQLiteStore) -> None:
    uri = f"postgresql://coal:Pw-77123@127.0.0.1:{free_port()}/coal"
    result = run("--from", f"sqlite://{source.path}", "--to", uri)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("coal-mine copy-store: --to: Cannot use PostgreSQL:")
    assert "Pw-77123" not in result.stderr + result.stdout


# --- PostgreSQL round trips (live server) -------------------------------------------------------


@pytest.fixture
def schema() -> Iterator[ThrowAwaySchema]:
    made = ThrowAwaySchema()
    yield made
    made.drop()


def test_sqlite_to_postgresql_to_sqlite(tmp_path: Path, source: SQLiteStore, schema: ThrowAwaySchema) -> None:
    back = tmp_path / "back.sqlite3"
    there = run("--from", f"sqlite://{source.path}", "--to", schema.uri)
    assert there.returncode == 0, there.stderr
    again = run("--from", f"sqlite://{source.path}", "--to", schema.uri)
    assert "4 already there unchanged" in again.stdout and "0 pending notifications copied" in again.stdout
    home = run("--from", schema.uri, "--to", f"sqlite://{back}")
    assert home.returncode == 0, home.stderr
    expected = snapshot(source)
    postgres = PostgresStore(schema.uri, max_connections=1)
    try:
        assert snapshot(postgres) == expected
    finally:
        postgres.close()
    returned = SQLiteStore(str(back))
    assert snapshot(returned) == expected
    returned.close()


def test_coal_mine_0_7_mongodb_to_postgresql(schema: ThrowAwaySchema) -> None:
    data = load_fixture()
    database = mongomock_database()
    database["canaries"].insert_many(data["canaries"])
    mongo = MongoStore(database, retry_delays=())
    postgres = PostgresStore(schema.uri, max_connections=1)
    try:
        summary = copy_store.copy(mongo, postgres, out=io.StringIO())
        assert summary.created == len(data["canaries"]) and not summary.conflicts
        expected = snapshot(mongo)
        assert snapshot(postgres) == expected
        assert {c.id for c in expected[0]} == {doc["id"] for doc in data["canaries"]}
        again = copy_store.copy(mongo, postgres, out=io.StringIO())
        assert (again.created, again.replaced, again.unchanged) == (0, 0, len(data["canaries"]))
        assert snapshot(postgres) == expected
    finally:
        postgres.close()
