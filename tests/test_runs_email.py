"""FAILED, RESUMED and run-overrun LATE email through a real SMTP server (aiosmtpd), on every
store, plus one end-to-end run through a real server process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.clock import FakeClock
from coal_mine.config import EmailConfig
from coal_mine.channels.email import EmailChannel, SMTPNotifier
from coal_mine.notify import OutboxSender
from tests.helpers import ServerProcess
from tests.runs_support import RunServer
from tests.smtp_sink import SMTPSink


@pytest.fixture
def sink() -> Iterator[SMTPSink]:
    with SMTPSink() as server:
        yield server


@pytest.fixture
def srv(store: AbstractStore, clock: FakeClock) -> Iterator[RunServer]:
    with RunServer(store, clock, max_body=5000) as server:
        yield server


def send_all(srv: RunServer, sink: SMTPSink) -> None:
    notifier = SMTPNotifier(EmailConfig(sender="coal@example.net", host="127.0.0.1", port=sink.port))
    sender = OutboxSender(srv.store, EmailChannel("coal@example.net", notifier), clock=srv.clock)
    while sender.step():
        pass
    notifier.close()
    assert srv.store.pending_notifications() == []


def test_failed_and_resumed_arrive_once_each(srv: RunServer, sink: SMTPSink) -> None:
    cid = srv.create("Nightly backup", email="ops@example.com")
    output = ("line\n" * 400 + "\x1b[31mERROR: disk full\x1b[0m\n").encode()
    srv.request("POST", f"/{cid}/start", rid="r1")
    srv.clock.advance(12)
    assert srv.request("POST", f"/{cid}/28", output, rid="r1", comment="backup")[0] == 200
    srv.clock.advance(60)
    srv.request("POST", f"/{cid}/fail", b"again")  # already failed: recorded, no second alert
    srv.request("GET", f"/{cid}/log", m="looking into it")
    send_all(srv, sink)
    srv.clock.advance(60)
    assert srv.call(f"/{cid}", comment="fixed")[1]["recovered"] is True
    srv.clock.advance(60)
    srv.call(f"/{cid}")
    send_all(srv, sink)
    failed, resumed = sink.wait_for(2)
    time.sleep(0.2)  # nothing else on its way: the outbox is empty, and so is the sink's queue
    assert len(sink.messages) == 2
    assert failed.subject == "[FAILED] Nightly backup reported a failure"
    assert (failed.canary, failed.event) == (cid, "failed")
    body = failed.body().replace("\r\n", "\n")
    assert body.startswith(f"The canary Nightly backup ({cid}) reported a failure with exit status 28 at ")
    assert "\nComment: backup\n" in body and "\nThe run took 12.000 seconds.\n" in body
    assert "ERROR: disk full" in body and "\x1b" not in body
    cleaned = output.decode().replace("\x1b", "")
    assert f"The end of its output:\n\n{cleaned[-1000:].rstrip()}\n" in body
    assert cleaned[-1001:] not in body
    assert "Failed (exit status 28: backup), ran 12.000 s" in body
    assert resumed.subject == "[RESUMED] Nightly backup is reporting again"
    assert "Triggered (fixed)" in resumed.body()


def test_overrun_late_says_when_the_run_started(srv: RunServer, sink: SMTPSink) -> None:
    cid = srv.create("Long job", email="ops@example.com", max_runtime="60")
    srv.call(f"/{cid}/start")
    started = srv.clock.now()
    srv.tick(61)
    send_all(srv, sink)
    (late,) = sink.wait_for(1)
    assert late.subject == "[LATE] Long job has not reported"
    assert f"started a run at {started} that has not finished" in late.body()


def test_end_to_end_through_a_server_process(tmp_path: Path, sink: SMTPSink) -> None:
    ini = (
        f"[email]\nsender = coal@example.net\nhost = 127.0.0.1\nport = {sink.port}\ntimeout = 5\n"
        "[watcher]\nrescan_interval = 0.2\n"
    )
    with ServerProcess(tmp_path, ini_extra=ini) as server:
        status, body = server.call("create", name="Cron", periodicity=3600, email="ops@example.com")
        cid = body["canary"]["id"]
        server.call(f"/{cid}/start")
        server.call(f"/{cid}/1")
        (failed,) = sink.wait_for(1)
        assert failed.subject == "[FAILED] Cron reported a failure"
        server.call(f"/{cid}/0")
        _, resumed = sink.wait_for(2)
        assert resumed.subject == "[RESUMED] Cron is reporting again"
        status, body = server.call("create", name="Short", periodicity=3600, max_runtime=0.3, email="o@x.org")
        server.call(f"/{body['canary']['id']}/start")
        late = sink.wait_for(3)[2]
        assert late.subject == "[LATE] Short has not reported" and "has not finished" in late.body()
