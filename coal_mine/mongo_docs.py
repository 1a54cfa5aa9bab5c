"""How canaries and notification events look in MongoDB documents.

The canary document is Coal Mine 0.7's, unchanged: id, name, slug, periodicity
(a double or the schedule string), description, emails, paused, history
([date, comment] arrays, newest first), late, deadline (absent while paused),
and 0.7's own `notify` flag.

The fields we add are `notifications`: events recorded in the same atomic
write as the state change that caused them, and moved to the outbox collection
right after (see mongo_outbox); and, only on canaries that use them, `webhooks`
and `slacks` (lists of URLs), `repeat` (seconds) and `remind_at` (the next
reminder, as fixed-width ISO 8601 text so that it both compares in order and is
JSON). Coal Mine 0.7.1 turns the whole document into
JSON, converting only `deadline` and `history`, so an event holds nothing its
JSON encoder refuses: strings, numbers, lists and dicts only (times as ISO 8601).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bson import ObjectId

from coal_mine.clock import utc

from coal_mine.abstract_store import RUN_FIELDS
from coal_mine.models import Canary, NewNotification
from coal_mine.mongo_runs import run_fields, stored

# At most this many events wait in one canary document. A write that would add
# one more first moves them to the outbox, so a document never nears MongoDB's
# 16 MiB limit (an event is at most ~150 KB: 15 history entries of 2,000
# characters and 100 addresses). mongomock has no size limit at all.
MAX_UNMOVED_EVENTS = 20
# Filter: the canary has room for one more event. `notifications.<n>` is a
# positional path; with $exists (not a comparison with null) it means "element n
# exists" on a server and on mongomock alike.
HAS_ROOM = {f"notifications.{MAX_UNMOVED_EVENTS - 1}": {"$exists": False}}
# Filter: no event waits in the canary (no `notifications`, or an empty array).
# Not `{"$in": [None, []]}`: with arrays, a server and mongomock disagree on it.
NO_EVENTS = {"$or": [{"notifications": {"$exists": False}}, {"notifications": {"$size": 0}}]}


def utc_time(value: Any) -> datetime:
    """A time stored either as a datetime or as an ISO 8601 string, as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    result = utc(value)
    if result is None:
        raise ValueError("missing time")
    return result


_REMIND_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def remind_text(value: datetime) -> str:
    """A reminder time as stored: UTC, fixed width, so text order is time order."""
    return utc(value).strftime(_REMIND_FORMAT)


def field_value(name: str, value: Any) -> Any:
    """A canary field's value as Coal Mine 0.7 stores it (ours as JSON-safe values)."""
    if name in ("emails", "webhooks", "slacks"):
        return list(value)
    if name == "repeat":
        return float(value)
    if name == "remind_at":
        return remind_text(value)
    if name == "periodicity" and not isinstance(value, str):
        return float(value)  # Coal Mine stores numeric periodicities as doubles
    if name in ("paused", "late"):
        return bool(value)
    if name in RUN_FIELDS:
        return stored(name, value)
    return value


def doc_to_canary(doc: Mapping[str, Any], history: bool) -> Canary:
    """The canary a document holds (history only if asked for and projected)."""
    periodicity = doc["periodicity"]
    if not isinstance(periodicity, str):
        periodicity = float(periodicity)
    return Canary(
        id=doc["id"],
        name=doc["name"],
        slug=doc["slug"],
        periodicity=periodicity,
        description=doc.get("description") or "",
        emails=list(doc.get("emails") or []),
        paused=bool(doc.get("paused")),
        late=bool(doc.get("late")),
        deadline=utc(doc.get("deadline")),
        history=[(utc_time(ts), comment) for ts, comment in doc.get("history") or []] if history else None,
        badge_key=doc.get("badge_key") or None,
        **run_fields(doc),
        webhooks=list(doc.get("webhooks") or []),
        slacks=list(doc.get("slacks") or []),
        repeat=float(doc.get("repeat") or 0),
        remind_at=utc_time(doc["remind_at"]) if doc.get("remind_at") else None,
    )


def canary_to_doc(canary: Canary) -> dict[str, Any]:
    """Coal Mine's field order; no deadline key while there is none."""
    doc: dict[str, Any] = {
        "id": canary.id,
        "name": canary.name,
        "slug": canary.slug,
        "periodicity": field_value("periodicity", canary.periodicity),
        "description": canary.description or "",
        "emails": list(canary.emails),
        "paused": bool(canary.paused),
        "history": [[ts, comment] for ts, comment in canary.history or []],
        "late": bool(canary.late),
    }
    if canary.deadline is not None:
        doc["deadline"] = canary.deadline
    if canary.badge_key is not None:
        doc["badge_key"] = canary.badge_key  # a string: Coal Mine 0.7 keeps and shows it
    for name in RUN_FIELDS:  # only those in use (see mongo_runs)
        value = stored(name, getattr(canary, name))
        if value is not None:
            doc[name] = value
    for name in ("webhooks", "slacks", "repeat", "remind_at"):  # only when used
        value = getattr(canary, name)
        if value:
            doc[name] = field_value(name, value)
    return doc


def event_doc(new: NewNotification) -> dict[str, Any]:
    """An event as it waits in its canary document: JSON-safe only."""
    return {
        # An ObjectId's text: grows with time (and within a process, with every id),
        # so it orders events recorded in the same millisecond.
        "nid": str(ObjectId()),
        "kind": new.kind,
        "created": new.created.isoformat(),
        "payload": dict(new.payload),
        "targets": [[channel, target] for channel, target in new.targets],
    }
