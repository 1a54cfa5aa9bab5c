"""The notification-outbox half of the AbstractStore interface for MongoStore.

Each method delegates to MongoOutbox (see mongo_outbox), which keeps one document per
event and target in the `notifications` collection. Kept apart from mongo_store so that
the store module stays about canary documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from coal_mine.models import Notification, Target, TargetStatus
from coal_mine.mongo_legacy import adopt_legacy
from coal_mine.mongo_outbox import MongoOutbox
from coal_mine.mongo_retry import Retrier


class MongoOutboxMethods:
    """Outbox methods of MongoStore: claims, leases, completion, retries, withdrawal."""

    canaries: Any
    _retry: Retrier

    if TYPE_CHECKING:  # provided by MongoStore

        @property
        def _outbox(self) -> MongoOutbox: ...

    def claim_notifications(
        self, now: datetime, owner: str, lease_until: datetime, channel: str, *, group: bool = False
    ) -> list[Notification]:
        return self._outbox.claim(now, owner, lease_until, channel, group)

    def extend_lease(self, notifications: Iterable[Notification], owner: str, lease_until: datetime) -> bool:
        return self._outbox.extend(notifications, owner, lease_until)

    def complete_notifications(
        self, notifications: Iterable[Notification], owner: str, now: datetime
    ) -> None:
        self._outbox.complete(notifications, owner, now)

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
        self._outbox.retry(notification, owner, not_before, error, permanent, now)

    def next_notification_time(self, channel: str | None = None) -> datetime | None:
        return self._outbox.next_time(channel)

    def count_notifications(self) -> int:
        return self._outbox.count()

    def pending_notifications(self, canary_id: str | None = None) -> list[Notification]:
        """Pending entries (outbox and canaries) and Coal Mine's notify flags (id "notify:<id>/<n>")."""
        return self._outbox.pending(canary_id)

    def withdraw_notifications(
        self, canary_id: str, targets: Iterable[Target] | None = None, *, permanent_only: bool = False
    ) -> list[Notification]:
        adopt_legacy(self.canaries, self._retry, canary_id)
        return self._outbox.withdraw(canary_id, targets, permanent_only)

    def drop_notification(self, notification_id: str) -> Notification | None:
        return self._outbox.drop(notification_id)

    def target_statuses(self, canary_id: str) -> list[TargetStatus]:
        return self._outbox.target_statuses(canary_id)
