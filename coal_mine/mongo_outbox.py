"""The MongoDB notification outbox: events move from canary documents to the
`notifications` collection, where they are leased, retried and completed.

Why two places: a state change and its event must be one atomic write, and
without transactions that means one document, the canary's. But the canary
document must stay small and readable by Coal Mine 0.7.1, so each event is moved
out right after the write that recorded it (and by every claim's sweep, should
the writer die first):

1. upsert it into the outbox by its id, with `$setOnInsert` only (idempotent:
   a second mover, or a mover that re-reads a stale copy, changes nothing);
2. only then `$pull` it from the canary.

A crash between 1 and 2 leaves the event in both places; it is never lost, and
the next move finishes the job. A delivered event stays in the outbox as a
tombstone (`done`, payload dropped) for TOMBSTONE_DAYS, so that a stale copy
moved late cannot bring it back and have it sent twice.

Leases are plain fields of outbox documents, compared with
`{"$not": {"$gt": now}}` (missing, null or past): no filter compares a
positional path with null, which a server and mongomock answer differently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import suppress
from functools import partial
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from coal_mine.clock import Clock, utc
from coal_mine.models import Notification
from coal_mine.mongo_docs import utc_time
from coal_mine.mongo_legacy import adopt_legacy, legacy_count, legacy_pending
from coal_mine.mongo_retry import Retrier

log = logging.getLogger("coal_mine.mongo_store")

TOMBSTONE_DAYS = 7
_SWEEP_BATCH = 25
_PENDING = {"done": {"$exists": False}}
# Sort order of the outbox: the order events were recorded in (see abstract_store).
RECORDED_ORDER = [("created", ASCENDING), ("_id", ASCENDING)]


def _lease_free(now: datetime) -> dict[str, Any]:
    return {"lease_until": {"$not": {"$gt": now}}}


def _outbox_doc(canary_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The outbox form of an event (also of one left by an older version of this
    store, which kept datetimes, attempts and not_before in the canary)."""
    created = utc_time(event["created"])
    not_before = event.get("not_before")
    return {
        "canary_id": canary_id,
        "kind": event["kind"],
        "created": created,
        "payload": dict(event["payload"]),
        "attempts": int(event.get("attempts") or 0),
        "not_before": utc_time(not_before) if not_before else created,
    }


def _notification(doc: Mapping[str, Any]) -> Notification:
    return Notification(
        id=doc["_id"],
        canary_id=doc["canary_id"],
        kind=doc["kind"],
        created=utc_time(doc["created"]),
        payload=dict(doc["payload"]),
        attempts=int(doc.get("attempts") or 0),
        not_before=utc_time(doc["not_before"]),
    )


