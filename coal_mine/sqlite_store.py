"""SQLite store: the embedded default. One file, WAL mode, versioned schema."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from coal_mine.abstract_store import ALL_FIELDS, RUN_FIELDS, AbstractStore
from coal_mine.sqlite_errors import refuse_foreign_tables, unavailable
from coal_mine.sqlite_ops import SQLiteOperations
from coal_mine.sqlite_outbox import SQLiteOutbox
from coal_mine.models import (
    AlreadyExistsError,
    Canary,
    HistoryEntry,
    NewNotification,
    Output,
    PrunePolicy,
    StoreUnavailableError,
)
from coal_mine.sql_shared import Execute, last_entries_query, prune_rows
from coal_mine.sqlite_schema import (
    ALERT_FIELDS,
    CANARY_COLUMNS,
    MIGRATIONS,
    NCOLUMNS,
    SCHEMA_VERSION,
    column_value,
    due_row_to_canary,
    from_db,
    row_to_canary,
    statements,
    to_db,
)

log = logging.getLogger(__name__)


# How many forks this process is from the first: a forked child must not use its
# parent's connection (counted at fork time: os.getpid() would cost a system call per use).
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class _Turn:
    """The store's shared connection for one thread at a time (a reentrant lock), with
    SQLite's failures reported as the store being unavailable (see unavailable);
    a plain class, as the hot path takes a turn or two per request."""

    __slots__ = ("store",)

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            return self.store._connection()
        except BaseException:
            self.store._lock.release()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.store._lock.release()
        if isinstance(exc, sqlite3.DatabaseError):
            failure = unavailable(self.store.path, exc)
            if failure is not None:
                raise failure from exc


# `when` (a ? parameter) plus the canary's periodicity in seconds, to the millisecond, exactly
# as BusinessLogic.deadline_after: whole seconds, then the fraction's microseconds rounded
# half to even (Python's timedelta), then truncated to milliseconds (to_millis).
_FRACTION_US = "((periodicity - CAST(periodicity AS INTEGER)) * 1000000)"
_NEXT_DEADLINE = (
    f"((? + CAST(periodicity AS INTEGER) * 1000000 + CAST({_FRACTION_US} AS INTEGER) "
    f"+ ({_FRACTION_US} - CAST({_FRACTION_US} AS INTEGER) > 0.5 "
    f"OR {_FRACTION_US} - CAST({_FRACTION_US} AS INTEGER) = 0.5 AND CAST({_FRACTION_US} AS INTEGER) % 2 = 1)"
    ") / 1000 * 1000)"
)


def _rowcount(conn: sqlite3.Connection) -> Execute:
    return lambda sql, params: conn.execute(sql, params).rowcount


class SQLiteStore(SQLiteOperations, SQLiteOutbox, AbstractStore):
    """Stores canaries in one SQLite file; safe for many threads and processes.

    The threads of a process share one connection, taken in turn under a lock:
    its page cache stays warm (SQLite drops a connection's cache whenever another
    connection has written, so per-thread connections re-read pages on nearly
    every request), and a writer waits on the lock, which wakes it at once,
    rather than in SQLite's busy handler, which sleeps in steps of milliseconds.
    Each statement takes microseconds, so taking turns costs nothing on the one
    core a Python process can use. A write is one statement (a trigger's, see schema
    6) or a `BEGIN IMMEDIATE` transaction, so conditional updates are atomic across
    processes too.
    """

    def __init__(self, path: str, *, synchronous: str = "NORMAL", busy_timeout: float = 10.0) -> None:
        self.path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._lock = threading.RLock()
        self._shared: sqlite3.Connection | None = None
        self._forks = _forks  # the shared connection's process (see _connection)
        self._turn = _Turn(self)
        self._migrate()

    # --- connections and transactions ---------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"Cannot open SQLite database {self.path}: {exc}") from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        """The shared connection (hold self._lock); a forked child opens its own."""
        if self._shared is None or self._forks != _forks:
            self._shared, self._forks = self._connect(), _forks
        return self._shared

    def _read(self) -> _Turn:
        """The connection, for this thread alone until the block ends (fetch inside it)."""
        return self._turn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._turn as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailableError(f"SQLite database is busy: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT: the shared connection must not stay in a transaction.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if not version:
                refuse_foreign_tables(conn, self.path)
            if version > SCHEMA_VERSION:
                raise StoreUnavailableError(
                    f"{self.path} has schema version {version}, newer than this server knows "
                    f"({SCHEMA_VERSION})"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[step]):
                    conn.execute(statement)
                if version:
                    log.info("Migrated %s to schema version %d", self.path, step + 1)
            if not version:
                log.info("Created %s (schema version %d)", self.path, SCHEMA_VERSION)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            if self._shared is not None and self._forks == _forks:
                with contextlib.suppress(sqlite3.Error):
                    self._shared.close()
            self._shared = None

    # --- canaries -------------------------------------------------------------

    def create(self, canary: Canary) -> None:
        history = canary.history or []
        try:
            with self._write() as conn:
                seq = conn.execute(
                    "INSERT INTO canaries (id, name, slug, periodicity, description, emails, "
                    "paused, late, deadline, history_count, history_oldest, badge_key, "
                    "max_runtime, failed, runs, last_duration, snooze_until, alarm, webhooks, slacks, "
                    "repeat, remind_at) "
                    f"VALUES ({', '.join(['?'] * 22)}) "
                    "RETURNING seq",
                    (
                        canary.id,
                        canary.name,
                        canary.slug,
                        canary.periodicity,
                        canary.description,
                        json.dumps(canary.emails),
                        int(canary.paused),
                        int(canary.late),
                        to_db(canary.deadline),
                        len(history),
                        to_db(min((ts for ts, _ in history), default=None)),
                        canary.badge_key,
                        *(column_value(n, getattr(canary, n)) for n in RUN_FIELDS),
                        *(column_value(n, getattr(canary, n)) for n in ALERT_FIELDS),
                    ),
                ).fetchone()[0]
                conn.executemany(
                    "INSERT INTO history (canary_seq, ts, comment) VALUES (?, ?, ?)",
                    [(seq, to_db(ts), comment) for ts, comment in reversed(history)],
                )
        except sqlite3.IntegrityError as exc:
            raise self._clash(exc, canary.id, canary.slug) from exc

    @staticmethod
    def _clash(exc: sqlite3.IntegrityError, cid: str, slug: str | None) -> Exception:
        if "canaries.id" in str(exc):
            return AlreadyExistsError("id", cid)
        if "canaries.slug" in str(exc):
            return AlreadyExistsError("slug", slug or "")
        if "canaries.badge_key" in str(exc):
            return AlreadyExistsError("badge_key", "")
        return exc

    def _history(self, conn: sqlite3.Connection, seq: int) -> list[HistoryEntry]:
        rows = conn.execute(
            "SELECT ts, comment FROM history WHERE canary_seq = ? ORDER BY ts DESC, hid DESC", (seq,)
        )
        return [(from_db(ts), comment) for ts, comment in rows]

    def get(self, canary_id: str, *, history: bool = True) -> Canary | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {CANARY_COLUMNS} FROM canaries WHERE id = ?", (canary_id,)).fetchone()
            if row is None:
                return None
            entries = self._history(conn, row[0]) if history else None
        return row_to_canary(row, entries)

    def last_entries(self, canary_ids: Sequence[str], prefix: str) -> dict[str, datetime]:
        with self._read() as conn:
            rows = conn.execute(*last_entries_query(canary_ids, prefix, "?")).fetchall() if canary_ids else []
        return {canary_id: from_db(ts) for canary_id, ts in rows if ts is not None}

    def id_for_slug(self, slug: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT id FROM canaries WHERE slug = ?", (slug,)).fetchone()
        return row[0] if row else None

    def update(
        self,
        canary_id: str,
        changes: Mapping[str, Any],
        *,
        expect: Mapping[str, Any] | None = None,
        history: HistoryEntry | None = None,
        prune: PrunePolicy | None = None,
        notifications: Iterable[NewNotification] = (),
        output: Output | None = None,
    ) -> bool:
        sets, params = [], []
        expect = expect or {}
        for name, value in changes.items():
            if name not in ALL_FIELDS:
                raise ValueError(f"unknown canary field {name}")
            if name in expect and expect[name] == value:
                continue  # WHERE guarantees it already; leaving it out spares its index pages
            sets.append(f"{name} = ?")
            params.append(column_value(name, value))
        where, where_params = self._conditions(canary_id, expect)
        try:
            if history is not None and output is None and not notifications:
                # One statement, so no transaction to begin and commit: its trigger
                # (schema 6) appends the entry the row is handed and prunes.
                appended, appended_params = self._appended(history, prune)
                sql = f"UPDATE canaries SET {', '.join([*sets, appended])} WHERE {where} RETURNING seq"
                with self._turn as conn:
                    return bool(conn.execute(sql, [*params, *appended_params, *where_params]).fetchall())
            if history is not None:
                ts = to_db(history[0])
                sets.append("history_count = history_count + 1")
                sets.append("history_oldest = MIN(COALESCE(history_oldest, ?), ?)")
                params += [ts, ts]
            sql = (
                f"UPDATE canaries SET {', '.join(sets) or 'seq = seq'} WHERE {where} "
                "RETURNING seq, history_count, history_oldest"
            )
            with self._write() as conn:
                row = conn.execute(sql, params + where_params).fetchone()
                if row is None:
                    return False
                if history is not None:
                    self._append(conn, row, history, prune, output)
                for new in notifications:
                    self._record(conn, canary_id, new)
                return True
        except sqlite3.IntegrityError as exc:
            raise self._clash(exc, canary_id, changes.get("slug")) from exc

    def postpone(
        self,
        canary_id: str,
        when: datetime,
        *,
        expect: Mapping[str, Any],
        history: HistoryEntry,
        prune: PrunePolicy | None = None,
    ) -> Canary | bool:
        """One statement (see AbstractStore.postpone); the canary is read only when it does
        not qualify."""
        where, where_params = self._conditions(canary_id, expect)
        appended, appended_params = self._appended(history, prune)
        sql = (
            f"UPDATE canaries SET deadline = {_NEXT_DEADLINE}, {appended} WHERE {where} "
            f"AND typeof(periodicity) IN ('real', 'integer') AND deadline <= {_NEXT_DEADLINE} RETURNING seq"
        )
        when_us = to_db(when)
        with self._turn as conn:
            if conn.execute(sql, [when_us, *appended_params, *where_params, when_us]).fetchall():
                return True
        return self.get(canary_id, history=False) or False

    @staticmethod
    def _conditions(canary_id: str, expect: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The WHERE clause for canary `canary_id` matching `expect`, and its parameters."""
        where, params = ["id = ?"], [canary_id]
        for name, value in expect.items():
            if name not in ALL_FIELDS:
                raise ValueError(f"unknown canary field {name}")
            stored = column_value(name, value)
            if stored is None:
                where.append(f"{name} IS NULL")
            else:
                where.append(f"{name} = ?")
                params.append(stored)
        return " AND ".join(where), params

    @staticmethod
    def _appended(entry: HistoryEntry, prune: PrunePolicy | None) -> tuple[str, list[Any]]:
        """SET terms that append `entry` in the same statement (by schema 6's trigger, which
        also prunes by `prune`), and their parameters."""
        ts = to_db(entry[0])
        policy = (
            [None] * 3 if prune is None else [prune.max_entries, prune.min_entries, to_db(prune.older_than)]
        )
        return (
            "history_count = history_count + 1, history_oldest = MIN(COALESCE(history_oldest, ?), ?), "
            "entry_ts = ?, entry_comment = ?, prune_max = ?, prune_min = ?, prune_before = ?",
            [ts, ts, ts, entry[1], *policy],
        )

    @staticmethod
    def _append(
        conn: sqlite3.Connection,
        row: tuple[int, int, int | None],
        entry: HistoryEntry,
        prune: PrunePolicy | None,
        output: Output | None,
    ) -> None:
        """Insert the history entry (with its output) of the canary `row` (seq, history count and
        oldest after the update) and prune, inside the update's transaction."""
        seq, count, oldest = row
        kept = (output.text, output.size, int(output.truncated)) if output else (None,) * 3
        conn.execute(
            "INSERT INTO history (canary_seq, ts, comment, output, output_size, output_cut) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (seq, to_db(entry[0]), entry[1], *kept),
        )
        if prune is not None:
            prune_rows(_rowcount(conn), "?", seq, count, oldest, to_db(prune.older_than), prune)

    def delete(self, canary_id: str) -> bool:
        with self._write() as conn:
            row = conn.execute("DELETE FROM canaries WHERE id = ? RETURNING seq", (canary_id,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM history WHERE canary_seq = ?", (row[0],))
            conn.execute("DELETE FROM target_status WHERE canary_id = ?", (canary_id,))
            return True

    def iter_canaries(
        self, *, paused: bool | None = None, late: bool | None = None, history: bool = False
    ) -> Iterator[Canary]:
        where, params = [], []
        if paused is not None:
            where.append("paused = ?")
            params.append(int(paused))
        if late is not None:
            where.append("late = ?")
            params.append(int(late))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        # A connection of its own, so that the caller may write while this streams.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            if not history:
                rows = conn.execute(f"SELECT {CANARY_COLUMNS} FROM canaries {clause} ORDER BY seq", params)
                for row in rows:
                    yield row_to_canary(row, None)
                return
            rows = conn.execute(
                f"SELECT {CANARY_COLUMNS}, h.ts, h.comment FROM "
                f"(SELECT * FROM canaries {clause}) c LEFT JOIN history h ON h.canary_seq = c.seq "
                "ORDER BY c.seq, h.ts DESC, h.hid DESC",
                params,
            )
            current: Canary | None = None
            entries: list[HistoryEntry] = []
            current_seq = None
            for row in rows:
                if row[0] != current_seq:
                    if current is not None:
                        yield current
                    current_seq = row[0]
                    entries = []
                    current = row_to_canary(row[:NCOLUMNS], entries)
                if row[NCOLUMNS] is not None:
                    entries.append((from_db(row[NCOLUMNS]), row[NCOLUMNS + 1]))
            if current is not None:
                yield current
        finally:
            conn.close()

    def earliest_deadline(self) -> datetime | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT MIN(deadline) FROM canaries INDEXED BY canaries_watched WHERE paused = 0 AND late = 0"
            ).fetchone()
        return from_db(row[0])

    def due_canaries(self, now: datetime, limit: int) -> list[Canary]:
        with self._read() as conn:
            rows = conn.execute(
                # Without INDEXED BY the planner picks the (paused, late) index and reads
                # every watched canary: milliseconds per call at 100,000 canaries.
                f"SELECT {CANARY_COLUMNS} FROM canaries INDEXED BY canaries_watched "
                "WHERE paused = 0 AND late = 0 AND deadline < ? "
                "ORDER BY deadline LIMIT ?",
                (to_db(now), limit),
            ).fetchall()
        return [due_row_to_canary(row) for row in rows]

    def outputs(self, canary_id: str) -> list[tuple[datetime, Output]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT h.ts, h.output, h.output_size, h.output_cut FROM history h "
                "JOIN canaries c ON h.canary_seq = c.seq WHERE c.id = ? AND h.output IS NOT NULL "
                "ORDER BY h.ts DESC, h.hid DESC",
                (canary_id,),
            ).fetchall()
        return [(from_db(int(ts)), Output(text, size, bool(cut))) for ts, text, size, cut in rows]

    def earliest_alarm(self) -> datetime | None:
        with self._read() as conn:
            row = conn.execute("SELECT MIN(alarm) FROM canaries WHERE alarm IS NOT NULL").fetchone()
        return from_db(row[0])

    def due_alarms(self, now: datetime, limit: int) -> list[Canary]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {CANARY_COLUMNS} FROM canaries WHERE alarm IS NOT NULL AND alarm <= ? "
                "ORDER BY alarm LIMIT ?",
                (to_db(now), limit),
            ).fetchall()
        return [due_row_to_canary(row) for row in rows]

    # --- notification outbox -------------------------------------------------------

    def due_reminders(self, now: datetime, limit: int) -> list[Canary]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {CANARY_COLUMNS} FROM canaries INDEXED BY canaries_reminders "
                "WHERE remind_at IS NOT NULL AND remind_at <= ? AND late = 1 AND paused = 0 "
                "ORDER BY remind_at LIMIT ?",
                (to_db(now), limit),
            ).fetchall()
        return [due_row_to_canary(row) for row in rows]

    def next_reminder_time(self) -> datetime | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT MIN(remind_at) FROM canaries INDEXED BY canaries_reminders "
                "WHERE remind_at IS NOT NULL AND late = 1 AND paused = 0"
            ).fetchone()
        return from_db(row[0])
