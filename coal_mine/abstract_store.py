"""The storage interface. Stores keep data; they know nothing about the rules."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from coal_mine.clock import to_millis
from coal_mine.models import (
    Canary,
    CanaryMetricsRow,
    CanaryStatus,
    CanaryTotals,
    HistoryEntry,
    NewNotification,
    Notification,
    OutboxSummary,
    Output,
    PrunePolicy,
    Target,
    TargetStatus,
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
    "webhooks",
    "slacks",
    "repeat",
    "remind_at",
)
LIST_FIELDS = ("emails", "webhooks", "slacks")
# The history comment of a trigger starts with this (see business_logic.history_comment).
TRIGGER_COMMENT = "Triggered"
# Run reporting's fields (coal_mine/runs.py); their defaults mean "not in use".
RUN_FIELDS = ("max_runtime", "failed", "runs", "last_duration", "snooze_until", "alarm")
ALL_FIELDS = CANARY_FIELDS + RUN_FIELDS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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

    def postpone(
        self,
        canary_id: str,
        when: datetime,
        *,
        expect: Mapping[str, Any],
        history: HistoryEntry,
        prune: PrunePolicy | None = None,
    ) -> Canary | bool:
        """The usual trigger in one step: if the canary's periodicity is a number of
        seconds, it matches `expect` and `when` plus that periodicity (to the millisecond,
        as BusinessLogic.deadline_after) is not before its deadline, make that its
        deadline and append `history` (then prune), and return True.

        Otherwise change nothing and return the canary as it was read (False if there is
        none), so that the caller can take the general path without reading it again; it
        may be stale, as any read is by the time of a conditional update. This default
        reads, then updates conditionally; a server store may do it all in one statement.
        """
        canary = self.get(canary_id, history=False)
        if canary is None:
            return False
        if isinstance(canary.periodicity, str) or canary.deadline is None:
            return canary
        if any(getattr(canary, name) != value for name, value in expect.items()):
            return canary
        deadline = to_millis(when + timedelta(seconds=canary.periodicity))
        if deadline < canary.deadline:
            return canary
        done = self.update(
            canary_id,
            {"deadline": deadline},
            expect={**expect, "deadline": canary.deadline, "periodicity": canary.periodicity},
            history=history,
            prune=prune,
        )
        return True if done else canary

    @abstractmethod
    def delete(self, canary_id: str) -> bool:
        """Remove the canary, its history and target statuses; True if it existed.
        Pending notifications stay."""

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

    @abstractmethod
    def due_reminders(self, now: datetime, limit: int) -> list[Canary]:
        """Late, unpaused canaries whose `remind_at` is not after `now`, earliest first (no history)."""

    @abstractmethod
    def next_reminder_time(self) -> datetime | None:
        """The earliest `remind_at` of a late, unpaused canary."""

    # --- notification outbox: one entry per event and target -------------------------
    #
    # Only the oldest pending entry of each (canary, channel, target) may be sent, so
    # every target gets one canary's events in order; entries of other targets never
    # wait for it.

    @abstractmethod
    def claim_notifications(
        self, now: datetime, owner: str, lease_until: datetime, channel: str, *, group: bool = False
    ) -> list[Notification]:
        """Lease the oldest sendable entry of `channel`, or return [] if there is none.

        Only the oldest pending entry of a (canary, channel, target) (its head) may be
        sent. A head is sendable when `not_before` has passed and no live claimer holds
        its lease. Among the sendable heads, the one recorded first wins, whatever its
        retry time: recording order is insertion order in one database (memory, SQL);
        where several processes record (MongoDB) it is `created`, then an id that grows
        within a process, so two processes recording in the same millisecond may tie
        either way. With `group`, also lease every other sendable entry of the same
        event and channel (one email to several recipients)."""

    @abstractmethod
    def extend_lease(self, notifications: Iterable[Notification], owner: str, lease_until: datetime) -> bool:
        """Move the lease of entries `owner` holds to `lease_until`; False if one was lost."""

    @abstractmethod
    def complete_notifications(
        self, notifications: Iterable[Notification], owner: str, now: datetime
    ) -> None:
        """Remove delivered entries that `owner` still holds; record each target's success."""

    @abstractmethod
    def retry_notification(
        self,
        notification: Notification,
        owner: str,
        not_before: datetime,
        *,
        error: str = "",
        permanent: bool = False,
        now: datetime | None = None,
    ) -> None:
        """Release the lease and count a failed attempt; try again from `not_before`.
        A non-empty `error` is recorded as the entry's and its target's last error."""

    @abstractmethod
    def next_notification_time(self, channel: str | None = None) -> datetime | None:
        """When the earliest sendable entry (of `channel`) may next be tried (None: none pending)."""

    @abstractmethod
    def pending_notifications(self, canary_id: str | None = None) -> list[Notification]:
        """Pending entries (of one canary), oldest first (for tests and operators)."""

    @abstractmethod
    def count_notifications(self) -> int:
        """How many entries are pending: `len(pending_notifications())`, without reading them."""

    @abstractmethod
    def withdraw_notifications(
        self, canary_id: str, targets: Iterable[Target] | None = None, *, permanent_only: bool = False
    ) -> list[Notification]:
        """Remove pending entries of a canary: those to `targets` (None: any), or only
        those whose last failure was permanent. Returns what was removed."""

    @abstractmethod
    def drop_notification(self, notification_id: str) -> Notification | None:
        """Remove one pending entry by id (as text); None if there is no such entry."""

    @abstractmethod
    def target_statuses(self, canary_id: str) -> list[TargetStatus]:
        """The last success and last error of each target the canary's events went to."""

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

    def iter_canary_metrics(self) -> Iterator[CanaryMetricsRow]:
        """iter_canary_status as the numbers /metrics writes (see CanaryMetricsRow), streamed.
        Stores override it to do the conversion in their query."""
        for s in self.iter_canary_status():
            deadline = None if s.paused or s.deadline is None else (s.deadline - _EPOCH).total_seconds()
            last = None if s.last_trigger is None else (s.last_trigger - _EPOCH).total_seconds()
            yield (s.id, s.name, s.slug, float(s.late), float(s.paused), deadline, last)

    def ensure_indexes(self) -> None:  # noqa: B027 - optional hook
        """Create indexes; called by processes that do background work."""

    def listen(self, wake: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Call `wake` (from any thread) soon after another process records a notification or
        changes what the watcher waits for; until close(). Optional: without it, background
        processes see other processes' changes at their next rescan."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
