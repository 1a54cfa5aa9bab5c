"""Messages, the SMTP notifier (against a real aiosmtpd server) and the outbox sender (FakeClock)."""

from __future__ import annotations

import email
import logging
import shutil
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from coal_mine.abstract_store import AbstractStore
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import Clock, FakeClock
from coal_mine.config import EmailConfig
from coal_mine.models import Notification, StoreUnavailableError
from coal_mine.channels import Channel, DeliveryError
from coal_mine.channels.email import SMTPNotifier, build_message
from coal_mine.notify import OutboxSender
from coal_mine.watcher import Watcher
from tests.helpers import free_port
from tests.smtp_sink import SMTPSink

T0 = datetime(2026, 3, 2, 12, 0, 0, 123000, tzinfo=UTC)


def notification(
    kind: str = "late",
    name: str = "Nightly backup",
    emails: Any = None,
    history: list | None = None,
    **payload: Any,
) -> Notification:
    return Notification(
        id=7,
        canary_id="abcdefgh",
        kind=kind,
        created=T0,
        not_before=T0,
        payload={
            "id": "abcdefgh",
            "name": name,
            "emails": ["ops@example.com", "dev@example.org"] if emails is None else emails,
            "when": T0.isoformat(),
            "deadline": (T0 - timedelta(seconds=1)).isoformat(),
            "history": history if history is not None else [[T0.isoformat(), "Canary created"]],
            **payload,
        },
    )


def parsed(message: EmailMessage) -> EmailMessage:
    """The message as a receiving mail client sees it."""
    return email.message_from_bytes(message.as_bytes(), policy=policy.default)


# --- messages -----------------------------------------------------------------------------


def test_late_message() -> None:
    history = [[f"2026-03-02T11:{59 - i:02d}:00+00:00", f"Triggered ({i})"] for i in range(20)]
    message = parsed(build_message(notification(history=history), "coal@example.net", now=T0))
    assert message["From"] == "Coal Mine <coal@example.net>"
    assert message["To"] == "ops@example.com, dev@example.org"
    assert message["Subject"] == "[LATE] Nightly backup has not reported"
    assert email.utils.parsedate_to_datetime(message["Date"]) == T0.replace(microsecond=0)
    assert message["Message-ID"].startswith("<coal-mine.abcdefgh.late.")
    assert message["Message-ID"].endswith("@example.net>")
    body = message.get_content()
    assert f"expected to report before {T0 - timedelta(seconds=1)}." in body
    assert "Triggered (0)" in body and "Triggered (14)" in body and "Triggered (15)" not in body
    assert body.index("Triggered (0)") < body.index("Triggered (14)")  # newest first
    assert "delayed" not in body


def test_resumed_message() -> None:
    note = notification("resumed", when="2026-03-02T12:00:05+00:00", deadline="2026-03-02T13:00:05+00:00")
    message = parsed(build_message(note, "coal@example.net", now=T0))
    assert message["Subject"] == "[RESUMED] Nightly backup is reporting again"
    body = message.get_content()
    assert "is reporting again as of 2026-03-02 12:00:00.123000+00:00." in body
    assert "due before 2026-03-02 13:00:05+00:00." in body


def test_message_id_is_stable_for_one_event() -> None:
    first = build_message(notification(), "c@x.org", now=T0)["Message-ID"]
    again = build_message(notification(), "c@x.org", now=T0 + timedelta(hours=1))["Message-ID"]
    other = build_message(notification("resumed"), "c@x.org", now=T0)["Message-ID"]
    assert first == again != other


def test_delayed_message_says_so_in_a_header_and_keeps_the_body() -> None:
    later = T0 + timedelta(days=2)
    message = build_message(notification(), "c@x.org", now=later, delayed=True)
    assert message["X-Coal-Mine-Delayed"] == f"event at {T0.isoformat()}, sent at {later.isoformat()}"
    assert message.get_content() == build_message(notification(), "c@x.org", now=later).get_content()
    assert build_message(notification(), "c@x.org", now=later)["X-Coal-Mine-Delayed"] is None


