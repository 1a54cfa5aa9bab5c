"""The SQLite schema, as numbered migrations (`PRAGMA user_version` says which ran)."""

from __future__ import annotations

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
]
SCHEMA_VERSION = len(MIGRATIONS)
