"""Notification channels: each kind renders an event and delivers it to its targets.

A channel knows nothing about storage or retries: the OutboxSender (notify.py)
claims pending deliveries, hands them to the channel of their kind, and records
each target's outcome. Adding a kind means one module here, one line in
`CHANNEL_KINDS`, and its settings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from coal_mine.models import Notification

# Every kind, in the order the targets of one event are listed.
CHANNEL_KINDS = ("email", "webhook", "slack")


class DeliveryError(Exception):
    """A target did not accept an event. `retryable`: a later try may succeed (4xx SMTP,
    network errors, HTTP 5xx/408/429); otherwise it is still retried, at the longest delay."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(ABC):
    """One kind of channel (email, webhook, ...)."""

    kind: ClassVar[str]
    # Deliver several targets of one event in one go (one email to several recipients).
    group: ClassVar[bool] = False
    # All targets go through one server: a temporary failure of a whole delivery
    # pauses the channel for a while, so a dead server is not hammered.
    shared_server: ClassVar[bool] = False

    @abstractmethod
    def render(self, event: Notification, targets: Sequence[str], *, now: datetime, delayed: bool) -> Any:
        """What `deliver` sends for this event (raise on data that cannot be rendered)."""

    @abstractmethod
    def deliver(self, rendered: Any, targets: Sequence[str]) -> Mapping[str, DeliveryError]:
        """Deliver to `targets`: return the ones that refused it, with why.
        Raise DeliveryError when no target accepted it."""

    def describe(self, rendered: Any) -> str:
        """A short reference to what was delivered, for the log (e.g. a Message-ID)."""
        return ""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release any open connection (called when a batch is done)."""