def test_line_breaks_in_name_and_comment_cannot_add_headers() -> None:
    name = "Job\r\nBcc: evil@attacker.example\r\nX-Injected: yes"
    history = [[T0.isoformat(), "Triggered (x\r\nBcc: evil2@attacker.example)"]]
    note = notification(name=name, history=history, emails=["ops@example.com\r\nBcc: evil3@attacker.example"])
    raw = build_message(note, "c@x.org", now=T0).as_bytes()
    message = email.message_from_bytes(raw, policy=policy.default)
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert set(message.keys()) == {
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "X-Coal-Mine-Canary",
        "X-Coal-Mine-Event",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
    }
    assert message["Subject"] == "[LATE] Job Bcc: evil@attacker.example X-Injected: yes has not reported"
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc" not in header_block and b"\r\nX-Injected" not in header_block


def test_non_ascii_name_and_comment_intact() -> None:
    name = "Sauvegarde nocturne — Zürich ✓ 夜"
    history = [[T0.isoformat(), "Triggered (déjà vu ✓)"]]
    message = parsed(build_message(notification(name=name, history=history), "c@x.org", now=T0))
    assert message["Subject"] == f"[LATE] {name} has not reported"
    body = message.get_content()
    assert name in body and "Triggered (déjà vu ✓)" in body


# --- the SMTP notifier against a real server ------------------------------------------------


@pytest.fixture
def sink() -> Any:
    with SMTPSink() as server:
        yield server


def smtp_config(port: int, **kwargs: Any) -> EmailConfig:
    return EmailConfig(
        **{"sender": "coal@example.net", "host": "127.0.0.1", "port": port, "timeout": 5.0, **kwargs}
    )


def test_sends_a_batch_over_one_connection(sink: SMTPSink) -> None:
    notifier = SMTPNotifier(smtp_config(sink.port))
    for kind in ("late", "resumed", "late"):
        notifier.send(build_message(notification(kind), "coal@example.net", now=T0))
    notifier.close()
    got = sink.wait_for(3)
    assert [m.event for m in got] == ["late", "resumed", "late"]
    assert sink.connections == 1
    assert got[0].mail_from == "coal@example.net"
    assert got[0].rcpt_tos == ["ops@example.com", "dev@example.org"]
    notifier.send(build_message(notification(), "coal@example.net", now=T0))
    notifier.close()
    assert sink.connections == 2


@pytest.mark.parametrize(
    "reply, retryable", [("451 4.3.0 try again later", True), ("554 5.6.0 no thanks", False)]
)
def test_refused_message(sink: SMTPSink, reply: str, retryable: bool) -> None:
    sink.fail_with = reply
    notifier = SMTPNotifier(smtp_config(sink.port))
    with pytest.raises(DeliveryError) as info:
        notifier.send(build_message(notification(), "coal@example.net", now=T0))
    assert info.value.retryable is retryable and reply[:3] in str(info.value)
    sink.fail_with = None
    notifier.send(build_message(notification(), "coal@example.net", now=T0))  # reconnects
    assert len(sink.wait_for(1)) == 1


def test_server_down_is_retryable() -> None:
    notifier = SMTPNotifier(smtp_config(free_port(), timeout=2.0))
    with pytest.raises(DeliveryError) as info:
        notifier.send(build_message(notification(), "coal@example.net", now=T0))
    assert info.value.retryable and "cannot reach SMTP server" in str(info.value)


def test_server_that_never_answers_times_out() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        notifier = SMTPNotifier(smtp_config(listener.getsockname()[1], timeout=0.3))
        with pytest.raises(DeliveryError) as info:
            notifier.send(build_message(notification(), "coal@example.net", now=T0))
    assert info.value.retryable


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"u", b"p")
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


