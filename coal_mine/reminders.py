"""Repeat reminders: while a canary with `repeat` stays late and unpaused, a `reminder`
event goes to all its targets every `repeat` seconds after its LATE event.

A reminder is recorded like any other event, in the same conditional write that
moves the canary's `remind_at` to the next one, so it is durable and never
recorded twice; after an outage only the overdue one is sent, then the schedule
goes on (no burst of missed reminders).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from coal_mine import alert_rules
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import Clock
from coal_mine.models import Canary
from coal_mine.watcher import BackgroundLoop

log = logging.getLogger(__name__)


def remind(logic: BusinessLogic, canary: Canary, now: datetime) -> bool:
    """Record the canary's due reminder and schedule the next; False if it changed meanwhile."""
    due = canary.remind_at
    if not (canary.late and not canary.paused and canary.repeat > 0 and due is not None and due <= now):
        return False
    full = logic.store.get(canary.id, history=True)
    if full is None or (full.late, full.paused, full.remind_at) != (True, False, due):
        return False
    history = full.history or []
    notifications = logic._notifications_for("reminder", full, now, full.deadline, history)
    ok = logic.store.update(
        canary.id,
        {"remind_at": alert_rules.next_reminder(due, full.repeat, now)},
        expect={"late": True, "paused": False, "remind_at": due},
        notifications=notifications,
    )
    if ok:
        logic._log_change("reminder", full)
        logic.on_change()
    return ok


class Reminder(BackgroundLoop):
    """Records due reminders (a thread beside the deadline watcher)."""

    name = "reminder"

    def __init__(
        self,
        logic: BusinessLogic,
        *,
        clock: Clock | None = None,
        rescan_interval: float = 10.0,
        batch_size: int = 100,
    ) -> None:
        super().__init__(clock or logic.clock)
        self.logic = logic
        self.rescan_interval = rescan_interval
        self.batch_size = batch_size

    def step(self) -> bool:
        now = self.clock.now()
        due = self.logic.store.due_reminders(now, self.batch_size)
        for canary in due:
            try:
                remind(self.logic, canary, now)
            except Exception:
                log.exception("Canary %s: cannot record its reminder", canary.id)
                return False
        return len(due) >= self.batch_size

    def seconds_until_next(self) -> float:
        now = self.clock.now()
        wake_at = now + timedelta(seconds=self.rescan_interval)
        due = self.logic.store.next_reminder_time()
        if due is not None:
            wake_at = min(wake_at, due)
        return max(0.0, (wake_at - now).total_seconds())
