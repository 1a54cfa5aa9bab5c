"""The deadline watcher: a thread that marks canaries late when their deadline passes.

It sleeps until the earliest deadline it knows of, is woken early by writes in
this process (BusinessLogic.on_change), and rescans every `rescan_interval`
seconds so that writes by other processes on the same database are seen too.
The work is done in units (`step`: one batch, "is there more?") so that tests
can drive it with a FakeClock and no thread at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import Clock
from coal_mine.models import StoreUnavailableError

log = logging.getLogger(__name__)

# Later than any deadline a valid periodicity can produce.
_FAR_FUTURE = datetime(9000, 1, 1, tzinfo=UTC)
_TICK = timedelta(milliseconds=1)  # a canary is late only once now > deadline


class BackgroundLoop:
    """A daemon thread that repeats `step()` and sleeps `seconds_until_next()` between
    rounds, unless woken early. Subclasses implement the two methods."""

    name = "background"
    error_delay_max = 30.0

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> bool:
        """Do one batch of work; True if more work is ready right now."""
        raise NotImplementedError

    def seconds_until_next(self) -> float:
        """How long to sleep when there is nothing to do now (a wake() cuts it short)."""
        raise NotImplementedError

    def wake(self) -> None:
        """Ask the loop to look again now (thread-safe, cheap, never blocks)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; False if it was still busy (e.g. inside a send) after `timeout`."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            # Cleared before the work, so a wake() that arrives during it is not lost.
            self._wake.clear()
            try:
                if self.step():
                    continue
                wait = self.seconds_until_next()
                failures = 0
            except StoreUnavailableError as exc:  # expected while the database is down: one line
                failures += 1
                wait = min(self.error_delay_max, 0.1 * 2**failures)
                log.error("%s: %s; trying again in %.1f s", self.name, exc, wait)
            except Exception:
                failures += 1
                wait = min(self.error_delay_max, 0.1 * 2**failures)
                log.exception("%s: round failed; trying again in %.1f s", self.name, wait)
            # Never a busy loop, even if the store keeps saying "due now".
            self._wake.wait(max(wait, 0.001))


class Watcher(BackgroundLoop):
    """Marks due canaries late via BusinessLogic.mark_late (a conditional write).

    A canary whose evaluation fails (a corrupt record, say) is logged with its
    id and retried with backoff; the others go on being watched meanwhile.
    """

    name = "deadline-watcher"

    def __init__(
        self,
        logic: BusinessLogic,
        *,
        clock: Clock | None = None,
        rescan_interval: float = 10.0,
        batch_size: int = 100,
        retry_max_delay: float = 300.0,
    ) -> None:
        super().__init__(clock or logic.clock)
        self.logic = logic
        self.store = logic.store
        self.rescan_interval = rescan_interval
        self.batch_size = batch_size
        self.retry_max_delay = retry_max_delay
        # canary id -> (when to try again, consecutive failures)
        self._failing: dict[str, tuple[datetime, int]] = {}
        # Told the time of each finished scan (everything due was looked at): heartbeat, watchdog.
        self.scan_listeners: list[Callable[[datetime], None]] = []

    @property
    def failing(self) -> dict[str, datetime]:
        """Canaries that could not be evaluated, with the time of their next try."""
        return {cid: when for cid, (when, _) in self._failing.items()}

    def step(self) -> bool:
        """Mark up to `batch_size` due canaries late; True if more may be due now."""
        now = self.clock.now()
        # Canaries in backoff come first in deadline order; ask for enough to get past them.
        limit = self.batch_size + len(self._failing)
        due = self.store.due_canaries(now, limit)
        for canary in due:
            failing = self._failing.get(canary.id)
            if failing is not None and failing[0] > now:
                continue
            try:
                self.logic.mark_late(canary)
            except Exception as exc:
                failures = (failing[1] if failing else 0) + 1
                delay = min(self.retry_max_delay, 2.0 ** (failures - 1))
                self._failing[canary.id] = (now + timedelta(seconds=delay), failures)
                log.error(
                    "Canary %s: cannot check its deadline (%s: %s); retrying in %.0f s",
                    canary.id,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=failures == 1,
                )
            else:
                if self._failing.pop(canary.id, None) is not None:
                    log.info("Canary %s: deadline check works again", canary.id)
        if len(due) < limit:
            # Everything due was in `due`: forget failures of canaries no longer due.
            seen = {canary.id for canary in due}
            for cid in [cid for cid in self._failing if cid not in seen]:
                del self._failing[cid]
            for listener in self.scan_listeners:
                listener(now)
        return len(due) >= limit

    def next_deadline(self) -> datetime | None:
        """The earliest deadline to wake up for, leaving out canaries in backoff."""
        if not self._failing:
            return self.store.earliest_deadline()
        for canary in self.store.due_canaries(_FAR_FUTURE, len(self._failing) + 1):
            if canary.id not in self._failing:
                return canary.deadline
        return None

    def seconds_until_next(self) -> float:
        now = self.clock.now()
        wake_at = now + timedelta(seconds=self.rescan_interval)
        deadline = self.next_deadline()
        if deadline is not None:
            wake_at = min(wake_at, deadline + _TICK)
        for retry_at, _ in self._failing.values():
            wake_at = min(wake_at, retry_at)
        return max(0.0, (wake_at - now).total_seconds())
