"""The storage interface. Stores keep data; they know nothing about the rules."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from coal_mine.models import (
    Canary,
    CanaryStatus,
    CanaryTotals,
    HistoryEntry,
    NewNotification,
    Notification,
    OutboxSummary,
    Output,
    PrunePolicy,
    WorkerHeartbeat,
)

# Fields a caller may put in `changes` or `expect`.
CANARY_FIELDS = (
    "name",
    "slug",
    "periodicity",
    "description",
    "emails",
    "paused",
    "late",
    "deadline",
    "badge_key",
)
# The history comment of a trigger starts with this (see business_logic.history_comment).
TRIGGER_COMMENT = "Triggered"
# Run reporting's fields (coal_mine/runs.py); their defaults mean "not in use".
RUN_FIELDS = ("max_runtime", "failed", "runs", "last_duration", "snooze_until", "alarm")
ALL_FIELDS = CANARY_FIELDS + RUN_FIELDS


class AbstractStore(ABC):
    """Every store passes tests/test_store_contract.py.

    `update` is the one write primitive for an existing canary: a conditional,
    atomic change that can also append (and prune) history and record
    notifications in the same write, so a state change and its notification
    are never separated.
    """

    @abstractmethod
    def create(self, canary: Canary) -> None:
        """Insert a new canary (with its history). Raises AlreadyExistsError on id/slug clash."""

    @abstractmethod
    def get(self, canary_id: str, *, history: bool = True) -> Canary | None:
        """The canary with this id, or None."""

    @abstractmethod
    def id_for_slug(self, slug: str) -> str | None:
        """The id of the canary with this slug, or None."""

    @abstractmethod
    def update(
        self,
        canary_id: str,
        changes: Mapping[str, Any],
        *,
        expect: Mapping[str, Any] | None = None,
        history: HistoryEntry | None = None,
        prune: PrunePolicy | None = None,
        notifications: Iterable[NewNotification] = (),
        output: Output | None = None,
    ) -> bool:
        """Atomically apply `changes` if every field in `expect` still has that value.

        `changes` and `expect` may name any of ALL_FIELDS. `output` is kept with the
        `history` entry and pruned with it. A `deadline` of None removes the deadline.
        Returns False (and writes nothing) when the canary is gone or an expectation
        failed. Raises AlreadyExistsError when a new slug clashes.
        """

    @abstractmethod
    def delete(self, canary_id: str) -> bool:
        """Remove the canary and its history; True if it existed. Pending notifications stay."""

    @abstractmethod
    def iter_canaries(
        self, *, paused: bool | None = None, late: bool | None = None, history: bool = False
    ) -> Iterator[Canary]:
        """Canaries in creation order, optionally filtered, streamed rather than loaded at once."""

    @abstractmethod
    def earliest_deadline(self) -> datetime | None:
        """The earliest deadline among unpaused canaries that are not late."""

    @abstractmethod
    def due_canaries(self, now: datetime, limit: int) -> list[Canary]:
        """Unpaused, not-late canaries whose deadline is before `now`, earliest first (no history)."""

    @abstractmethod
    def outputs(self, canary_id: str) -> list[tuple[datetime, Output]]:
        """The outputs kept with the canary's history entries, newest first."""

    @abstractmethod
    def earliest_alarm(self) -> datetime | None:
        """The earliest `alarm` of any canary."""

    @abstractmethod
    def due_alarms(self, now: datetime, limit: int) -> list[Canary]:
        """Canaries whose `alarm` is at or before `now`, earliest first (no history)."""

    # --- notification outbox -------------------------------------------------

    @abstractmethod
    def claim_notification(self, now: datetime, owner: str, lease_until: datetime) -> Notification | None:
        """Lease the oldest sendable notification, or return None if there is none.

        Only a canary's oldest pending notification (its head) may be sent, so each
        canary's messages go out in the order they were recorded. A head is sendable
        when `not_before` has passed and no live claimer holds its lease. Among the
        sendable heads, the one recorded first wins, whatever its retry time: recording
        order is insertion order in one database (memory, SQLite); where several
        processes record (MongoDB) it is `created`, then an id that grows within a
        process, so two processes recording in the same millisecond may tie either way.
        """

    @abstractmethod
    def complete_notification(self, notification: Notification, owner: str) -> None:
        """Remove a notification once it was delivered (or needs no delivery)."""

    @abstractmethod
    def retry_notification(self, notification: Notification, owner: str, not_before: datetime) -> None:
        """Release the lease and count a failed attempt; try again from `not_before`."""

    @abstractmethod
    def next_notification_time(self) -> datetime | None:
        """When the earliest pending notification may next be tried (None: nothing pending)."""

    @abstractmethod
    def pending_notifications(self) -> list[Notification]:
        """All pending notifications, oldest first (for tests and operators)."""

    @abstractmethod
    def count_notifications(self) -> int:
        """How many notifications are pending: `len(pending_notifications())`, without reading them."""

    def last_entries(self, canary_ids: Sequence[str], prefix: str) -> dict[str, datetime]:
        """For each canary, the time of its newest history entry whose comment starts with
        `prefix`; canaries without one (or gone) are left out. This default reads each whole
        history; a store may answer from an index instead."""
        found = {}
        for canary_id in canary_ids:
            canary = self.get(canary_id, history=True)
            when = (
                next((ts for ts, text in (canary.history or []) if text.startswith(prefix)), None)
                if canary
                else None
            )
            if when is not None:
                found[canary_id] = when
        return found

    # --- operations: worker heartbeats, server settings, summaries for metrics ---------

    @abstractmethod
    def record_heartbeat(self, beat: WorkerHeartbeat) -> None:
        """Insert or replace the heartbeat of `beat.worker_id`."""

    @abstractmethod
    def heartbeats(self) -> list[WorkerHeartbeat]:
        """Every stored heartbeat, the most recently seen first."""

    @abstractmethod
    def prune_heartbeats(self, older_than: datetime) -> int:
        """Remove heartbeats last seen before `older_than`; returns how many went."""

    @abstractmethod
    def setting(self, name: str) -> str | None:
        """A server-wide setting kept in the store (e.g. the server badge key), or None."""

    @abstractmethod
    def setting_setdefault(self, name: str, value: str) -> str:
        """Store `value` under `name` unless a value is there already; returns the stored value.
        Atomic: of several processes starting at once, all get the same value."""

    @abstractmethod
    def canary_for_badge(self, badge_key: str) -> Canary | None:
        """The canary (no history) whose badge key this is, or None."""

    def canary_totals(self) -> CanaryTotals:
        """How many canaries exist, are late, are paused."""
        total = late = paused = 0
        for canary in self.iter_canaries():
            total += 1
            late += canary.late
            paused += canary.paused
        return CanaryTotals(total, late, paused)

    def outbox_summary(self) -> OutboxSummary:
        """How many notifications are pending, and the creation time of the oldest."""
        pending = self.pending_notifications()
        return OutboxSummary(len(pending), min((n.created for n in pending), default=None))

    def iter_canary_status(self) -> Iterator[CanaryStatus]:
        """Each canary's status for /metrics, in creation order, streamed."""
        for c in self.iter_canaries(history=True):
            last = next((ts for ts, text in c.history or [] if text.startswith(TRIGGER_COMMENT)), None)
            yield CanaryStatus(c.id, c.name, c.slug, c.paused, c.late, c.deadline, last)

    def ensure_indexes(self) -> None:  # noqa: B027 - optional hook
        """Create indexes; called by processes that do background work."""

    def listen(self, wake: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Call `wake` (from any thread) soon after another process records a notification or
        changes what the watcher waits for; until close(). Optional: without it, background
        processes see other processes' changes at their next rescan."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
