"""Prometheus metrics: this process's counters, and a collector that reads the store per scrape.

The text format is written by prometheus_client. Per-canary samples come from
one streamed pass over the canaries (which also yields the totals, so they
agree with each other), on a connection of its own where the store has one.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import cast

import prometheus_client
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from coal_mine.abstract_store import AbstractStore
from coal_mine.clock import Clock

# No `_created` series beside each counter: nobody alerts on them and they double the lines.
prometheus_client.disable_created_metrics()

# The classic text format, which every Prometheus version reads (names need no escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATE = "coal_mine_canary_late"
_PAUSED = "coal_mine_canary_paused"
_DEADLINE = "coal_mine_canary_deadline_timestamp_seconds"
_LAST = "coal_mine_canary_last_trigger_timestamp_seconds"


class ProcessCounters:
    """Counters of this process (reset when it restarts, as Prometheus expects)."""

    def __init__(self) -> None:
        self.triggers = Counter("coal_mine_triggers", "Canary triggers accepted", registry=None)
        self.creates = Counter("coal_mine_creates", "Canaries created", registry=None)
        self.http_responses = Counter(
            "coal_mine_http_responses", "HTTP responses by status class", ["status_class"], registry=None
        )
        self._by_class: dict[str, Counter] = {}
        self.notifications_sent = Counter(
            "coal_mine_notifications_sent",
            "Notifications delivered, by kind and channel",
            ["kind", "channel"],
            registry=None,
        )
        self.notifications_failed = Counter(
            "coal_mine_notifications_failed",
            "Failed notification delivery attempts, by kind and channel",
            ["kind", "channel"],
            registry=None,
        )

    def collectors(self) -> list[Counter]:
        return [
            self.triggers,
            self.creates,
            self.http_responses,
            self.notifications_sent,
            self.notifications_failed,
        ]

    def response(self, status: str) -> None:
        """Count one HTTP response by its status line ("200 OK" counts as 2xx)."""
        counter = self._by_class.get(status[:1])
        if counter is None:  # labels() costs a lock and a few dict look-ups per call
            counter = self._by_class[status[:1]] = self.http_responses.labels(f"{status[:1]}xx")
        counter.inc()


# One set per process: the API and the sender in the same process count into it.
COUNTERS = ProcessCounters()


def _seconds(when: datetime) -> float:
    return (when - _EPOCH).total_seconds()


class StoreCollector(Collector):
    """Reads canaries, the outbox and the heartbeats at scrape time."""

    def __init__(self, store: AbstractStore, clock: Clock, worker_timeout: float) -> None:
        self.store = store
        self.clock = clock
        self.worker_timeout = worker_timeout

    NAMES = (
        _LATE,
        _PAUSED,
        _DEADLINE,
        _LAST,
        "coal_mine_canaries",
        "coal_mine_canaries_late",
        "coal_mine_canaries_paused",
        "coal_mine_outbox_pending",
        "coal_mine_outbox_oldest_age_seconds",
        "coal_mine_workers_alive",
        "coal_mine_watcher_last_scan_timestamp_seconds",
    )

    def describe(self) -> Iterator[Metric]:
        """The metric names, without reading the store (for `name[]` filtering)."""
        for name in self.NAMES:
            yield GaugeMetricFamily(name, "")

    def collect(self) -> Iterator[Metric]:
        labels = ["id", "name", "slug"]
        late = GaugeMetricFamily(_LATE, "1 if the canary is late", labels=labels)
        paused = GaugeMetricFamily(_PAUSED, "1 if the canary is paused", labels=labels)
        deadline = GaugeMetricFamily(
            _DEADLINE, "When the canary becomes late unless triggered (absent while paused)", labels=labels
        )
        last = GaugeMetricFamily(_LAST, "When the canary was last triggered (absent if never)", labels=labels)
        # Samples built directly from the store's rows of numbers: add_metric's per-call zip
        # and checks, and a datetime per value, would double the collector's time.
        add_late, add_paused = late.samples.append, paused.samples.append
        add_deadline, add_last = deadline.samples.append, last.samples.append
        late_count = paused_count = 0.0
        for cid, name, slug, is_late, is_paused, due, triggered in self.store.iter_canary_metrics():
            values = {"id": cid, "name": name, "slug": slug}
            late_count += is_late
            paused_count += is_paused
            add_late(Sample(_LATE, values, is_late))
            add_paused(Sample(_PAUSED, values, is_paused))
            if due is not None:
                add_deadline(Sample(_DEADLINE, values, due))
            if triggered is not None:
                add_last(Sample(_LAST, values, triggered))
        yield from (late, paused, deadline, last)
        yield GaugeMetricFamily("coal_mine_canaries", "Canaries", value=len(late.samples))
        yield GaugeMetricFamily("coal_mine_canaries_late", "Canaries that are late", value=late_count)
        yield GaugeMetricFamily("coal_mine_canaries_paused", "Canaries that are paused", value=paused_count)
        yield from self._operations()

    def _operations(self) -> Iterable[Metric]:
        from coal_mine.health import check_health

        report = check_health(self.store, self.clock, self.worker_timeout)
        outbox = report.outbox or self.store.outbox_summary()  # no report: the store fails; so will this
        oldest = 0.0 if outbox.oldest is None else max(0.0, (report.now - outbox.oldest).total_seconds())
        yield GaugeMetricFamily("coal_mine_outbox_pending", "Notifications not yet delivered", outbox.pending)
        yield GaugeMetricFamily(
            "coal_mine_outbox_oldest_age_seconds",
            "Age of the oldest undelivered notification (0 when there is none)",
            oldest,
        )
        yield GaugeMetricFamily(
            "coal_mine_workers_alive", "Background workers with a recent heartbeat", len(report.live)
        )
        if report.last_scan is not None:
            yield GaugeMetricFamily(
                "coal_mine_watcher_last_scan_timestamp_seconds",
                "When a live background worker last finished a deadline scan",
                _seconds(report.last_scan),
            )


class _CountersView(Collector):
    def describe(self) -> Iterator[Metric]:
        for collector in COUNTERS.collectors():
            yield from collector.describe()

    def collect(self) -> Iterator[Metric]:
        for collector in COUNTERS.collectors():
            yield from collector.collect()


def make_registry(store: AbstractStore, clock: Clock, worker_timeout: float) -> CollectorRegistry:
    """A registry with this process's counters, the store's state and Python's process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_CountersView())
    registry.register(StoreCollector(store, clock, worker_timeout))
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    return registry


