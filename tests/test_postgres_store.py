"""PostgreSQL-specific store properties (the shared behaviour is in test_store_contract.py):
every query the trigger path, the watcher and the list filters run is served by an index,
times are kept to the millisecond, and trouble with the connection is a StoreUnavailableError.
Needs COAL_MINE_TEST_POSTGRESQL_URI."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.models import Canary, StoreUnavailableError
from coal_mine.postgres_store import PostgresStore
from tests.stores import ThrowAwaySchema

TABLES = ("canaries", "history", "deliveries")


@pytest.fixture
def schema() -> Iterator[ThrowAwaySchema]:
    made = ThrowAwaySchema()
    yield made
    made.drop()


def scans(schema: ThrowAwaySchema) -> dict[str, tuple[int, int]]:
    """(sequential scans, index scans) of each table so far."""
    with psycopg.connect(schema.base, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE schemaname = %s",
            (schema.name,),
        ).fetchall()
    return {name: (seq, idx) for name, seq, idx in rows if name in TABLES}


def settled_scans(schema: ThrowAwaySchema) -> dict[str, tuple[int, int]]:
    """scans() once the store's closed connections have published their statistics
    (a backend does that as it exits, just after its client has gone)."""
    previous: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with psycopg.connect(schema.base, autocommit=True) as conn:
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'scan-test'"
            ).fetchone()
        current = scans(schema)
        if others == (0,) and current == previous:
            return current
        previous = current
        time.sleep(0.2)
    raise AssertionError("statistics did not settle")


def test_no_operation_reads_a_whole_table(schema: ThrowAwaySchema) -> None:
    # With sequential scans priced out, the planner still uses one where no index serves
    # the query, so a counted sequential scan means a missing index.
    uri = f"{schema.uri}%20-cenable_seqscan%3Doff&application_name=scan-test"
    PostgresStore(uri, max_connections=2).close()
    before = settled_scans(schema)  # CREATE INDEX reads each table once
    store = PostgresStore(uri, max_connections=2)
    clock = FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    logic = BusinessLogic(store, clock)
    ids = [logic.create(f"Job {i}", 60 + i, emails=["ops@example.com"]).id for i in range(200)]
    logic.create("Paused", 60, paused=True)
    for cid in ids[:50]:
        logic.trigger(cid, comment="ok")
    assert store.earliest_deadline() is not None
    clock.advance(65)
    due = store.due_canaries(clock.now(), 100)
    assert due and all(logic.mark_late(canary) for canary in due)
    logic.trigger(due[0].id, comment="back")
    for paused in (None, True, False):
        for late in (None, True, False):
            list(store.iter_canaries(paused=paused, late=late, history=True))
    assert store.id_for_slug("job-7") == ids[7] and store.get(ids[7]) is not None
    assert set(store.last_entries(ids[:60], "Triggered")) == set(ids[:50])
    logic.update(ids[8], name="Renamed", periodicity=30)
    claimed = store.claim_notifications(
        clock.now(), "w", clock.now() + timedelta(seconds=30), "email", group=True
    )
    assert claimed
    store.complete_notifications(claimed, "w", clock.now())
    logic.delete(ids[9])
    store.close()
    after = settled_scans(schema)
    assert set(after) == set(TABLES)
    assert {table: after[table][0] - before[table][0] for table in TABLES} == dict.fromkeys(TABLES, 0), after
    assert all(after[table][1] > before[table][1] for table in TABLES)
    # (next_notification_time reads every pending notification by design: the outbox holds
    # only messages not yet sent.)


def test_times_are_kept_to_the_millisecond(schema: ThrowAwaySchema) -> None:
    store = PostgresStore(schema.uri, max_connections=1)
    try:
        when = datetime(2026, 3, 2, 12, 0, 0, 123456, tzinfo=UTC)
        store.create(
            Canary(id="aaaaaaaa", name="A", slug="a", periodicity=60.0, deadline=when, history=[(when, "x")])
        )
        canary = store.get("aaaaaaaa")
        assert canary is not None
        assert canary.deadline == when.replace(microsecond=123000)
        assert canary.history == [(when.replace(microsecond=123000), "x")]
        with psycopg.connect(schema.uri) as conn:
            kinds = dict(
                conn.execute(  # type: ignore[arg-type]
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s AND column_name IN ('deadline', 'ts', 'created', 'not_before')",
                    (schema.name,),
                ).fetchall()
            )
        assert set(kinds.values()) == {"timestamp with time zone"}
    finally:
        store.close()


def test_a_dropped_connection_is_unavailable_then_recovers(schema: ThrowAwaySchema) -> None:
    store = PostgresStore(schema.uri, max_connections=1)
    try:
        store.create(Canary(id="aaaaaaaa", name="A", slug="a", periodicity=60.0, history=[]))
        with psycopg.connect(schema.base, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = ''"
            )
        # The pooled connection is dead now: a read is tried again on a new one.
        assert store.get("aaaaaaaa") is not None
        with psycopg.connect(schema.base, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        # A write meeting a dead connection: tried again if it never reached the server,
        # else StoreUnavailableError; either way the store works again afterwards.
        try:
            store.update("aaaaaaaa", {"description": "x"})
        except StoreUnavailableError as exc:
            assert "PostgreSQL is unavailable" in str(exc)
        assert store.update("aaaaaaaa", {"description": "y"})
        assert store.get("aaaaaaaa").description == "y"  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_statement_past_the_timeout_is_unavailable(
    schema: ThrowAwaySchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("coal_mine.postgres_store.STATEMENT_TIMEOUT_MS", 200)
    store = PostgresStore(schema.uri, max_connections=1)
    try:
        store.create(Canary(id="aaaaaaaa", name="A", slug="a", periodicity=60.0, history=[]))
        with psycopg.connect(schema.uri) as blocker:
            blocker.execute("SELECT * FROM canaries WHERE id = 'aaaaaaaa' FOR UPDATE")
            with pytest.raises(StoreUnavailableError, match="statement timeout"):
                store.update("aaaaaaaa", {"description": "blocked"})
        assert store.update("aaaaaaaa", {"description": "free"})
    finally:
        store.close()


def history_bookkeeping(store: PostgresStore, canary_id: str) -> tuple[tuple, tuple]:
    """(history_count, history_oldest) as the canary row says, and as the history table has it."""
    return store._run(
        "test",
        lambda conn: (
            conn.execute(
                "SELECT history_count, history_oldest FROM canaries WHERE id = %s", (canary_id,)
            ).fetchone(),
            conn.execute(
                "SELECT count(*), min(h.ts) FROM history h JOIN canaries c ON h.canary_seq = c.seq "
                "WHERE c.id = %s",
                (canary_id,),
            ).fetchone(),
        ),
    )


@pytest.mark.parametrize(
    "existing_age_days, entries, expected",
    [(0, 1005, 1000), (8, 150, 100), (8, 90, 91), (3, 150, 151), (8, 1200, 100), (0, 1000, 1000)],
)
def test_the_trigger_statement_that_prunes_keeps_what_update_keeps(
    schema: ThrowAwaySchema, existing_age_days: int, entries: int, expected: int
) -> None:
    from tests.test_store_contract import T0, make
    from tests.test_store_contract_postpone import ON_TIME

    store = PostgresStore(schema.uri, max_connections=2)
    try:
        start = T0 - timedelta(days=existing_age_days, seconds=entries)
        history = [(start + timedelta(seconds=i), f"e{i}") for i in range(entries)][::-1]
        store.create(make(history=history, deadline=T0))
        store._at_limit.add("aaaaaaaa")  # as if its last trigger here had pruned
        policy = BusinessLogic(store, FakeClock(T0))._prune_policy(T0)
        assert store.postpone("aaaaaaaa", T0, expect=ON_TIME, history=(T0, "newest"), prune=policy) is True
        assert store.get("aaaaaaaa").history == [(T0, "newest"), *history[: expected - 1]]
        counted, real = history_bookkeeping(store, "aaaaaaaa")
        assert counted == real and counted[0] == expected
        assert ("aaaaaaaa" in store._at_limit) == (expected in (100, 1000))
    finally:
        store.close()


def test_concurrent_triggers_at_the_history_limit_keep_count_and_limit(schema: ThrowAwaySchema) -> None:
    store = PostgresStore(schema.uri, max_connections=8)
    try:
        logic = BusinessLogic(store, FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC)))
        canary = logic.create("Busy", 3600)
        for _ in range(1005):
            logic.trigger(canary.id)
        assert canary.id in store._at_limit

        def burst() -> None:
            for _ in range(40):
                logic.trigger(canary.id)

        threads = [threading.Thread(target=burst) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counted, real = history_bookkeeping(store, canary.id)
        assert counted == real and real[0] == 1000
    finally:
        store.close()
