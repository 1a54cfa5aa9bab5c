"""How the SQLite store reports a database it cannot use."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from coal_mine.models import StoreUnavailableError


@contextlib.contextmanager
def unavailable_on_failure(path: str) -> Iterator[None]:
    """SQLite failing to read or write (disk full, I/O error, locked past the timeout,
    not a database) is the store being unavailable: a 503, not a 500 with a traceback.
    Constraint violations (IntegrityError) are the caller's to interpret."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise
    except sqlite3.OperationalError as exc:
        raise StoreUnavailableError(f"SQLite database {path} cannot be used right now: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailableError(f"SQLite database {path} cannot be used: {exc}") from exc


def refuse_foreign_tables(conn: sqlite3.Connection, path: str) -> None:
    """A file without our schema version must hold no tables: another program's
    `canaries` table is not ours to migrate or write into."""
    tables = sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    if tables:
        raise StoreUnavailableError(
            f"{path} is not a Coal Mine database: it holds other tables ({', '.join(tables)})"
        )
