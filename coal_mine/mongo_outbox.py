"""The MongoDB notification outbox: events move from canary documents to the
`notifications` collection, where they are leased, retried and completed.

Why two places: a state change and its event must be one atomic write, and
without transactions that means one document, the canary's. But the canary
document must stay small and readable by Coal Mine 0.7.1, so each event is moved
out right after the write that recorded it (and by every claim's sweep, should
the writer die first):

1. upsert it into the outbox as one document per target (`<event id>/<n>`), with
   `$setOnInsert` only (idempotent: a second mover, or a mover that re-reads a
   stale copy, changes nothing);
2. only then `$pull` it from the canary.

Each outbox document is one event for one target, with its own attempts, backoff,
lease and last error; only the oldest pending one of a (canary, channel, target)
may be sent. The last outcome per target is kept in `target_status`.

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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from functools import partial
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from coal_mine.clock import Clock, utc
from coal_mine.models import Notification, TargetStatus
from coal_mine.mongo_docs import utc_time
from coal_mine.mongo_legacy import adopt_legacy, legacy_count, legacy_pending
from coal_mine.mongo_retry import Retrier, result_count

log = logging.getLogger("coal_mine.mongo_store")

TOMBSTONE_DAYS = 7
_SWEEP_BATCH = 25
_PENDING = {"done": {"$exists": False}}
# Sort order of the outbox: the order events were recorded in (see abstract_store).
RECORDED_ORDER = [("created", ASCENDING), ("_id", ASCENDING)]


def _lease_free(now: datetime) -> dict[str, Any]:
    return {"lease_until": {"$not": {"$gt": now}}}


def event_targets(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An event's targets; an event recorded before targets existed goes to its emails."""
    if "targets" in event:
        return [(str(channel), str(target)) for channel, target in event["targets"]]
    emails = (event.get("payload") or {}).get("emails") or []
    return [("email", str(address)) for address in emails]


def _outbox_docs(canary_id: str, event: Mapping[str, Any], nid: str) -> list[dict[str, Any]]:
    """The outbox documents of an event, one per target (also of an event left by an
    older version of this store, which kept datetimes, attempts and not_before)."""
    created = utc_time(event["created"])
    not_before = event.get("not_before")
    return [
        {
            "_id": f"{nid}/{number}",
            "event": nid,
            "canary_id": canary_id,
            "kind": event["kind"],
            "created": created,
            "payload": dict(event["payload"]),
            "channel": channel,
            "target": target,
            "attempts": int(event.get("attempts") or 0),
            "not_before": utc_time(not_before) if not_before else created,
        }
        for number, (channel, target) in enumerate(event_targets(event))
    ]


def _notification(doc: Mapping[str, Any]) -> Notification:
    return Notification(
        id=doc["_id"],
        canary_id=doc["canary_id"],
        kind=doc["kind"],
        created=utc_time(doc["created"]),
        payload=dict(doc["payload"]),
        attempts=int(doc.get("attempts") or 0),
        not_before=utc_time(doc["not_before"]),
        event=doc.get("event", doc["_id"]),
        channel=doc.get("channel", "email"),
        target=doc.get("target", ""),
        last_error=doc.get("last_error"),
        permanent=bool(doc.get("permanent")),
    )


