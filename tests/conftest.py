"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from tests.helpers import ServerProcess
from tests.stores import POSTGRESQL_SKIP_REASON, POSTGRESQL_URI_VARIABLE, STORE_FACTORIES
from tests.ui_support import BROWSER_STATUS


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real coal-mine server on 127.0.0.1 with no auth key and its own SQLite file."""
    with ServerProcess(tmp_path / "server") as process:
        yield process


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real coal-mine server that requires auth_key=sekrit."""
    with ServerProcess(tmp_path / "auth-server", auth_key="sekrit") as process:
        yield process


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AbstractStore]:
    """Each store implementation in turn (see tests/stores.py)."""
    instance = STORE_FACTORIES[request.param](tmp_path)
    yield instance
    instance.close()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


@pytest.fixture
def logic(store: AbstractStore, clock: FakeClock) -> BusinessLogic:
    """The business rules on each store in turn, with the fake clock."""
    return BusinessLogic(store, clock)


def _postgresql_count(terminalreporter: pytest.TerminalReporter, outcome: str) -> int:
    """How many PostgreSQL tests (test_postgres_*.py, or a [postgresql] variant) had `outcome`."""
    return sum(1 for report in terminalreporter.stats.get(outcome, []) if "postgres" in report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say in one line each whether the live-MongoDB and PostgreSQL variants and the browser
    tests ran (without a server, or without Chromium, they skip)."""
    if "skipped" in BROWSER_STATUS:
        terminalreporter.write_sep(
            "!", f"BROWSER TESTS SKIPPED: {BROWSER_STATUS['skipped']}", red=True, bold=True
        )
    elif "ran" in BROWSER_STATUS:
        terminalreporter.write_line(f"browser tests: ran in headless {BROWSER_STATUS['ran']}")
    if os.environ.get("COAL_MINE_TEST_MONGODB_URI"):
        terminalreporter.write_line("live MongoDB tests: ran against COAL_MINE_TEST_MONGODB_URI")
    else:
        terminalreporter.write_line(
            "live MongoDB tests: skipped, COAL_MINE_TEST_MONGODB_URI is not set "
            "(no MongoDB server on this machine); mongomock variants ran"
        )
    if os.environ.get(POSTGRESQL_URI_VARIABLE):
        # .ci/run reads this line: it fails unless some passed and none skipped.
        passed = _postgresql_count(terminalreporter, "passed")
        skipped = _postgresql_count(terminalreporter, "skipped")
        terminalreporter.write_line(
            f"live PostgreSQL tests: {passed} passed, {skipped} skipped against {POSTGRESQL_URI_VARIABLE}"
        )
    else:
        terminalreporter.write_line(f"live PostgreSQL tests: skipped, {POSTGRESQL_SKIP_REASON}")
