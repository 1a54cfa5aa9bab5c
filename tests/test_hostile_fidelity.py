"""Issue 19, items 8, 9 and 11: errors that must not be 500s, start-up errors that must be
one line naming the setting (exit 2), and odd input with a clear answer."""

from __future__ import annotations

import json
import logging
import resource
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.memory_store import MemoryStore
from coal_mine.models import Canary, CanaryNotFoundError, StoreUnavailableError
from coal_mine.watcher import Watcher
from tests.helpers import REPO, InProcessServer, ServerProcess, free_port, http_get, wait_for_port

# --- item 8: errors that must not be 500s ---------------------------------------------------


def test_a_trigger_racing_a_delete_is_a_404() -> None:
    """The canary is late (a RESUMED is due) and is deleted between the trigger's two reads."""
    with InProcessServer() as server:
        logic, store = server.logic, server.logic.store
        cid = logic.create("Racy", 60, emails=["ops@example.com"]).id
        store.update(cid, {"late": True})
        real_get = store.get

        def get_then_lose_it(canary_id: str, *, history: bool = True) -> Canary | None:
            found = real_get(canary_id, history=history)
            store.delete(canary_id)  # a concurrent delete lands right after this read
            return found

        store.get = get_then_lose_it  # type: ignore[method-assign]
        status, body = server.call(f"/{cid}")
        assert (status, body["status"]) == (404, "error"), body


def test_a_trigger_of_a_deleted_late_canary_in_the_rules_is_not_found() -> None:
    store = MemoryStore()
    logic = BusinessLogic(store, FakeClock())
    cid = logic.create("Racy", 60, emails=["ops@example.com"]).id
    store.update(cid, {"late": True})
    calls = {"n": 0}
    real_get = store.get

    def get(canary_id: str, *, history: bool = True) -> Canary | None:
        calls["n"] += 1
        if calls["n"] > 1:
            return None
        return real_get(canary_id, history=history)

    store.get = get  # type: ignore[method-assign]
    with pytest.raises(CanaryNotFoundError):
        logic.trigger(cid)


class FailingList:
    """iter_canaries that yields `count` canaries and then loses the database."""

    def __init__(self, store: MemoryStore, count: int) -> None:
        self.real = store.iter_canaries
        self.count = count

    def __call__(self, **kwargs: Any) -> Iterator[Canary]:
        for i, canary in enumerate(self.real(**kwargs)):
            if i == self.count:
                raise StoreUnavailableError("database went away mid-list")
            yield canary


def fill(store: MemoryStore, count: int) -> None:
    """`count` canaries with 400-character names (about 450 bytes each in a list)."""
    for i in range(count):
        name = f"{'long name ' * 40}{i}"
        store.create(
            Canary(id=f"c{i:07d}", name=name, slug=name.replace(" ", "-"), periodicity=60.0, history=[])
        )


@pytest.mark.parametrize("count", [3, 120], ids=["small", "most-of-64-KB"])
def test_a_database_error_in_the_middle_of_a_list_is_a_json_error(count: int) -> None:
    """Up to 64 KB of list is produced before the status."""
    with InProcessServer() as server:
        fill(server.logic.store, count + 1)
        server.logic.store.iter_canaries = FailingList(server.logic.store, count)  # type: ignore[method-assign]
        status, body = server.call("list")
        assert status == 503
        assert body == {"status": "error", "error": "database went away mid-list"}


def test_a_database_error_later_in_a_huge_list_resets_the_connection() -> None:
    """Past its first 64 KB a list streams; failing then, the connection is reset rather
    than ended, so no client takes the cut-off JSON for a complete answer."""
    count = 600  # about 270 KB of list before the failure
    with InProcessServer() as server:
        fill(server.logic.store, count + 1)
        server.logic.store.iter_canaries = FailingList(server.logic.store, count)  # type: ignore[method-assign]
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /coal-mine/v1/canary/list HTTP/1.0\r\n\r\n")
            received = b""
            with pytest.raises(ConnectionResetError):
                while chunk := sock.recv(65536):
                    received += chunk
        assert received.startswith(b"HTTP/1.0 200") and len(received) > 64 * 1024
        assert b"Content-Length" not in received.split(b"\r\n\r\n", 1)[0]


def test_a_list_carries_its_length() -> None:
    with InProcessServer() as server:
        server.logic.create("Job", 60)
        import urllib.request

        with urllib.request.urlopen(f"{server.base_url}/coal-mine/v1/canary/list", timeout=10) as response:
            body = response.read()
            assert int(response.headers["Content-Length"]) == len(body)
            assert json.loads(body)["canaries"][0]["name"] == "Job"


