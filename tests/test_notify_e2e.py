"""Late and resumed email end to end: real server processes, real SQLite (and PostgreSQL,
when COAL_MINE_TEST_POSTGRESQL_URI names a server), real SMTP (aiosmtpd)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coal_mine.config import load_config
from coal_mine.server import open_store
from tests.helpers import ServerProcess, wait_until
from tests.smtp_sink import Received, SMTPSink
from tests.stores import ThrowAwaySchema

PERIOD = 0.3


def ini(smtp_port: int, db: Path | str | None = None) -> str:
    """Email and watcher settings; `db` is an SQLite file or a whole store section."""
    text = (
        f"[email]\nsender = coal@example.net\nhost = 127.0.0.1\nport = {smtp_port}\ntimeout = 5\n"
        "[watcher]\nrescan_interval = 0.2\nretry_max_delay = 0.4\n"
    )
    if isinstance(db, str):
        text = db + text
    elif db is not None:
        text = f"[sqlite]\npath = {db}\n" + text
    return text


@pytest.fixture(params=["sqlite", "postgresql"])
def store_ini(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store section shared by every process of a test: an SQLite file, or a
    throw-away schema on the live PostgreSQL server (skipped without one)."""
    if request.param == "sqlite":
        yield f"[sqlite]\npath = {tmp_path / 'shared.sqlite3'}\n"
        return
    schema = ThrowAwaySchema()
    try:
        yield f"[postgresql]\nuri = {schema.uri}\n"
    finally:
        schema.drop()


@pytest.fixture
def sink() -> Iterator[SMTPSink]:
    with SMTPSink() as server:
        yield server


def create(
    server: ServerProcess,
    name: str,
    periodicity: float = PERIOD,
    emails: tuple[str, ...] = ("ops@example.com",),
) -> dict[str, Any]:
    status, body = server.call("create", name=name, periodicity=periodicity, email=list(emails))
    assert status == 200, body
    return body["canary"]


def is_late(server: ServerProcess, cid: str) -> bool:
    return server.call("get", id=cid)[1]["canary"]["late"]


def events(messages: list[Received]) -> list[tuple[str, str]]:
    return [(m.canary, m.event) for m in messages]


def settle(sink: SMTPSink, count: int, server: ServerProcess) -> list[Received]:
    """Wait for `count` messages, then for the shared outbox to be empty: once nothing is
    pending, nothing more can be sent, so any duplicate has arrived by then."""
    sink.wait_for(count)
    store = open_store(load_config(str(server.ini)))
    try:
        wait_until(lambda: store.count_notifications() == 0)
    finally:
        store.close()
    return list(sink.messages)


def test_late_then_resumed(tmp_path: Path, sink: SMTPSink, store_ini: str) -> None:
    with ServerProcess(tmp_path, ini_extra=ini(sink.port, store_ini)) as server:
        canary = create(server, "Nightly backup", emails=("ops@example.com", "dev@example.org"))
        (late,) = sink.wait_for(1)
        deadline = datetime.fromisoformat(canary["deadline"])
        assert datetime.fromtimestamp(late.arrived, UTC) >= deadline
        assert late.subject == "[LATE] Nightly backup has not reported"
        assert late.message["From"] == "Coal Mine <coal@example.net>"
        assert late.rcpt_tos == ["ops@example.com", "dev@example.org"]
        assert late.message["Date"] and late.message["Message-ID"]
        assert str(deadline) in late.body() and "Canary created" in late.body()
        assert server.call("trigger", id=canary["id"], comment="back")[1]["recovered"] is True
        _, resumed = sink.wait_for(2)
        assert resumed.subject == "[RESUMED] Nightly backup is reporting again"
        assert "Triggered (back)" in resumed.body()
        log = server.log()
    assert f"Canary {canary['id']} (Nightly backup) is late" in log
    assert f"(canary {canary['id']}, late): sent to ops@example.com, dev@example.org" in log


def test_smtp_down_then_back_all_events_in_order_once(tmp_path: Path, store_ini: str) -> None:
    sink = SMTPSink()  # not listening yet
    with ServerProcess(tmp_path, ini_extra=ini(sink.port, store_ini)) as server:
        cid = create(server, "Flaky")["id"]
        wait_until(lambda: is_late(server, cid))
        server.call("trigger", id=cid)
        wait_until(lambda: is_late(server, cid))
        wait_until(lambda: "delivery failed" in server.log())
        with sink:
            got = settle(sink, 3, server)
        log = server.log()
    assert events(got) == [(cid, "late"), (cid, "resumed"), (cid, "late")]
    assert "delivery failed (attempt 1, temporary)" in log


