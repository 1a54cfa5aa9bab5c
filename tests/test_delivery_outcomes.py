"""Delivery outcomes as operators see them: counters by kind and channel, the heartbeat's last
delivery, and one structured log line per outcome (also as JSON)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.clock import FakeClock
from coal_mine.health import Heartbeat
from coal_mine.logs import JsonFormatter
from coal_mine.memory_store import MemoryStore
from coal_mine.metrics import COUNTERS
from coal_mine.models import Notification
from coal_mine.operations import DeliveryOutcomes


class Refusal(Exception):
    retryable = False


def note(kind: str = "late") -> Notification:
    return Notification(
        id=41,
        canary_id="abcdefgh",
        kind=kind,
        created=datetime(2026, 1, 5, tzinfo=UTC),
        payload={},
        not_before=datetime(2026, 1, 5, tzinfo=UTC),
    )


def value(counter, kind: str, channel: str) -> float:  # type: ignore[no-untyped-def]
    return counter.labels(kind, channel)._value.get()


def test_outcomes_are_counted_logged_and_reach_the_heartbeat(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="coal_mine.operations")
    clock = FakeClock()
    heartbeat = Heartbeat(MemoryStore(), clock, worker_timeout=60)
    outcomes = DeliveryOutcomes(clock, heartbeat)
    sent = value(COUNTERS.notifications_sent, "late", "email")
    failed = value(COUNTERS.notifications_failed, "resumed", "webhook")

    outcomes(note(), "email")
    assert value(COUNTERS.notifications_sent, "late", "email") == sent + 1
    delivered_at = clock.now()
    assert heartbeat.last_delivery == delivered_at
    clock.advance(5)
    outcomes(note("resumed"), "webhook", Refusal("HTTP 410 Gone"))
    assert value(COUNTERS.notifications_failed, "resumed", "webhook") == failed + 1
    assert heartbeat.last_delivery == delivered_at  # a failure is no delivery

    ok, bad = (r for r in caplog.records if r.name == "coal_mine.operations")
    assert ok.getMessage() == (
        "Notification 41 delivered event=delivered canary_id=abcdefgh event_id=41 kind=late channel=email"
    )
    assert bad.levelno == logging.WARNING
    assert bad.getMessage().endswith('permanent=True error="HTTP 410 Gone"')
    line = json.loads(JsonFormatter().format(bad))
    assert line["message"] == "Notification 41 not delivered"
    assert (line["event"], line["canary_id"], line["event_id"], line["channel"]) == (
        "delivery_failed",
        "abcdefgh",
        41,
        "webhook",
    )
    assert line["error"] == "HTTP 410 Gone" and line["level"] == "WARNING"


def test_state_change_lines_carry_canary_and_event_ids(
    store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    """late, resumed and failed: one line each, text and JSON, naming the event whose delivery
    lines will carry the same event_id."""
    from coal_mine.business_logic import BusinessLogic
    from coal_mine.watcher import Watcher

    caplog.set_level(logging.INFO)
    clock = FakeClock()
    logic = BusinessLogic(store, clock)
    canary = logic.create("Nightly", 60.0, emails=["ops@example.com"])
    quiet = logic.create("Quiet", 60.0)  # no targets: nothing recorded, so no event id
    clock.advance(61)
    Watcher(logic).step()
    logic.trigger(canary.id)
    logic.runs.report(canary.id, "fail", "disk full", exit_status=3)
    records = [
        r for r in caplog.records if r.name == "coal_mine.business_logic" and "event=" in r.getMessage()
    ]
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    pending = store.pending_notifications(canary.id)  # nothing sends them in this test
    assert [note.kind for note in pending] == ["late", "resumed", "failed"]
    mine = [line for line in lines if line["canary_id"] == canary.id]
    assert [(line["event"], str(line["event_id"])) for line in mine] == [
        (note.kind, str(note.event)) for note in pending
    ]
    assert len({line["event_id"] for line in mine}) == 3
    assert mine[2]["message"] == f"Canary {canary.id} (Nightly) is failing" and mine[2]["level"] == "INFO"
    failed = next(r for r in records if r.getMessage().startswith(f"Canary {canary.id} (Nightly) is failing"))
    assert failed.getMessage().endswith(f"event=failed canary_id={canary.id} event_id={pending[2].event}")
    quiet_lines = [line for line in lines if line["canary_id"] == quiet.id]
    assert [line["event"] for line in quiet_lines] == ["late"] and "event_id" not in quiet_lines[0]


def test_state_change_line_without_event_id_when_the_outbox_is_unreadable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from coal_mine.business_logic import BusinessLogic
    from coal_mine.models import StoreUnavailableError

    class Unreadable(MemoryStore):
        def pending_notifications(self, canary_id: str | None = None) -> list[Notification]:
            raise StoreUnavailableError("database is locked")

    caplog.set_level(logging.INFO)
    clock = FakeClock()
    logic = BusinessLogic(Unreadable(), clock)
    canary = logic.create("Nightly", 60.0, emails=["ops@example.com"])
    logic.runs.report(canary.id, "fail")  # stored all the same
    assert logic.store.get(canary.id).failed
    failed = next(r for r in caplog.records if "event=failed" in r.getMessage())
    assert failed.getMessage().endswith(f"event=failed canary_id={canary.id}")
    assert f"Canary {canary.id}: cannot read the id of its failed event for the log" in caplog.text
