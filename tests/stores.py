"""Every store implementation the contract suite runs against.

Add a store here and the whole contract suite (and everything else that uses
the `store` fixture) runs against it.

"mongomock" runs the MongoDB store on mongomock, behind `SerializedDatabase`
(see there). "mongodb" runs it on a live server named by the environment
variable COAL_MINE_TEST_MONGODB_URI, in a throw-away database per test; without
the variable those tests are skipped with that reason.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.memory_store import MemoryStore
from coal_mine.mongo_store import MongoStore
from coal_mine.sqlite_store import SQLiteStore

StoreFactory = Callable[[Path], AbstractStore]
MONGODB_URI_VARIABLE = "COAL_MINE_TEST_MONGODB_URI"


class SerializedCollection:
    """A mongomock collection whose every operation runs alone.

    mongomock is not thread-safe: its update_one reads, changes and writes back
    a document without any lock, so two threads can lose each other's change.
    A MongoDB server makes each single-document operation atomic; this lock
    provides exactly that and nothing more (a cursor is read to the end inside
    the lock). Races between two operations of the store stay fully possible,
    which is what the concurrency tests exercise.
    """

    def __init__(self, collection: Any, lock: threading.RLock) -> None:
        self._collection = collection
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if not callable(attribute):
            return attribute

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                result = attribute(*args, **kwargs)
                if name in ("find", "aggregate"):
                    return iter(list(result))
                return result

        return locked


class SerializedDatabase:
    """A mongomock database handing out SerializedCollections (one lock per database)."""

    def __init__(self, database: Any) -> None:
        self.database = database
        self._lock = threading.RLock()

    def __getitem__(self, name: str) -> SerializedCollection:
        return SerializedCollection(self.database[name], self._lock)


def mongomock_database() -> SerializedDatabase:
    import mongomock

    return SerializedDatabase(mongomock.MongoClient(tz_aware=True)["coal_mine"])


def mongomock_store(tmp: Path | None = None) -> MongoStore:
    """A MongoStore on a fresh mongomock database, with its indexes."""
    store = MongoStore(mongomock_database(), retry_delays=())
    store.ensure_indexes()
    return store


class _ThrowAwayMongoStore(MongoStore):
    """A store in its own database on the live test server, dropped at close()."""

    def close(self) -> None:
        self._client.drop_database(self.db.name)
        super().close()


def live_mongodb_store(tmp: Path | None = None) -> MongoStore:
    """A MongoStore on the server named by COAL_MINE_TEST_MONGODB_URI (skips without it)."""
    uri = os.environ.get(MONGODB_URI_VARIABLE)
    if not uri:
        pytest.skip(f"{MONGODB_URI_VARIABLE} is not set: no live MongoDB server to test against")
    built = MongoStore.from_settings(uri, database=f"coal_mine_test_{uuid.uuid4().hex[:12]}")
    store = _ThrowAwayMongoStore(built.db, client=built._client)
    store.ensure_indexes()
    return store


def mongo_factories() -> Iterator[tuple[str, Callable[[], MongoStore]]]:
    """The MongoDB stores to run Mongo-specific tests on (live one skipped without a server)."""
    yield "mongomock", mongomock_store
    yield "mongodb", live_mongodb_store


STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(str(tmp / "contract.sqlite3")),
    "mongomock": mongomock_store,
    "mongodb": live_mongodb_store,
}


POSTGRESQL_URI_VARIABLE = "COAL_MINE_TEST_POSTGRESQL_URI"
POSTGRESQL_SKIP_REASON = (
    f"{POSTGRESQL_URI_VARIABLE} is not set: no PostgreSQL server to test against "
    "(run the tests under `python3 tests/pg_cluster.py -- ...`, as .ci/run does)"
)


def postgresql_uri() -> str:
    """The live test server's URI; skips the test without it."""
    uri = os.environ.get(POSTGRESQL_URI_VARIABLE)
    if not uri:
        pytest.skip(POSTGRESQL_SKIP_REASON)
    return uri


def schema_uri(uri: str, schema: str) -> str:
    """`uri` with a search_path that puts the store's tables into `schema`."""
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}options=-csearch_path%3D{schema}"


class ThrowAwaySchema:
    """A fresh schema in the test database, dropped by drop(); `uri` puts tables there."""

    def __init__(self) -> None:
        import psycopg

        self.base = postgresql_uri()
        self.name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        self.uri = schema_uri(self.base, self.name)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.name} CASCADE")


def postgresql_store(tmp: Path | None = None) -> AbstractStore:
    """A PostgresStore in a schema of its own on the live test server (skips without it)."""
    from coal_mine.postgres_store import PostgresStore

    schema = ThrowAwaySchema()

    class _ThrowAwayPostgresStore(PostgresStore):
        def close(self) -> None:
            super().close()
            schema.drop()

    return _ThrowAwayPostgresStore(schema.uri, max_connections=4)


STORE_FACTORIES["postgresql"] = postgresql_store


# One email target, for tests that record events by hand.
ONE = (("email", "ops@example.com"),)


def claim_one(store: AbstractStore, now: Any, owner: str, lease_until: Any, channel: str = "email") -> Any:
    """The one entry a claim of `channel` leases, or None (tests that claim one at a time)."""
    claimed = store.claim_notifications(now, owner, lease_until, channel)
    assert len(claimed) <= 1
    return claimed[0] if claimed else None