def test_killed_while_pending_then_restarted(tmp_path: Path, store_ini: str) -> None:
    sink = SMTPSink()
    # The first failed attempt is followed by a 1 s pause: killing the server right after
    # it means no attempt (and so no lease) is in progress, and the restarted process may
    # claim the event at once instead of waiting for a dead sender's lease to expire.
    slow_retries = ini(sink.port, store_ini).replace("retry_max_delay = 0.4", "retry_max_delay = 5")
    server = ServerProcess(tmp_path, ini_extra=slow_retries).start()
    try:
        cid = create(server, "Survivor")["id"]
        wait_until(lambda: is_late(server, cid))
        wait_until(lambda: "delivery failed" in server.log(), timeout=10.0)
        server.kill()
        with sink:
            server.start()
            got = settle(sink, 1, server)
    finally:
        server.stop()
    assert events(got) == [(cid, "late")]


def test_two_background_processes_send_each_event_once(
    tmp_path: Path, sink: SMTPSink, store_ini: str
) -> None:
    web = ServerProcess(tmp_path / "web", ini_extra=ini(sink.port, store_ini), args=("--web",))
    workers = [
        ServerProcess(tmp_path / f"bg{i}", ini_extra=ini(sink.port, store_ini), args=("--background",))
        for i in range(2)
    ]
    with web:
        for worker in workers:
            worker.start()
        try:
            ids = [create(web, f"Job {i}", periodicity=0.5)["id"] for i in range(20)]
            late = settle(sink, 20, web)
            for cid in ids:  # resumed, and never late again
                assert web.call("update", id=cid, periodicity=3600)[0] == 200
            got = settle(sink, 40, web)
        finally:
            for worker in workers:
                worker.stop()
        assert "sent to" not in web.log()  # --web only records
    assert len(late) == 20
    assert Counter(events(got)) == Counter([(cid, kind) for cid in ids for kind in ("late", "resumed")])
    assert sum(worker.log().count("): sent to") for worker in workers) == 40


def test_header_injection_through_the_api(tmp_path: Path, sink: SMTPSink, store_ini: str) -> None:
    with ServerProcess(tmp_path, ini_extra=ini(sink.port, store_ini)) as server:
        cid = create(server, "Evil\r\nBcc: evil@attacker.example\r\nX-Injected: yes")["id"]
        (late,) = sink.wait_for(1)
        server.call("trigger", id=cid, comment="x\r\nBcc: evil2@attacker.example")
        _, resumed = sink.wait_for(2)
    for message in (late, resumed):
        assert message.rcpt_tos == ["ops@example.com"]
        assert message.message["Bcc"] is None and message.message["X-Injected"] is None
        headers = message.raw.split(b"\r\n\r\n", 1)[0]
        assert b"\nBcc" not in headers and b"\nX-Injected" not in headers
    assert late.subject == "[LATE] Evil Bcc: evil@attacker.example X-Injected: yes has not reported"


def test_non_ascii_name_and_comment_delivered_intact(tmp_path: Path, sink: SMTPSink, store_ini: str) -> None:
    name = "Sauvegarde — Zürich ✓ 夜間"
    with ServerProcess(tmp_path, ini_extra=ini(sink.port, store_ini)) as server:
        cid = create(server, name, emails=("équipe@example.com",))["id"]
        sink.wait_for(1)
        server.call("trigger", id=cid, comment="déjà vu ✓")
        late, resumed = sink.wait_for(2)
    assert late.subject == f"[LATE] {name} has not reported"
    assert resumed.subject == f"[RESUMED] {name} is reporting again"
    assert name in resumed.body() and "Triggered (déjà vu ✓)" in resumed.body()
    assert late.rcpt_tos == ["équipe@example.com"]


def test_corrupt_canary_row_does_not_stop_the_others(tmp_path: Path, sink: SMTPSink) -> None:
    db = tmp_path / "db.sqlite3"
    with ServerProcess(tmp_path, ini_extra=ini(sink.port, db)) as server:
        corrupt = create(server, "Corrupt", periodicity=1.0)["id"]
        odd = create(server, "Odd periodicity", periodicity=1.0)["id"]
        good = create(server, "Good", periodicity=1.2)["id"]
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE canaries SET emails = '[\"unterminated' WHERE id = ?", (corrupt,))
            conn.execute("UPDATE canaries SET periodicity = 'not a schedule' WHERE id = ?", (odd,))
        got = settle(sink, 2, server)
        wait_until(lambda: f"Canary {corrupt}: cannot check its deadline" in server.log())
        later = create(server, "Later", periodicity=PERIOD)["id"]  # still watched afterwards
        got = settle(sink, 3, server)
    assert sorted(events(got)) == sorted([(odd, "late"), (good, "late"), (later, "late")])


def test_no_sender_keeps_events_pending(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ini_extra="[watcher]\nrescan_interval = 0.2\n") as server:
        cid = create(server, "Unsent")["id"]
        wait_until(lambda: is_late(server, cid))
        wait_until(lambda: "notification(s) pending and kept" in server.log())
    with sqlite3.connect(tmp_path / "coal-mine.sqlite3") as conn:
        assert conn.execute("SELECT canary_id, kind FROM deliveries").fetchall() == [(cid, "late")]
