"""Start the operations side of a server process: heartbeat, watchdog, no-worker warning."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from coal_mine.badges import server_badge_key
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import Clock
from coal_mine.config import Config
from coal_mine.health import Heartbeat, NoWorkerWarning
from coal_mine.logs import log_event
from coal_mine.metrics import COUNTERS
from coal_mine.models import Notification
from coal_mine.watchdog import Watchdog, redact
from coal_mine.watcher import Watcher

log = logging.getLogger(__name__)


def _ensure_server_badge_key(logic: BusinessLogic) -> None:
    """Make the server-wide badge key on first start (a failure here is retried on first use)."""
    try:
        server_badge_key(logic.store)
    except Exception as exc:  # noqa: BLE001 - the store may be down at start; serving must not wait
        log.warning("Cannot read or make the server badge key yet: %s", exc)


class DeliveryOutcomes:
    """Told of each delivery outcome by the outbox senders: counts it (by kind and channel),
    writes one structured log line, and tells the heartbeat of successful deliveries."""

    def __init__(self, clock: Clock, heartbeat: Heartbeat | None = None) -> None:
        self.clock = clock
        self.heartbeat = heartbeat

    def __call__(self, note: Notification, channel: str, error: Any = None) -> None:
        event = note.event if note.event is not None else note.id  # one event, several targets
        fields = {"canary_id": note.canary_id, "event_id": event, "kind": note.kind, "channel": channel}
        if error is None:
            COUNTERS.notifications_sent.labels(note.kind, channel).inc()
            if self.heartbeat is not None:
                self.heartbeat.delivered(self.clock.now())
            log_event(log, logging.INFO, "delivered", f"Notification {event} delivered", **fields)
            return
        COUNTERS.notifications_failed.labels(note.kind, channel).inc()
        permanent = not getattr(error, "retryable", True)
        log_event(
            log,
            logging.WARNING,
            "delivery_failed",
            f"Notification {event} not delivered",
            **fields,
            permanent=permanent,
            error=str(error),
        )


def start_operations(
    config: Config, logic: BusinessLogic, watcher: Watcher, senders: Sequence[Any] = ()
) -> Callable[[], None]:
    """In a background worker: heartbeats (told of each scan and delivery), delivery counters
    and log lines, and the watchdog. Returns stop()."""
    _ensure_server_badge_key(logic)
    heartbeat = Heartbeat(logic.store, logic.clock, worker_timeout=config.health.worker_timeout)
    watcher.scan_listeners.append(heartbeat.scanned)
    outcomes = DeliveryOutcomes(logic.clock, heartbeat)
    for sender in senders:
        sender.outcome_listeners.append(outcomes)
    if config.watchdog.url:
        watchdog = Watchdog(config.watchdog.url, logic.clock, timeout=config.watchdog.timeout)
        watcher.scan_listeners.append(watchdog.scanned)
        log.info("Watchdog: requesting %s after deadline scans, at most once a minute", redact(watchdog.url))
    heartbeat.start()
    log.info("Worker %s reports a heartbeat every %g s", heartbeat.worker_id, heartbeat.interval)
    return lambda: None if heartbeat.stop() else log.warning("Heartbeat thread did not stop in time")


def start_no_worker_warning(config: Config, logic: BusinessLogic) -> Callable[[], None]:
    """In a `--web` process: warn in the log while no live worker scans deadlines."""
    _ensure_server_badge_key(logic)
    warning = NoWorkerWarning(logic.store, logic.clock, worker_timeout=config.health.worker_timeout)
    warning.start()
    return lambda: None if warning.stop() else None


class PerProcess:
    """Calls `start` once in each process that serves requests, from its first request there;
    `stop` stops what it started in this process.

    For a WSGI app made by `make_app()` and served by another server: gunicorn
    calls the factory in each worker, or once in its master before forking the
    workers (`--preload`), where threads do not survive the fork and the master
    itself serves nothing. The lock is per process id, so a fork while it is held
    cannot leave a child waiting for it.
    """

    def __init__(self, start: Callable[[], Callable[[], None]]) -> None:
        self._start = start
        self._pid: int | None = None
        self._locks: dict[int, threading.Lock] = {}
        self._stop: Callable[[], None] | None = None

    def __call__(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._locks.setdefault(pid, threading.Lock()):
            if self._pid != pid:
                self._stop = self._start()
                self._pid = pid

    def stop(self) -> None:
        if self._stop is not None and self._pid == os.getpid():
            self._stop()
            self._stop, self._pid = None, None
