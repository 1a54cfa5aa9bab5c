"""Coal Mine 0.7's `notify` flag, and data left by older versions of this store.

A Coal Mine 0.7 `--web` process that changes a canary's state leaves
`notify: true` on it for its background process to send. We adopt such a flag:
one conditional write per document clears the flag and records the event, guarded
by the state the message was built from. The flag is cleared as the event enters
our outbox (not when it is sent) so that a 0.7 background process sharing the
database cannot send it a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection

from coal_mine.models import NewNotification, Notification
from coal_mine.mongo_docs import doc_to_canary, event_doc
from coal_mine.mongo_retry import Retrier, result_count
from coal_mine.notification_payload import new_notification

log = logging.getLogger("coal_mine.mongo_store")

_ADOPT_BATCH = 25


def legacy_notification(doc: Mapping[str, Any]) -> NewNotification:
    """The message a Coal Mine `notify: true` document stands for.

    Kind follows the document's state, as Coal Mine decides it when it sends. Its
    time is when the state changed: the deadline for a late canary, else the
    newest history entry.
    """
    canary = doc_to_canary(doc, history=True)
    history = canary.history or []
    newest = history[0][0] if history else datetime(1970, 1, 1, tzinfo=UTC)
    kind = "late" if canary.late else "resumed"
    when = canary.deadline if canary.late and canary.deadline else newest
    return new_notification(kind, canary, when, canary.deadline, history)


def adopt_legacy(canaries: Collection[Any], retrier: Retrier, canary_id: str | None = None) -> bool:
    """Turn `notify: true` flags into events in their canaries; True if one was adopted."""
    query: dict[str, Any] = {"notify": True}
    if canary_id is not None:
        query["id"] = canary_id
    docs = retrier.read(
        "find",
        lambda: list(canaries.find(query, {"_id": 0, "notifications": 0}, limit=_ADOPT_BATCH)),
    )
    adopted = False
    for doc in docs:
        new = legacy_notification(doc)
        ops: dict[str, Any] = {"$set": {"notify": False}}
        if doc.get("emails"):
            ops["$push"] = {"notifications": event_doc(new)}
        else:
            log.info("Canary %s has no email addresses: no %s message to send", doc["id"], new.kind)
        guard = {
            "id": doc["id"],
            "notify": True,
            "late": doc.get("late", False),
            "paused": doc.get("paused", False),
            "deadline": doc.get("deadline"),
        }
        result = retrier.read("update", partial(canaries.update_one, guard, ops))
        adopted = adopted or result_count(result, "matched_count") == 1
    return adopted


def legacy_count(canaries: Collection[Any]) -> int:
    """How many deliveries legacy_pending() lists (one per address)."""
    flagged = canaries.find({"notify": True, "emails.0": {"$exists": True}}, {"_id": 0, "emails": 1})
    return sum(len(set(doc.get("emails") or [])) for doc in flagged)


def legacy_pending(canaries: Collection[Any], canary_id: str | None = None) -> list[Notification]:
    """The deliveries Coal Mine flags stand for, not yet adopted: one per address
    (id "notify:<canary id>/<n>")."""
    query: dict[str, Any] = {"notify": True}
    if canary_id is not None:
        query["id"] = canary_id
    found = []
    for doc in canaries.find(query, {"_id": 0, "notifications": 0}):
        new = legacy_notification(doc)
        for number, (channel, target) in enumerate(new.targets):
            found.append(
                Notification(
                    id=f"notify:{doc['id']}/{number}",
                    canary_id=doc["id"],
                    kind=new.kind,
                    created=new.created,
                    payload=new.payload,
                    not_before=new.created,
                    event=f"notify:{doc['id']}",
                    channel=channel,
                    target=target,
                )
            )
    return found


def migrate_old_layout(canaries: Collection[Any], outbox: Collection[Any], retrier: Retrier) -> None:
    """Settle copies an older version of this store staged while deleting a canary.

    That version copied a canary's messages to this collection marked `staged`,
    deleted the canary, then unmarked them; a process that died in between left
    them marked. If the canary still exists its delete failed, and the canary's own
    events are the real ones (moved here by their ids): the copies go. If it is
    gone, the copies are all that is left of its messages: they are released.
    """
    for canary_id in retrier.read("migrate", lambda: outbox.distinct("canary_id", {"staged": True})):
        exists = retrier.read("migrate", partial(canaries.find_one, {"id": canary_id}, {"_id": 1}))
        staged = {"canary_id": canary_id, "staged": True}
        if exists is not None:
            retrier.read("migrate", partial(outbox.delete_many, staged))
        else:
            retrier.read("migrate", partial(outbox.update_many, staged, {"$unset": {"staged": ""}}))