class MongoOutbox:
    """The outbox operations of MongoStore."""

    def __init__(self, canaries: Collection[Any], outbox: Collection[Any], retrier: Retrier, clock: Clock):
        self.canaries = canaries
        self.outbox = outbox
        self.retrier = retrier
        self.clock = clock

    # --- moving events out of canary documents ------------------------------------------

    def move(self, canary_id: str) -> bool:
        """Move the events waiting in one canary to the outbox; True if there were any."""
        doc = self.retrier.read(
            "find", lambda: self.canaries.find_one({"id": canary_id}, {"_id": 0, "id": 1, "notifications": 1})
        )
        return bool(doc and self._move_doc(doc))

    def _move_doc(self, doc: Mapping[str, Any]) -> bool:
        events = doc.get("notifications") or []
        if not events:
            return False
        for event in events:  # in order, so the outbox receives a canary's events in order
            self.retrier.read("move", partial(self._upsert, doc["id"], event))
        nids = [event["nid"] for event in events]
        pull = {"$pull": {"notifications": {"nid": {"$in": nids}}}}
        self.retrier.read("move", lambda: self.canaries.update_one({"id": doc["id"]}, pull))
        # Leave no empty array behind; a concurrent $push recreates the field anyway.
        self.retrier.read(
            "move",
            lambda: self.canaries.update_one(
                {"id": doc["id"], "notifications": {"$size": 0}}, {"$unset": {"notifications": ""}}
            ),
        )
        return True

    def _upsert(self, canary_id: str, event: Mapping[str, Any]) -> None:
        # DuplicateKeyError: a concurrent mover inserted it first; the same event, already there.
        with suppress(DuplicateKeyError):
            self.outbox.update_one(
                {"_id": event["nid"]}, {"$setOnInsert": _outbox_doc(canary_id, event)}, upsert=True
            )

    def sweep(self) -> None:
        """Move every event still waiting in a canary document (a writer died first)."""
        adopt_legacy(self.canaries, self.retrier)
        docs = self.retrier.read(
            "find",
            lambda: list(
                self.canaries.find(
                    {"notifications.nid": {"$exists": True}},
                    {"_id": 0, "id": 1, "notifications": 1},
                    limit=_SWEEP_BATCH,
                )
            ),
        )
        for doc in docs:
            self._move_doc(doc)

    def holds(self, nid: str) -> bool:
        """Whether the outbox has this event (pending or delivered)."""
        return self.outbox.find_one({"_id": nid}, {"_id": 1}) is not None

    # --- sending ---------------------------------------------------------------------------

    def _heads(self) -> Iterator[Mapping[str, Any]]:
        """Each canary's oldest pending event, in recorded order (payload not loaded)."""
        seen: set[str] = set()
        for doc in self.outbox.find(_PENDING, {"payload": 0}, sort=RECORDED_ORDER):
            if doc["canary_id"] not in seen:
                seen.add(doc["canary_id"])
                yield doc

    def claim(self, now: datetime, owner: str, lease_until: datetime) -> Notification | None:
        """Lease the first sendable head in recorded order (see AbstractStore.claim_notification)."""
        self.sweep()
        for _ in range(5):
            heads = self.retrier.read("find", lambda: list(self._heads()))
            candidates = [
                h
                for h in heads
                if utc_time(h["not_before"]) <= now and (utc(h.get("lease_until")) or now) <= now
            ]
            if not candidates:
                return None
            for head in candidates:
                claimed = self.retrier.read(
                    "claim",
                    partial(
                        self.outbox.find_one_and_update,
                        {"_id": head["_id"], **_PENDING, "not_before": {"$lte": now}, **_lease_free(now)},
                        {"$set": {"lease_owner": owner, "lease_until": lease_until}},
                        return_document=ReturnDocument.BEFORE,
                    ),
                )
                if claimed is not None:
                    return _notification(claimed)
            # Every candidate was taken by another claimer meanwhile: look again.
        return None

    def complete(self, notification: Notification, owner: str) -> None:
        """Mark delivered: a tombstone without payload, removed by a TTL index later."""
        done = {
            "$set": {"done": True, "done_at": self.clock.now()},
            "$unset": {"payload": "", "lease_owner": "", "lease_until": ""},
        }
        self.retrier.read(
            "complete",
            lambda: self.outbox.update_one({"_id": notification.id, **_PENDING, "lease_owner": owner}, done),
        )

    def retry(self, notification: Notification, owner: str, not_before: datetime) -> None:
        """Release the lease, count the attempt, wait until `not_before`."""
        ops = {
            "$inc": {"attempts": 1},
            "$set": {"not_before": not_before},
            "$unset": {"lease_owner": "", "lease_until": ""},
        }
        self.retrier.read(
            "retry",
            lambda: self.outbox.update_one({"_id": notification.id, **_PENDING, "lease_owner": owner}, ops),
        )

    def _waiting_in_canaries(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for doc in self.canaries.find(
            {"notifications.nid": {"$exists": True}}, {"_id": 0, "id": 1, "notifications": 1}
        ):
            for event in doc["notifications"]:
                yield doc["id"], event

    def next_time(self) -> datetime | None:
        """When the earliest head may be tried; events not yet moved are due at once."""

        def scan() -> datetime | None:
            times = []
            for head in self._heads():
                lease = utc(head.get("lease_until"))
                not_before = utc_time(head["not_before"])
                times.append(max(not_before, lease) if lease else not_before)
            times += [utc_time(event["created"]) for _, event in self._waiting_in_canaries()]
            times += [n.created for n in legacy_pending(self.canaries)]
            return min(times, default=None)

        return self.retrier.read("find", scan)

    def pending(self) -> list[Notification]:
        """The outbox's pending events, those still in canaries, and Coal Mine's notify flags."""

        def scan() -> list[Notification]:
            found = {doc["_id"]: _notification(doc) for doc in self.outbox.find(_PENDING)}
            for canary_id, event in self._waiting_in_canaries():
                if event["nid"] not in found and not self.holds(event["nid"]):
                    found[event["nid"]] = _notification(
                        {"_id": event["nid"], **_outbox_doc(canary_id, event)}
                    )
            notes = list(found.values()) + legacy_pending(self.canaries)
            return sorted(notes, key=lambda n: (n.created, str(n.id)))

        return self.retrier.read("find", scan)

    def count(self) -> int:
        """As many as pending() lists, counted by the server (events not yet moved out of
        their canary are rare and few: they are looked at one by one)."""

        def scan() -> int:
            total = self.outbox.count_documents(_PENDING)
            total += sum(1 for _, event in self._waiting_in_canaries() if not self.holds(event["nid"]))
            return total + legacy_count(self.canaries)

        return self.retrier.read("count", scan)

    def indexes(self) -> list[tuple[Collection[Any], list[tuple[str, int]], dict[str, Any]]]:
        """The indexes the outbox's queries use."""
        return [
            (self.canaries, [("notifications.nid", ASCENDING)], {"sparse": True}),  # sweep
            (self.outbox, [("done", ASCENDING), ("created", ASCENDING), ("_id", ASCENDING)], {}),  # heads
            (self.outbox, [("done_at", ASCENDING)], {"expireAfterSeconds": TOMBSTONE_DAYS * 86400}),
        ]
