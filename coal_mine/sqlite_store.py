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

from coal_mine.abstract_store import CANARY_FIELDS, AbstractStore
from coal_mine.sqlite_errors import refuse_foreign_tables, unavailable_on_failure
from coal_mine.sqlite_ops import SQLiteOperations
from coal_mine.sqlite_schema import MIGRATIONS as _MIGRATIONS
from coal_mine.sqlite_schema import SCHEMA_VERSION
from coal_mine.models import (
    AlreadyExistsError,
    Canary,
    HistoryEntry,
    NewNotification,
    Notification,
    PrunePolicy,
    StoreUnavailableError,
)
from coal_mine.sqlite_group_commit import GroupCommit
from coal_mine.sql_shared import (
    NOTIFICATION_COLUMNS,
    Execute,
    from_micros,
    notification_from_row,
    prune_rows,
    to_micros,
)
from coal_mine.sql_shared import last_entries_query

log = logging.getLogger(__name__)


_CANARY_COLUMNS = "seq, id, name, slug, periodicity, description, emails, paused, late, deadline, badge_key"


_to_db, _from_db = to_micros, from_micros


def _rowcount(conn: sqlite3.Connection) -> Execute:
    return lambda sql, params: conn.execute(sql, params).rowcount


def _column_value(name: str, value: Any) -> Any:
    if name == "deadline":
        return _to_db(value)
    if name == "emails":
        return json.dumps(list(value))
    if name in ("paused", "late"):
        return int(bool(value))
    return value


def _row_to_canary(row: tuple, history: list[HistoryEntry] | None) -> Canary:
    _seq, cid, name, slug, periodicity, description, emails, paused, late, deadline, badge_key = row
    return Canary(
        id=cid,
        name=name,
        slug=slug,
        periodicity=periodicity,
        description=description,
        emails=json.loads(emails),
        paused=bool(paused),
        late=bool(late),
        deadline=_from_db(deadline),
        history=history,
        badge_key=badge_key,
    )


def _due_row_to_canary(row: tuple) -> Canary:
    """Like _row_to_canary, but an emails value that cannot be decoded reads as [], so
    one corrupt row cannot hide the other due canaries from the watcher (which
    re-reads each canary with get() and so still meets the error, with its id)."""
    try:
        return _row_to_canary(row, None)
    except ValueError:
        return _row_to_canary((*row[:6], "[]", *row[7:]), None)


def _row_to_notification(row: tuple) -> Notification:
    return notification_from_row(row, _from_db, json.loads)


_NOTE_COLUMNS = ", ".join(NOTIFICATION_COLUMNS)
# The oldest pending notification of each canary: only it may be sent, so that
# one canary's messages always go out in the order they happened.
_HEADS = (
    "FROM notifications n WHERE n.nid = "
    "(SELECT MIN(m.nid) FROM notifications m WHERE m.canary_id = n.canary_id)"
)
_CLAIMABLE = (
    f"{_HEADS} AND n.not_before <= ? AND (n.lease_until IS NULL OR n.lease_until <= ?) ORDER BY n.nid LIMIT 1"
)


