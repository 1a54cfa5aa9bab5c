"""The SQLite store's schema and its conversions between rows and canaries."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from coal_mine.models import Canary, HistoryEntry, Run
from coal_mine.sql_shared import from_micros, to_micros

to_db, from_db = to_micros, from_micros

# When an append handed over with a prune policy leaves entries to prune (as prune_rows decides).
_PRUNING_DUE = (
    "(NEW.prune_max IS NOT NULL AND (NEW.history_count > NEW.prune_max "
    "OR NEW.history_count > NEW.prune_min AND NEW.history_oldest < NEW.prune_before))"
)

# Each entry migrates the schema from version N to N + 1.
MIGRATIONS = [
    """
    CREATE TABLE canaries (
        seq INTEGER PRIMARY KEY,             -- creation order
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        slug TEXT NOT NULL UNIQUE,
        periodicity ANY NOT NULL,            -- REAL seconds or TEXT schedule
        description TEXT NOT NULL DEFAULT '',
        emails TEXT NOT NULL DEFAULT '[]',   -- JSON list
        paused INTEGER NOT NULL DEFAULT 0,
        late INTEGER NOT NULL DEFAULT 0,
        deadline INTEGER,                    -- microseconds since the epoch, UTC
        history_count INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX canaries_watched ON canaries (deadline) WHERE paused = 0 AND late = 0;
    CREATE INDEX canaries_paused_late ON canaries (paused, late);
    CREATE INDEX canaries_late ON canaries (late);
    CREATE TABLE history (
        hid INTEGER PRIMARY KEY,
        canary_seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        comment TEXT NOT NULL
    ) STRICT;
    CREATE INDEX history_by_canary ON history (canary_seq, ts);
    CREATE TABLE notifications (
        nid INTEGER PRIMARY KEY AUTOINCREMENT,
        canary_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        created INTEGER NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER
    ) STRICT;
    CREATE INDEX notifications_by_canary ON notifications (canary_id, nid);
    """,
    # 2: the time of each canary's oldest history entry, so that a trigger knows
    # without a query whether the age rule could prune anything.
    """
    ALTER TABLE canaries ADD COLUMN history_oldest INTEGER;
    UPDATE canaries SET history_oldest =
        (SELECT MIN(ts) FROM history WHERE history.canary_seq = canaries.seq);
    """,
    # 3: operations. Status badge keys (random, filled in for existing canaries),
    # background workers' heartbeats and server-wide settings.
    """
    ALTER TABLE canaries ADD COLUMN badge_key TEXT;
    UPDATE canaries SET badge_key = lower(hex(randomblob(16)));
    CREATE UNIQUE INDEX canaries_badge_key ON canaries (badge_key);
    CREATE TABLE heartbeats (
        worker_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started INTEGER NOT NULL,
        seen INTEGER NOT NULL,
        last_scan INTEGER,
        last_delivery INTEGER,
        outbox_depth INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    """,
    # 4: run reporting (coal_mine/runs.py). A job's output lives in its history entry,
    # so it is pruned with it.
    """
    ALTER TABLE canaries ADD COLUMN max_runtime REAL;
    ALTER TABLE canaries ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE canaries ADD COLUMN runs TEXT;
    ALTER TABLE canaries ADD COLUMN last_duration REAL;
    ALTER TABLE canaries ADD COLUMN snooze_until INTEGER;
    ALTER TABLE canaries ADD COLUMN alarm INTEGER;
    CREATE INDEX canaries_alarm ON canaries (alarm) WHERE alarm IS NOT NULL;
    ALTER TABLE history ADD COLUMN output TEXT;
    ALTER TABLE history ADD COLUMN output_size INTEGER;
    ALTER TABLE history ADD COLUMN output_cut INTEGER;
    """,
    # 5: channels and reminders; the outbox holds one row per event and target (a
    # pending email becomes one row per recipient), each with its own delivery state.
    """
    ALTER TABLE canaries ADD COLUMN webhooks TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE canaries ADD COLUMN slacks TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE canaries ADD COLUMN repeat REAL NOT NULL DEFAULT 0;
    ALTER TABLE canaries ADD COLUMN remind_at INTEGER;
    CREATE INDEX canaries_reminders ON canaries (remind_at) WHERE remind_at IS NOT NULL;
    CREATE TABLE deliveries (
        did INTEGER PRIMARY KEY AUTOINCREMENT,
        event INTEGER NOT NULL,              -- the did of the event's first row (migrated: -nid)
        canary_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        created INTEGER NOT NULL,
        payload TEXT NOT NULL,
        channel TEXT NOT NULL,
        target TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER,
        last_error TEXT,
        permanent INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX deliveries_by_target ON deliveries (canary_id, channel, target, did);
    CREATE INDEX deliveries_by_channel ON deliveries (channel, did);
    CREATE INDEX deliveries_by_event ON deliveries (event);
    INSERT INTO deliveries (event, canary_id, kind, created, payload, channel, target, attempts, not_before)
        SELECT -n.nid, n.canary_id, n.kind, n.created, n.payload, 'email', CAST(j.value AS TEXT),
            n.attempts, n.not_before
        FROM notifications n, json_each(n.payload, '$.emails') j
        WHERE json_valid(n.payload) AND json_type(n.payload, '$.emails') = 'array'
        ORDER BY n.nid, j.key;
    DROP TABLE notifications;
    CREATE TABLE target_status (
        canary_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        target TEXT NOT NULL,
        last_success INTEGER,
        last_error TEXT,
        last_error_at INTEGER,
        PRIMARY KEY (canary_id, channel, target)
    ) STRICT;
    """,
    # 6: a write that appends a history entry is one statement, atomic without an explicit
    # transaction: it puts the entry and the prune policy in the canary row, and this trigger
    # moves the entry into history and prunes. The pruning is sql_shared.prune_rows in one
    # step: its two deletes together remove the oldest max(count - max_entries, a) entries,
    # a = min(count - min_entries, entries older than older_than) when count > min_entries
    # and the oldest entry is older than that, else 0 (count after the append).
    """
    ALTER TABLE canaries ADD COLUMN entry_ts INTEGER;
    ALTER TABLE canaries ADD COLUMN entry_comment TEXT;
    ALTER TABLE canaries ADD COLUMN prune_max INTEGER;
    ALTER TABLE canaries ADD COLUMN prune_min INTEGER;
    ALTER TABLE canaries ADD COLUMN prune_before INTEGER;
    CREATE TRIGGER canaries_new_entry AFTER UPDATE OF entry_ts ON canaries
    WHEN NEW.entry_ts IS NOT NULL
    BEGIN
        INSERT INTO history (canary_seq, ts, comment) VALUES (NEW.seq, NEW.entry_ts, NEW.entry_comment);
        UPDATE canaries SET
            entry_ts = NULL, entry_comment = NULL, prune_max = NULL, prune_min = NULL, prune_before = NULL,
            history_count = NEW.history_count - CASE
                WHEN NEW.prune_max IS NULL THEN 0
                ELSE max(
                    0,
                    NEW.history_count - NEW.prune_max,
                    CASE WHEN NEW.history_count > NEW.prune_min AND NEW.history_oldest < NEW.prune_before
                        THEN min(NEW.history_count - NEW.prune_min, (SELECT count(*) FROM history
                            WHERE canary_seq = NEW.seq AND ts < NEW.prune_before))
                        ELSE 0 END)
                END
            WHERE seq = NEW.seq;
        DELETE FROM history WHERE hid IN (
            SELECT hid FROM history WHERE canary_seq = NEW.seq ORDER BY ts, hid
            LIMIT NEW.history_count - (SELECT history_count FROM canaries WHERE seq = NEW.seq));
        UPDATE canaries SET history_oldest = (SELECT min(ts) FROM history WHERE canary_seq = NEW.seq)
            WHERE seq = NEW.seq AND history_count < NEW.history_count;
    END;
    """,
    # 7: the same trigger, cheaper on the usual append (no pruning due): it leaves the
    # hand-over in the row (the next append overwrites it; nothing reads it) instead of
    # rewriting the row to clear it, and runs its pruning statements only when due.
    f"""
    DROP TRIGGER canaries_new_entry;
    CREATE TRIGGER canaries_new_entry AFTER UPDATE OF entry_ts ON canaries
    WHEN NEW.entry_ts IS NOT NULL
    BEGIN
        INSERT INTO history (canary_seq, ts, comment) VALUES (NEW.seq, NEW.entry_ts, NEW.entry_comment);
        UPDATE canaries SET history_count = NEW.history_count - max(
                NEW.history_count - NEW.prune_max,
                CASE WHEN NEW.history_count > NEW.prune_min AND NEW.history_oldest < NEW.prune_before
                    THEN min(NEW.history_count - NEW.prune_min, (SELECT count(*) FROM history
                        WHERE canary_seq = NEW.seq AND ts < NEW.prune_before))
                    ELSE 0 END)
            WHERE {_PRUNING_DUE} AND seq = NEW.seq;
        DELETE FROM history WHERE {_PRUNING_DUE} AND hid IN (
            SELECT hid FROM history WHERE canary_seq = NEW.seq ORDER BY ts, hid
            LIMIT NEW.history_count - (SELECT history_count FROM canaries WHERE seq = NEW.seq));
        UPDATE canaries SET history_oldest = (SELECT min(ts) FROM history WHERE canary_seq = NEW.seq)
            WHERE {_PRUNING_DUE} AND seq = NEW.seq;
    END;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def statements(migration: str) -> list[str]:
    """A migration's statements, in order (a trigger's body holds semicolons of its own)."""
    done, pending = [], ""
    for piece in migration.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                done.append(pending.strip())
            pending = ""
    return done


CANARY_COLUMNS = (
    "seq, id, name, slug, periodicity, description, emails, paused, late, deadline, badge_key, "
    "max_runtime, failed, runs, last_duration, snooze_until, alarm, webhooks, slacks, repeat, remind_at"
)
NCOLUMNS = 21
ALERT_FIELDS = ("webhooks", "slacks", "repeat", "remind_at")  # in CANARY_COLUMNS' order


def runs_to_db(runs: list[Run]) -> str | None:
    return json.dumps([[rid, to_db(start), overdue] for rid, start, overdue in runs]) if runs else None


def runs_from_db(text: str | None) -> list[Run]:
    return [(rid, from_db(int(start)), bool(overdue)) for rid, start, overdue in json.loads(text or "[]")]


def column_value(name: str, value: Any) -> Any:
    if name in ("deadline", "snooze_until", "alarm", "remind_at"):
        return to_db(value)
    if name in ("emails", "webhooks", "slacks"):
        return json.dumps(list(value))
    if name == "repeat":
        return float(value)
    if name in ("paused", "late", "failed"):
        return int(bool(value))
    if name == "runs":
        return runs_to_db(value)
    return value


def row_to_canary(row: tuple, history: list[HistoryEntry] | None) -> Canary:
    _seq, cid, name, slug, periodicity, description, emails, paused, late, deadline, badge_key = row[:11]
    max_runtime, failed, runs, last_duration, snooze_until, alarm = row[11:17]
    webhooks, slacks, repeat, remind_at = row[17:NCOLUMNS]
    return Canary(
        id=cid,
        name=name,
        slug=slug,
        periodicity=periodicity,
        description=description,
        emails=json.loads(emails),
        paused=bool(paused),
        late=bool(late),
        deadline=from_db(deadline),
        history=history,
        badge_key=badge_key,
        max_runtime=max_runtime,
        failed=bool(failed),
        runs=runs_from_db(runs),
        last_duration=last_duration,
        snooze_until=from_db(snooze_until),
        alarm=from_db(alarm),
        webhooks=json.loads(webhooks),
        slacks=json.loads(slacks),
        repeat=repeat,
        remind_at=from_db(remind_at),
    )


def due_row_to_canary(row: tuple) -> Canary:
    """Like row_to_canary, but an emails value that cannot be decoded reads as [], so
    one corrupt row cannot hide the other due canaries from the watcher (which
    re-reads each canary with get() and so still meets the error, with its id)."""
    try:
        return row_to_canary(row, None)
    except ValueError:
        return row_to_canary((*row[:6], "[]", *row[7:13], None, *row[14:17], "[]", "[]", *row[19:]), None)
