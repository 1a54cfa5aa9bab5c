"""In-memory store: the reference implementation of the store contract, for tests."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from coal_mine.abstract_store import ALL_FIELDS, LIST_FIELDS, AbstractStore
from coal_mine.models import (
    AlreadyExistsError,
    Canary,
    HistoryEntry,
    NewNotification,
    Notification,
    Output,
    PrunePolicy,
    Target,
    TargetStatus,
    WorkerHeartbeat,
)


def prune_history(history: list[HistoryEntry], policy: PrunePolicy) -> None:
    """Drop the oldest entries (history is newest first) as `policy` says."""
    while len(history) > policy.max_entries or (
        len(history) > policy.min_entries and history[-1][0] < policy.older_than
    ):
        history.pop()


class MemoryStore(AbstractStore):
    """Keeps everything in dictionaries behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._canaries: dict[str, Canary] = {}
        self._notifications: dict[int, Notification] = {}
        self._leases: dict[int, tuple[str, datetime]] = {}
        self._ids = itertools.count(1)
        self._heartbeats: dict[str, WorkerHeartbeat] = {}
        self._settings: dict[str, str] = {}
        self._outputs: dict[str, list[tuple[datetime, Output]]] = {}  # newest first
        self._events = itertools.count(1)
        self._statuses: dict[tuple[str, str, str], TargetStatus] = {}

    def create(self, canary: Canary) -> None:
        with self._lock:
            if canary.id in self._canaries:
                raise AlreadyExistsError("id", canary.id)
            if self._slug_owner(canary.slug) is not None:
                raise AlreadyExistsError("slug", canary.slug)
            if self._key_owner("badge_key", canary.badge_key) is not None:
                raise AlreadyExistsError("badge_key", canary.badge_key or "")
            stored = copy.deepcopy(canary)
            stored.history = list(stored.history or [])
            self._canaries[canary.id] = stored

    def _key_owner(self, field_name: str, value: str | None) -> str | None:
        if value is None:
            return None
        for canary in self._canaries.values():
            if getattr(canary, field_name) == value:
                return canary.id
        return None

    def _slug_owner(self, slug: str) -> str | None:
        for canary in self._canaries.values():
            if canary.slug == slug:
                return canary.id
        return None

    def get(self, canary_id: str, *, history: bool = True) -> Canary | None:
        with self._lock:
            canary = self._canaries.get(canary_id)
            return self._copy(canary, history) if canary else None

    @staticmethod
    def _copy(canary: Canary, history: bool) -> Canary:
        result = copy.copy(canary)
        for name in (*LIST_FIELDS, "runs"):
            setattr(result, name, list(getattr(canary, name)))
        result.history = list(canary.history or []) if history else None
        return result

    def id_for_slug(self, slug: str) -> str | None:
        with self._lock:
            return self._slug_owner(slug)

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
        with self._lock:
            canary = self._canaries.get(canary_id)
            if canary is None:
                return False
            for name, value in (expect or {}).items():
                if getattr(canary, name) != value:
                    return False
            if "slug" in changes:
                owner = self._slug_owner(changes["slug"])
                if owner not in (None, canary_id):
                    raise AlreadyExistsError("slug", changes["slug"])
            badge_owner = self._key_owner("badge_key", changes.get("badge_key"))
            if badge_owner not in (None, canary_id):
                raise AlreadyExistsError("badge_key", changes["badge_key"])
            for name, value in changes.items():
                if name not in ALL_FIELDS:
                    raise ValueError(f"unknown canary field {name}")
                setattr(canary, name, list(value) if name in (*LIST_FIELDS, "runs") else value)
            if history is not None:
                entries = canary.history if canary.history is not None else []
                entries.insert(0, history)
                if output is not None:
                    self._outputs.setdefault(canary_id, []).insert(0, (history[0], output))
                if prune is not None:
                    prune_history(entries, prune)
                canary.history = entries
                self._prune_outputs(canary)
            for new in notifications:
                event = next(self._events)
                for channel, target in new.targets:
                    nid = next(self._ids)
                    self._notifications[nid] = Notification(
                        id=nid,
                        canary_id=canary_id,
                        kind=new.kind,
                        created=new.created,
                        payload=copy.deepcopy(new.payload),
                        not_before=new.created,
                        event=event,
                        channel=channel,
                        target=target,
                    )
            return True

    def _prune_outputs(self, canary: Canary) -> None:
        """Outputs go with their history entries: none older than the oldest entry left."""
        kept = self._outputs.get(canary.id)
        if kept and canary.history:
            oldest = canary.history[-1][0]
            kept[:] = [item for item in kept if item[0] >= oldest]

    def outputs(self, canary_id: str) -> list[tuple[datetime, Output]]:
        with self._lock:
            return list(self._outputs.get(canary_id, []))

    def delete(self, canary_id: str) -> bool:
        with self._lock:
            self._outputs.pop(canary_id, None)
            self._statuses = {k: v for k, v in self._statuses.items() if k[0] != canary_id}
            return self._canaries.pop(canary_id, None) is not None

    def iter_canaries(
        self, *, paused: bool | None = None, late: bool | None = None, history: bool = False
    ) -> Iterator[Canary]:
        with self._lock:
            snapshot = [
                self._copy(c, history)
                for c in self._canaries.values()
                if (paused is None or c.paused == paused) and (late is None or c.late == late)
            ]
        return iter(snapshot)

    def _watched(self) -> list[tuple[datetime, Canary]]:
        """(deadline, canary) of each unpaused, not-late canary that has a deadline."""
        return [
            (c.deadline, c) for c in self._canaries.values() if not c.paused and not c.late and c.deadline
        ]

    def earliest_deadline(self) -> datetime | None:
        with self._lock:
            return min((deadline for deadline, _ in self._watched()), default=None)

    def due_canaries(self, now: datetime, limit: int) -> list[Canary]:
        with self._lock:
            due = sorted(((d, c) for d, c in self._watched() if d < now), key=lambda pair: pair[0])
            return [self._copy(c, False) for _, c in due[:limit]]

    def earliest_alarm(self) -> datetime | None:
        with self._lock:
            return min((c.alarm for c in self._canaries.values() if c.alarm is not None), default=None)

    def due_alarms(self, now: datetime, limit: int) -> list[Canary]:
        with self._lock:
            due = [(c.alarm, c) for c in self._canaries.values() if c.alarm is not None and c.alarm <= now]
            due.sort(key=lambda item: item[0])
            return [self._copy(c, False) for _, c in due[:limit]]

    def _reminding(self) -> list[tuple[datetime, Canary]]:
        """(remind_at, canary) of each late, unpaused canary with a reminder due some time."""
        return [(c.remind_at, c) for c in self._canaries.values() if c.late and not c.paused and c.remind_at]

    def due_reminders(self, now: datetime, limit: int) -> list[Canary]:
        with self._lock:
            due = sorted(((at, c) for at, c in self._reminding() if at <= now), key=lambda pair: pair[0])
            return [self._copy(c, False) for _, c in due[:limit]]

    def next_reminder_time(self) -> datetime | None:
        with self._lock:
            return min((at for at, _ in self._reminding()), default=None)

    def _heads(self, channel: str | None = None) -> list[Notification]:
        """The oldest pending entry of each target: only those may be sent."""
        heads: dict[tuple[str, str, str], Notification] = {}
        for nid in sorted(self._notifications):
            note = self._notifications[nid]
            if channel is None or note.channel == channel:
                heads.setdefault((note.canary_id, note.channel, note.target), note)
        return list(heads.values())

    def _available_at(self, note: Notification) -> datetime:
        lease = self._leases.get(note.id)
        assert note.not_before is not None
        return max(note.not_before, lease[1]) if lease else note.not_before

    def claim_notifications(
        self, now: datetime, owner: str, lease_until: datetime, channel: str, *, group: bool = False
    ) -> list[Notification]:
        with self._lock:
            sendable = [note for note in self._heads(channel) if self._available_at(note) <= now]
            if not sendable:
                return []
            first = sendable[0]
            claimed = [n for n in sendable if n.event == first.event] if group else [first]
            for note in claimed:
                self._leases[note.id] = (owner, lease_until)
            return copy.deepcopy(claimed)

    def _holds_lease(self, note: Notification, owner: str) -> bool:
        lease = self._leases.get(note.id)
        return lease is not None and lease[0] == owner and note.id in self._notifications

    def extend_lease(self, notifications: Iterable[Notification], owner: str, lease_until: datetime) -> bool:
        with self._lock:
            held = True
            for note in notifications:
                if self._holds_lease(note, owner):
                    self._leases[note.id] = (owner, lease_until)
                else:
                    held = False
            return held

    def _status(self, note: Notification) -> TargetStatus:
        key = (note.canary_id, note.channel, note.target)
        return self._statuses.get(key) or TargetStatus(note.channel, note.target)

    def complete_notifications(
        self, notifications: Iterable[Notification], owner: str, now: datetime
    ) -> None:
        with self._lock:
            for note in notifications:
                if self._holds_lease(note, owner):
                    self._notifications.pop(note.id, None)
                    self._leases.pop(note.id, None)
                    self._statuses[(note.canary_id, note.channel, note.target)] = dataclasses.replace(
                        self._status(note), last_success=now
                    )

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
        with self._lock:
            stored = self._notifications.get(notification.id)
            if stored is None or not self._holds_lease(notification, owner):
                return
            stored.attempts += 1
            stored.not_before = not_before
            self._leases.pop(notification.id, None)
            if error:
                stored.last_error, stored.permanent = error, permanent
                key = (stored.canary_id, stored.channel, stored.target)
                self._statuses[key] = dataclasses.replace(
                    self._status(stored), last_error=error, last_error_at=now or not_before
                )

    def next_notification_time(self, channel: str | None = None) -> datetime | None:
        with self._lock:
            return min((self._available_at(note) for note in self._heads(channel)), default=None)

    def pending_notifications(self, canary_id: str | None = None) -> list[Notification]:
        with self._lock:
            return [
                copy.deepcopy(self._notifications[k])
                for k in sorted(self._notifications)
                if canary_id is None or self._notifications[k].canary_id == canary_id
            ]

    def withdraw_notifications(
        self, canary_id: str, targets: Iterable[Target] | None = None, *, permanent_only: bool = False
    ) -> list[Notification]:
        wanted = None if targets is None else set(targets)
        with self._lock:
            gone = [
                nid
                for nid in sorted(self._notifications)
                if (note := self._notifications[nid]).canary_id == canary_id
                and (wanted is None or (note.channel, note.target) in wanted)
                and (note.permanent or not permanent_only)
            ]
            self._leases = {k: v for k, v in self._leases.items() if k not in gone}
            return [self._notifications.pop(nid) for nid in gone]

    def drop_notification(self, notification_id: str) -> Notification | None:
        with self._lock:
            try:
                nid = int(notification_id)
            except ValueError:
                return None
            self._leases.pop(nid, None)
            return self._notifications.pop(nid, None)

    def target_statuses(self, canary_id: str) -> list[TargetStatus]:
        with self._lock:
            return [status for key, status in self._statuses.items() if key[0] == canary_id]

    def count_notifications(self) -> int:
        with self._lock:
            return len(self._notifications)

    # --- operations ------------------------------------------------------------------

    def record_heartbeat(self, beat: WorkerHeartbeat) -> None:
        with self._lock:
            self._heartbeats[beat.worker_id] = beat

    def heartbeats(self) -> list[WorkerHeartbeat]:
        with self._lock:
            return sorted(self._heartbeats.values(), key=lambda b: b.seen, reverse=True)

    def prune_heartbeats(self, older_than: datetime) -> int:
        with self._lock:
            old = [wid for wid, beat in self._heartbeats.items() if beat.seen < older_than]
            for wid in old:
                del self._heartbeats[wid]
            return len(old)

    def setting(self, name: str) -> str | None:
        with self._lock:
            return self._settings.get(name)

    def setting_setdefault(self, name: str, value: str) -> str:
        with self._lock:
            return self._settings.setdefault(name, value)

    def canary_for_badge(self, badge_key: str) -> Canary | None:
        with self._lock:
            owner = self._key_owner("badge_key", badge_key)
            return self._copy(self._canaries[owner], False) if owner else None
