"""PostgreSQL store: many web and background processes on one server database.

Every write that matters is one statement (a canary's change, its history entry
and the notifications it causes go in one data-modifying CTE), so it is atomic
without a round trip for BEGIN and COMMIT; pruning history takes a transaction
of its own that locks the canary row, except in the usual trigger of a canary at
its history limit, which prunes in the same statement (postgres_trigger.py). Notifications are claimed with
`FOR UPDATE SKIP LOCKED` plus a lease, so several background processes never
send one twice. A dropped connection or a restarted server is a
StoreUnavailableError (HTTP 503); the pool replaces broken connections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from coal_mine.abstract_store import ALL_FIELDS, LIST_FIELDS, RUN_FIELDS, AbstractStore
from coal_mine.clock import utc
from coal_mine.models import (
    AlreadyExistsError,
    Canary,
    HistoryEntry,
    NewNotification,
    Output,
    PrunePolicy,
    StoreUnavailableError,
)
from coal_mine.postgres_db import NOTIFY, Listener, describe, migrate, safe_uri, unavailable
from coal_mine.postgres_ops import PostgresOperations
from coal_mine.postgres_raw import load_row
from coal_mine.postgres_trigger import lean_sql, pruning_sql
from coal_mine.postgres_outbox import INSERT_DELIVERIES, PostgresOutbox, deliveries_params
from coal_mine.sql_shared import last_entries_query
from coal_mine.postgres_rows import (
    CANARY_COLUMNS,
    HISTORY_ARRAYS,
    ms,
    runs_to_db,
    periodicity,
    prune_history,
    prune_needed,
    row_to_canary,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT = 5  # seconds to open a connection
POOL_TIMEOUT = 4.0  # seconds a request waits for a free connection
STATEMENT_TIMEOUT_MS = 5000  # so a request answers (503) before the HTTP request timeout
_PAGE = 500  # canaries per query while streaming a list

_AT_LIMIT_SIZE = 100_000  # canary ids remembered as due for pruning
# A policy under which nothing is pruned.
_NO_PRUNING = PrunePolicy(2**31 - 1, 2**31 - 1, datetime(1, 1, 2, tzinfo=UTC))
_RUN_VALUES = ", ".join(f"%(set_{name})s" for name in RUN_FIELDS)


class PostgresStore(PostgresOperations, PostgresOutbox, AbstractStore):
    """Canaries in a PostgreSQL database, shared by any number of processes.

    `uri` is a libpq URI or conninfo string (postgresql://user:password@host/db).
    The schema is created or migrated here; StoreUnavailableError says why the
    server could not be reached (password and URI left out).
    """

    def __init__(self, uri: str, *, max_connections: int = 20, synchronous_commit: str = "on") -> None:
        self.uri = uri
        # "off": commits return before their log flush (the README's trade-off); "on" keeps
        # what the server or the URI says (PostgreSQL's default: wait for the flush).
        self._session = f"SET TimeZone TO 'UTC'; SET statement_timeout = {STATEMENT_TIMEOUT_MS}" + (
            "; SET synchronous_commit = off" if synchronous_commit == "off" else ""
        )
        self.where = safe_uri(uri) if "://" in uri else "the PostgreSQL database"
        try:
            with psycopg.connect(uri, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                conn.execute("SET TimeZone TO 'UTC'")
                migrate(conn, f"PostgreSQL database {conn.info.dbname}")
                self.database = conn.info.dbname
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"Cannot use PostgreSQL: {describe(exc, uri)}") from None
        self._pool = ConnectionPool(
            uri,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            min_size=1,
            max_size=max(1, max_connections),
            timeout=POOL_TIMEOUT,
            configure=self._configure,
            reconnect_failed=self._reconnect_failed,
            name="coal-mine",
            open=False,
        )
        self._pool.open(wait=False)
        self._listener: Listener | None = None
        # Ids of canaries whose last trigger here had to prune history: theirs will too.
        self._at_limit: set[str] = set()

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute(self._session.encode())

    def _reconnect_failed(self, pool: ConnectionPool) -> None:
        log.warning("Still cannot reconnect to PostgreSQL; requests answer 503 until it is back")

    def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake` when another process NOTIFYs a change (a connection of its own)."""
        self._listener = Listener(self.uri, wake)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._pool.close()

    # --- running statements -------------------------------------------------

    def _run(self, what: str, work: Callable[[psycopg.Connection], T], *, idempotent: bool = False) -> T:
        """Run `work` on a pooled connection; connection trouble becomes StoreUnavailableError.

        After a server restart the idle pooled connections are dead and fail their
        next statement before running it (AdminShutdown); such a statement, and
        any idempotent one, is tried once more on a fresh connection.
        """
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    return work(conn)
            except PoolTimeout as exc:
                raise StoreUnavailableError(
                    f"PostgreSQL is unavailable ({what}): no connection within {POOL_TIMEOUT:g} s"
                ) from exc
            except (errors.AdminShutdown, errors.CannotConnectNow) as exc:
                self._pool.check()
                if attempt == 2:
                    raise unavailable(what, exc, self.uri) from exc
            except psycopg.OperationalError as exc:
                # Includes statement_timeout (QueryCanceled) and a connection dropped mid-statement.
                self._pool.check()
                if attempt == 2 or not idempotent:
                    raise unavailable(what, exc, self.uri) from exc
            except psycopg.InterfaceError as exc:
                raise unavailable(what, exc, self.uri) from exc
        raise AssertionError("unreachable")

    # --- canaries -------------------------------------------------------------

    def create(self, canary: Canary) -> None:
        history = list(reversed(canary.history or []))  # oldest first, so hid follows time
        seconds, schedule = periodicity(canary.periodicity)
        params = {
            "id": canary.id,
            "name": canary.name,
            "slug": canary.slug,
            "seconds": seconds,
            "schedule": schedule,
            "description": canary.description,
            "emails": list(canary.emails),
            "paused": canary.paused,
            "late": canary.late,
            "deadline": ms(canary.deadline),
            "webhooks": list(canary.webhooks),
            "slacks": list(canary.slacks),
            "repeat": float(canary.repeat),
            "remind_at": ms(canary.remind_at),
            "count": len(history),
            "oldest": ms(min((ts for ts, _ in history), default=None)),
            "ts": [ms(ts) for ts, _ in history],
            "comments": [comment for _, comment in history],
            "badge_key": canary.badge_key,
            **{f"set_{name}": self._value(name, getattr(canary, name)) for name in RUN_FIELDS},
        }

        def work(conn: psycopg.Connection) -> None:
            conn.execute(
                "WITH c AS (INSERT INTO canaries (id, name, slug, periodicity_seconds, "
                "periodicity_schedule, description, emails, paused, late, deadline, history_count, "
                f"history_oldest, badge_key, {', '.join(RUN_FIELDS)}, webhooks, slacks, repeat, remind_at) "
                "VALUES (%(id)s, %(name)s, %(slug)s, "
                "%(seconds)s, %(schedule)s, %(description)s, %(emails)s, %(paused)s, %(late)s, %(deadline)s, "
                f"%(count)s, %(oldest)s, %(badge_key)s, {_RUN_VALUES}, %(webhooks)s, %(slacks)s, %(repeat)s, "
                "%(remind_at)s) "
                "RETURNING seq), "
                "h AS (INSERT INTO history (canary_seq, ts, comment) SELECT c.seq, t.ts, t.comment FROM c, "
                "unnest(%(ts)s::timestamptz[], %(comments)s::text[]) WITH ORDINALITY AS t(ts, comment, o) "
                "ORDER BY t.o) " + ("SELECT seq FROM c" if canary.paused else f"SELECT seq, {NOTIFY} FROM c"),
                # A new watched deadline may come before what background processes wait for.
                params,
            )

        try:
            self._run("create", work)
        except errors.UniqueViolation as exc:
            raise self._clash(exc, canary.id, canary.slug) from None

    @staticmethod
    def _clash(exc: errors.UniqueViolation, cid: str, slug: str | None) -> Exception:
        if exc.diag.constraint_name == "canaries_id_key":
            return AlreadyExistsError("id", cid)
        if exc.diag.constraint_name == "canaries_slug_key":
            return AlreadyExistsError("slug", slug or "")
        if exc.diag.constraint_name == "canaries_badge_key_key":
            return AlreadyExistsError("badge_key", "")
        return exc

    def get(self, canary_id: str, *, history: bool = True) -> Canary | None:
        extra = f", {HISTORY_ARRAYS}" if history else ""
        row = self._run(
            "get",
            lambda conn: conn.execute(
                f"SELECT {CANARY_COLUMNS}{extra} FROM canaries c WHERE c.id = %s", (canary_id,)
            ).fetchone(),
            idempotent=True,
        )
        return None if row is None else row_to_canary(row, history)

    def last_entries(self, canary_ids: Sequence[str], prefix: str) -> dict[str, datetime]:
        if not canary_ids:
            return {}
        sql, params = last_entries_query(canary_ids, prefix, "%s")
        rows = self._run("last_entries", lambda conn: conn.execute(sql, params).fetchall(), idempotent=True)
        return {canary_id: ts.astimezone(UTC) for canary_id, ts in rows if ts is not None}

    def id_for_slug(self, slug: str) -> str | None:
        row = self._run(
            "get",
            lambda conn: conn.execute("SELECT id FROM canaries WHERE slug = %s", (slug,)).fetchone(),
            idempotent=True,
        )
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
        output: Output | None = None,
    ) -> bool:
        expect = expect or {}
        sets: list[str] = []
        params: dict[str, Any] = {"id": canary_id}
        for name, value in changes.items():
            if name not in ALL_FIELDS:
                raise ValueError(f"unknown canary field {name}")
            if name in expect and expect[name] == value:
                continue  # the WHERE clause guarantees it already
            if name == "periodicity":
                sets.append("periodicity_seconds = %(seconds)s, periodicity_schedule = %(schedule)s")
                params["seconds"], params["schedule"] = periodicity(value)
            else:
                sets.append(f"{name} = %(set_{name})s")
                params[f"set_{name}"] = self._value(name, value)
        if history is not None:
            sets.append(
                "history_count = history_count + 1, "
                "history_oldest = LEAST(COALESCE(history_oldest, %(ts)s), %(ts)s)"
            )
            params["ts"], params["comment"] = ms(history[0]), history[1]
            params["output"] = output.text if output else None
            params["output_size"] = output.size if output else None
            params["output_cut"] = output.truncated if output else None
        where = self._conditions(expect, params)
        notes = deliveries_params(notifications)
        parts = [
            f"WITH u AS (UPDATE canaries SET {', '.join(sets) or 'id = id'} "
            f"WHERE {' AND '.join(where)} RETURNING seq, id, history_count, history_oldest)"
        ]
        if history is not None:
            parts.append(
                "h AS (INSERT INTO history (canary_seq, ts, comment, output, output_size, output_cut) "
                "SELECT seq, %(ts)s, %(comment)s, %(output)s, %(output_size)s, %(output_cut)s FROM u)"
            )
        if notes["d_kinds"]:
            parts.append(f"n AS ({INSERT_DELIVERIES})")
            params.update(notes)
        # Background processes elsewhere have work when a notification is recorded, or may
        # have to wait differently when lateness, pausing or the periodicity changed; a plain
        # trigger (the deadline moving later) concerns them not.
        written = {name for name, value in changes.items() if name not in expect or expect[name] != value}
        wakes = bool(notes["d_kinds"]) or bool(written & {"paused", "late", "periodicity", "remind_at"})
        sql = (
            ", ".join(parts) + " SELECT seq, history_count, history_oldest" + (f", {NOTIFY}" if wakes else "")
        )
        sql += " FROM u"
        try:
            row = self._run("update", lambda conn: conn.execute(sql.encode(), params).fetchone())
        except errors.UniqueViolation as exc:
            raise self._clash(exc, canary_id, changes.get("slug")) from None
        if row is None:
            return False
        seq, count, oldest = row[:3]
        if prune is not None and prune_needed(count, utc(oldest), prune):
            self._run("update", lambda conn: prune_history(conn, seq, prune))
        return True

    def _conditions(self, expect: Mapping[str, Any], params: dict[str, Any]) -> list[str]:
        """The WHERE clause's terms for canary `%(id)s` matching `expect` (params filled in)."""
        where = ["id = %(id)s"]
        for name, value in expect.items():
            if name not in ALL_FIELDS:
                raise ValueError(f"unknown canary field {name}")
            if self._value(name, value) is None:
                where.append(f"{name} IS NULL")
            elif name == "periodicity":
                where.append("periodicity_seconds IS NOT DISTINCT FROM %(x_seconds)s")
                where.append("periodicity_schedule IS NOT DISTINCT FROM %(x_schedule)s")
                params["x_seconds"], params["x_schedule"] = periodicity(value)
            else:
                where.append(f"{name} = %(x_{name})s")
                params[f"x_{name}"] = self._value(name, value)
        return where

    def postpone(
        self,
        canary_id: str,
        when: datetime,
        *,
        expect: Mapping[str, Any],
        history: HistoryEntry,
        prune: PrunePolicy | None = None,
    ) -> Canary | bool:
        """One statement, one round trip, one commit: the conditional update with its
        history entry, or else the canary as it is (see AbstractStore.postpone). Canaries
        last seen due for pruning (most long-lived ones) get the statement that prunes too.
        Run through libpq directly (postgres_raw.py): this is the hot path."""
        policy = prune or _NO_PRUNING
        params: dict[str, Any] = {
            "id": canary_id,
            "when": when,
            "ts": ms(history[0]),
            "comment": history[1],
            "p_max": policy.max_entries,
            "p_min": policy.min_entries,
            "p_cutoff": ms(policy.older_than),
        }
        where = tuple(self._conditions(expect, params))
        pruning = prune is not None and canary_id in self._at_limit
        statement = (pruning_sql if pruning else lean_sql)(where, CANARY_COLUMNS)

        def work(conn: psycopg.Connection) -> tuple[int | None, bytes | None, Canary | None]:
            result = statement.run(conn, params)
            seq, other = result.get_value(0, 0), result.get_value(0, 1)
            if seq is not None:
                return int(seq), other, None
            found = result.get_value(0, 3) is not None  # c.id
            return None, None, row_to_canary(load_row(conn, result)[2:], False) if found else None

        seq, other, canary = self._run("update", work)
        if seq is None:
            return canary or False
        if pruning and other == b"0":
            self._at_limit.discard(canary_id)
        elif prune is not None and not pruning and other == b"t":
            self._run("update", lambda conn: prune_history(conn, seq, prune))
            if len(self._at_limit) >= _AT_LIMIT_SIZE:
                self._at_limit.clear()  # a hint, not data: start over rather than grow
            self._at_limit.add(canary_id)
        return True

    @staticmethod
    def _value(name: str, value: Any) -> Any:
        if name in ("deadline", "snooze_until", "alarm", "remind_at"):
            return ms(value)
        if name in LIST_FIELDS:
            return list(value)
        if name == "runs":
            runs = runs_to_db(value)
            return None if runs is None else Jsonb(runs)
        if name == "repeat":
            return float(value)
        return value

    def delete(self, canary_id: str) -> bool:
        row = self._run(
            "delete",
            lambda conn: conn.execute(
                "WITH c AS (DELETE FROM canaries WHERE id = %s RETURNING seq), "
                "h AS (DELETE FROM history WHERE canary_seq IN (SELECT seq FROM c)), "
                "s AS (DELETE FROM target_status WHERE canary_id = %s AND EXISTS (SELECT 1 FROM c)) "
                "SELECT seq FROM c",
                (canary_id, canary_id),
            ).fetchone(),
        )
        return row is not None

    def iter_canaries(
        self, *, paused: bool | None = None, late: bool | None = None, history: bool = False
    ) -> Iterator[Canary]:
        """Pages of canaries by creation order (keyset), each page one short query, so
        that no connection is held while the caller works on what it got."""
        where = ["c.seq > %(after)s"]
        params: dict[str, Any] = {"after": 0, "page": _PAGE}
        if paused is not None:
            where.append("c.paused = %(paused)s")
            params["paused"] = paused
        if late is not None:
            where.append("c.late = %(late)s")
            params["late"] = late
        extra = f", {HISTORY_ARRAYS}" if history else ""
        sql = (
            f"SELECT {CANARY_COLUMNS}{extra} FROM canaries c WHERE {' AND '.join(where)} "
            "ORDER BY c.seq LIMIT %(page)s"
        )
        while True:
            rows = self._run(
                "list", lambda conn: conn.execute(sql.encode(), params).fetchall(), idempotent=True
            )
            for row in rows:
                yield row_to_canary(row, history)
            if len(rows) < _PAGE:
                return
            params["after"] = rows[-1][0]

    def earliest_deadline(self) -> datetime | None:
        row = self._run(
            "watch",
            lambda conn: conn.execute(
                "SELECT min(deadline) FROM canaries WHERE NOT paused AND NOT late"
            ).fetchone(),
            idempotent=True,
        )
        return utc(row[0]) if row else None

    def due_canaries(self, now: datetime, limit: int) -> list[Canary]:
        rows = self._run(
            "watch",
            lambda conn: conn.execute(
                f"SELECT {CANARY_COLUMNS} FROM canaries c WHERE NOT c.paused AND NOT c.late "
                "AND c.deadline < %s ORDER BY c.deadline LIMIT %s",
                (now, limit),
            ).fetchall(),
            idempotent=True,
        )
        return [row_to_canary(row, False) for row in rows]

    # --- run reporting ----------------------------------------------------------------

    def outputs(self, canary_id: str) -> list[tuple[datetime, Output]]:
        rows = self._run(
            "get",
            lambda conn: conn.execute(
                "SELECT h.ts, h.output, h.output_size, h.output_cut FROM history h "
                "JOIN canaries c ON h.canary_seq = c.seq WHERE c.id = %s AND h.output IS NOT NULL "
                "ORDER BY h.ts DESC, h.hid DESC",
                (canary_id,),
            ).fetchall(),
            idempotent=True,
        )
        return [(ts.astimezone(UTC), Output(text, size, bool(cut))) for ts, text, size, cut in rows]

    def earliest_alarm(self) -> datetime | None:
        row = self._run(
            "watch",
            lambda conn: conn.execute("SELECT min(alarm) FROM canaries WHERE alarm IS NOT NULL").fetchone(),
            idempotent=True,
        )
        return utc(row[0]) if row else None

    def due_alarms(self, now: datetime, limit: int) -> list[Canary]:
        rows = self._run(
            "watch",
            lambda conn: conn.execute(
                f"SELECT {CANARY_COLUMNS} FROM canaries c WHERE c.alarm IS NOT NULL AND c.alarm <= %s "
                "ORDER BY c.alarm LIMIT %s",
                (now, limit),
            ).fetchall(),
            idempotent=True,
        )
        return [row_to_canary(row, False) for row in rows]
