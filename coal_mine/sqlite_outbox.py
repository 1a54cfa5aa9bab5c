"""The SQLite store's notification outbox: one row per event and target (`deliveries`),
and the last outcome per canary and target (`target_status`)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from coal_mine.models import NewNotification, Notification, Target, TargetStatus
from coal_mine.sql_shared import delivery_columns, delivery_from_row, from_micros, to_micros

to_db, from_db = to_micros, from_micros

_COLUMNS = delivery_columns("d")
# The oldest pending row of each (canary, channel, target): only it may be sent, so
# that a target gets one canary's events in the order they happened.
_HEAD = (
    "d.did = (SELECT MIN(m.did) FROM deliveries m WHERE m.canary_id = d.canary_id "
    "AND m.channel = d.channel AND m.target = d.target)"
)
_FREE = "d.not_before <= :now AND (d.lease_until IS NULL OR d.lease_until <= :now)"


def _row(row: tuple) -> Notification:
    return delivery_from_row(row, from_db, json.loads)


class SQLiteOutbox:
    """Mixed into SQLiteStore, which provides the connection."""

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    @staticmethod
    def _record(conn: sqlite3.Connection, canary_id: str, new: NewNotification) -> None:
        """Insert one row per target of a new event (inside the caller's transaction)."""
        if not new.targets:
            return
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'").fetchone()
        event = (row[0] if row else 0) + 1  # the did the first row will get (AUTOINCREMENT)
        payload, created = json.dumps(new.payload), to_db(new.created)
        conn.executemany(
            "INSERT INTO deliveries (event, canary_id, kind, created, payload, channel, target, not_before) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (event, canary_id, new.kind, created, payload, channel, target, created)
                for channel, target in new.targets
            ],
        )

    def claim_notifications(
        self, now: datetime, owner: str, lease_until: datetime, channel: str, *, group: bool = False
    ) -> list[Notification]:
        args: dict[str, Any] = {"now": to_db(now), "channel": channel}
        first_sql = (
            f"SELECT {_COLUMNS} FROM deliveries d INDEXED BY deliveries_by_channel "
            f"WHERE d.channel = :channel AND {_FREE} AND {_HEAD} ORDER BY d.did LIMIT 1"
        )
        # The sender looks after every write; most of the time there is nothing to claim,
        # which a plain read answers without taking the database's write lock.
        with self._read() as conn:
            if conn.execute(first_sql, args).fetchone() is None:
                return []
        with self._write() as conn:
            first = conn.execute(first_sql, args).fetchone()
            if first is None:
                return []
            rows = [first]
            if group:
                rows += conn.execute(
                    f"SELECT {_COLUMNS} FROM deliveries d WHERE d.event = :event AND d.channel = :channel "
                    f"AND d.did != :did AND {_FREE} AND {_HEAD} ORDER BY d.did",
                    {**args, "event": first[1], "did": first[0]},
                ).fetchall()
            conn.executemany(
                "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE did = ?",
                [(owner, to_db(lease_until), row[0]) for row in rows],
            )
        return [_row(row) for row in rows]

    def extend_lease(self, notifications: Iterable[Notification], owner: str, lease_until: datetime) -> bool:
        ids = [(to_db(lease_until), note.id, owner) for note in notifications]
        with self._write() as conn:
            changed = 0
            for params in ids:
                changed += conn.execute(
                    "UPDATE deliveries SET lease_until = ? WHERE did = ? AND lease_owner = ?", params
                ).rowcount
        return changed == len(ids)

    def complete_notifications(
        self, notifications: Iterable[Notification], owner: str, now: datetime
    ) -> None:
        with self._write() as conn:
            for note in notifications:
                gone = conn.execute(
                    "DELETE FROM deliveries WHERE did = ? AND lease_owner = ? RETURNING did", (note.id, owner)
                ).fetchone()
                if gone is not None:
                    conn.execute(
                        "INSERT INTO target_status (canary_id, channel, target, last_success) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET last_success = excluded.last_success",
                        (note.canary_id, note.channel, note.target, to_db(now)),
                    )

    def retry_notification(
        self,
        notification: Notification,
        owner: str,
        not_before: datetime,
        *,
        error: str = "",
        permanent: bool = False,
        now: datetime | None = None,
    ) -> None:
        note = notification
        with self._write() as conn:
            row = conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, not_before = ?, lease_owner = NULL, "
                "lease_until = NULL, last_error = COALESCE(?, last_error), "
                "permanent = COALESCE(?, permanent) WHERE did = ? AND lease_owner = ? RETURNING did",
                (to_db(not_before), error or None, int(permanent) if error else None, note.id, owner),
            ).fetchone()
            if row is not None and error:
                conn.execute(
                    "INSERT INTO target_status (canary_id, channel, target, last_error, last_error_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET last_error = excluded.last_error, "
                    "last_error_at = excluded.last_error_at",
                    (note.canary_id, note.channel, note.target, error, to_db(now or not_before)),
                )

    def next_notification_time(self, channel: str | None = None) -> datetime | None:
        where = "d.channel = :channel AND" if channel is not None else ""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT MIN(MAX(d.not_before, COALESCE(d.lease_until, 0))) FROM deliveries d "
                f"WHERE {where} {_HEAD}",
                {"channel": channel},
            ).fetchone()
        return from_db(row[0])

    def pending_notifications(self, canary_id: str | None = None) -> list[Notification]:
        where = "WHERE d.canary_id = ?" if canary_id is not None else ""
        params = (canary_id,) if canary_id is not None else ()
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM deliveries d {where} ORDER BY d.did", params)
            return [_row(row) for row in rows]

    def withdraw_notifications(
        self, canary_id: str, targets: Iterable[Target] | None = None, *, permanent_only: bool = False
    ) -> list[Notification]:
        wanted = None if targets is None else set(targets)
        condition = "AND d.permanent = 1" if permanent_only else ""
        gone = []
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM deliveries d WHERE d.canary_id = ? {condition} ORDER BY d.did",
                (canary_id,),
            ).fetchall()
            for row in rows:
                note = _row(row)
                if wanted is None or (note.channel, note.target) in wanted:
                    conn.execute("DELETE FROM deliveries WHERE did = ?", (note.id,))
                    gone.append(note)
        return gone

    def drop_notification(self, notification_id: str) -> Notification | None:
        try:
            did = int(notification_id)
        except ValueError:
            return None
        if not -(2**63) <= did < 2**63:  # not a row id the database can hold
            return None
        with self._write() as conn:
            row = conn.execute(
                f"DELETE FROM deliveries AS d WHERE d.did = ? RETURNING {_COLUMNS.replace('d.', '')}", (did,)
            ).fetchone()
        return _row(row) if row else None

    def count_notifications(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    def target_statuses(self, canary_id: str) -> list[TargetStatus]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT channel, target, last_success, last_error, last_error_at FROM target_status "
                "WHERE canary_id = ? ORDER BY channel, target",
                (canary_id,),
            ).fetchall()
        return [TargetStatus(c, t, from_db(ok), error, from_db(at)) for c, t, ok, error, at in rows]
