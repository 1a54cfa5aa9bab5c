"""Prometheus metrics: this process's counters, and a collector that reads the store per scrape.

The text format is written by prometheus_client. Per-canary samples come from
one streamed pass over the canaries (which also yields the totals, so they
agree with each other), on a connection of its own where the store has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

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


class ProcessCounters:
    """Counters of this process (reset when it restarts, as Prometheus expects)."""

    def __init__(self) -> None:
        self.triggers = Counter("coal_mine_triggers", "Canary triggers accepted", registry=None)
        self.creates = Counter("coal_mine_creates", "Canaries created", registry=None)
        self.http_responses = Counter(
            "coal_mine_http_responses", "HTTP responses by status class", ["status_class"], registry=None
        )
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
        self.http_responses.labels(f"{status[:1]}xx").inc()


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
        "coal_mine_canary_late",
        "coal_mine_canary_paused",
        "coal_mine_canary_deadline_timestamp_seconds",
        "coal_mine_canary_last_trigger_timestamp_seconds",
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
        late = GaugeMetricFamily("coal_mine_canary_late", "1 if the canary is late", labels=labels)
        paused = GaugeMetricFamily("coal_mine_canary_paused", "1 if the canary is paused", labels=labels)
        deadline = GaugeMetricFamily(
            "coal_mine_canary_deadline_timestamp_seconds",
            "When the canary becomes late unless triggered (absent while paused)",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "coal_mine_canary_last_trigger_timestamp_seconds",
            "When the canary was last triggered (absent if never)",
            labels=labels,
        )
        # Samples built directly: add_metric's per-call zip and checks double the scrape time.
        add_late, add_paused = late.samples.append, paused.samples.append
        add_deadline, add_last = deadline.samples.append, last.samples.append
        total = late_count = paused_count = 0
        for status in self.store.iter_canary_status():
            values = {"id": status.id, "name": status.name, "slug": status.slug}
            total += 1
            late_count += status.late
            paused_count += status.paused
            add_late(Sample("coal_mine_canary_late", values, float(status.late)))
            add_paused(Sample("coal_mine_canary_paused", values, float(status.paused)))
            if status.deadline is not None and not status.paused:
                add_deadline(
                    Sample("coal_mine_canary_deadline_timestamp_seconds", values, _seconds(status.deadline))
                )
            if status.last_trigger is not None:
                add_last(
                    Sample(
                        "coal_mine_canary_last_trigger_timestamp_seconds",
                        values,
                        _seconds(status.last_trigger),
                    )
                )
        yield from (late, paused, deadline, last)
        yield GaugeMetricFamily("coal_mine_canaries", "Canaries", value=total)
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


def exposition(registry: CollectorRegistry, names: list[str] | None = None) -> bytes:
    """The text format, restricted to the metric names given (Prometheus's `name[]`)."""
    source = registry.restricted_registry(names) if names else registry
    return prometheus_client.generate_latest(source)
