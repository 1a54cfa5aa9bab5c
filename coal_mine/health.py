"""Is anybody watching? Worker heartbeats, the health verdict, and the no-worker warning.

Every background worker (`--background`, or the combined default mode) writes a
heartbeat to the store at least every 10 s (more often with a short
`worker_timeout`): who it is, when it last finished a deadline scan, when it last
delivered a notification and how deep the outbox is. A heartbeat older than
`worker_timeout` counts as dead; live workers prune dead ones. The last
heartbeat of the last worker stays, so the verdict can say how long ago
anything ran.

Healthy means: the store answers, and a live worker has finished a deadline
scan within `worker_timeout`. Without that, late canaries are not detected.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from coal_mine.abstract_store import AbstractStore
from coal_mine.clock import Clock
from coal_mine.models import OutboxSummary, WorkerHeartbeat
from coal_mine.watcher import BackgroundLoop

log = logging.getLogger(__name__)

DEFAULT_WORKER_TIMEOUT = 60.0
MAX_HEARTBEAT_INTERVAL = 10.0
WARNING_INTERVAL = timedelta(minutes=1)
_NOT_DETECTED = "late canaries are not being detected"


def heartbeat_interval(worker_timeout: float) -> float:
    """How often to write a heartbeat: every 10 s, or thrice per timeout if that is shorter."""
    return min(MAX_HEARTBEAT_INTERVAL, worker_timeout / 3)


def human_duration(seconds: float) -> str:
    """'45 s', '3 min', '2 h', '4 days': rounded down, as a person says it."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min"
    if seconds < 172800:
        return f"{seconds // 3600:.0f} h"
    return f"{seconds // 86400:.0f} days"


@dataclass
class HealthReport:
    """The verdict and what it was based on."""

    ok: bool
    reason: str
    now: datetime
    worker_timeout: float
    live: list[WorkerHeartbeat] = field(default_factory=list)
    last_scan: datetime | None = None
    outbox: OutboxSummary | None = None

    def to_json(self, *, detail: bool = False) -> dict[str, Any]:
        """The /health answer; `detail` adds each live worker (host, pid, times)."""
        data: dict[str, Any] = {"status": "ok" if self.ok else "error"}
        if not self.ok:
            data["error"] = self.reason
        data["reason"] = self.reason
        data["workers_alive"] = len(self.live)
        data["worker_timeout_seconds"] = self.worker_timeout
        data["last_scan"] = self.last_scan.isoformat() if self.last_scan else None
        data["last_scan_age_seconds"] = self._age(self.last_scan)
        if self.outbox is not None:
            data["outbox_pending"] = self.outbox.pending
            data["outbox_oldest_age_seconds"] = self._age(self.outbox.oldest)
        if detail:
            data["workers"] = [
                {
                    "host": beat.host,
                    "pid": beat.pid,
                    "started": beat.started.isoformat(),
                    "last_seen": beat.seen.isoformat(),
                    "last_scan": beat.last_scan.isoformat() if beat.last_scan else None,
                    "last_delivery": beat.last_delivery.isoformat() if beat.last_delivery else None,
                    "outbox_depth": beat.outbox_depth,
                }
                for beat in self.live
            ]
        return data

    def _age(self, when: datetime | None) -> float | None:
        return None if when is None else round(max(0.0, (self.now - when).total_seconds()), 3)


