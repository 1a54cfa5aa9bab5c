"""What the SQL stores (SQLite, PostgreSQL) share: the outbox and heartbeat rows, history
pruning, and SQLite's time form (used by its store, its outbox and its operations part)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from coal_mine.models import Notification, PrunePolicy, WorkerHeartbeat

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


@overload
def to_micros(dt: datetime) -> int: ...
@overload
def to_micros(dt: None) -> None: ...
@overload
def to_micros(dt: datetime | None) -> int | None: ...
def to_micros(dt: datetime | None) -> int | None:
    """SQLite's time form: microseconds since the epoch (None stays None)."""
    return None if dt is None else (dt - _EPOCH) // _MICRO


@overload
def from_micros(value: int) -> datetime: ...
@overload
def from_micros(value: None) -> None: ...
@overload
def from_micros(value: int | None) -> datetime | None: ...
def from_micros(value: int | None) -> datetime | None:
    """The aware UTC time SQLite's time form stands for."""
    return None if value is None else _EPOCH + timedelta(microseconds=value)


Execute = Callable[[str, tuple[Any, ...]], int]  # runs one statement, returns its rowcount

# The columns of an outbox row (one event for one target), in the order
# delivery_from_row takes them.
DELIVERY_COLUMNS = (
    "did",
    "event",
    "canary_id",
    "kind",
    "created",
    "payload",
    "channel",
    "target",
    "attempts",
    "not_before",
    "last_error",
    "permanent",
)


# The columns of a heartbeat row, in the order heartbeat_from_row takes them.
HEARTBEAT_COLUMNS = "worker_id, host, pid, started, seen, last_scan, last_delivery, outbox_depth"


def heartbeat_from_row(row: Any, when: Callable[[Any], Any]) -> WorkerHeartbeat:
    """A WorkerHeartbeat from a row of HEARTBEAT_COLUMNS; `when` decodes the database's times."""
    worker_id, host, pid, started, seen, last_scan, last_delivery, depth = row
    return WorkerHeartbeat(
        worker_id=worker_id,
        host=host,
        pid=pid,
        started=when(started),
        seen=when(seen),
        last_scan=when(last_scan),
        last_delivery=when(last_delivery),
        outbox_depth=depth,
    )


def delivery_columns(alias: str) -> str:
    """DELIVERY_COLUMNS for a SELECT, each prefixed by `alias.`."""
    return ", ".join(f"{alias}.{name}" for name in DELIVERY_COLUMNS)


def delivery_from_row(
    row: Any, when: Callable[[Any], datetime], payload: Callable[[Any], dict[str, Any]]
) -> Notification:
    """A Notification from a row of DELIVERY_COLUMNS; `when` and `payload` decode the
    database's time and payload forms."""
    did, event, canary_id, kind, created, data, channel, target, attempts, not_before, error, perm = row
    return Notification(
        id=did,
        canary_id=canary_id,
        kind=kind,
        created=when(created),
        payload=payload(data),
        attempts=attempts,
        not_before=when(not_before),
        event=event,
        channel=channel,
        target=target,
        last_error=error,
        permanent=bool(perm),
    )


def last_entries_query(canary_ids: Sequence[str], prefix: str, mark: str) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters for AbstractStore.last_entries (`mark`: "?" or "%s"): it walks
    each canary's history index from the newest entry and stops at the first that matches (substr,
    unlike LIKE, compares exactly). A canary without one comes back with NULL."""
    marks = ", ".join([mark] * len(canary_ids))
    sql = (
        "SELECT c.id, (SELECT h.ts FROM history h WHERE h.canary_seq = c.seq "
        f"AND substr(h.comment, 1, {mark}) = {mark} ORDER BY h.ts DESC LIMIT 1) "
        f"FROM canaries c WHERE c.id IN ({marks})"
    )
    return sql, (len(prefix), prefix, *canary_ids)


def prune_rows(
    execute: Execute, mark: str, seq: int, count: int, oldest: Any, older_than: Any, policy: PrunePolicy
) -> None:
    """Delete a canary's oldest history entries by index range; never reads the whole history.

    `count` and `oldest` are what the canary row says (so the usual trigger costs no
    statement here); `oldest` and `older_than` are in the database's own time form.
    `mark` is the driver's parameter placeholder ("?" or "%s").
    """

    def run(sql: str, params: tuple[Any, ...]) -> int:
        return execute(sql.replace("?", mark), params)

    remaining = count
    if remaining > policy.min_entries and oldest is not None and oldest < older_than:
        remaining -= run(
            "DELETE FROM history WHERE hid IN (SELECT hid FROM history WHERE canary_seq = ? "
            "AND ts < ? ORDER BY ts, hid LIMIT ?)",
            (seq, older_than, remaining - policy.min_entries),
        )
    if remaining > policy.max_entries:
        remaining -= run(
            "DELETE FROM history WHERE hid IN (SELECT hid FROM history WHERE canary_seq = ? "
            "ORDER BY ts, hid LIMIT ?)",
            (seq, remaining - policy.max_entries),
        )
    if remaining != count:
        run(
            "UPDATE canaries SET history_count = ?, history_oldest = "
            "(SELECT min(ts) FROM history WHERE canary_seq = ?) WHERE seq = ?",
            (remaining, seq, seq),
        )
