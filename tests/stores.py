"""Every store implementation the contract suite runs against.

Add a store here and the whole contract suite (and everything else that uses
the `store` fixture) runs against it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from coal_mine.abstract_store import AbstractStore
from coal_mine.memory_store import MemoryStore
from coal_mine.sqlite_store import SQLiteStore

StoreFactory = Callable[[Path], AbstractStore]

STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(str(tmp / "contract.sqlite3")),
}
