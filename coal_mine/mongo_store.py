"""MongoDB store: reads and writes Coal Mine 0.7's `canaries` collection as it is.

Layout (Coal Mine's, unchanged): one document per canary with id, name, slug,
periodicity (a double or the schedule string), description, emails, paused,
history ([date, comment] arrays, newest first), late and deadline (absent while
paused); unique indexes on id and slug. A Coal Mine `--web` process leaves
`notify: true` on a canary whose message it could not send; we pick those up.

Fields we add (Coal Mine 0.7 ignores them):
- `notifications`: this canary's pending messages, oldest first, each
  {nid, kind, created, payload, attempts, not_before, lease_owner, lease_until}.
  A state change and its message are one single-document write, and only the
  first element is ever sent, so one canary's messages go out in order.
- a `notifications` side collection holding the pending messages of deleted
  canaries (documents {_id: nid, canary_id, kind, ...}).

Every write is one atomic single-document operation whose filter carries the
caller's expectations, so several web and background processes can share the
database without read-modify-write races.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from bson import ObjectId
from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidName,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from coal_mine.abstract_store import CANARY_FIELDS, AbstractStore
from coal_mine.models import (
    AlreadyExistsError,
    Canary,
    HistoryEntry,
    NewNotification,
    Notification,
    PrunePolicy,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Pauses between attempts when the server is unreachable or stepping down: about
# 3 s in all, longer than a typical replica-set election's unavailability window
# as seen by a client that already waits serverSelectionTimeoutMS per attempt.
DEFAULT_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
# Server-side errors that mean "not primary right now"; pymongo raises most of
# them as NotPrimaryError (an AutoReconnect), but not every path does.
_STEP_DOWN_CODES = frozenset({91, 189, 10107, 11600, 11602, 13435, 13436})
# Unless configured otherwise: fail a request after 5 s without a primary
# instead of pymongo's 30 s, so an outage is a prompt 503 rather than a hang.
DEFAULT_CLIENT_OPTIONS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000}
NOTIFICATION_HISTORY_ENTRIES = 15  # as business_logic: entries in a legacy notify payload
_CLAIM_BATCH = 25
_DELETE_ATTEMPTS = 20
_APPLIED = object()


def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC, whatever tz setting the client was built with."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ServerSelectionTimeoutError):
        return False  # already waited serverSelectionTimeoutMS for a server
    if isinstance(exc, AutoReconnect):
        return True  # includes NotPrimaryError and NetworkTimeout
    return isinstance(exc, OperationFailure) and exc.code in _STEP_DOWN_CODES


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionFailure) or _retryable(exc)


def _field_value(name: str, value: Any) -> Any:
    if name == "emails":
        return list(value)
    if name == "periodicity" and not isinstance(value, str):
        return float(value)  # Coal Mine stores numeric periodicities as doubles
    if name in ("paused", "late"):
        return bool(value)
    return value


def _doc_to_canary(doc: Mapping[str, Any], history: bool) -> Canary:
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
        deadline=_utc(doc.get("deadline")),
        history=[(_utc(ts), comment) for ts, comment in doc.get("history") or []] if history else None,
    )


def _canary_to_doc(canary: Canary) -> dict[str, Any]:
    """Coal Mine's field order; no deadline key while there is none."""
    doc: dict[str, Any] = {
        "id": canary.id,
        "name": canary.name,
        "slug": canary.slug,
        "periodicity": _field_value("periodicity", canary.periodicity),
        "description": canary.description or "",
        "emails": list(canary.emails),
        "paused": bool(canary.paused),
        "history": [[ts, comment] for ts, comment in canary.history or []],
        "late": bool(canary.late),
    }
    if canary.deadline is not None:
        doc["deadline"] = canary.deadline
    return doc


def _note_doc(new: NewNotification) -> dict[str, Any]:
    return {
        # An ObjectId's text: grows with time (and within a process, with every id),
        # so it orders notifications created in the same millisecond; a string so
        # that Coal Mine's JSON output of the document still works.
        "nid": str(ObjectId()),
        "kind": new.kind,
        "created": new.created,
        "payload": dict(new.payload),
        "attempts": 0,
        "not_before": new.created,
        "lease_owner": None,
        "lease_until": None,
    }


