"""Start the operations side of a server process: heartbeat, watchdog, no-worker warning."""

from __future__ import annotations

import logging
from collections.abc import Callable

from coal_mine.badges import server_badge_key
from coal_mine.business_logic import BusinessLogic
from coal_mine.config import Config
from coal_mine.health import Heartbeat, NoWorkerWarning
from coal_mine.watchdog import Watchdog, redact
from coal_mine.watcher import Watcher

log = logging.getLogger(__name__)


def _ensure_server_badge_key(logic: BusinessLogic) -> None:
    """Make the server-wide badge key on first start (a failure here is retried on first use)."""
    try:
        server_badge_key(logic.store)
    except Exception as exc:  # noqa: BLE001 - the store may be down at start; serving must not wait
        log.warning("Cannot read or make the server badge key yet: %s", exc)


def start_operations(config: Config, logic: BusinessLogic, watcher: Watcher) -> Callable[[], None]:
    """In a background worker: heartbeats (told of each scan) and the watchdog. Returns stop()."""
    _ensure_server_badge_key(logic)
    heartbeat = Heartbeat(logic.store, logic.clock, worker_timeout=config.health.worker_timeout)
    watcher.scan_listeners.append(heartbeat.scanned)
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