def test_login_only_when_a_username_is_set() -> None:
    with SMTPSink(authenticator=authenticator, auth_require_tls=False, auth_required=True) as server:
        with pytest.raises(DeliveryError) as info:  # no username: no AUTH, so the server refuses
            SMTPNotifier(smtp_config(server.port)).send(build_message(notification(), "c@x.org", now=T0))
        assert "530" in str(info.value)
        with pytest.raises(DeliveryError) as info:
            SMTPNotifier(smtp_config(server.port, username="u", password="wrong")).send(
                build_message(notification(), "c@x.org", now=T0)
            )
        assert "535" in str(info.value) and not info.value.retryable
        notifier = SMTPNotifier(smtp_config(server.port, username="u", password="p"))
        notifier.send(build_message(notification(), "c@x.org", now=T0))
        notifier.close()
        assert len(server.wait_for(1)) == 1


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate for 127.0.0.1 that clients trust."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # ssl.create_default_context() trusts it
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_starttls(certificate: ssl.SSLContext) -> None:
    with SMTPSink(tls_context=certificate, require_starttls=True) as server:
        with pytest.raises(DeliveryError):  # the server insists on STARTTLS
            SMTPNotifier(smtp_config(server.port)).send(build_message(notification(), "c@x.org", now=T0))
        notifier = SMTPNotifier(smtp_config(server.port, security="starttls"))
        notifier.send(build_message(notification(), "c@x.org", now=T0))
        notifier.close()
        assert len(server.wait_for(1)) == 1


def test_ssl(certificate: ssl.SSLContext) -> None:
    with SMTPSink(ssl_context=certificate) as server:
        notifier = SMTPNotifier(smtp_config(server.port, security="ssl"))
        notifier.send(build_message(notification(), "c@x.org", now=T0))
        notifier.close()
        assert len(server.wait_for(1)) == 1


