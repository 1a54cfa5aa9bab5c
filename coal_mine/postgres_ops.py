"""The PostgreSQL store's operations part: worker heartbeats, settings, summaries for metrics.

A mixin of PostgresStore (which supplies `_run`). The scan behind /metrics reads
canaries a page at a time, one short query each, like `iter_canaries`, so a
scrape never holds a pooled connection while it formats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from coal_mine.abstract_store import TRIGGER_COMMENT
from coal_mine.models import Canary, CanaryStatus, CanaryTotals, OutboxSummary, WorkerHeartbeat
from coal_mine.postgres_rows import CANARY_COLUMNS, ms, row_to_canary, utc
from coal_mine.sql_shared import HEARTBEAT_COLUMNS, heartbeat_from_row

T = TypeVar("T")
_PAGE = 2000


def _beat(row: Any) -> WorkerHeartbeat:
    return heartbeat_from_row(row, utc)


class PostgresOperations:
    """Heartbeats, settings and the scans behind /health and /metrics, for PostgresStore."""

    _run: Callable[..., Any]

    def _query(self, what: str, sql: str, params: Any = ()) -> list[Any]:
        def work(conn: psycopg.Connection) -> list[Any]:
            return conn.execute(sql.encode(), params).fetchall()

        return self._run(what, work, idempotent=True)

    def record_heartbeat(self, beat: WorkerHeartbeat) -> None:
        self._query(
            "heartbeat",
            f"INSERT INTO heartbeats ({HEARTBEAT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (worker_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
            "started = EXCLUDED.started, seen = EXCLUDED.seen, last_scan = EXCLUDED.last_scan, "
            "last_delivery = EXCLUDED.last_delivery, outbox_depth = EXCLUDED.outbox_depth RETURNING 1",
            (
                beat.worker_id,
                beat.host,
                beat.pid,
                ms(beat.started),
                ms(beat.seen),
                ms(beat.last_scan),
                ms(beat.last_delivery),
                beat.outbox_depth,
            ),
        )

    def heartbeats(self) -> list[WorkerHeartbeat]:
        rows = self._query("heartbeat", f"SELECT {HEARTBEAT_COLUMNS} FROM heartbeats ORDER BY seen DESC")
        return [_beat(row) for row in rows]

    def prune_heartbeats(self, older_than: datetime) -> int:
        rows = self._query(
            "heartbeat", "DELETE FROM heartbeats WHERE seen < %s RETURNING 1", (ms(older_than),)
        )
        return len(rows)

    def setting(self, name: str) -> str | None:
        rows = self._query("setting", "SELECT value FROM settings WHERE name = %s", (name,))
        return rows[0][0] if rows else None

    def setting_setdefault(self, name: str, value: str) -> str:
        # One statement: either this insert wins, or the row another process committed is read.
        rows = self._query(
            "setting",
            "WITH i AS (INSERT INTO settings (name, value) VALUES (%(n)s, %(v)s) "
            "ON CONFLICT (name) DO NOTHING RETURNING value) "
            "SELECT value FROM i UNION ALL SELECT value FROM settings WHERE name = %(n)s",
            {"n": name, "v": value},
        )
        return rows[0][0] if rows else self.setting(name) or value

    def canary_for_badge(self, badge_key: str) -> Canary | None:
        rows = self._query(
            "badge", f"SELECT {CANARY_COLUMNS} FROM canaries c WHERE c.badge_key = %s", (badge_key,)
        )
        return row_to_canary(rows[0], False) if rows else None

    def canary_totals(self) -> CanaryTotals:
        (row,) = self._query(
            "totals",
            "SELECT count(*), count(*) FILTER (WHERE late), count(*) FILTER (WHERE paused) FROM canaries",
        )
        return CanaryTotals(*row)

    def outbox_summary(self) -> OutboxSummary:
        (row,) = self._query("outbox", "SELECT count(*), min(created) FROM deliveries")
        return OutboxSummary(row[0], utc(row[1]))

    def iter_canary_status(self) -> Iterator[CanaryStatus]:
        sql = (
            "SELECT c.id, c.name, c.slug, c.paused, c.late, c.deadline, (SELECT h.ts FROM history h "
            "WHERE h.canary_seq = c.seq AND starts_with(h.comment, %(trigger)s) "
            "ORDER BY h.ts DESC, h.hid DESC LIMIT 1), c.seq "
            "FROM canaries c WHERE c.seq > %(after)s ORDER BY c.seq LIMIT %(page)s"
        )
        params: dict[str, Any] = {"after": 0, "page": _PAGE, "trigger": TRIGGER_COMMENT}
        while True:
            rows = self._query("metrics", sql, params)
            for cid, name, slug, paused, late, deadline, last, _seq in rows:
                yield CanaryStatus(cid, name, slug, paused, late, utc(deadline), utc(last))
            if len(rows) < _PAGE:
                return
            params["after"] = rows[-1][-1]
