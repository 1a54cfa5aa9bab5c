"""PostgreSQL store plumbing: the versioned schema, connection settings and error mapping.

The schema lives in the database named by the URI, in the first schema of the
connection's search_path (`public` unless the URI's `options` say otherwise).
Table `coal_mine_schema` holds its version; every process migrates at start,
one at a time under an advisory lock, so two processes starting together never
race and a newer schema than this code knows is refused.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import psycopg

from coal_mine.models import StoreUnavailableError

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: "coalmine" in ASCII, so it will not collide by chance.
MIGRATION_LOCK = 0x636F616C6D696E65
# Writers NOTIFY this channel (in the statement that makes the change, so delivered at its
# commit) when background processes elsewhere should look again; see Listener.
CHANNEL = "coal_mine"
NOTIFY = f"pg_notify('{CHANNEL}', '')"

# Each entry migrates the schema from version N to N + 1, in one transaction.
MIGRATIONS = [
    """
    CREATE TABLE canaries (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- creation order
        id text NOT NULL CONSTRAINT canaries_id_key UNIQUE,
        name text NOT NULL,
        slug text NOT NULL CONSTRAINT canaries_slug_key UNIQUE,
        periodicity_seconds double precision,                 -- a number of seconds ...
        periodicity_schedule text,                            -- ... or a schedule, never both
        description text NOT NULL DEFAULT '',
        emails text[] NOT NULL DEFAULT '{}',
        paused boolean NOT NULL DEFAULT false,
        late boolean NOT NULL DEFAULT false,
        deadline timestamptz(3),
        history_count integer NOT NULL DEFAULT 0,
        history_oldest timestamptz(3),
        CHECK ((periodicity_seconds IS NULL) <> (periodicity_schedule IS NULL))
    );
    -- The watcher: earliest deadline and due canaries.
    CREATE INDEX canaries_watched ON canaries (deadline) WHERE NOT paused AND NOT late;
    -- The list filters, each in creation order.
    CREATE INDEX canaries_paused_late ON canaries (paused, late, seq);
    CREATE INDEX canaries_paused ON canaries (paused, seq);
    CREATE INDEX canaries_late ON canaries (late, seq);
    CREATE TABLE history (
        hid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        canary_seq bigint NOT NULL,
        ts timestamptz(3) NOT NULL,
        comment text NOT NULL
    );
    CREATE INDEX history_by_canary ON history (canary_seq, ts, hid);
    CREATE TABLE notifications (
        nid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        canary_id text NOT NULL,
        kind text NOT NULL,
        created timestamptz(3) NOT NULL,
        payload json NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        not_before timestamptz(3) NOT NULL,
        lease_owner text,
        lease_until timestamptz(3)
    );
    CREATE INDEX notifications_by_canary ON notifications (canary_id, nid);
    """,
    # 2: operations. Status badge keys (random, filled in for existing canaries),
    # background workers' heartbeats and server-wide settings.
    """
    ALTER TABLE canaries ADD COLUMN badge_key text CONSTRAINT canaries_badge_key_key UNIQUE;
    UPDATE canaries SET badge_key = replace(gen_random_uuid()::text, '-', '');
    CREATE TABLE heartbeats (
        worker_id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started timestamptz(3) NOT NULL,
        seen timestamptz(3) NOT NULL,
        last_scan timestamptz(3),
        last_delivery timestamptz(3),
        outbox_depth integer NOT NULL DEFAULT 0
    );
    CREATE TABLE settings (
        name text PRIMARY KEY,
        value text NOT NULL
    );
    """,
    # 3: run reporting (coal_mine/runs.py); a job's output lives in its history entry.
    """
    ALTER TABLE canaries ADD COLUMN max_runtime double precision,
        ADD COLUMN failed boolean NOT NULL DEFAULT false,
        ADD COLUMN runs jsonb,
        ADD COLUMN last_duration double precision,
        ADD COLUMN snooze_until timestamptz(3),
        ADD COLUMN alarm timestamptz(3);
    CREATE INDEX canaries_alarm ON canaries (alarm) WHERE alarm IS NOT NULL;
    ALTER TABLE history ADD COLUMN output text, ADD COLUMN output_size integer, ADD COLUMN output_cut boolean;
    """,
    # 4: channels and reminders; the outbox holds one row per event and target (a
    # pending email becomes one row per recipient), each with its own delivery state.
    """
    ALTER TABLE canaries ADD COLUMN webhooks text[] NOT NULL DEFAULT '{}';
    ALTER TABLE canaries ADD COLUMN slacks text[] NOT NULL DEFAULT '{}';
    ALTER TABLE canaries ADD COLUMN repeat double precision NOT NULL DEFAULT 0;
    ALTER TABLE canaries ADD COLUMN remind_at timestamptz(3);
    CREATE INDEX canaries_reminders ON canaries (remind_at) WHERE late AND NOT paused;
    CREATE SEQUENCE delivery_events;
    CREATE TABLE deliveries (
        did bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event bigint NOT NULL,
        canary_id text NOT NULL,
        kind text NOT NULL,
        created timestamptz(3) NOT NULL,
        payload json NOT NULL,
        channel text NOT NULL,
        target text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        not_before timestamptz(3) NOT NULL,
        lease_owner text,
        lease_until timestamptz(3),
        last_error text,
        permanent boolean NOT NULL DEFAULT false
    );
    CREATE INDEX deliveries_by_target ON deliveries (canary_id, channel, target, did);
    CREATE INDEX deliveries_by_channel ON deliveries (channel, did);
    CREATE INDEX deliveries_by_event ON deliveries (event);
    INSERT INTO deliveries (event, canary_id, kind, created, payload, channel, target, attempts, not_before)
        SELECT n.nid, n.canary_id, n.kind, n.created, n.payload, 'email', e.address, n.attempts, n.not_before
        FROM notifications n CROSS JOIN LATERAL json_array_elements_text(
            CASE WHEN json_typeof(n.payload -> 'emails') = 'array' THEN n.payload -> 'emails' ELSE '[]' END
        ) WITH ORDINALITY AS e(address, o)
        ORDER BY n.nid, e.o;
    SELECT setval('delivery_events', COALESCE((SELECT max(event) FROM deliveries), 0) + 1, false);
    DROP TABLE notifications;
    CREATE TABLE target_status (
        canary_id text NOT NULL,
        channel text NOT NULL,
        target text NOT NULL,
        last_success timestamptz(3),
        last_error text,
        last_error_at timestamptz(3),
        PRIMARY KEY (canary_id, channel, target)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def redact(text: str, uri: str) -> str:
    """`text` without the URI or its password (error messages may quote either)."""
    password = urlsplit(uri).password if "://" in uri else None
    text = text.replace(uri, safe_uri(uri))
    if password:
        text = text.replace(password, "***")
    return re.sub(r"password=\S+", "password=***", text)


def safe_uri(uri: str) -> str:
    """The URI with its password replaced, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}"))


def describe(exc: BaseException, uri: str) -> str:
    """One line about a psycopg error, password and URI left out."""
    return redact(" ".join(str(exc).split()), uri) or type(exc).__name__


def unavailable(what: str, exc: BaseException, uri: str) -> StoreUnavailableError:
    return StoreUnavailableError(f"PostgreSQL is unavailable ({what}): {describe(exc, uri)}")


def migrate(conn: psycopg.Connection, where: str) -> None:
    """Create or upgrade the schema to SCHEMA_VERSION (conn in autocommit mode)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS coal_mine_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM coal_mine_schema").fetchone()
        version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise StoreUnavailableError(
                f"{where} has schema version {version}, newer than this server knows ({SCHEMA_VERSION})"
            )
        for step in range(version, SCHEMA_VERSION):
            conn.execute(MIGRATIONS[step].encode())
            if version:
                log.info("Migrated %s to schema version %d", where, step + 1)
        if not row:
            conn.execute("INSERT INTO coal_mine_schema VALUES (%s)", (SCHEMA_VERSION,))
            log.info("Created the Coal Mine tables in %s (schema version %d)", where, SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            conn.execute("UPDATE coal_mine_schema SET version = %s", (SCHEMA_VERSION,))


class Listener:
    """A thread that LISTENs on CHANNEL with a connection of its own and calls `wake` on
    every notification, and once after each (re)connection, for what it may have missed.
    Reconnects with backoff; stop() ends it within about a second."""

    def __init__(self, uri: str, wake: Callable[[], None], *, connect_timeout: int = 5) -> None:
        self._uri, self._wake, self._connect_timeout = uri, wake, connect_timeout
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="postgres-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self._uri, autocommit=True, connect_timeout=self._connect_timeout
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.5
                    self._wake()
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._wake()
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    return
                log.warning(
                    "Not listening for other processes' changes (%s); trying again in %g s "
                    "(meanwhile the rescan interval applies)",
                    describe(exc, self._uri),
                    delay,
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