def check_health(store: AbstractStore, clock: Clock, worker_timeout: float) -> HealthReport:
    """Ask the store whether a live worker is scanning deadlines; never raises."""
    now = clock.now()
    limit = now - timedelta(seconds=worker_timeout)
    try:
        beats = store.heartbeats()
        outbox = store.outbox_summary()
    except Exception as exc:  # noqa: BLE001 - any store failure is the answer, not an error
        reason = f"the database does not answer ({type(exc).__name__}: {exc}); nothing is being recorded"
        return HealthReport(False, reason, now, worker_timeout)
    live = [beat for beat in beats if beat.seen >= limit]
    last_scan = max((beat.last_scan for beat in live if beat.last_scan is not None), default=None)
    # Judged as of each worker's own report, so that the lag between a scan and the next
    # heartbeat never makes a merely dead worker look like a stuck one.
    scanning = [
        b
        for b in live
        if b.last_scan is not None and b.seen - b.last_scan <= timedelta(seconds=worker_timeout)
    ]
    report = HealthReport(False, "", now, worker_timeout, live, last_scan, outbox)
    if not beats:
        report.reason = f"no background worker has ever reported to this database; {_NOT_DETECTED}"
    elif not live:
        ago = human_duration((now - beats[0].seen).total_seconds())
        report.reason = f"no background worker has run for {ago}; {_NOT_DETECTED}"
    elif last_scan is None or not scanning:
        since = "ever" if last_scan is None else f"for {human_duration((now - last_scan).total_seconds())}"
        report.reason = (
            f"{len(live)} background worker(s) alive, but no deadline scan has finished {since}; "
            f"{_NOT_DETECTED}"
        )
    else:
        report.ok = True
        ago = human_duration(max(0.0, (now - last_scan).total_seconds()))
        report.reason = f"{len(live)} background worker(s) alive; last deadline scan {ago} ago"
    return report


class Heartbeat(BackgroundLoop):
    """Writes this worker's heartbeat every `interval` seconds and prunes dead ones.

    `last_scan` and `last_delivery` are set by the watcher and the sender (plain
    attribute writes from their threads; the heartbeat reads whatever is newest).
    """

    name = "heartbeat"

    def __init__(self, store: AbstractStore, clock: Clock, *, worker_timeout: float) -> None:
        super().__init__(clock)
        self.store = store
        self.worker_timeout = worker_timeout
        self.interval = heartbeat_interval(worker_timeout)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self.started = clock.now()
        self.last_scan: datetime | None = None
        self.last_delivery: datetime | None = None

    def scanned(self, when: datetime) -> None:
        """The watcher finished a deadline scan (the first one is reported at once)."""
        first = self.last_scan is None
        self.last_scan = when
        if first:
            self.wake()

    def delivered(self, when: datetime) -> None:
        """The sender delivered a notification."""
        self.last_delivery = when

    def step(self) -> bool:
        now = self.clock.now()
        beat = WorkerHeartbeat(
            worker_id=self.worker_id,
            host=self.host,
            pid=self.pid,
            started=self.started,
            seen=now,
            last_scan=self.last_scan,
            last_delivery=self.last_delivery,
            outbox_depth=self.store.count_notifications(),
        )
        self.store.record_heartbeat(beat)
        pruned = self.store.prune_heartbeats(now - timedelta(seconds=self.worker_timeout))
        if pruned:
            log.info("Removed %d heartbeat(s) of background workers that stopped reporting", pruned)
        return False

    def seconds_until_next(self) -> float:
        return self.interval


class NoWorkerWarning(BackgroundLoop):
    """In a `--web` process: log a WARNING when no live worker scans deadlines, at once
    and then once a minute while it lasts, and an INFO line when it is over."""

    name = "health-check"

    def __init__(self, store: AbstractStore, clock: Clock, *, worker_timeout: float) -> None:
        super().__init__(clock)
        self.store = store
        self.worker_timeout = worker_timeout
        self.last_warning: datetime | None = None

    def step(self) -> bool:
        report = check_health(self.store, self.clock, self.worker_timeout)
        if report.ok:
            if self.last_warning is not None:
                log.info("Health: %s", report.reason)
            self.last_warning = None
        elif self.last_warning is None or report.now - self.last_warning >= WARNING_INTERVAL:
            log.warning("Health: %s", report.reason)
            self.last_warning = report.now
        return False

    def seconds_until_next(self) -> float:
        return heartbeat_interval(self.worker_timeout)
