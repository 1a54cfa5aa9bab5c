"""The PostgreSQL store's notification outbox: one row per event and target
(`deliveries`), the last outcome per canary and target (`target_status`), and the
reminder queries. Mixed into PostgresStore."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg

from coal_mine.models import Canary, NewNotification, Notification, Target, TargetStatus
from coal_mine.clock import utc
from coal_mine.postgres_rows import CANARY_COLUMNS, ms, row_to_canary
from coal_mine.sql_shared import delivery_columns, delivery_from_row

T = TypeVar("T")

COLUMNS = delivery_columns("d")
# Only the oldest pending row of each (canary, channel, target) may be sent, so each
# target gets one canary's events in the order they happened.
HEAD = (
    "d.did = (SELECT min(m.did) FROM deliveries m WHERE m.canary_id = d.canary_id "
    "AND m.channel = d.channel AND m.target = d.target)"
)
FREE = "d.not_before <= %(now)s AND (d.lease_until IS NULL OR d.lease_until <= %(now)s)"
# Inserts the deliveries of the events passed as parallel arrays (one entry per event
# and target, `ev` numbering the events), in order, for the canary `u` names. Each
# event gets one number from the delivery_events sequence.
INSERT_DELIVERIES = (
    "INSERT INTO deliveries (event, canary_id, kind, created, payload, channel, target, not_before) "
    "SELECT e.event, u.id, t.kind, t.created, t.payload::json, t.channel, t.target, t.created FROM u, "
    "unnest(%(d_kinds)s::text[], %(d_created)s::timestamptz[], %(d_payloads)s::text[], "
    "%(d_channels)s::text[], %(d_targets)s::text[], %(d_events)s::int[]) "
    "WITH ORDINALITY AS t(kind, created, payload, channel, target, ev, o) "
    "JOIN (SELECT x.ev, nextval('delivery_events') AS event FROM "
    "(SELECT DISTINCT unnest(%(d_events)s::int[]) AS ev) x) e ON e.ev = t.ev ORDER BY t.o"
)


def deliveries_params(notifications: Iterable[NewNotification]) -> dict[str, Any]:
    """The parameters of INSERT_DELIVERIES (no rows: an empty `d_kinds`)."""
    params: dict[str, list[Any]] = {
        key: [] for key in ("d_kinds", "d_created", "d_payloads", "d_channels", "d_targets", "d_events")
    }
    for number, new in enumerate(notifications):
        payload = json.dumps(new.payload)
        for channel, target in new.targets:
            params["d_kinds"].append(new.kind)
            params["d_created"].append(ms(new.created))
            params["d_payloads"].append(payload)
            params["d_channels"].append(channel)
            params["d_targets"].append(target)
            params["d_events"].append(number)
    return params


def _row(row: Any) -> Notification:
    return delivery_from_row(row, lambda when: when.astimezone(UTC), dict)


class PostgresOutbox:
    """The outbox operations; PostgresStore provides `_run`."""

    def _run(self, what: str, work: Callable[[psycopg.Connection], T], *, idempotent: bool = False) -> T:
        raise NotImplementedError

    def _fetch(self, sql: str, params: Any, *, write: bool = True) -> list[Any]:
        return self._run(
            "outbox", lambda conn: conn.execute(sql.encode(), params).fetchall(), idempotent=not write
        )

    def claim_notifications(
        self, now: datetime, owner: str, lease_until: datetime, channel: str, *, group: bool = False
    ) -> list[Notification]:
        # READ COMMITTED: a row another claimer leased meanwhile is re-checked after its
        # lock is released, and its new lease_until then excludes it; a row locked right
        # now is skipped.
        sql = (
            f"WITH first AS (SELECT d.did, d.event FROM deliveries d WHERE d.channel = %(channel)s "
            f"AND {FREE} AND {HEAD} ORDER BY d.did LIMIT 1 FOR UPDATE SKIP LOCKED), "
            "picked AS (SELECT d.did FROM deliveries d, first WHERE d.did = first.did OR "
            f"(%(group)s AND d.event = first.event AND d.channel = %(channel)s AND {FREE} AND {HEAD}) "
            "FOR UPDATE OF d SKIP LOCKED) "
            "UPDATE deliveries d SET lease_owner = %(owner)s, lease_until = %(until)s "
            f"FROM picked WHERE d.did = picked.did RETURNING {COLUMNS}"
        )
        params = {"channel": channel, "now": now, "group": group, "owner": owner, "until": ms(lease_until)}
        return sorted((_row(row) for row in self._fetch(sql, params)), key=lambda n: n.id)

    def extend_lease(self, notifications: Iterable[Notification], owner: str, lease_until: datetime) -> bool:
        ids = [note.id for note in notifications]
        rows = self._fetch(
            "UPDATE deliveries SET lease_until = %s WHERE did = ANY(%s) AND lease_owner = %s RETURNING did",
            (ms(lease_until), ids, owner),
        )
        return len(rows) == len(ids)

    def complete_notifications(
        self, notifications: Iterable[Notification], owner: str, now: datetime
    ) -> None:
        self._fetch(
            "WITH gone AS (DELETE FROM deliveries WHERE did = ANY(%s) AND lease_owner = %s "
            "RETURNING canary_id, channel, target) "
            "INSERT INTO target_status (canary_id, channel, target, last_success) "
            "SELECT DISTINCT canary_id, channel, target, %s::timestamptz FROM gone "
            "ON CONFLICT (canary_id, channel, target) DO UPDATE SET last_success = excluded.last_success "
            "RETURNING canary_id",
            ([note.id for note in notifications], owner, ms(now)),
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
        self._fetch(
            "WITH r AS (UPDATE deliveries SET attempts = attempts + 1, not_before = %(not_before)s, "
            "lease_owner = NULL, lease_until = NULL, last_error = COALESCE(%(error)s, last_error), "
            "permanent = COALESCE(%(permanent)s, permanent) WHERE did = %(did)s AND lease_owner = %(owner)s "
            "RETURNING canary_id, channel, target) "
            "INSERT INTO target_status (canary_id, channel, target, last_error, last_error_at) "
            "SELECT canary_id, channel, target, %(error)s, %(at)s FROM r WHERE %(error)s::text IS NOT NULL "
            "ON CONFLICT (canary_id, channel, target) DO UPDATE SET last_error = excluded.last_error, "
            "last_error_at = excluded.last_error_at RETURNING canary_id",
            {
                "not_before": ms(not_before),
                "error": error or None,
                "permanent": permanent if error else None,
                "did": notification.id,
                "owner": owner,
                "at": ms(now or not_before),
            },
        )

    def next_notification_time(self, channel: str | None = None) -> datetime | None:
        where = "d.channel = %(channel)s AND" if channel is not None else ""
        rows = self._fetch(
            f"SELECT min(GREATEST(d.not_before, d.lease_until)) FROM deliveries d WHERE {where} {HEAD}",
            {"channel": channel},
            write=False,
        )
        return utc(rows[0][0]) if rows else None

    def pending_notifications(self, canary_id: str | None = None) -> list[Notification]:
        where = "WHERE d.canary_id = %(id)s" if canary_id is not None else ""
        rows = self._fetch(
            f"SELECT {COLUMNS} FROM deliveries d {where} ORDER BY d.did", {"id": canary_id}, write=False
        )
        return [_row(row) for row in rows]

    def withdraw_notifications(
        self, canary_id: str, targets: Iterable[Target] | None = None, *, permanent_only: bool = False
    ) -> list[Notification]:
        chosen = list(targets or [])
        rows = self._fetch(
            "DELETE FROM deliveries d WHERE d.canary_id = %(id)s AND (NOT %(permanent_only)s OR d.permanent) "
            "AND (%(any)s OR (d.channel, d.target) IN "
            "(SELECT * FROM unnest(%(channels)s::text[], %(targets)s::text[]))) "
            f"RETURNING {COLUMNS}",
            {
                "id": canary_id,
                "permanent_only": permanent_only,
                "any": targets is None,
                "channels": [c for c, _ in chosen],
                "targets": [t for _, t in chosen],
            },
        )
        return sorted((_row(row) for row in rows), key=lambda n: n.id)

    def drop_notification(self, notification_id: str) -> Notification | None:
        try:
            did = int(notification_id)
        except ValueError:
            return None
        if not -(2**63) <= did < 2**63:  # not a row id the database can hold
            return None
        rows = self._fetch(f"DELETE FROM deliveries d WHERE d.did = %s RETURNING {COLUMNS}", (did,))
        return _row(rows[0]) if rows else None

    def count_notifications(self) -> int:
        rows = self._fetch("SELECT count(*) FROM deliveries", (), write=False)
        return int(rows[0][0]) if rows else 0

    def target_statuses(self, canary_id: str) -> list[TargetStatus]:
        rows = self._fetch(
            "SELECT channel, target, last_success, last_error, last_error_at FROM target_status "
            "WHERE canary_id = %s ORDER BY channel, target",
            (canary_id,),
            write=False,
        )
        return [TargetStatus(c, t, utc(ok), error, utc(at)) for c, t, ok, error, at in rows]

    # --- reminders ----------------------------------------------------------------------

    def due_reminders(self, now: datetime, limit: int) -> list[Canary]:
        rows = self._fetch(
            f"SELECT {CANARY_COLUMNS} FROM canaries c WHERE c.remind_at <= %s AND c.late AND NOT c.paused "
            "ORDER BY c.remind_at LIMIT %s",
            (now, limit),
            write=False,
        )
        return [row_to_canary(row, False) for row in rows]

    def next_reminder_time(self) -> datetime | None:
        rows = self._fetch("SELECT min(remind_at) FROM canaries WHERE late AND NOT paused", (), write=False)
        return utc(rows[0][0]) if rows else None