class SQLiteStore(SQLiteOperations, AbstractStore):
    """Stores canaries in one SQLite file; safe for many threads and processes.

    The threads of a process share one connection, taken in turn under a lock:
    its page cache stays warm (SQLite drops a connection's cache whenever another
    connection has written, so per-thread connections re-read pages on nearly
    every request), and a writer waits on the lock, which wakes it at once,
    rather than in SQLite's busy handler, which sleeps in steps of milliseconds.
    Each statement takes microseconds, so taking turns costs nothing on the one
    core a Python process can use. Writes run in `BEGIN IMMEDIATE` transactions,
    so conditional updates are atomic across processes too.
    """

    def __init__(self, path: str, *, synchronous: str = "NORMAL", busy_timeout: float = 10.0) -> None:
        self.path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._lock = threading.RLock()
        self._group = GroupCommit(self._write)
        self._shared: sqlite3.Connection | None = None
        self._pid = os.getpid()
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
        if self._shared is None or self._pid != os.getpid():
            self._shared, self._pid = self._connect(), os.getpid()
        return self._shared

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for this thread alone until the block ends (fetch inside it)."""
        with self._lock, unavailable_on_failure(self.path):
            yield self._connection()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, unavailable_on_failure(self.path):
            conn = self._connection()
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
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if version:
                    log.info("Migrated %s to schema version %d", self.path, step + 1)
            if not version:
                log.info("Created %s (schema version %d)", self.path, SCHEMA_VERSION)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._group.close()
        with self._lock:
            if self._shared is not None and self._pid == os.getpid():
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
                    "paused, late, deadline, history_count, history_oldest, badge_key) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
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
                        _to_db(canary.deadline),
                        len(history),
                        _to_db(min((ts for ts, _ in history), default=None)),
                        canary.badge_key,
                    ),
                ).fetchone()[0]
                conn.executemany(
                    "INSERT INTO history (canary_seq, ts, comment) VALUES (?, ?, ?)",
                    [(seq, _to_db(ts), comment) for ts, comment in reversed(history)],
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
        return [(_from_db(ts), comment) for ts, comment in rows]

    def get(self, canary_id: str, *, history: bool = True) -> Canary | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_CANARY_COLUMNS} FROM canaries WHERE id = ?", (canary_id,)
            ).fetchone()
            if row is None:
                return None
            entries = self._history(conn, row[0]) if history else None
        return _row_to_canary(row, entries)

    def last_entries(self, canary_ids: Sequence[str], prefix: str) -> dict[str, datetime]:
        with self._read() as conn:
            rows = conn.execute(*last_entries_query(canary_ids, prefix, "?")).fetchall() if canary_ids else []
        return {canary_id: _from_db(ts) for canary_id, ts in rows if ts is not None}

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
    ) -> bool:
        sets, params = [], []
        expect = expect or {}
        for name, value in changes.items():
            if name not in CANARY_FIELDS:
                raise ValueError(f"unknown canary field {name}")
            if name in expect and expect[name] == value:
                continue  # WHERE guarantees it already; leaving it out spares its index pages
            sets.append(f"{name} = ?")
            params.append(_column_value(name, value))
        if history is not None:
            sets.append("history_count = history_count + 1")
            sets.append("history_oldest = MIN(COALESCE(history_oldest, ?), ?)")
            params += [_to_db(history[0])] * 2
        where, where_params = ["id = ?"], [canary_id]
        for name, value in expect.items():
            if name not in CANARY_FIELDS:
                raise ValueError(f"unknown canary field {name}")
            if value is None:
                where.append(f"{name} IS NULL")
            else:
                where.append(f"{name} = ?")
                where_params.append(_column_value(name, value))
        sql = (
            f"UPDATE canaries SET {', '.join(sets) or 'seq = seq'} WHERE {' AND '.join(where)} "
            "RETURNING seq, history_count, history_oldest"
        )

        def apply(conn: sqlite3.Connection) -> bool:
            row = conn.execute(sql, params + where_params).fetchone()
            if row is None:
                return False
            seq, count, oldest = row
            if history is not None:
                conn.execute(
                    "INSERT INTO history (canary_seq, ts, comment) VALUES (?, ?, ?)",
                    (seq, _to_db(history[0]), history[1]),
                )
                if prune is not None:
                    run = _rowcount(conn)
                    prune_rows(run, "?", seq, count, oldest, _to_db(prune.older_than), prune)
            for new in notifications:
                conn.execute(
                    "INSERT INTO notifications (canary_id, kind, created, payload, not_before) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        canary_id,
                        new.kind,
                        _to_db(new.created),
                        json.dumps(new.payload),
                        _to_db(new.created),
                    ),
                )
            return True

        try:
            # Group commit: batched with the other writes waiting, committed before returning.
            return self._group.run(apply)
        except sqlite3.IntegrityError as exc:
            raise self._clash(exc, canary_id, changes.get("slug")) from exc

    def delete(self, canary_id: str) -> bool:
        with self._write() as conn:
            row = conn.execute("DELETE FROM canaries WHERE id = ? RETURNING seq", (canary_id,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM history WHERE canary_seq = ?", (row[0],))
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
                rows = conn.execute(f"SELECT {_CANARY_COLUMNS} FROM canaries {clause} ORDER BY seq", params)
                for row in rows:
                    yield _row_to_canary(row, None)
                return
            rows = conn.execute(
                f"SELECT {_CANARY_COLUMNS}, h.ts, h.comment FROM "
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
                    current = _row_to_canary(row[:11], entries)
                if row[11] is not None:
                    entries.append((_from_db(row[11]), row[12]))
            if current is not None:
                yield current
        finally:
            conn.close()

    def earliest_deadline(self) -> datetime | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT MIN(deadline) FROM canaries INDEXED BY canaries_watched WHERE paused = 0 AND late = 0"
            ).fetchone()
        return _from_db(row[0])

    def due_canaries(self, now: datetime, limit: int) -> list[Canary]:
        with self._read() as conn:
            rows = conn.execute(
                # Without INDEXED BY the planner picks the (paused, late) index and reads
                # every watched canary: milliseconds per call at 100,000 canaries.
                f"SELECT {_CANARY_COLUMNS} FROM canaries INDEXED BY canaries_watched "
                "WHERE paused = 0 AND late = 0 AND deadline < ? "
                "ORDER BY deadline LIMIT ?",
                (_to_db(now), limit),
            ).fetchall()
        return [_due_row_to_canary(row) for row in rows]

    # --- notification outbox -------------------------------------------------------

    def claim_notification(self, now: datetime, owner: str, lease_until: datetime) -> Notification | None:
        when = _to_db(now)
        # The sender looks after every write; most of the time there is nothing to claim,
        # which a plain read answers without taking the database's write lock.
        with self._read() as conn:
            if conn.execute(f"SELECT 1 {_CLAIMABLE}", (when, when)).fetchone() is None:
                return None
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {', '.join('n.' + c.strip() for c in _NOTE_COLUMNS.split(','))} {_CLAIMABLE}",
                (when, when),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE notifications SET lease_owner = ?, lease_until = ? WHERE nid = ?",
                (owner, _to_db(lease_until), row[0]),
            )
        return _row_to_notification(row)

    def complete_notification(self, notification: Notification, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM notifications WHERE nid = ? AND lease_owner = ?", (notification.id, owner)
            )

    def retry_notification(self, notification: Notification, owner: str, not_before: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE notifications SET attempts = attempts + 1, not_before = ?, lease_owner = NULL, "
                "lease_until = NULL WHERE nid = ? AND lease_owner = ?",
                (_to_db(not_before), notification.id, owner),
            )

    def next_notification_time(self) -> datetime | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT MIN(MAX(n.not_before, COALESCE(n.lease_until, 0))) {_HEADS}"
            ).fetchone()
        return _from_db(row[0])

    def pending_notifications(self) -> list[Notification]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_NOTE_COLUMNS} FROM notifications ORDER BY nid").fetchall()
        return [_row_to_notification(row) for row in rows]

    def count_notifications(self) -> int:
        with self._read() as conn:
            (count,) = conn.execute("SELECT count(*) FROM notifications").fetchone()
        return int(count)
