"""MongoDB store: reads and writes Coal Mine 0.7's `canaries` collection as it is.

The canary documents keep Coal Mine 0.7's layout (see mongo_docs), so a Coal
Mine 0.7.1 process can share the database. Pending notifications live in the
`notifications` collection (see mongo_outbox); 0.7's `notify` flag is adopted
(see mongo_legacy); settings and client defaults are in mongo_settings, the
retry policy in mongo_retry.

Every write is one atomic single-document operation whose filter carries the
caller's expectations, so several web and background processes can share the
database without read-modify-write races. Writes are acknowledged by a majority
of the replica set unless the settings say otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, OperationFailure

from coal_mine.abstract_store import ALL_FIELDS, RUN_FIELDS, AbstractStore
from coal_mine.clock import Clock, utc
from coal_mine.models import (
    AlreadyExistsError,
    Canary,
    HistoryEntry,
    NewNotification,
    Output,
    PrunePolicy,
    StoreUnavailableError,
)
from coal_mine.mongo_docs import (
    HAS_ROOM,
    NO_EVENTS,
    canary_to_doc,
    doc_to_canary,
    event_doc,
    field_value,
    remind_text,
    utc_time,
)
from coal_mine.mongo_legacy import adopt_legacy, migrate_old_layout
from coal_mine.mongo_ops import BADGE_INDEX, MongoOperations
from coal_mine.mongo_outbox import MongoOutbox
from coal_mine.mongo_outbox_api import MongoOutboxMethods
from coal_mine.mongo_runs import MongoRunData
from coal_mine.mongo_retry import DEFAULT_RETRY_DELAYS, Retrier, result_count
from coal_mine.mongo_settings import MongoSettingsError, connect

__all__ = ["MongoSettingsError", "MongoStore"]

log = logging.getLogger(__name__)

_DELETE_ATTEMPTS = 20
_UPDATE_ATTEMPTS = 3
_INDEX_ID = "id_1"


class MongoStore(MongoOperations, MongoOutboxMethods, AbstractStore):
    """Canaries in a MongoDB database (pymongo), shared safely by many processes.

    `database` is a pymongo (or compatible) Database. Calls that fail because no
    primary is reachable are retried after each of `retry_delays`; then they
    raise StoreUnavailableError.
    """

    def __init__(
        self,
        database: Any,
        *,
        client: Any = None,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock | None = None,
    ) -> None:
        self.db = database
        self._client = client
        self._retry = Retrier(retry_delays, sleep)
        self._clock = clock or Clock()
        self.canaries: Collection[Any] = database["canaries"]
        self.outbox: Collection[Any] = database["notifications"]
        self.run_outputs: Collection[Any] = database["run_outputs"]

    @property
    def _outbox(self) -> MongoOutbox:
        # Built on use: tests swap `canaries` for a wrapper that injects failures.
        return MongoOutbox(self.canaries, self.outbox, self._retry, self._clock)

    @property
    def _runs(self) -> MongoRunData:
        return MongoRunData(self.canaries, self.run_outputs, self._retry)

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

        Raises MongoSettingsError naming the bad setting (see mongo_settings.connect).
        """
        client, db = connect(hosts, database, username, password, options)
        return cls(db, client=client, **kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # --- indexes ----------------------------------------------------------------------

    def ensure_indexes(self) -> None:
        """The indexes our queries use (Coal Mine's names, so an existing database has
        most), and the unique id index in place of 0.4.1-0.4.3's non-unique one, as
        Coal Mine 0.7 does. Idempotent; every process runs it at start."""
        info = self._retry.read("indexes", self.canaries.index_information)
        if _INDEX_ID in info and not info[_INDEX_ID].get("unique"):
            log.warning("Replacing the non-unique index %s on canaries with a unique one", _INDEX_ID)
            self._retry.read("indexes", lambda: self.canaries.drop_index(_INDEX_ID))
        wanted: list[tuple[Collection[Any], list[tuple[str, int]], dict[str, Any]]] = [
            (self.canaries, [("id", ASCENDING)], {"unique": True}),  # get, every write
            (self.canaries, [("slug", ASCENDING)], {"unique": True}),  # id_for_slug, unique slugs
            # due_canaries, earliest_deadline, list's paused filter
            (self.canaries, [("paused", ASCENDING), ("late", ASCENDING), ("deadline", ASCENDING)], {}),
            (self.canaries, [("notify", ASCENDING)], {}),  # Coal Mine's pending notifications
            (self.canaries, [("remind_at", ASCENDING)], {"sparse": True}),  # reminders
            *self._outbox.indexes(),
            (self.canaries, *BADGE_INDEX),  # badges; Coal Mine 0.7's canaries have none
            *self._runs.indexes(),
        ]
        for collection, keys, options in wanted:
            try:
                self._retry.read("create_index", partial(collection.create_index, keys, **options))
            except OperationFailure as exc:
                # e.g. duplicate ids or slugs already in the data: keep serving, say so.
                log.warning("Cannot create index %s on %s: %s", keys, collection.name, exc)
        migrate_old_layout(self.canaries, self.outbox, self._retry)
        self._outbox.split_old_entries()

    # --- canaries ---------------------------------------------------------------------

    def create(self, canary: Canary) -> None:
        doc = canary_to_doc(canary)
        doc = {"_id": ObjectId(), **doc}
        # Checked here too so that a database without the unique indexes (never
        # opened by a background process) still refuses plain duplicates.
        self._refuse_duplicates(canary.id, canary.slug)
        try:
            self._retry.run(
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
        if self._retry.run("find", lambda: self.canaries.find_one({"id": cid}, {"_id": 1})) is not None:
            raise AlreadyExistsError("id", cid)
        if self._retry.run("find", lambda: self.canaries.find_one({"slug": slug}, {"_id": 1})) is not None:
            raise AlreadyExistsError("slug", slug)

    @staticmethod
    def _projection(history: bool) -> dict[str, int]:
        projection = {"_id": 0, "notifications": 0}
        if not history:
            projection["history"] = 0
        return projection

    def get(self, canary_id: str, *, history: bool = True) -> Canary | None:
        doc = self._retry.read(
            "find", lambda: self.canaries.find_one({"id": canary_id}, self._projection(history))
        )
        return doc_to_canary(doc, history) if doc else None

    def id_for_slug(self, slug: str) -> str | None:
        doc = self._retry.read("find", lambda: self.canaries.find_one({"slug": slug}, {"_id": 0, "id": 1}))
        return doc["id"] if doc else None

    @staticmethod
    def _condition(name: str, value: Any) -> Any:
        if name not in ALL_FIELDS:
            raise ValueError(f"unknown canary field {name}")
        if value is None or (name in RUN_FIELDS and field_value(name, value) is None):
            return None  # matches a missing field too
        if name in ("paused", "late") and not value:
            return {"$ne": True}  # a document without the flag counts as false
        return field_value(name, value)

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
        # A document still carrying Coal Mine's `notify: true` is never changed
        # before that message is adopted (see mongo_legacy): the message describes
        # the state before this change.
        query: dict[str, Any] = {"id": canary_id, "notify": {"$ne": True}}
        for name, value in (expect or {}).items():
            query[name] = self._condition(name, value)
        sets: dict[str, Any] = {}
        unsets: dict[str, str] = {}
        for name, value in changes.items():
            if name not in ALL_FIELDS:
                raise ValueError(f"unknown canary field {name}")
            if value is None or (name in RUN_FIELDS and field_value(name, value) is None):
                unsets[name] = ""  # a run field at its default is not stored
            else:
                sets[name] = field_value(name, value)
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
        notes = [event_doc(new) for new in notifications]
        if notes:
            pushes["notifications"] = {"$each": notes}
            query.update(HAS_ROOM)
        if pushes:
            ops["$push"] = pushes
        if "slug" in changes:
            clash = self._retry.read(
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
                waiting = any(n.get("nid") == notes[0]["nid"] for n in doc.get("notifications") or [])
                return waiting or self._outbox.holds(notes[0]["nid"])
            if history is not None:
                return any(
                    utc_time(ts) == history[0] and c == history[1] for ts, c in doc.get("history") or []
                )
            return all(doc.get(k) == v for k, v in sets.items()) and not any(k in doc for k in unsets)

        for _ in range(_UPDATE_ATTEMPTS):
            try:
                if ops:
                    result = self._retry.run("update", lambda: self.canaries.update_one(query, ops), applied)
                    matched = result_count(result, "matched_count") == 1
                else:
                    found = self._retry.read("find", lambda: self.canaries.find_one(query, {"_id": 1}))
                    matched = found is not None
            except DuplicateKeyError as exc:
                raise AlreadyExistsError("slug", changes.get("slug", "")) from exc
            if matched:
                break
            # Not matched: the canary is gone, an expectation failed, a Coal Mine notify
            # flag must be adopted first, or too many events wait in it.
            adopted = adopt_legacy(self.canaries, self._retry, canary_id)
            if not (self._outbox.move(canary_id) or adopted):
                return False
        else:
            return False
        if notes:
            try:
                self._outbox.move(canary_id)
            except (StoreUnavailableError, OperationFailure) as exc:
                # The change and its event are stored; the next write or claim moves it.
                log.warning("Cannot move canary %s's event to the outbox yet: %s", canary_id, exc)
        if history is not None and prune is not None:
            self._prune(canary_id, prune)
        if history is not None and output is not None:
            self._runs.add(canary_id, history[0], output)
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
            result = self._retry.read(
                "prune", lambda: self.canaries.update_one(query, {"$pop": {"history": 1}})
            )
            if result.modified_count == 0:
                return

    def delete(self, canary_id: str) -> bool:
        """Remove the canary once no event waits in it; its pending notifications stay
        in the outbox. Each attempt first moves the canary's events out, then deletes
        it only if none arrived meanwhile, so concurrent deletes and writes lose nothing."""
        for _ in range(_DELETE_ATTEMPTS):
            adopt_legacy(self.canaries, self._retry, canary_id)  # a Coal Mine notify flag is an event too
            self._outbox.move(canary_id)
            query = {"id": canary_id, "notify": {"$ne": True}, **NO_EVENTS}

            def deleted() -> bool:
                return self.canaries.find_one({"id": canary_id}, {"_id": 1}) is None

            result = self._retry.run("delete", partial(self.canaries.delete_one, query), deleted)
            if result_count(result, "deleted_count") == 1:
                self._runs.delete(canary_id)
                self._outbox.forget_statuses(canary_id)
                return True
            exists = self._retry.read("find", lambda: self.canaries.find_one({"id": canary_id}, {"_id": 1}))
            if exists is None:
                return False  # deleted by someone else
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
        for attempt in range(len(self._retry.delays) + 1):
            page = dict(query)
            if last_id is not None:
                page["_id"] = {"$gt": last_id}
            try:
                for doc in self.canaries.find(page, projection, sort=[("_id", ASCENDING)]):
                    last_id = doc["_id"]
                    yield doc_to_canary(doc, history)
                return
            except Exception as exc:  # noqa: BLE001 - classified (and re-raised) by the retry policy
                self._retry.give_up_unless_retryable("list", exc, attempt)
                self._retry.sleep(self._retry.delays[attempt])

    _WATCHED = {"paused": False, "late": False}

    def earliest_deadline(self) -> datetime | None:
        doc = self._retry.read(
            "find",
            lambda: self.canaries.find_one(
                {**self._WATCHED, "deadline": {"$ne": None}},
                {"_id": 0, "deadline": 1},
                sort=[("deadline", ASCENDING)],
            ),
        )
        return utc(doc["deadline"]) if doc else None

    def due_canaries(self, now: datetime, limit: int) -> list[Canary]:
        return self._retry.read(
            "find",
            lambda: [
                doc_to_canary(doc, False)
                for doc in self.canaries.find(
                    {**self._WATCHED, "deadline": {"$lt": now}},
                    self._projection(False),
                    sort=[("deadline", ASCENDING)],
                    limit=limit,
                )
            ],
        )

    # --- run reporting (see mongo_runs) ---------------------------------------------------

    def outputs(self, canary_id: str) -> list[tuple[datetime, Output]]:
        return self._runs.list(canary_id)

    def earliest_alarm(self) -> datetime | None:
        return self._runs.earliest_alarm()

    def due_alarms(self, now: datetime, limit: int) -> list[Canary]:
        return [
            doc_to_canary(doc, False) for doc in self._runs.due_alarms(now, self._projection(False), limit)
        ]

    _REMINDING = {"late": True, "paused": {"$ne": True}}

    def due_reminders(self, now: datetime, limit: int) -> list[Canary]:
        return self._retry.read(
            "find",
            lambda: [
                doc_to_canary(doc, False)
                for doc in self.canaries.find(
                    {**self._REMINDING, "remind_at": {"$lte": remind_text(now)}},
                    self._projection(False),
                    sort=[("remind_at", ASCENDING)],
                    limit=limit,
                )
            ],
        )

    def next_reminder_time(self) -> datetime | None:
        doc = self._retry.read(
            "find",
            lambda: self.canaries.find_one(
                {**self._REMINDING, "remind_at": {"$type": "string"}},
                {"_id": 0, "remind_at": 1},
                sort=[("remind_at", ASCENDING)],
            ),
        )
        return utc_time(doc["remind_at"]) if doc else None
