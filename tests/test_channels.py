"""Webhook, Slack and email channels through the outbox, in one process with the FakeClock,
against real receivers on 127.0.0.1 (an HTTP server and aiosmtpd)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.business_logic import BusinessLogic
from coal_mine.channels import DeliveryError
from coal_mine.channels.email import EmailChannel, SMTPNotifier
from coal_mine.channels.http import resolve
from coal_mine.channels.slack import SlackChannel
from coal_mine.channels.webhook import WebhookChannel, signature
from coal_mine.clock import FakeClock
from coal_mine.config import EmailConfig
from coal_mine.notify import OutboxSender
from coal_mine.reminders import Reminder
from coal_mine.watcher import Watcher
from tests.http_sink import HTTPSink
from tests.smtp_sink import SMTPSink

SECRET = "s3cret"


@pytest.fixture
def smtp() -> Iterator[SMTPSink]:
    with SMTPSink() as server:
        yield server


@pytest.fixture
def http() -> Iterator[HTTPSink]:
    with HTTPSink() as server:
        yield server


def make_senders(store: AbstractStore, clock: FakeClock, smtp: SMTPSink, **kwargs: Any) -> list[OutboxSender]:
    config = EmailConfig(sender="coal@example.net", host="127.0.0.1", port=smtp.port, timeout=5.0)
    channels = [
        EmailChannel("coal@example.net", SMTPNotifier(config)),
        WebhookChannel(secret=SECRET, allow_private=True, timeout=2.0, base_url="https://cm.example"),
        SlackChannel(allow_private=True, timeout=2.0),
    ]
    return [OutboxSender(store, c, clock=clock, **{"retry_max_delay": 60, **kwargs}) for c in channels]


def deliver_all(
    senders: list[OutboxSender], clock: FakeClock, store: AbstractStore, rounds: int = 20
) -> None:
    """Step every sender, moving the clock to the next retry, until nothing is pending."""
    for _ in range(rounds):
        for sender in senders:
            while sender.step():
                pass
        if not store.pending_notifications():
            return
        clock.advance(min(s.seconds_until_next() for s in senders) or 0.001)
    raise AssertionError(f"still pending: {store.pending_notifications()}")


def canary(logic: BusinessLogic, http: HTTPSink, **kwargs: Any) -> str:
    return logic.create(
        "Nightly backup",
        10,
        emails=["ops@example.com"],
        webhooks=[http.url("/hook")],
        slacks=[http.url("/slack")],
        **kwargs,
    ).id


def by_path(http: HTTPSink, path: str) -> list[dict[str, Any]]:
    return [post.json() for post in http.posts if post.path == path]


def test_every_event_reaches_every_channel_once_in_order(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, smtp: SMTPSink, http: HTTPSink
) -> None:
    cid = canary(logic, http, repeat=60)
    clock.advance(10.001)
    Watcher(logic).step()  # LATE
    reminder = Reminder(logic)
    clock.advance(60)
    reminder.step()  # STILL LATE
    clock.advance(60)
    reminder.step()  # STILL LATE
    logic.trigger(cid, "back")  # RESUMED
    clock.advance(60)
    reminder.step()  # nothing: not late any more
    deliver_all(make_senders(store, clock, smtp), clock, store)
    kinds = ["late", "reminder", "reminder", "resumed"]
    assert [(m.canary, m.event) for m in smtp.wait_for(4)] == [(cid, k) for k in kinds]
    assert [m.subject for m in smtp.messages][1] == "[STILL LATE] Nightly backup has not reported"
    hooks = by_path(http, "/hook")
    assert [(d["id"], d["event"]) for d in hooks] == [(cid, k) for k in kinds]
    assert [d["late"] for d in hooks] == [True, True, True, False]
    assert hooks[0]["url"] == f"https://cm.example/coal-mine/ui/canary/{cid}"
    assert len({d["event_id"] for d in hooks}) == 4
    slack = by_path(http, "/slack")
    assert [s["attachments"][0]["color"] for s in slack] == ["#d92626", "#d92626", "#d92626", "#2eb82e"]
    assert slack[0]["text"].startswith("[LATE] Nightly backup has not reported")
    assert slack[3]["blocks"][0]["text"]["text"].startswith("*[RESUMED] Nightly backup is reporting again*")
    statuses = {s.channel: s for s in store.target_statuses(cid)}
    assert set(statuses) == {"email", "webhook", "slack"}
    assert all(s.last_success == clock.now() or s.last_success for s in statuses.values())


def test_webhook_document_headers_and_signature(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, smtp: SMTPSink, http: HTTPSink
) -> None:
    cid = canary(logic, http)
    logic.trigger(cid, "first run")
    clock.advance(10.001)
    Watcher(logic).step()
    deliver_all(make_senders(store, clock, smtp), clock, store)
    (post,) = [p for p in http.posts if p.path == "/hook"]
    document = post.json()
    assert set(document) == {
        "version", "event", "event_id", "time", "id", "name", "slug", "deadline", "late", "paused",
        "history", "url",
    }  # fmt: skip
    assert (document["version"], document["event"], document["name"], document["slug"]) == (
        1,
        "late",
        "Nightly backup",
        "nightly-backup",
    )
    assert document["history"][0][1] == "Triggered (first run)" and not document["paused"]
    assert post.headers["content-type"] == "application/json"
    assert post.headers["user-agent"].startswith("coal-mine/")
    assert int(post.headers["x-coal-mine-timestamp"]) > 0
    # The receiver's check, as the README shows it.
    expected = "sha256=" + hmac.new(SECRET.encode(), post.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(post.headers["x-coal-mine-signature"], expected)
    assert signature("other", post.body) != post.headers["x-coal-mine-signature"]


def test_receiver_down_for_a_while_gets_everything_once_back(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, smtp: SMTPSink, http: HTTPSink
) -> None:
    cid = canary(logic, http)
    http.stop()
    clock.advance(10.001)
    Watcher(logic).step()
    logic.trigger(cid)
    senders = make_senders(store, clock, smtp)
    for _ in range(4):
        for sender in senders:
            sender.step()
        clock.advance(min(s.seconds_until_next() for s in senders))
    assert [m.event for m in smtp.wait_for(2)] == ["late", "resumed"]  # email did not wait
    waiting = [n for n in store.pending_notifications() if n.channel == "webhook"]
    assert [(n.kind, n.attempts > 0) for n in waiting] == [("late", True), ("resumed", False)]
    assert "POST failed" in (waiting[0].last_error or "") and not waiting[0].permanent
    http.start()
    deliver_all(senders, clock, store)
    assert [d["event"] for d in by_path(http, "/hook")] == ["late", "resumed"]
    assert [d["text"].split()[0] for d in by_path(http, "/slack")] == ["[LATE]", "[RESUMED]"]
    assert len(smtp.messages) == 2


def test_500_is_retried_and_404_is_recorded_and_retried_at_the_longest_delay(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, smtp: SMTPSink, http: HTTPSink
) -> None:
    cid = canary(logic, http)
    http.status_by_path = {"/hook": 500, "/slack": 404}
    clock.advance(10.001)
    Watcher(logic).step()
    senders = make_senders(store, clock, smtp)
    for sender in senders:
        sender.step()
    pending = {n.channel: n for n in store.pending_notifications()}
    assert pending["webhook"].not_before == clock.now() + timedelta(seconds=1)
    assert pending["webhook"].last_error == "HTTP 500 Internal Server Error: ok"
    assert pending["slack"].not_before == clock.now() + timedelta(seconds=60) and pending["slack"].permanent
    statuses = {s.channel: s for s in store.target_statuses(cid)}
    assert statuses["slack"].last_error == "HTTP 404 Not Found: ok" and statuses["slack"].last_success is None
    assert statuses["email"].last_success == clock.now()
    http.status_by_path = {}
    deliver_all(senders, clock, store)
    assert [p.path for p in http.posts] == ["/hook", "/slack"]
    assert {s.channel: s.last_success for s in store.target_statuses(cid)}["slack"] == clock.now()


@pytest.mark.parametrize("channel", [WebhookChannel(allow_private=True), SlackChannel(allow_private=True)])
def test_several_targets_each_get_a_post_and_only_refusals_are_returned(
    http: HTTPSink, channel: WebhookChannel | SlackChannel
) -> None:
    http.status_by_path = {"/gone": 410, "/busy": 503}
    refused = channel.deliver(b"{}", [http.url("/ok"), http.url("/gone"), http.url("/busy")])
    assert [p.path for p in http.wait_for(1)] == ["/ok"]  # the sink keeps only 2xx posts
    assert sorted(refused) == [http.url("/busy"), http.url("/gone")]
    assert "HTTP 503" in str(refused[http.url("/busy")]) and refused[http.url("/busy")].retryable
    assert "HTTP 410" in str(refused[http.url("/gone")]) and not refused[http.url("/gone")].retryable
    assert channel.deliver(b"{}", [http.url("/ok")]) == {}
    with pytest.raises(DeliveryError) as info:  # a lone target's refusal is the delivery's error
        channel.deliver(b"{}", [http.url("/gone")])
    assert "HTTP 410" in str(info.value) and not info.value.retryable


def test_a_redirect_is_not_followed(http: HTTPSink) -> None:
    http.status = 302
    http.headers_out = {"Location": http.url("/elsewhere")}
    channel = WebhookChannel(allow_private=True)
    with pytest.raises(DeliveryError) as info:
        channel.deliver(b"{}", [http.url("/hook")])
    assert "HTTP 302" in str(info.value) and "not followed" in str(info.value) and not info.value.retryable
    assert http.posts == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "10.1.2.3", "192.168.0.1", "169.254.169.254", "[::1]", "[::ffff:127.0.0.1]"],
)
def test_private_addresses_are_refused_without_allow_private(http: HTTPSink, host: str) -> None:
    url = f"http://{host}:{http.port}/hook"
    with pytest.raises(DeliveryError) as info:
        WebhookChannel().deliver(b"{}", [url])
    assert "non-public address" in str(info.value) and "allow_private" in str(info.value)
    assert not info.value.retryable and http.posts == []


def test_allow_private_reaches_the_local_receiver_and_public_addresses_pass_the_check(http: HTTPSink) -> None:
    WebhookChannel(allow_private=True).deliver(b"{}", [http.url("/hook")])
    assert len(http.wait_for(1)) == 1
    assert resolve("93.184.216.34", 443, allow_private=False) == [(2, "93.184.216.34")]  # a literal: no DNS
    with pytest.raises(DeliveryError):
        resolve("224.0.0.1", 80, allow_private=False)  # multicast


def test_a_hung_webhook_holds_back_neither_email_nor_other_webhooks(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, smtp: SMTPSink, http: HTTPSink
) -> None:
    with HTTPSink() as slow:
        slow.hang.set()
        cid = logic.create(
            "A", 10, emails=["ops@example.com"], webhooks=[slow.url("/slow"), http.url("/fast")]
        ).id
        clock.advance(10.001)
        Watcher(logic).step()
        email, webhook, _ = make_senders(store, clock, smtp)
        webhook.channel.timeout = 0.5  # type: ignore[union-attr]
        email.step()
        assert [m.canary for m in smtp.wait_for(1)] == [cid]
        webhook.step()  # the slow one times out (retryable) and the fast one is delivered
        slow.release.set()
    assert [p.path for p in http.posts] == ["/fast"]
    (left,) = store.pending_notifications()
    assert left.target == slow.url("/slow") and "timed out" in (left.last_error or "")
    assert webhook.paused_until is None  # one dead receiver does not pause the channel


def test_reminders_stop_on_pause_resume_and_delete_and_never_burst(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    def reminders() -> list[str]:
        return [n.canary_id for n in store.pending_notifications() if n.kind == "reminder"]

    a = logic.create("A", 10, emails=["a@example.com"], repeat=60).id
    b = logic.create("B", 10, emails=["b@example.com"], repeat=60).id
    c = logic.create("C", 10, emails=["c@example.com"], repeat=60).id
    d = logic.create("D", 10, emails=["d@example.com"]).id  # no reminders
    clock.advance(10.001)
    Watcher(logic).step()
    reminder = Reminder(logic)
    start = clock.now()
    clock.advance(60 * 10 + 1)  # an outage of ten periods
    reminder.step()
    assert sorted(reminders()) == sorted([a, b, c])  # one each, not ten
    assert store.next_reminder_time() == clock.now() + timedelta(seconds=59)  # back on the 60 s grid
    assert logic.get(a).remind_at == start + timedelta(seconds=660)
    logic.pause(a)
    logic.trigger(b)
    logic.delete(c)
    clock.advance(600)
    reminder.step()
    assert sorted(reminders()) == sorted([a, b, c])  # nothing new
    logic.unpause(a)  # still late: reminders go on from now
    assert logic.get(a).late and logic.get(a).remind_at == clock.now() + timedelta(seconds=60)
    logic.update(a, repeat=0)
    assert logic.get(a).remind_at is None
    logic.update(d, repeat=120)  # late already: the first reminder comes in 120 s
    clock.advance(120)
    reminder.step()
    assert reminders().count(d) == 1