class _CyclicGCPause:
    """Pauses Python's cyclic garbage collector while any scrape runs.

    A scrape of 100,000 canaries makes some 500,000 short-lived tuples and no
    reference cycles; meanwhile the collector would rescan the growing heap
    again and again (0.2 s of a 1.2 s scrape). Reference counting still frees
    everything; overlapping scrapes restore the previous state when the last ends.
    Should scrapes overlap without end, a scrape that starts more than
    `max_pause` seconds into the pause collects once, so cycles never pile up.
    """

    def __init__(self, max_pause: float = 30.0) -> None:
        self.max_pause = max_pause
        self._lock = threading.Lock()
        self._running = 0
        self._was_enabled = False
        self._since = 0.0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._running == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
                self._since = time.monotonic()
            elif self._was_enabled and time.monotonic() - self._since > self.max_pause:
                gc.collect()
                self._since = time.monotonic()
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0 and self._was_enabled:
                    gc.enable()


_gc_paused = _CyclicGCPause()


def exposition(registry: CollectorRegistry, names: list[str] | None = None) -> bytes:
    """The text format, restricted to the metric names given (Prometheus's `name[]`)."""
    # The cast: prometheus_client before 0.22 types generate_latest's argument too narrowly.
    source = cast(CollectorRegistry, registry.restricted_registry(names) if names else registry)
    with _gc_paused():
        return prometheus_client.generate_latest(source)
