"""The one place a notification's payload is built.

The payload is a snapshot taken when the state changed, so the message can be
sent later even if the canary changes or goes away. Business logic builds it for
every state change; the MongoDB store builds it for a Coal Mine 0.7 `notify`
flag it adopts. Every value is JSON-safe (times are ISO 8601 strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from coal_mine.clock import iso
from coal_mine.models import NOTIFICATION_HISTORY_ENTRIES, Canary, HistoryEntry, NewNotification


def notification_payload(
    canary: Canary, when: datetime, deadline: datetime | None, history: Sequence[HistoryEntry]
) -> dict[str, Any]:
    """id, name, emails, when (the time of the change), deadline and recent history."""
    return {
        "id": canary.id,
        "name": canary.name,
        "emails": list(canary.emails),
        "when": iso(when),
        "deadline": iso(deadline),
        "history": [[iso(ts), comment] for ts, comment in history[:NOTIFICATION_HISTORY_ENTRIES]],
    }


def new_notification(
    kind: str, canary: Canary, when: datetime, deadline: datetime | None, history: Sequence[HistoryEntry]
) -> NewNotification:
    """A `late` or `resumed` notification of `canary`, recorded at `when`."""
    return NewNotification(
        kind=kind, created=when, payload=notification_payload(canary, when, deadline, history)
    )
