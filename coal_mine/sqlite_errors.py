"""How the SQLite store reports a database it cannot use."""

from __future__ import annotations

import sqlite3

from coal_mine.models import StoreUnavailableError


def unavailable(path: str, exc: sqlite3.DatabaseError) -> StoreUnavailableError | None:
    """SQLite failing to read or write (disk full, I/O error, locked past the timeout,
    not a database) is the store being unavailable: a 503, not a 500 with a traceback.
    Constraint violations (IntegrityError, None here) are the caller's to interpret."""
    if isinstance(exc, sqlite3.IntegrityError):
        return None
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:  # another writer, past the timeout
        return StoreUnavailableError(f"SQLite database is busy: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailableError(f"SQLite database {path} cannot be used right now: {exc}")
    return StoreUnavailableError(f"SQLite database {path} cannot be used: {exc}")


def refuse_foreign_tables(conn: sqlite3.Connection, path: str) -> None:
    """A file without our schema version must hold no tables: another program's
    `canaries` table is not ours to migrate or write into."""
    tables = sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    if tables:
        raise StoreUnavailableError(
            f"{path} is not a Coal Mine database: it holds other tables ({', '.join(tables)})"
        )
