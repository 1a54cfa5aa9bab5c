"""Delivery outcomes as operators see them: counters by kind and channel, the heartbeat's last
delivery, and one structured log line per outcome (also as JSON)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

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


def test_state_change_lines_are_structured(caplog: pytest.LogCaptureFixture) -> None:
    from coal_mine.business_logic import BusinessLogic
    from coal_mine.watcher import Watcher

    caplog.set_level(logging.INFO)
    clock = FakeClock()
    logic = BusinessLogic(MemoryStore(), clock)
    canary = logic.create("Nightly", 60.0, emails=["ops@example.com"])
    clock.advance(61)
    Watcher(logic).step()
    logic.trigger(canary.id)
    events = [json.loads(JsonFormatter().format(r)) for r in caplog.records if "event=" in r.getMessage()]
    assert [(e["event"], e["canary_id"]) for e in events] == [("late", canary.id), ("resumed", canary.id)]
