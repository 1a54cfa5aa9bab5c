"""The one place an event's payload is built.

The payload is a snapshot taken when the state changed, so the event can be
delivered later even if the canary changes or goes away. Business logic builds it
for every state change; the MongoDB store builds it for a Coal Mine 0.7 `notify`
flag it adopts. Every value is JSON-safe (times are ISO 8601 strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from coal_mine.clock import iso
from coal_mine.models import NOTIFICATION_HISTORY_ENTRIES, Canary, HistoryEntry, NewNotification, Target


def notification_payload(
    canary: Canary,
    when: datetime,
    deadline: datetime | None,
    history: Sequence[HistoryEntry],
    kind: str = "late",
) -> dict[str, Any]:
    """id, name, slug, emails, when (the time of the change), deadline, late and paused
    after it, and recent history."""
    return {
        "id": canary.id,
        "name": canary.name,
        "slug": canary.slug,
        "emails": list(canary.emails),
        "when": iso(when),
        "deadline": iso(deadline),
        "late": kind in ("late", "reminder") or (kind != "resumed" and canary.late),
        "paused": canary.paused,
        "history": [[iso(ts), comment] for ts, comment in history[:NOTIFICATION_HISTORY_ENTRIES]],
    }


def new_notification(
    kind: str,
    canary: Canary,
    when: datetime,
    deadline: datetime | None,
    history: Sequence[HistoryEntry],
    targets: Sequence[Target] | None = None,
) -> NewNotification:
    """A `kind` event of `canary`, recorded at `when`, for `targets` (default: its email
    addresses)."""
    chosen = [("email", address) for address in canary.emails] if targets is None else targets
    return NewNotification(
        kind=kind,
        created=when,
        payload=notification_payload(canary, when, deadline, history, kind),
        targets=tuple(chosen),
    )
