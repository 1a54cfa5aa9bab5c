"""The run alarm watcher: ends snoozes and reports runs that overrun their max_runtime.

A background loop like the deadline watcher, over the canaries' `alarm` times
(coal_mine/runs.py sets them). `step` does one batch, so tests drive it with a
FakeClock and no thread.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from coal_mine.business_logic import BusinessLogic
from coal_mine.watcher import BackgroundLoop

log = logging.getLogger(__name__)


class RunAlarmWatcher(BackgroundLoop):
    """Calls RunLogic.check_alarm for each canary whose alarm time has come."""

    name = "run-alarm-watcher"

    def __init__(self, logic: BusinessLogic, *, rescan_interval: float = 10.0, batch_size: int = 100) -> None:
        super().__init__(logic.clock)
        self.logic = logic
        self.rescan_interval = rescan_interval
        self.batch_size = batch_size

    def step(self) -> bool:
        """Handle up to `batch_size` due alarms; True if more may be due now."""
        due = self.logic.store.due_alarms(self.clock.now(), self.batch_size)
        for canary in due:
            try:
                self.logic.runs.check_alarm(canary.id)
            except Exception:
                log.exception("Canary %s: cannot check its run alarm", canary.id)
                return False
        return len(due) >= self.batch_size

    def seconds_until_next(self) -> float:
        now = self.clock.now()
        wake_at = now + timedelta(seconds=self.rescan_interval)
        alarm = self.logic.store.earliest_alarm()
        if alarm is not None:
            wake_at = min(wake_at, alarm)
        return max(0.0, (wake_at - now).total_seconds())
