"""The SQLite store's operations part: worker heartbeats, settings, summaries for metrics.

A mixin of SQLiteStore (which supplies `_read`, `_write`, `path` and the busy
timeout). Scans that read every canary use a connection of their own, so a
metrics scrape never holds the lock that triggers take.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from coal_mine.abstract_store import TRIGGER_COMMENT
from coal_mine.models import (
    Canary,
    CanaryMetricsRow,
    CanaryStatus,
    CanaryTotals,
    OutboxSummary,
    WorkerHeartbeat,
)
from coal_mine.sql_shared import HEARTBEAT_COLUMNS, from_micros, heartbeat_from_row, to_micros
from coal_mine.sqlite_schema import CANARY_COLUMNS, due_row_to_canary

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

_us, _dt = to_micros, from_micros


def _beat(row: tuple) -> WorkerHeartbeat:
    return heartbeat_from_row(row, from_micros)


class SQLiteOperations:
    """Heartbeats, settings and the scans behind /health and /metrics, for SQLiteStore."""

    path: str
    _busy_timeout_ms: int

    if TYPE_CHECKING:

        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

    @contextlib.contextmanager
    def _private(self) -> Iterator[sqlite3.Connection]:
        """A connection of this call's own (no shared lock held while it reads)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            yield conn
        finally:
            conn.close()

    def record_heartbeat(self, beat: WorkerHeartbeat) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO heartbeats ({HEARTBEAT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    beat.worker_id,
                    beat.host,
                    beat.pid,
                    _us(beat.started),
                    _us(beat.seen),
                    _us(beat.last_scan),
                    _us(beat.last_delivery),
                    beat.outbox_depth,
                ),
            )

    def heartbeats(self) -> list[WorkerHeartbeat]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {HEARTBEAT_COLUMNS} FROM heartbeats ORDER BY seen DESC").fetchall()
        return [_beat(row) for row in rows]

    def prune_heartbeats(self, older_than: datetime) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM heartbeats WHERE seen < ?", (_us(older_than),)).rowcount

    def setting(self, name: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def setting_setdefault(self, name: str, value: str) -> str:
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", (name, value))
            return conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()[0]

    def canary_for_badge(self, badge_key: str) -> Canary | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {CANARY_COLUMNS} FROM canaries WHERE badge_key = ?", (badge_key,)
            ).fetchone()
        return due_row_to_canary(row) if row else None

    def canary_totals(self) -> CanaryTotals:
        with self._private() as conn:
            total, late, paused = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(late), 0), COALESCE(SUM(paused), 0) FROM canaries"
            ).fetchone()
        return CanaryTotals(total, late, paused)

    def outbox_summary(self) -> OutboxSummary:
        with self._read() as conn:
            pending, oldest = conn.execute("SELECT COUNT(*), MIN(created) FROM deliveries").fetchone()
        return OutboxSummary(pending, _dt(oldest))

    def iter_canary_status(self) -> Iterator[CanaryStatus]:
        # The newest trigger by the (canary_seq, ts) index: usually the first entry it meets.
        sql = (
            "SELECT id, name, slug, paused, late, deadline, (SELECT h.ts FROM history h "
            f"WHERE h.canary_seq = c.seq AND substr(h.comment, 1, {len(TRIGGER_COMMENT)}) = ? "
            "ORDER BY h.ts DESC LIMIT 1) FROM canaries c ORDER BY seq"
        )
        with self._private() as conn:
            row: Any
            for row in conn.execute(sql, (TRIGGER_COMMENT,)):
                cid, name, slug, paused, late, deadline, last = row
                yield CanaryStatus(cid, name, slug, bool(paused), bool(late), _dt(deadline), _dt(last))

    def iter_canary_metrics(self) -> Iterator[CanaryMetricsRow]:
        # SQLite converts: its rows are the tuples /metrics wants (micros / 1e6 is the same
        # correctly rounded double as timedelta.total_seconds()).
        sql = (
            "SELECT id, name, slug, CAST(late AS REAL), CAST(paused AS REAL), "
            "CASE WHEN paused THEN NULL ELSE deadline / 1e6 END, (SELECT h.ts FROM history h "
            f"WHERE h.canary_seq = c.seq AND substr(h.comment, 1, {len(TRIGGER_COMMENT)}) = ? "
            "ORDER BY h.ts DESC LIMIT 1) / 1e6 FROM canaries c ORDER BY seq"
        )
        with self._private() as conn:
            yield from conn.execute(sql, (TRIGGER_COMMENT,))