def _note_from_doc(canary_id: str, note: Mapping[str, Any], nid_key: str = "nid") -> Notification:
    return Notification(
        id=note[nid_key],
        canary_id=canary_id,
        kind=note["kind"],
        created=_utc(note["created"]),
        payload=dict(note["payload"]),
        attempts=int(note.get("attempts") or 0),
        not_before=_utc(note["not_before"]),
    )


def _lease_free(now: datetime, prefix: str = "") -> dict[str, Any]:
    return {"$or": [{f"{prefix}lease_until": None}, {f"{prefix}lease_until": {"$lte": now}}]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def legacy_notification(doc: Mapping[str, Any]) -> NewNotification:
    """The message a Coal Mine `notify: true` document stands for.

    Kind follows the document's state, as Coal Mine decides it when it sends.
    The payload has the keys of business_logic's notifications; its time is
    when the state changed: the deadline for a late canary, else the newest
    history entry.
    """
    canary = _doc_to_canary(doc, history=True)
    history = canary.history or []
    newest = history[0][0] if history else datetime(1970, 1, 1, tzinfo=UTC)
    kind = "late" if canary.late else "resumed"
    when = canary.deadline if canary.late and canary.deadline else newest
    payload = {
        "id": canary.id,
        "name": canary.name,
        "emails": list(canary.emails),
        "when": _iso(when),
        "deadline": _iso(canary.deadline),
        "history": [[_iso(ts), comment] for ts, comment in history[:NOTIFICATION_HISTORY_ENTRIES]],
    }
    return NewNotification(kind=kind, created=when, payload=payload)


class MongoSettingsError(ValueError):
    """A malformed MongoDB setting; `setting` is "hosts", "database", an option key, or None."""

    def __init__(self, setting: str | None, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class MongoStore(AbstractStore):
    """Canaries in a MongoDB database (pymongo), shared safely by many processes.

    `database` is a pymongo (or compatible) Database. Calls that fail because no
    primary is reachable are retried after each of `retry_delays`; then they
    raise StoreUnavailableError. A write whose outcome is unknown (the
    connection dropped after sending) is checked before it is sent again.
    """

    def __init__(
        self,
        database: Any,
        *,
        client: Any = None,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = database
        self.canaries = database["canaries"]
        self.side = database["notifications"]
        self._client = client
        self._retry_delays = tuple(retry_delays)
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls,
        hosts: str,
        database: str | None = None,
        username: str | None = None,
        password: str | None = None,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> MongoStore:
        """Build the client, which connects lazily (on first use), so this is fast.

        Raises MongoSettingsError naming the bad setting: "hosts", "database" or
        an option's key.
        """
        options = dict(options or {})
        target: str | list[str] = hosts if "://" in hosts else [h.strip() for h in hosts.split(",")]
        fixed = {"tz_aware": True, "tzinfo": UTC, "connect": False}
        try:
            MongoClient(target, **fixed).close()
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise MongoSettingsError("hosts", str(exc)) from None
        for key, value in options.items():
            try:
                MongoClient(target, **{key: value}, **fixed).close()
            except (ConfigurationError, ValueError, TypeError) as exc:
                raise MongoSettingsError(key, str(exc).split(" Refer to docstring")[0]) from None
        given = {key.lower() for key in options}
        if "://" in hosts and "?" in hosts:  # options in the URI count as given too
            given |= {key.lower() for key, _ in parse_qsl(hosts.split("?", 1)[1])}
        client_options = {k: v for k, v in DEFAULT_CLIENT_OPTIONS.items() if k.lower() not in given}
        client_options.update(options)
        if username:
            client_options.update(username=username, password=password)
        try:
            client = MongoClient(target, **client_options, **fixed)
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise MongoSettingsError(None, str(exc)) from None
        try:
            db = client[database] if database else client.get_default_database()
        except (ConfigurationError, InvalidName, ValueError) as exc:
            client.close()
            message = "no database given (name it in the URI, or set [mongodb] database)"
            raise MongoSettingsError("database", message if not database else str(exc)) from None
        return cls(db, client=client, **kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # --- retries ---------------------------------------------------------------------

    def _run(self, what: str, call: Callable[[], T], applied: Callable[[], bool] | None = None) -> T | Any:
        """Run one database call, retrying while the server is unreachable or stepping down.

        With `applied` (for writes that are not idempotent), after a failed attempt
        the next one first asks whether the write landed anyway; if so `_APPLIED`
        is returned instead of writing twice.
        """
        uncertain = False
        for attempt in range(len(self._retry_delays) + 1):
            try:
                if uncertain and applied is not None and applied():
                    return _APPLIED
                return call()
            except Exception as exc:  # classified below
                if not _unavailable(exc):
                    raise
                if not _retryable(exc) or attempt == len(self._retry_delays):
                    log.warning("MongoDB %s failed: %s", what, exc)
                    raise StoreUnavailableError(f"MongoDB is unavailable ({what}): {exc}") from exc
                log.info("MongoDB %s: %s; retrying", what, exc)
                uncertain = True
                self._sleep(self._retry_delays[attempt])
        raise AssertionError("unreachable")

    # --- indexes ----------------------------------------------------------------------

    def ensure_indexes(self) -> None:
        """The indexes our queries use; Coal Mine's names, so an existing database has most."""
        wanted = [
            (self.canaries, [("id", ASCENDING)], {"unique": True}),  # get, every write
            (self.canaries, [("slug", ASCENDING)], {"unique": True}),  # id_for_slug, unique slugs
            # due_canaries, earliest_deadline, list's paused filter
            (self.canaries, [("paused", ASCENDING), ("late", ASCENDING), ("deadline", ASCENDING)], {}),
            (self.canaries, [("notify", ASCENDING)], {}),  # Coal Mine's pending notifications
            (self.canaries, [("notifications.0.not_before", ASCENDING)], {"sparse": True}),  # claims
            (self.side, [("canary_id", ASCENDING), ("created", ASCENDING)], {}),
        ]
        for collection, keys, options in wanted:
            try:
                self._run("create_index", lambda c=collection, k=keys, o=options: c.create_index(k, **o))
            except OperationFailure as exc:
                # e.g. a non-unique id_1 left by Coal Mine 0.4.1-0.4.3: keep serving, say so.
                log.warning("Cannot create index %s on %s: %s", keys, collection.name, exc)

    # --- canaries ---------------------------------------------------------------------

    def create(self, canary: Canary) -> None:
        doc = _canary_to_doc(canary)
        doc = {"_id": ObjectId(), **doc}
        # Checked here too so that a database without the unique indexes (never
        # opened by a background process) still refuses plain duplicates.
        self._refuse_duplicates(canary.id, canary.slug)
        try:
            self._run(
                "insert",
                lambda: self.canaries.insert_one(doc),
                applied=lambda: self.canaries.find_one({"_id": doc["_id"]}, {"_id": 1}) is not None,
            )
        except DuplicateKeyError as exc:
            if self.canaries.find_one({"_id": doc["_id"]}, {"_id": 1}) is not None:
                return  # our own earlier attempt landed
            self._refuse_duplicates(canary.id, canary.slug)
            raise AlreadyExistsError("slug", canary.slug) from exc

    def _refuse_duplicates(self, cid: str, slug: str) -> None:
        if self._run("find", lambda: self.canaries.find_one({"id": cid}, {"_id": 1})) is not None:
            raise AlreadyExistsError("id", cid)
        if self._run("find", lambda: self.canaries.find_one({"slug": slug}, {"_id": 1})) is not None:
            raise AlreadyExistsError("slug", slug)

    @staticmethod
    def _projection(history: bool) -> dict[str, int]:
        projection = {"_id": 0, "notifications": 0}
        if not history:
            projection["history"] = 0
        return projection

    def get(self, canary_id: str, *, history: bool = True) -> Canary | None:
        doc = self._run("find", lambda: self.canaries.find_one({"id": canary_id}, self._projection(history)))
        return _doc_to_canary(doc, history) if doc else None

    def id_for_slug(self, slug: str) -> str | None:
        doc = self._run("find", lambda: self.canaries.find_one({"slug": slug}, {"_id": 0, "id": 1}))
        return doc["id"] if doc else None

    @staticmethod
    def _condition(name: str, value: Any) -> Any:
        if name not in CANARY_FIELDS:
            raise ValueError(f"unknown canary field {name}")
        if value is None:
            return None  # matches a missing field too
        if name in ("paused", "late") and not value:
            return {"$ne": True}  # a document without the flag counts as false
        return _field_value(name, value)

    def update(
        self,
        canary_id: str,
        changes: Mapping[str, Any],
        *,
        expect: Mapping[str, Any] | None = None,
        history: HistoryEntry | None = None,
        prune: PrunePolicy | None = None,
        notifications: Iterable[NewNotification] = (),
    ) -> bool:
        # A document still carrying Coal Mine's `notify: true` is never changed
        # before that message is moved into its `notifications` (see _adopt):
        # the message describes the state before this change.
        query: dict[str, Any] = {"id": canary_id, "notify": {"$ne": True}}
        for name, value in (expect or {}).items():
            query[name] = self._condition(name, value)
        sets: dict[str, Any] = {}
        unsets: dict[str, str] = {}
        for name, value in changes.items():
            if name not in CANARY_FIELDS:
                raise ValueError(f"unknown canary field {name}")
            if value is None:
                unsets[name] = ""
            else:
                sets[name] = _field_value(name, value)
        ops: dict[str, Any] = {}
        if sets:
            ops["$set"] = sets
        if unsets:
            ops["$unset"] = unsets
        pushes: dict[str, Any] = {}
        if history is not None:
            entry: dict[str, Any] = {"$each": [[history[0], history[1]]], "$position": 0}
            if prune is not None:
                entry["$slice"] = prune.max_entries  # the "more than max_entries" half of the rule
            pushes["history"] = entry
        notes = [_note_doc(new) for new in notifications]
        if notes:
            pushes["notifications"] = {"$each": notes}
        if pushes:
            ops["$push"] = pushes
        if "slug" in changes:
            clash = self._run(
                "find",
                lambda: self.canaries.find_one(
                    {"slug": changes["slug"], "id": {"$ne": canary_id}}, {"_id": 1}
                ),
            )
            if clash is not None:
                raise AlreadyExistsError("slug", changes["slug"])

        def applied() -> bool:
            doc = self.canaries.find_one(
                {"id": canary_id},
                {"history": {"$slice": 50}, "notifications": 1, **{name: 1 for name in changes}},
            )
            if doc is None:
                return False
            if notes:
                return any(n.get("nid") == notes[0]["nid"] for n in doc.get("notifications") or [])
            if history is not None:
                return any(_utc(ts) == history[0] and c == history[1] for ts, c in doc.get("history") or [])
            return all(doc.get(k) == v for k, v in sets.items()) and not any(k in doc for k in unsets)

        for _ in range(3):
            try:
                if ops:
                    result = self._run("update", lambda: self.canaries.update_one(query, ops), applied)
                    matched = result is _APPLIED or result.matched_count == 1
                else:
                    matched = self._run("find", lambda: self.canaries.find_one(query, {"_id": 1})) is not None
            except DuplicateKeyError as exc:
                raise AlreadyExistsError("slug", changes.get("slug", "")) from exc
            if matched:
                break
            if not self._adopt_legacy(canary_id):
                return False
        else:
            return False
        if history is not None and prune is not None:
            self._prune(canary_id, prune)
        return True

    def _prune(self, canary_id: str, policy: PrunePolicy) -> None:
        """Drop the oldest entries while there are more than min_entries and the oldest is too old.

        The max_entries half is done by the trigger's own `$push ... $slice`. This
        half cannot be a `$slice` (how many to drop depends on the entries' ages),
        and a pipeline update would have to rebuild the whole array in an
        expression. Instead: one `$pop` of the oldest entry at a time, each guarded
        by the rule itself in its filter, until the filter no longer matches. Each
        step is atomic, so concurrent writers can neither over- nor under-prune;
        if this process dies halfway, the next history write finishes the job.
        Cost: one extra (indexed, usually non-matching) update per history write.
        """
        history_size = {"$size": {"$ifNull": ["$history", []]}}
        oldest_time = {"$arrayElemAt": [{"$arrayElemAt": ["$history", -1]}, 0]}
        query = {
            "id": canary_id,
            "$expr": {
                "$and": [
                    {"$gt": [history_size, policy.min_entries]},
                    {"$lt": [oldest_time, policy.older_than]},
                ]
            },
        }
        for _ in range(policy.max_entries + 1):
            result = self._run("prune", lambda: self.canaries.update_one(query, {"$pop": {"history": 1}}))
            if result.modified_count == 0:
                return

    def delete(self, canary_id: str) -> bool:
        """Remove the canary; its pending notifications move to the side collection.

        Sequence: copy them there marked `staged` (not claimable), delete the
        canary only if its `notifications` are still exactly what was copied,
        then unmark them. A claimer can therefore never see the same message in
        both places. If this process dies after the delete and before the unmark,
        claim_notification unmarks staged copies whose canary is gone.
        """
        self._adopt_legacy(canary_id)  # a Coal Mine notify flag is a pending message too
        gone_after_uncertain_delete = False
        for _ in range(_DELETE_ATTEMPTS):
            doc = self._run(
                "find", lambda: self.canaries.find_one({"id": canary_id}, {"_id": 1, "notifications": 1})
            )
            if doc is None:
                return gone_after_uncertain_delete
            notes = doc.get("notifications") or []
            nids = [n["nid"] for n in notes]
            self._run("delete", lambda: self.side.delete_many({"canary_id": canary_id, "staged": True}))
            for note in notes:
                copy = {
                    "_id": note["nid"],
                    "canary_id": canary_id,
                    "staged": True,
                    **{k: v for k, v in note.items() if k != "nid"},
                }
                self._run("insert", lambda c=copy: self.side.replace_one({"_id": c["_id"]}, c, upsert=True))
            query: dict[str, Any] = {"_id": doc["_id"]}
            query["notifications"] = notes if notes else {"$in": [None, []]}

            def deleted(q: dict[str, Any] = query) -> bool:
                return self.canaries.find_one({"_id": q["_id"]}, {"_id": 1}) is None

            result = self._run("delete", lambda q=query: self.canaries.delete_one(q), deleted)
            if result is _APPLIED or result.deleted_count == 1:
                if nids:
                    self._run(
                        "update",
                        lambda n=nids: self.side.update_many({"_id": {"$in": n}}, {"$unset": {"staged": ""}}),
                    )
                return True
            gone_after_uncertain_delete = result is _APPLIED
            self._run("delete", lambda: self.side.delete_many({"canary_id": canary_id, "staged": True}))
        raise StoreUnavailableError("The canary's notifications keep changing; try the delete again")

    def iter_canaries(
        self, *, paused: bool | None = None, late: bool | None = None, history: bool = False
    ) -> Iterator[Canary]:
        query: dict[str, Any] = {}
        if paused is not None:
            query["paused"] = self._condition("paused", paused)
        if late is not None:
            query["late"] = self._condition("late", late)
        projection = self._projection(history)
        projection.pop("_id")
        last_id = None
        # In creation order (ObjectIds grow with time), streamed. After a dropped
        # connection the scan resumes after the last canary it yielded.
        for attempt in range(len(self._retry_delays) + 1):
            page = dict(query)
            if last_id is not None:
                page["_id"] = {"$gt": last_id}
            try:
                for doc in self.canaries.find(page, projection, sort=[("_id", ASCENDING)]):
                    last_id = doc["_id"]
                    yield _doc_to_canary(doc, history)
                return
            except Exception as exc:  # classified below
                if not _retryable(exc) or attempt == len(self._retry_delays):
                    if _unavailable(exc):
                        raise StoreUnavailableError(f"MongoDB is unavailable (list): {exc}") from exc
                    raise
                self._sleep(self._retry_delays[attempt])

    _WATCHED = {"paused": False, "late": False}

    def earliest_deadline(self) -> datetime | None:
        doc = self._run(
            "find",
            lambda: self.canaries.find_one(
                {**self._WATCHED, "deadline": {"$ne": None}},
                {"_id": 0, "deadline": 1},
                sort=[("deadline", ASCENDING)],
            ),
        )
        return _utc(doc["deadline"]) if doc else None

    def due_canaries(self, now: datetime, limit: int) -> list[Canary]:
        return self._run(
            "find",
            lambda: [
                _doc_to_canary(doc, False)
                for doc in self.canaries.find(
                    {**self._WATCHED, "deadline": {"$lt": now}},
                    self._projection(False),
                    sort=[("deadline", ASCENDING)],
                    limit=limit,
                )
            ],
        )

    # --- notification outbox -------------------------------------------------------------

    def _adopt_legacy(self, canary_id: str | None = None) -> bool:
        """Move Coal Mine `notify: true` flags into `notifications`; True if one was moved.

        One conditional write per document sets notify to false and records the
        message, guarded by the state the message was built from. The flag is
        cleared as the message enters our outbox (not when it is sent) so that a
        Coal Mine 0.7 background process sharing the database cannot send it a
        second time; from then on it is leased, retried and completed like any
        other notification.
        """
        query: dict[str, Any] = {"notify": True}
        if canary_id is not None:
            query["id"] = canary_id
        docs = self._run(
            "find",
            lambda: list(self.canaries.find(query, {"_id": 0, "notifications": 0}, limit=_CLAIM_BATCH)),
        )
        moved = False
        for doc in docs:
            new = legacy_notification(doc)
            ops: dict[str, Any] = {"$set": {"notify": False}}
            if doc.get("emails"):
                ops["$push"] = {"notifications": _note_doc(new)}
            else:
                log.info("Canary %s has no email addresses: no %s message to send", doc["id"], new.kind)
            guard = {
                "id": doc["id"],
                "notify": True,
                "late": doc.get("late", False),
                "paused": doc.get("paused", False),
                "deadline": doc.get("deadline"),
            }
            result = self._run("update", lambda g=guard, o=ops: self.canaries.update_one(g, o))
            moved = moved or result.matched_count == 1
        return moved

    def _candidates(self, now: datetime) -> list[tuple[Any, ...]]:
        """Sendable heads: (not_before, created, nid, canary_id, where), earliest first."""
        due = {"notifications.0.not_before": {"$lte": now}, **_lease_free(now, "notifications.0.")}
        found = []
        for doc in self.canaries.find(
            due,
            {"_id": 0, "id": 1, "notifications": {"$slice": 1}},
            sort=[("notifications.0.not_before", ASCENDING)],
            limit=_CLAIM_BATCH,
        ):
            head = doc["notifications"][0]
            found.append((_utc(head["not_before"]), _utc(head["created"]), head["nid"], doc["id"], "canary"))
        heads: dict[str, Mapping[str, Any]] = {}
        for note in self.side.find(
            {"staged": {"$exists": False}}, sort=[("created", ASCENDING), ("_id", ASCENDING)]
        ):
            heads.setdefault(note["canary_id"], note)
        for note in heads.values():
            lease_until = _utc(note.get("lease_until"))
            if _utc(note["not_before"]) <= now and (lease_until is None or lease_until <= now):
                found.append(
                    (_utc(note["not_before"]), _utc(note["created"]), note["_id"], note["canary_id"], "side")
                )
        return sorted(found, key=lambda c: c[:3])

    def _recover_staged(self) -> None:
        """Unmark side copies whose delete was interrupted after the canary went."""
        for canary_id in self.side.distinct("canary_id", {"staged": True}):
            if self.canaries.find_one({"id": canary_id}, {"_id": 1}) is None:
                self.side.update_many({"canary_id": canary_id, "staged": True}, {"$unset": {"staged": ""}})

    def claim_notification(self, now: datetime, owner: str, lease_until: datetime) -> Notification | None:
        self._adopt_legacy()
        self._run("recover", self._recover_staged)
        lease = {"lease_owner": owner, "lease_until": lease_until}
        # find_one_and_update returns the document as it matched (BEFORE): the lease
        # fields are the only ones the claim changes and Notification has none of
        # them (and mongomock returns nothing for AFTER once the filter stops matching).
        for _ in range(5):
            candidates = self._run("find", lambda: self._candidates(now))
            if not candidates:
                return None
            for _not_before, _created, nid, canary_id, where in candidates:
                if where == "canary":
                    doc = self._run(
                        "claim",
                        lambda c=canary_id, n=nid: self.canaries.find_one_and_update(
                            {
                                "id": c,
                                "notifications.0.nid": n,
                                "notifications.0.not_before": {"$lte": now},
                                **_lease_free(now, "notifications.0."),
                            },
                            {"$set": {f"notifications.0.{k}": v for k, v in lease.items()}},
                            projection={"_id": 0, "id": 1, "notifications": {"$slice": 1}},
                            return_document=ReturnDocument.BEFORE,
                        ),
                    )
                    if doc is not None:
                        return _note_from_doc(doc["id"], doc["notifications"][0])
                else:
                    note = self._run(
                        "claim",
                        lambda n=nid: self.side.find_one_and_update(
                            {
                                "_id": n,
                                "staged": {"$exists": False},
                                "not_before": {"$lte": now},
                                **_lease_free(now),
                            },
                            {"$set": lease},
                            return_document=ReturnDocument.BEFORE,
                        ),
                    )
                    if note is not None:
                        return _note_from_doc(note["canary_id"], note, "_id")
            # Every candidate was taken by another claimer meanwhile: look again.
        return None

    def complete_notification(self, notification: Notification, owner: str) -> None:
        head = {
            "id": notification.canary_id,
            "notifications.0.nid": notification.id,
            "notifications.0.lease_owner": owner,
        }
        pop = {"$pop": {"notifications": -1}}
        result = self._run("complete", lambda: self.canaries.update_one(head, pop))
        if result.modified_count:
            # Leave no empty array behind; a concurrent $push recreates the field anyway.
            self._run(
                "complete",
                lambda: self.canaries.update_one(
                    {"id": notification.canary_id, "notifications": {"$size": 0}},
                    {"$unset": {"notifications": ""}},
                ),
            )
            return
        self._run("complete", lambda: self.side.delete_one({"_id": notification.id, "lease_owner": owner}))

    def retry_notification(self, notification: Notification, owner: str, not_before: datetime) -> None:
        head = {
            "id": notification.canary_id,
            "notifications.0.nid": notification.id,
            "notifications.0.lease_owner": owner,
        }
        ops = {
            "$inc": {"notifications.0.attempts": 1},
            "$set": {
                "notifications.0.not_before": not_before,
                "notifications.0.lease_owner": None,
                "notifications.0.lease_until": None,
            },
        }
        result = self._run("retry", lambda: self.canaries.update_one(head, ops))
        if result.matched_count:
            return
        self._run(
            "retry",
            lambda: self.side.update_one(
                {"_id": notification.id, "lease_owner": owner},
                {
                    "$inc": {"attempts": 1},
                    "$set": {"not_before": not_before, "lease_owner": None, "lease_until": None},
                },
            ),
        )

    def next_notification_time(self) -> datetime | None:
        def scan() -> datetime | None:
            times = []
            for doc in self.canaries.find(
                {"notifications.0.not_before": {"$exists": True}}, {"_id": 0, "notifications": {"$slice": 1}}
            ):
                head = doc["notifications"][0]
                times.append(max(filter(None, (_utc(head["not_before"]), _utc(head.get("lease_until"))))))
            heads: dict[str, Mapping[str, Any]] = {}
            for note in self.side.find(
                {"staged": {"$exists": False}}, sort=[("created", ASCENDING), ("_id", ASCENDING)]
            ):
                heads.setdefault(note["canary_id"], note)
            for note in heads.values():
                times.append(max(filter(None, (_utc(note["not_before"]), _utc(note.get("lease_until"))))))
            for doc in self.canaries.find({"notify": True}, {"_id": 0, "notifications": 0}):
                times.append(legacy_notification(doc).created)  # due at once: claiming adopts it
            return min(times, default=None)

        return self._run("find", scan)

    def pending_notifications(self) -> list[Notification]:
        """Ours (in canaries and the side collection) and Coal Mine's notify flags (id "notify:<id>")."""

        def scan() -> list[Notification]:
            found = []
            for doc in self.canaries.find(
                {"notifications.0": {"$exists": True}}, {"_id": 0, "id": 1, "notifications": 1}
            ):
                found.extend(_note_from_doc(doc["id"], note) for note in doc["notifications"])
            for note in self.side.find({"staged": {"$exists": False}}):
                found.append(_note_from_doc(note["canary_id"], note, "_id"))
            for doc in self.canaries.find({"notify": True}, {"_id": 0, "notifications": 0}):
                new = legacy_notification(doc)
                if doc.get("emails"):
                    found.append(
                        Notification(
                            id=f"notify:{doc['id']}",
                            canary_id=doc["id"],
                            kind=new.kind,
                            created=new.created,
                            payload=new.payload,
                            not_before=new.created,
                        )
                    )
            return sorted(found, key=lambda n: n.created)  # stable: each canary's own order kept

        return self._run("find", scan)