class MongoOutbox:
    """The outbox operations of MongoStore."""

    def __init__(
        self,
        canaries: Collection[Any],
        outbox: Collection[Any],
        retrier: Retrier,
        clock: Clock,
        statuses: Collection[Any] | None = None,
    ):
        self.canaries = canaries
        self.outbox = outbox
        self.retrier = retrier
        self.clock = clock
        self.statuses = statuses if statuses is not None else outbox.database["target_status"]

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
            for outbox_doc in _outbox_docs(doc["id"], event, event["nid"]):
                self.retrier.read("move", partial(self._upsert, outbox_doc))
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

    def _upsert(self, outbox_doc: Mapping[str, Any]) -> None:
        # DuplicateKeyError: a concurrent mover inserted it first; the same entry, already there.
        fields = {key: value for key, value in outbox_doc.items() if key != "_id"}
        with suppress(DuplicateKeyError):
            self.outbox.update_one({"_id": outbox_doc["_id"]}, {"$setOnInsert": fields}, upsert=True)

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
        return (
            self.outbox.find_one({"event": nid}, {"_id": 1}) is not None
            or self.outbox.find_one({"_id": nid}, {"_id": 1}) is not None  # moved before targets existed
        )

    # --- sending ---------------------------------------------------------------------------

    def _heads(self, channel: str | None = None, canary_id: str | None = None) -> Iterator[Mapping[str, Any]]:
        """Each target's oldest pending entry, in recorded order (payload not loaded)."""
        query: dict[str, Any] = dict(_PENDING)
        if channel is not None:
            query["channel"] = channel
        if canary_id is not None:
            query["canary_id"] = canary_id
        seen: set[tuple[str, str, str]] = set()
        for doc in self.outbox.find(query, {"payload": 0}, sort=RECORDED_ORDER):
            key = (doc["canary_id"], doc.get("channel", "email"), doc.get("target", ""))
            if key not in seen:
                seen.add(key)
                yield doc

    def claim(
        self, now: datetime, owner: str, lease_until: datetime, channel: str, group: bool = False
    ) -> list[Notification]:
        """Lease the first sendable head of `channel` in recorded order, with `group` also
        the other sendable heads of its event (see AbstractStore.claim_notifications)."""
        self.sweep()
        for _ in range(5):
            heads = self.retrier.read("find", lambda: list(self._heads(channel)))
            candidates = [
                h
                for h in heads
                if utc_time(h["not_before"]) <= now and (utc(h.get("lease_until")) or now) <= now
            ]
            if not candidates:
                return []
            for head in candidates:
                first = self._lease(head, now, owner, lease_until)
                if first is None:
                    continue
                claimed = [first]
                if group:
                    for other in candidates:
                        if other["_id"] != head["_id"] and other.get("event") == head.get("event"):
                            sibling = self._lease(other, now, owner, lease_until)
                            if sibling is not None:
                                claimed.append(sibling)
                return claimed
            # Every candidate was taken by another claimer meanwhile: look again.
        return []

    def _lease(
        self, head: Mapping[str, Any], now: datetime, owner: str, lease_until: datetime
    ) -> Notification | None:
        doc = self.retrier.read(
            "claim",
            partial(
                self.outbox.find_one_and_update,
                {"_id": head["_id"], **_PENDING, "not_before": {"$lte": now}, **_lease_free(now)},
                {"$set": {"lease_owner": owner, "lease_until": lease_until}},
                return_document=ReturnDocument.BEFORE,
            ),
        )
        return None if doc is None else _notification(doc)

    def extend(self, notifications: Iterable[Notification], owner: str, lease_until: datetime) -> bool:
        """Move the lease of entries `owner` holds; False if one was lost."""
        ids = [note.id for note in notifications]
        result = self.retrier.read(
            "lease",
            lambda: self.outbox.update_many(
                {"_id": {"$in": ids}, **_PENDING, "lease_owner": owner},
                {"$set": {"lease_until": lease_until}},
            ),
        )
        return result_count(result, "matched_count") == len(ids)

    def _status(self, note: Notification, fields: Mapping[str, Any]) -> None:
        key = {"canary_id": note.canary_id, "channel": note.channel, "target": note.target}
        self.retrier.read(
            "status", lambda: self.statuses.update_one(key, {"$set": dict(fields)}, upsert=True)
        )

    def complete(self, notifications: Iterable[Notification], owner: str, now: datetime) -> None:
        """Mark delivered: a tombstone without payload, removed by a TTL index later."""
        done = {
            "$set": {"done": True, "done_at": self.clock.now()},
            "$unset": {"payload": "", "lease_owner": "", "lease_until": ""},
        }
        for note in notifications:
            result = self.retrier.read(
                "complete",
                partial(self.outbox.update_one, {"_id": note.id, **_PENDING, "lease_owner": owner}, done),
            )
            if result_count(result, "matched_count") == 1:
                self._status(note, {"last_success": now})

    def retry(
        self,
        notification: Notification,
        owner: str,
        not_before: datetime,
        error: str = "",
        permanent: bool = False,
        now: datetime | None = None,
    ) -> None:
        """Release the lease, count the attempt, wait until `not_before`; record the error."""
        sets: dict[str, Any] = {"not_before": not_before}
        if error:
            sets.update(last_error=error, permanent=permanent)
        ops = {"$inc": {"attempts": 1}, "$set": sets, "$unset": {"lease_owner": "", "lease_until": ""}}
        result = self.retrier.read(
            "retry",
            lambda: self.outbox.update_one({"_id": notification.id, **_PENDING, "lease_owner": owner}, ops),
        )
        if error and result_count(result, "matched_count") == 1:
            self._status(notification, {"last_error": error, "last_error_at": now or not_before})

    def withdraw(
        self, canary_id: str, targets: Iterable[tuple[str, str]] | None, permanent_only: bool
    ) -> list[Notification]:
        """Turn pending entries of a canary into tombstones; what was withdrawn."""
        self.move(canary_id)
        wanted = None if targets is None else set(targets)
        query: dict[str, Any] = {"canary_id": canary_id, **_PENDING}
        if permanent_only:
            query["permanent"] = True
        found = self.retrier.read("find", lambda: list(self.outbox.find(query, sort=RECORDED_ORDER)))
        gone = []
        for doc in found:
            note = _notification(doc)
            if wanted is not None and (note.channel, note.target) not in wanted:
                continue
            if self._retire(note.id):
                gone.append(note)
        return gone

    def _retire(self, entry_id: Any) -> bool:
        done = {
            "$set": {"done": True, "withdrawn": True, "done_at": self.clock.now()},
            "$unset": {"payload": "", "lease_owner": "", "lease_until": ""},
        }
        result = self.retrier.read(
            "withdraw", partial(self.outbox.update_one, {"_id": entry_id, **_PENDING}, done)
        )
        return result_count(result, "matched_count") == 1

    def drop(self, entry_id: str) -> Notification | None:
        """Withdraw one pending entry by id."""
        doc = self.retrier.read("find", lambda: self.outbox.find_one({"_id": entry_id, **_PENDING}))
        if doc is None or not self._retire(entry_id):
            return None
        return _notification(doc)

    def target_statuses(self, canary_id: str) -> list[TargetStatus]:
        docs = self.retrier.read(
            "find",
            lambda: list(self.statuses.find({"canary_id": canary_id}, sort=[("channel", 1), ("target", 1)])),
        )
        return [
            TargetStatus(
                doc["channel"],
                doc["target"],
                utc(doc.get("last_success")),
                doc.get("last_error"),
                utc(doc.get("last_error_at")),
            )
            for doc in docs
        ]

    def forget_statuses(self, canary_id: str) -> None:
        self.retrier.read("delete", lambda: self.statuses.delete_many({"canary_id": canary_id}))

    def _waiting_in_canaries(self, canary_id: str | None = None) -> Iterator[tuple[str, Mapping[str, Any]]]:
        query: dict[str, Any] = {"notifications.nid": {"$exists": True}}
        if canary_id is not None:
            query["id"] = canary_id
        for doc in self.canaries.find(query, {"_id": 0, "id": 1, "notifications": 1}):
            for event in doc["notifications"]:
                yield doc["id"], event

    def next_time(self, channel: str | None = None) -> datetime | None:
        """When the earliest head may be tried; events not yet moved are due at once."""

        def scan() -> datetime | None:
            times = []
            for head in self._heads(channel):
                lease = utc(head.get("lease_until"))
                not_before = utc_time(head["not_before"])
                times.append(max(not_before, lease) if lease else not_before)
            times += [utc_time(event["created"]) for _, event in self._waiting_in_canaries()]
            times += [n.created for n in legacy_pending(self.canaries)]
            return min(times, default=None)

        return self.retrier.read("find", scan)

    def pending(self, canary_id: str | None = None) -> list[Notification]:
        """The outbox's pending entries, those of events still in canaries, and those of
        Coal Mine's notify flags (of one canary, or all)."""

        def scan() -> list[Notification]:
            query = {**_PENDING, **({"canary_id": canary_id} if canary_id is not None else {})}
            found = {doc["_id"]: _notification(doc) for doc in self.outbox.find(query)}
            for owner, event in self._waiting_in_canaries(canary_id):
                if not self.holds(event["nid"]):
                    for doc in _outbox_docs(owner, event, event["nid"]):
                        found[doc["_id"]] = _notification(doc)
            notes = list(found.values()) + legacy_pending(self.canaries, canary_id)
            return sorted(notes, key=lambda n: (n.created, str(n.id)))

        return self.retrier.read("find", scan)

    def count(self) -> int:
        """As many as pending() lists, counted by the server (events not yet moved out of
        their canary are rare and few: they are looked at one by one)."""

        def scan() -> int:
            total = self.outbox.count_documents(_PENDING)
            total += sum(
                len(event_targets(event))
                for _, event in self._waiting_in_canaries()
                if not self.holds(event["nid"])
            )
            return total + legacy_count(self.canaries)

        return self.retrier.read("count", scan)

    def split_old_entries(self) -> None:
        """Split pending entries an older version of this store moved out whole (one per
        event, for all its emails) into one entry per recipient, then retire them."""
        old = self.retrier.read(
            "migrate", lambda: list(self.outbox.find({**_PENDING, "channel": {"$exists": False}}))
        )
        for doc in old:
            event = {**doc, "created": doc["created"], "payload": doc.get("payload") or {}}
            for outbox_doc in _outbox_docs(doc["canary_id"], event, str(doc["_id"])):
                self.retrier.read("migrate", partial(self._upsert, outbox_doc))
            self._retire(doc["_id"])

    def indexes(self) -> list[tuple[Collection[Any], list[tuple[str, int]], dict[str, Any]]]:
        """The indexes the outbox's queries use."""
        return [
            (self.canaries, [("notifications.nid", ASCENDING)], {"sparse": True}),  # sweep
            (self.outbox, [("done", ASCENDING), ("created", ASCENDING), ("_id", ASCENDING)], {}),  # heads
            (self.outbox, [("event", ASCENDING)], {"sparse": True}),  # holds
            (self.outbox, [("canary_id", ASCENDING), ("done", ASCENDING)], {}),  # a canary's entries
            (
                self.statuses,
                [("canary_id", ASCENDING), ("channel", ASCENDING), ("target", ASCENDING)],
                {"unique": True},
            ),
            (self.outbox, [("done_at", ASCENDING)], {"expireAfterSeconds": TOMBSTONE_DAYS * 86400}),
        ]