def test_the_watcher_says_late_once_the_change_is_stored(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    store = MemoryStore()
    logic = BusinessLogic(store, clock)
    logic.create("Job", 10, emails=["ops@example.com"])
    clock.advance(11)
    real_update = store.update
    failures = {"left": 3}

    def update(*args: Any, **kwargs: Any) -> bool:
        if failures["left"]:
            failures["left"] -= 1
            raise StoreUnavailableError("database or disk is full")
        return real_update(*args, **kwargs)

    store.update = update  # type: ignore[method-assign]
    watcher = Watcher(logic)
    with caplog.at_level(logging.INFO, logger="coal_mine"):
        for _ in range(4):
            watcher.step()  # a failing canary is retried after a backoff
            if failures["left"]:
                assert "is late" not in caplog.text
            clock.advance(600)
    assert failures["left"] == 0 and store.get(store.id_for_slug("job") or "").late
    assert caplog.text.count("is late") == 1


def test_a_full_disk_is_a_503_not_a_500(tmp_path: Path) -> None:
    """A real server whose files may not grow past 512 KB (RLIMIT_FSIZE): writes fail with
    SQLite's "database or disk is full", which must be a JSON 503."""
    port = free_port()
    (tmp_path / "coal-mine.ini").write_text(
        f"[wsgi]\nhost = 127.0.0.1\nport = {port}\n[sqlite]\npath = {tmp_path / 'db.sqlite3'}\n"
    )
    limit = 512 * 1024

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with open(tmp_path / "server.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "coal_mine.server", "--config", str(tmp_path / "coal-mine.ini")],
            cwd=tmp_path,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_file_size,
        )
    try:
        wait_for_port(port, process=process)
        statuses = []
        for i in range(400):
            status, body = http_get(
                f"http://127.0.0.1:{port}/coal-mine/v1/canary/create?name=job{i}&periodicity=60"
                f"&description={'d' * 9000}"
            )
            statuses.append(status)
            if status != 200:
                assert status == 503 and body["status"] == "error", body
                assert "full" in body["error"] or "cannot be used" in body["error"]
                break
        assert statuses[-1] == 503, "the file size limit was never reached"
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(10)
    assert "Traceback" not in (tmp_path / "server.log").read_text(errors="replace")


# --- item 9: start-up errors --------------------------------------------------------------


def run_server(tmp_path: Path, ini: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "coal-mine.ini").write_text(ini)
    return subprocess.run(
        [sys.executable, "-m", "coal_mine.server", "--config", str(tmp_path / "coal-mine.ini")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_another_programs_sqlite_file_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE canaries (bird TEXT, cage INTEGER)")
    result = run_server(tmp_path, f"[wsgi]\nport = {free_port()}\n[sqlite]\npath = {path}\n")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"coal-mine: configuration error: [sqlite] path: {path} is not a Coal Mine")
    assert "Traceback" not in result.stderr
    with sqlite3.connect(path) as conn:  # left as it was
        assert conn.execute("SELECT sql FROM sqlite_master").fetchall() == [
            ("CREATE TABLE canaries (bird TEXT, cage INTEGER)",)
        ]


def test_an_unwritable_log_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    result = run_server(tmp_path, f"[wsgi]\nport = {free_port()}\n[logging]\nfile = /nonexistent/dir/x.log\n")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "coal-mine: configuration error: [logging] file: cannot open /nonexistent/dir/x.log: "
        "No such file or directory"
    ]


# --- item 11: odd input -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(Path(tmp_path_factory.mktemp("odd"))) as process:
        yield process


@pytest.mark.parametrize("name", ["!!!", "???", "@@@", "#"])
def test_a_name_without_letters_or_digits_is_refused(server: ServerProcess, name: str) -> None:
    status, body = server.call("create", name=name, periodicity="60")
    assert status == 400
    assert "needs at least one letter or digit" in body["error"]


def test_such_a_name_never_finds_another_canary(server: ServerProcess, tmp_path: Path) -> None:
    assert server.call("create", name="Real one", periodicity="60")[0] == 200
    assert server.call("get", name="@@@")[0] == 404
    status, body = server.call("update", slug="real-one", name="???")
    assert status == 400 and "needs at least one letter or digit" in body["error"]


@pytest.mark.parametrize("name, slug", [("---", "-"), ("a b", "a-b"), ("Ünïcode name", "ünïcode-name")])
def test_names_coal_mine_071_handles_keep_its_slug(server: ServerProcess, name: str, slug: str) -> None:
    status, body = server.call("create", name=name, periodicity="60")
    assert status == 200 and body["canary"]["slug"] == slug


@pytest.mark.parametrize(
    "periodicity, says",
    [
        (" 60", "has spaces around it"),
        ("60 ", "has spaces around it"),
        ("1e3", "has an exponent"),
        ("-5", "is negative"),
        ("+5", "has a sign"),
    ],
)
def test_a_malformed_number_says_what_is_wrong(server: ServerProcess, periodicity: str, says: str) -> None:
    status, body = server.call("create", name=f"Number {periodicity!r}", periodicity=periodicity)
    assert status == 400
    assert body["error"].startswith(f'Bad periodicity "{periodicity}": a number of seconds')
    assert says in body["error"] and "crontab" not in body["error"]


def test_email_dash_on_create_means_no_addresses(server: ServerProcess) -> None:
    status, body = server.call("create", name="Dash", periodicity="60", email="-")
    assert status == 200 and body["canary"]["emails"] == []
    status, body = server.call("create", name="Dash two", periodicity="60", email=["a@example.com", "-"])
    assert status == 400 and '"-" is not an address' in body["error"]


def test_the_same_address_twice_is_stored_once(server: ServerProcess) -> None:
    emails = ["a@example.com", "b@example.com", "a@example.com"]
    status, body = server.call("create", name="Twice", periodicity="60", email=emails)
    assert status == 200 and body["canary"]["emails"] == ["a@example.com", "b@example.com"]
    status, body = server.call("update", slug="twice", email=["c@example.com", "c@example.com"])
    assert status == 200 and body["canary"]["emails"] == ["c@example.com"]
