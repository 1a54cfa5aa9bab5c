"""PostgreSQL store: the SQL fragments it shares, row conversion and history pruning."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from coal_mine.clock import to_millis, utc
from coal_mine.models import Canary, PrunePolicy, Run
from coal_mine.sql_shared import prune_rows

CANARY_COLUMNS = (
    "c.seq, c.id, c.name, c.slug, c.periodicity_seconds, c.periodicity_schedule, "
    "c.description, c.emails, c.paused, c.late, c.deadline, c.badge_key, "
    "c.max_runtime, c.failed, c.runs, c.last_duration, c.snooze_until, c.alarm, "
    "c.webhooks, c.slacks, c.repeat, c.remind_at"
)
NCOLUMNS = 22
HISTORY_ARRAYS = (
    "ARRAY(SELECT h.ts FROM history h WHERE h.canary_seq = c.seq ORDER BY h.ts DESC, h.hid DESC), "
    "ARRAY(SELECT h.comment FROM history h WHERE h.canary_seq = c.seq ORDER BY h.ts DESC, h.hid DESC)"
)


def ms(value: datetime | None) -> datetime | None:
    return None if value is None else to_millis(value)


def periodicity(value: float | str) -> tuple[float | None, str | None]:
    return (None, value) if isinstance(value, str) else (float(value), None)


def row_to_canary(row: Any, history: bool) -> Canary:
    _seq, cid, name, slug, seconds, schedule, description, emails, paused, late, deadline, badge = row[:12]
    max_runtime, failed, runs, last_duration, snooze_until, alarm = row[12:18]
    webhooks, slacks, repeat, remind_at = row[18:NCOLUMNS]
    entries = None
    if history:
        entries = [(utc(ts), comment) for ts, comment in zip(row[NCOLUMNS], row[NCOLUMNS + 1], strict=True)]
    return Canary(
        id=cid,
        name=name,
        slug=slug,
        periodicity=schedule if schedule is not None else seconds,
        description=description,
        emails=list(emails),
        paused=paused,
        late=late,
        deadline=utc(deadline),
        history=entries,
        badge_key=badge,
        max_runtime=max_runtime,
        failed=failed,
        runs=runs_from_db(runs),
        last_duration=last_duration,
        snooze_until=utc(snooze_until),
        alarm=utc(alarm),
        webhooks=list(webhooks),
        slacks=list(slacks),
        repeat=repeat,
        remind_at=utc(remind_at),
    )


def runs_to_db(runs: list[Run]) -> list[Any] | None:
    """Open runs as JSON ([rid, ISO time, overdue] each); None (NULL) for none."""
    return [[rid, start.isoformat(), overdue] for rid, start, overdue in runs] if runs else None


def runs_from_db(value: Any) -> list[Run]:
    return [(rid, datetime.fromisoformat(start), bool(overdue)) for rid, start, overdue in value or []]


def prune_needed(count: int, oldest: datetime | None, policy: PrunePolicy) -> bool:
    return count > policy.max_entries or (
        count > policy.min_entries and oldest is not None and oldest < policy.older_than
    )


def prune_history(conn: psycopg.Connection, seq: int, policy: PrunePolicy) -> None:
    """Delete the oldest entries by index range, the canary row locked meanwhile.

    Runs after the write that appended the entry, from the count as it is now,
    so a concurrent append or prune of the same canary is counted right; if
    the process dies in between, the next write of this canary prunes instead.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT history_count, history_oldest FROM canaries WHERE seq = %s FOR UPDATE", (seq,)
        ).fetchone()
        if row is None:
            return
        count, oldest = row
        prune_rows(
            lambda sql, params: conn.execute(sql, params).rowcount,
            "%s",
            seq,
            count,
            oldest,
            ms(policy.older_than),
            policy,
        )
