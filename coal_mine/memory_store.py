"""In-memory store: the reference implementation of the store contract, for tests."""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from coal_mine.abstract_store import ALL_FIELDS, AbstractStore
from coal_mine.models import (
    AlreadyExistsError,
    Canary,
    HistoryEntry,
    NewNotification,
    Notification,
    Output,
    PrunePolicy,
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
        result.emails = list(canary.emails)
        result.runs = list(canary.runs)
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
                setattr(canary, name, list(value) if name in ("emails", "runs") else value)
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
                nid = next(self._ids)
                self._notifications[nid] = Notification(
                    id=nid,
                    canary_id=canary_id,
                    kind=new.kind,
                    created=new.created,
                    payload=copy.deepcopy(new.payload),
                    not_before=new.created,
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

    def _heads(self) -> list[Notification]:
        """The oldest pending notification of each canary: only those may be sent."""
        heads: dict[str, Notification] = {}
        for nid in sorted(self._notifications):
            note = self._notifications[nid]
            heads.setdefault(note.canary_id, note)
        return list(heads.values())

    def _available_at(self, note: Notification) -> datetime:
        lease = self._leases.get(note.id)
        return max(note.not_before, lease[1]) if lease else note.not_before

    def _sendable(self, now: datetime) -> list[Notification]:
        return [note for note in self._heads() if self._available_at(note) <= now]

    def claim_notification(self, now: datetime, owner: str, lease_until: datetime) -> Notification | None:
        with self._lock:
            sendable = self._sendable(now)
            if not sendable:
                return None
            note = sendable[0]
            self._leases[note.id] = (owner, lease_until)
            return copy.deepcopy(note)

    def _holds_lease(self, note: Notification, owner: str) -> bool:
        lease = self._leases.get(note.id)
        return lease is not None and lease[0] == owner

    def complete_notification(self, notification: Notification, owner: str) -> None:
        with self._lock:
            if self._holds_lease(notification, owner):
                self._notifications.pop(notification.id, None)
                self._leases.pop(notification.id, None)

    def retry_notification(self, notification: Notification, owner: str, not_before: datetime) -> None:
        with self._lock:
            stored = self._notifications.get(notification.id)
            if stored is not None and self._holds_lease(notification, owner):
                stored.attempts += 1
                stored.not_before = not_before
                self._leases.pop(notification.id, None)

    def next_notification_time(self) -> datetime | None:
        with self._lock:
            return min((self._available_at(note) for note in self._heads()), default=None)

    def pending_notifications(self) -> list[Notification]:
        with self._lock:
            return [copy.deepcopy(self._notifications[k]) for k in sorted(self._notifications)]

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