def test_ssl_refuses_an_untrusted_certificate(
    certificate: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    with SMTPSink(ssl_context=certificate) as server:
        with pytest.raises(DeliveryError) as info:
            SMTPNotifier(smtp_config(server.port, security="ssl")).send(
                build_message(notification(), "c@x.org", now=T0)
            )
        assert info.value.retryable and "CERTIFICATE" in str(info.value).upper()
        assert server.messages == []


# --- per-recipient refusals -----------------------------------------------------------------


def test_some_recipients_refused_are_reported_each(sink: SMTPSink) -> None:
    sink.refuse = {"dev@example.org": "550 5.1.1 no such user"}
    notifier = SMTPNotifier(smtp_config(sink.port))
    refused = notifier.send(build_message(notification(), "coal@example.net", now=T0))
    assert list(refused) == ["dev@example.org"]
    assert not refused["dev@example.org"].retryable and "550 5.1.1" in str(refused["dev@example.org"])
    assert sink.wait_for(1)[0].rcpt_tos == ["ops@example.com"]
    sink.refuse = {"ops@example.com": "450 4.2.0 greylisted", "dev@example.org": "550 no"}
    with pytest.raises(DeliveryError) as info:  # nobody took it: 450 and 550 make it not retryable
        notifier.send(build_message(notification(), "coal@example.net", now=T0))
    assert "450 4.2.0 greylisted" in str(info.value) and not info.value.retryable


def test_only_the_given_recipients_are_in_the_envelope(sink: SMTPSink) -> None:
    notifier = SMTPNotifier(smtp_config(sink.port))
    assert notifier.send(build_message(notification(), "c@x.org", now=T0), ["dev@example.org"]) == {}
    got = sink.wait_for(1)[0]
    assert got.rcpt_tos == ["dev@example.org"]
    assert got.message["To"] == "ops@example.com, dev@example.org"  # the header names everyone


# --- the outbox sender --------------------------------------------------------------------


class FakeChannel(Channel):
    """An email-like channel that records what it would send; `fail` fails whole deliveries,
    `refuse` maps targets to per-target refusals."""

    kind = "email"
    group = True
    shared_server = True

    def __init__(self) -> None:
        self.sent: list[tuple[EmailMessage, list[str]]] = []
        self.fail: DeliveryError | None = None
        self.refuse: dict[str, DeliveryError] = {}
        self.closed = 0

    def render(self, event: Notification, targets: Any, *, now: datetime, delayed: bool) -> EmailMessage:
        return notify_module_build(event, now, delayed)

    def deliver(self, rendered: EmailMessage, targets: Any) -> dict[str, DeliveryError]:
        if self.fail is not None:
            raise self.fail
        refused = {t: self.refuse[t] for t in targets if t in self.refuse}
        self.sent.append((rendered, [t for t in targets if t not in refused]))
        return refused

    def close(self) -> None:
        self.closed += 1

    def events(self) -> list[tuple[str, str]]:
        return [(str(m["X-Coal-Mine-Canary"]), str(m["X-Coal-Mine-Event"])) for m, _ in self.sent]

    def deliveries(self) -> list[tuple[str, str]]:
        return [(str(m["X-Coal-Mine-Event"]), t) for m, targets in self.sent for t in targets]


def notify_module_build(event: Notification, now: datetime, delayed: bool) -> EmailMessage:
    import coal_mine.channels.email as email_channel

    return email_channel.build_message(event, "coal@example.net", now=now, delayed=delayed)


def go_late(logic: BusinessLogic, clock: FakeClock, *names: str, period: float = 10) -> list[str]:
    ids = [logic.create(name, period, emails=[f"{name.lower()}@example.com"]).id for name in names]
    clock.advance(period + 0.001)
    Watcher(logic).step()
    return ids


def sender_for(
    logic: BusinessLogic, clock: FakeClock, channel: Channel | None, **kwargs: Any
) -> OutboxSender:
    return OutboxSender(logic.store, channel, clock=clock, **{"retry_max_delay": 60, **kwargs})


def test_sends_and_removes(logic: BusinessLogic, clock: FakeClock, store: AbstractStore) -> None:
    a, b = go_late(logic, clock, "A", "B")
    channel = FakeChannel()
    sender = sender_for(logic, clock, channel)
    assert sender.step() is False
    assert sorted(channel.events()) == sorted([(a, "late"), (b, "late")])
    assert store.pending_notifications() == [] and channel.closed >= 1
    assert sender.seconds_until_next() == 10  # nothing pending: the rescan interval
    assert [s.last_success for s in store.target_statuses(a)] == [clock.now()]


def test_batches_report_more(logic: BusinessLogic, clock: FakeClock) -> None:
    go_late(logic, clock, *[f"J{i}" for i in range(5)])
    channel = FakeChannel()
    sender = sender_for(logic, clock, channel, batch_size=2)
    assert [sender.step(), sender.step(), sender.step()] == [True, True, False]
    assert len(channel.sent) == 5


def test_failure_backs_off_and_keeps_order(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    (cid,) = go_late(logic, clock, "A")
    channel = FakeChannel()
    channel.fail = DeliveryError("connection refused", retryable=True)
    sender = sender_for(logic, clock, channel, retry_max_delay=8)
    logic.trigger(cid)  # resumed, while the late message is still pending
    clock.advance(11)
    Watcher(logic).step()  # late again
    waits = []
    with caplog.at_level(logging.ERROR, logger="coal_mine.notify"):
        for _ in range(5):
            assert sender.step() is False
            waits.append(sender.seconds_until_next())
            clock.advance(waits[-1])
    assert waits == [1, 2, 4, 8, 8]
    assert "delivery failed (attempt 5, temporary): connection refused" in caplog.text
    assert [(n.kind, n.attempts) for n in store.pending_notifications()] == [
        ("late", 5),
        ("resumed", 0),
        ("late", 0),
    ]
    channel.fail = None
    while sender.step() or store.pending_notifications():
        clock.advance(sender.seconds_until_next())
    assert channel.events() == [(cid, "late"), (cid, "resumed"), (cid, "late")]


def test_server_failure_pauses_all_sending(logic: BusinessLogic, clock: FakeClock) -> None:
    go_late(logic, clock, "A", "B", "C")
    channel = FakeChannel()
    channel.fail = DeliveryError("down", retryable=True)
    sender = sender_for(logic, clock, channel)
    sender.step()
    sender.step()  # paused: does not try B and C at once
    assert sender.paused_until == clock.now() + timedelta(seconds=1)
    assert [n.attempts for n in logic.store.pending_notifications()] == [1, 0, 0]


def test_permanent_failure_is_kept_and_others_go_on(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    a, b = go_late(logic, clock, "A", "B")
    channel = FakeChannel()
    channel.refuse = {"a@example.com": DeliveryError("550 no such user", retryable=False)}
    sender = sender_for(logic, clock, channel, retry_max_delay=60)
    sender.step()
    assert channel.events() == [(a, "late"), (b, "late")] and channel.deliveries() == [
        ("late", "b@example.com")
    ]
    (kept,) = store.pending_notifications()
    assert kept.canary_id == a and kept.not_before == clock.now() + timedelta(seconds=60)
    assert kept.last_error == "550 no such user" and kept.permanent
    assert sender.paused_until is None
    (status,) = store.target_statuses(a)
    assert (status.target, status.last_error, status.last_success) == (
        "a@example.com",
        "550 no such user",
        None,
    )


def test_a_refused_recipient_is_retried_alone(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    cid = logic.create("A", 10, emails=["ok@example.com", "grey@example.com", "typo@example.com"]).id
    clock.advance(10.001)
    Watcher(logic).step()
    channel = FakeChannel()
    channel.refuse = {
        "grey@example.com": DeliveryError("450 greylisted", retryable=True),
        "typo@example.com": DeliveryError("550 no such user", retryable=False),
    }
    sender = sender_for(logic, clock, channel, retry_max_delay=60)
    sender.step()
    assert channel.deliveries() == [("late", "ok@example.com")]
    assert sender.paused_until is None  # the server works: no pause for the others
    logic.trigger(cid)  # resumed: ok@ gets it now, the others wait for their late
    sender.step()
    assert channel.deliveries()[-1] == ("resumed", "ok@example.com")
    del channel.refuse["grey@example.com"]
    clock.advance(sender.seconds_until_next())
    assert sender.seconds_until_next() == 0
    sender.step()
    assert channel.deliveries()[-2:] == [("late", "grey@example.com"), ("resumed", "grey@example.com")]
    assert [(n.target, n.kind, n.attempts) for n in store.pending_notifications()] == [
        ("typo@example.com", "late", 1),
        ("typo@example.com", "resumed", 0),
    ]
    # Correcting the address withdraws what was pending for the removed one, with a history entry.
    logic.update(cid, emails=["ok@example.com", "grey@example.com", "fixed@example.com"])
    assert store.pending_notifications() == []
    assert "Withdrew pending notifications to removed typo@example.com" in logic.get(cid).history[0][1]
    assert channel.deliveries().count(("late", "ok@example.com")) == 1  # never sent again


def test_delete_withdraws_only_undeliverable_messages(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    cid = logic.create("A", 10, emails=["typo@example.com", "down@example.com"]).id
    clock.advance(10.001)
    Watcher(logic).step()
    channel = FakeChannel()
    channel.refuse = {
        "typo@example.com": DeliveryError("550 no such user", retryable=False),
        "down@example.com": DeliveryError("451 try later", retryable=True),
    }
    sender_for(logic, clock, channel).step()
    logic.delete(cid)
    assert [n.target for n in store.pending_notifications()] == ["down@example.com"]


def test_delayed_header_after_the_configured_age(logic: BusinessLogic, clock: FakeClock) -> None:
    go_late(logic, clock, "A")
    clock.advance(3601)
    channel = FakeChannel()
    sender_for(logic, clock, channel, delayed_after=3600).step()
    assert channel.sent[0][0]["X-Coal-Mine-Delayed"]


def test_no_sender_keeps_everything_pending(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    go_late(logic, clock, "A", "B")
    sender = OutboxSender(store, None, kind="email", clock=clock)
    with caplog.at_level(logging.WARNING, logger="coal_mine.notify"):
        sender.step()
        sender.step()
    assert len(store.pending_notifications()) == 2
    assert caplog.text.count("2 email notification(s) pending and kept: no email sender") == 1


def test_two_senders_never_send_the_same_event(logic: BusinessLogic, clock: FakeClock) -> None:
    go_late(logic, clock, *[f"J{i}" for i in range(6)])
    one, two = FakeChannel(), FakeChannel()
    first = sender_for(logic, clock, one, owner="one", batch_size=1)
    second = sender_for(logic, clock, two, owner="two", batch_size=1)
    while first.step() | second.step():
        pass
    sent = one.events() + two.events()
    assert len(sent) == 6 == len(set(sent)) and one.sent and two.sent


def test_a_dead_senders_lease_expires(logic: BusinessLogic, clock: FakeClock, store: AbstractStore) -> None:
    go_late(logic, clock, "A")
    store.claim_notifications(clock.now(), "crashed", clock.now() + timedelta(seconds=150), "email")
    channel = FakeChannel()
    sender = sender_for(logic, clock, channel)
    sender.step()
    assert channel.sent == []
    assert sender.seconds_until_next() == 10  # capped by the rescan
    clock.advance(150)
    sender.step()
    assert len(channel.sent) == 1


def test_odd_payload_is_retried_not_dropped(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    (cid,) = go_late(logic, clock, "A")
    channel = FakeChannel()
    sender = sender_for(logic, clock, channel)
    real_render = channel.render

    def broken(*args: Any, **kwargs: Any) -> EmailMessage:
        raise KeyError("boom")

    channel.render = broken  # type: ignore[method-assign]
    sender.step()
    (kept,) = store.pending_notifications()
    assert kept.attempts == 1 and "KeyError" in (kept.last_error or "")
    channel.render = real_render  # type: ignore[method-assign]
    clock.advance(60)
    sender.step()
    assert channel.events() == [(cid, "late")]


def test_no_targets_nothing_recorded(logic: BusinessLogic, clock: FakeClock, store: AbstractStore) -> None:
    cid = logic.create("A", 10).id
    clock.advance(11)
    Watcher(logic).step()
    assert logic.get(cid).late and store.pending_notifications() == []


class FlakyStore:
    """Wraps a store; its next `fail` complete_notifications calls fail as a full disk would."""

    def __init__(self, store: AbstractStore, fail: int) -> None:
        self.store, self.fail = store, fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def complete_notifications(self, *args: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailableError("disk full")
        self.store.complete_notifications(*args)


def test_completion_is_retried_and_never_resends(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    go_late(logic, clock, "A")
    channel = FakeChannel()
    flaky = FlakyStore(store, fail=2)
    sender = OutboxSender(flaky, channel, clock=clock, lease_seconds=30)  # type: ignore[arg-type]
    sender.step()  # two failures, then the third try of the completion succeeds
    assert len(channel.sent) == 1 and store.pending_notifications() == [] and not sender.delivered
    go_late(logic, clock, "B")
    flaky.fail = 10
    with caplog.at_level(logging.ERROR, logger="coal_mine.notify"):
        sender.step()
    assert "will retry (not resend)" in caplog.text
    assert len(channel.sent) == 2 and len(sender.delivered) == 1
    clock.advance(31)  # the lease ran out meanwhile: the entry is claimable again
    flaky.fail = 0
    sender.step()
    assert len(channel.sent) == 2 and store.pending_notifications() == [] and not sender.delivered


def test_a_slow_send_keeps_its_lease(logic: BusinessLogic, store: AbstractStore) -> None:
    """A send longer than the lease is not taken over by a second worker."""
    import threading

    clock = Clock()
    logic.clock = clock
    logic.create("A", 0.05, emails=["a@example.com"])
    threading.Event().wait(0.1)
    Watcher(logic).step()
    release = threading.Event()
    taken = threading.Event()

    class Slow(FakeChannel):
        def deliver(self, rendered: EmailMessage, targets: Any) -> dict[str, DeliveryError]:
            taken.set()
            release.wait(10)
            return super().deliver(rendered, targets)

    slow, other = Slow(), FakeChannel()
    first = OutboxSender(store, slow, clock=clock, owner="slow", lease_seconds=2.0)
    second = OutboxSender(store, other, clock=clock, owner="other", lease_seconds=2.0)
    worker = threading.Thread(target=first.step)
    worker.start()
    assert taken.wait(10)
    end = time.monotonic() + 3.0  # one and a half leases: without extension, "other" would take it
    while time.monotonic() < end:
        second.step()
        assert other.sent == []
        time.sleep(0.01)
    release.set()
    worker.join(10)
    assert len(slow.sent) == 1 and other.sent == [] and store.pending_notifications() == []
