"""The MongoDB store on what a real server does and mongomock hides (issue 11, part 2).

Findings 2, 3, 4, 6, 7 and 8 are shown on mongomock. Findings 1 and 5 need a real
server to show their effect: those tests are marked `live_mongodb`, run against
COAL_MINE_TEST_MONGODB_URI and are reported as skipped, with the reason, without
one. Where mongomock can at least show what the store *sends*, a mongomock test
checks that too.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from copy import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo.errors import OperationFailure

from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.config import ConfigError, from_environment, from_ini
from coal_mine.models import Canary, NewNotification
from coal_mine.mongo_docs import MAX_UNMOVED_EVENTS
from coal_mine.mongo_store import MongoStore
from coal_mine.notification_payload import new_notification
from coal_mine.server import open_store
from tests.helpers import REPO, ServerProcess, free_port
from tests.stores import MONGODB_URI_VARIABLE, live_mongodb_store, mongomock_database, mongomock_store
from tests.stores import ONE, claim_one

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LEASE = T0 + timedelta(minutes=5)

live_mongodb = pytest.mark.skipif(
    not os.environ.get(MONGODB_URI_VARIABLE),
    reason=f"needs a live MongoDB server ({MONGODB_URI_VARIABLE} is not set); mongomock cannot show this",
)


def canary(cid: str = "aaaaaaaa", name: str = "Job", emails: list[str] | None = None) -> Canary:
    return Canary(
        id=cid,
        name=name,
        slug=name.lower(),
        periodicity=60.0,
        emails=emails or ["ops@example.com"],
        deadline=T0,
        history=[(T0, "Canary created")],
    )


def late(seq: int, when: datetime = T0, size: int = 0) -> NewNotification:
    return NewNotification("late", when, {"seq": seq, "filler": "x" * size}, targets=ONE)


@pytest.fixture
def mongo() -> Iterator[MongoStore]:
    store = mongomock_store()
    yield store
    store.close()


# --- 0.7.1's document-to-JSON conversion (server.py jsonify_canary + json.dumps), re-stated ---


def coal_mine_071_json(doc: dict[str, Any]) -> str:
    """What 0.7.1 does with a canary document it reads (get, update, pause, unpause,
    verbose list): make deadline and history times aware, convert those two fields
    with isoformat(), and json.dumps the rest as it is. Raises TypeError on anything
    else that is not JSON (a datetime, an ObjectId), which 0.7.1 answers with a 500."""
    canary = copy(doc)
    canary.pop("_id", None)  # 0.7.1 reads with projection {'_id': False}
    for key, value in list(canary.items()):
        if value is None:
            del canary[key]
    if "deadline" in canary:
        canary["deadline"] = canary["deadline"].replace(tzinfo=UTC).isoformat()
    if "history" in canary:
        canary["history"] = tuple((d.replace(tzinfo=UTC).isoformat(), c) for d, c in canary["history"])
    return json.dumps({"status": "ok", "canary": canary}, indent=4)


# --- finding 1: leases on a real server --------------------------------------------------------


def _positional_null(query: Any, path: str = "") -> list[str]:
    """Keys of `query` that compare a path with a numeric part with null."""
    found = []
    if isinstance(query, dict):
        for key, value in query.items():
            full = f"{path}.{key}" if path and not key.startswith("$") else (path or key)
            if value is None and any(part.isdigit() for part in full.split(".")):
                found.append(full)
            found += _positional_null(value, full)
    elif isinstance(query, list):
        for item in query:
            found += _positional_null(item, path)
    return found


def test_no_claim_filter_compares_a_positional_path_with_null(mongo: MongoStore) -> None:
    """On a server, `notifications.0.lease_until: null` also matches field "0" missing in
    every element, i.e. a head already leased. mongomock does not; so check what is sent."""
    sent: list[Any] = []
    for collection in (mongo.canaries, mongo.outbox):
        for method in ("find", "find_one", "find_one_and_update", "update_one", "update_many", "delete_one"):
            real = getattr(collection, method)

            def spy(query: Any = None, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
                sent.append(query)
                return _real(query, *args, **kwargs)

            setattr(collection, method, spy)
    mongo.create(canary())
    mongo.update("aaaaaaaa", {"late": True}, notifications=[late(0)])
    first = claim_one(mongo, T0, "w1", LEASE)
    assert first is not None and claim_one(mongo, T0, "w2", LEASE) is None
    mongo.retry_notification(first, "w1", T0)
    again = claim_one(mongo, T0, "w2", LEASE)
    assert again is not None
    mongo.complete_notifications([again], "w2", T0)
    mongo.next_notification_time()
    mongo.pending_notifications()
    assert sent and [q for q in sent if _positional_null(q)] == []


@live_mongodb
def test_live_a_leased_head_is_not_claimed_again() -> None:
    store = live_mongodb_store()
    try:
        store.create(canary())
        store.update("aaaaaaaa", {"late": True}, notifications=[late(0)])
        store.update("aaaaaaaa", {"late": False}, notifications=[late(1, T0 + timedelta(seconds=1))])
        assert claim_one(store, T0 + timedelta(seconds=2), "w1", LEASE) is not None
        assert claim_one(store, T0 + timedelta(seconds=2), "w2", LEASE) is None
    finally:
        store.close()


# --- finding 2: two concurrent deletes ---------------------------------------------------------


class Interleave:
    """Wraps the canaries collection so that delete A runs delete B inside its own
    `delete_one`, and B's `delete_one` lets A's delete land first: B reads the canary
    before A deletes it, and cleans up after A has won."""

    def __init__(self, store: MongoStore) -> None:
        self.real = store.canaries
        self.store = store
        self.depth = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def delete_one(self, query: dict[str, Any]) -> Any:
        self.depth += 1
        if self.depth == 1:  # delete A, before its delete lands: delete B runs
            self.pending_a = query
            assert self.store.delete("aaaaaaaa") is False or True
            return self.result_a
        if self.depth == 2:  # delete B's delete: A's lands first, then B's (which finds nothing)
            self.result_a = self.real.delete_one(self.pending_a)
            return self.real.delete_one(query)
        return self.real.delete_one(query)


def test_two_concurrent_deletes_keep_every_pending_notification(mongo: MongoStore) -> None:
    mongo.create(canary())
    mongo.update("aaaaaaaa", {"late": True}, notifications=[late(0)])
    mongo.update("aaaaaaaa", {"late": False}, notifications=[late(1, T0 + timedelta(seconds=1))])
    mongo.canaries = Interleave(mongo)  # type: ignore[assignment]
    assert mongo.delete("aaaaaaaa") is True
    mongo.canaries = mongo.canaries.real  # type: ignore[attr-defined]
    assert mongo.get("aaaaaaaa") is None
    sent = []
    while (note := claim_one(mongo, T0 + timedelta(seconds=5), "w", LEASE)) is not None:
        sent.append(note.payload["seq"])
        mongo.complete_notifications([note], "w", T0)
    assert sent == [0, 1]


# --- finding 3: the canary document stays small -----------------------------------------------


def test_pending_notifications_do_not_grow_the_canary_document(mongo: MongoStore) -> None:
    """No sender for days: each event is ~100 KB. On a server a document over 16 MiB
    makes every later write fail; mongomock has no limit, so measure the document."""
    mongo.create(canary())
    for seq in range(60):  # ~6 MB of events
        assert mongo.update("aaaaaaaa", {"late": seq % 2 == 0}, notifications=[late(seq, size=100_000)])
    doc = mongo.canaries.find_one({"id": "aaaaaaaa"})
    assert len(bson.encode(doc)) < 100_000
    assert [n.payload["seq"] for n in mongo.pending_notifications()] == list(range(60))


def test_events_that_cannot_move_yet_are_bounded_and_the_canary_stays_writable(mongo: MongoStore) -> None:
    """Even if every move fails (outbox unwritable), at most MAX_UNMOVED_EVENTS wait in the
    document; the next write that has room moves them, and none is lost."""
    mongo.create(canary())
    real_update = mongo.outbox.update_one

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationFailure("outbox unavailable", code=2)

    mongo.outbox.update_one = refuse  # type: ignore[method-assign]
    written = 0
    for seq in range(MAX_UNMOVED_EVENTS + 5):
        with contextlib.suppress(OperationFailure):  # no room, and the move fails again
            written += mongo.update("aaaaaaaa", {"late": seq % 2 == 0}, notifications=[late(seq)])
    doc = mongo.canaries.find_one({"id": "aaaaaaaa"})
    assert len(doc["notifications"]) == written == MAX_UNMOVED_EVENTS
    mongo.outbox.update_one = real_update  # type: ignore[method-assign]
    assert mongo.update("aaaaaaaa", {"late": True}, notifications=[late(99)])
    assert "notifications" not in mongo.canaries.find_one({"id": "aaaaaaaa"})
    assert [n.payload["seq"] for n in mongo.pending_notifications()] == [*range(MAX_UNMOVED_EVENTS), 99]


# --- finding 4: a Coal Mine 0.7.1 process sharing the database -----------------------------------


def test_every_document_this_store_writes_is_json_for_coal_mine_071() -> None:
    db = mongomock_database()
    store = MongoStore(db, retry_delays=())
    store.ensure_indexes()
    clock = FakeClock(T0)
    logic = BusinessLogic(store, clock)
    cid = logic.create("Shared", 60, emails=["ops@example.com"]).id
    logic.create("Scheduled", "* * * * * 60", description="d")
    alerted = logic.create(
        "Alerted", 60, webhooks=["https://hooks.example/x"], slacks=["https://chat.example/y"], repeat=120
    ).id
    clock.advance(61)
    logic.mark_late(logic.get(cid))
    logic.mark_late(logic.get(alerted))  # a reminder is now scheduled: remind_at is stored
    assert db["canaries"].find_one({"id": alerted})["remind_at"] == "2026-03-02T12:03:01.000000Z"
    assert [c.id for c in store.due_reminders(clock.now() + timedelta(seconds=120), 10)] == [alerted]
    # An event caught in its canary document (the writer died before moving it):
    store.canaries.update_one(
        {"id": cid},
        {"$push": {"notifications": {"nid": "x", "kind": "late", "created": T0.isoformat(), "payload": {}}}},
    )
    # ... and 0.7.1's own notify flag, adopted by a claim.
    store.canaries.update_one({"slug": "scheduled"}, {"$set": {"notify": True}})
    claim_one(store, clock.now(), "w", clock.now() + timedelta(minutes=1))
    logic.pause(cid, "maintenance")
    for doc in db["canaries"].find({}, {"_id": False}):
        json.loads(coal_mine_071_json(doc))


def test_fixture_round_trip_with_a_recorded_notification_is_json_for_coal_mine_071() -> None:
    """The shared 0.7.1 fixture, a notification recorded on one of its canaries (and one
    caught in its document by a move that failed), then 0.7.1's JSON conversion of every
    document: none may fail."""
    from tests.test_mongo_fixture import load_fixture

    db = mongomock_database()
    db["canaries"].insert_many([dict(doc) for doc in load_fixture()["canaries"]])
    store = MongoStore(db, retry_delays=())
    store.ensure_indexes()
    logic = BusinessLogic(store, FakeClock(T0))
    target = logic.get(db["canaries"].find_one({})["id"])
    note = new_notification("late", target, T0, target.deadline, target.history or [])
    assert store.update(target.id, {"late": True}, notifications=[note])
    real_upsert = store.outbox.update_one

    def outbox_down(*args: Any, **kwargs: Any) -> Any:
        raise OperationFailure("outbox unavailable", code=2)

    store.outbox.update_one = outbox_down  # type: ignore[method-assign]
    note = new_notification("resumed", target, T0, target.deadline, target.history or [])
    assert store.update(target.id, {"late": False}, notifications=[note])
    store.outbox.update_one = real_upsert  # type: ignore[method-assign]
    assert len(db["canaries"].find_one({"id": target.id})["notifications"]) == 1
    for doc in db["canaries"].find({}, {"_id": False}):
        json.loads(coal_mine_071_json(doc))
    mine = [n.kind for n in store.pending_notifications() if n.canary_id == target.id]
    per_address = len(set(target.emails))  # one entry per event and recipient
    assert mine == ["late"] * per_address + ["resumed"] * per_address


# --- finding 5: write concern ------------------------------------------------------------------


def test_writes_wait_for_a_majority_unless_configured(tmp_path: Path) -> None:
    store = open_store(from_environment({"MONGODB_URI": "mongodb://db1/cm"}))
    assert isinstance(store, MongoStore)
    assert store.canaries.write_concern.document == {"w": "majority"}
    store.close()
    store = open_store(from_environment({"MONGODB_URI": "mongodb://db1/cm?w=1"}))
    assert store.canaries.write_concern.document == {"w": 1}
    store.close()
    ini = tmp_path / "coal-mine.ini"
    ini.write_text("[mongodb]\nhosts = db1\ndatabase = cm\nw = 2\n")
    store = open_store(from_ini(str(ini)))
    assert store.canaries.write_concern.document == {"w": 2}
    store.close()


@live_mongodb
def test_live_writes_are_acknowledged_by_a_majority() -> None:
    store = live_mongodb_store()
    try:
        assert store.canaries.write_concern.document == {"w": "majority"}
        assert store.outbox.write_concern.document == {"w": "majority"}
        store.create(canary())
        assert store.update("aaaaaaaa", {"late": True}, notifications=[late(0)])
        assert claim_one(store, T0, "w", LEASE) is not None
    finally:
        store.close()


# --- finding 6: indexes ------------------------------------------------------------------------


def test_a_non_unique_id_index_from_04_is_replaced() -> None:
    db = mongomock_database()
    db["canaries"].create_index("id")  # Coal Mine 0.4.1-0.4.3: id_1 without unique
    assert not db["canaries"].index_information()["id_1"].get("unique")
    store = MongoStore(db, retry_delays=())
    store.ensure_indexes()
    assert db["canaries"].index_information()["id_1"].get("unique") is True
    store.ensure_indexes()  # idempotent


# --- finding 7: nothing delivered is sent again ------------------------------------------------


def test_a_delivered_event_is_never_sent_again(flaky_delete: MongoStore) -> None:
    """A delete that dies halfway, the event then delivered, and the canary then removed
    by Coal Mine 0.7.1 (not by this store): no recovery sends the event again."""
    mongo = flaky_delete
    mongo.create(canary())
    mongo.update("aaaaaaaa", {"late": True}, notifications=[late(0)])
    with pytest.raises(OperationFailure):
        mongo.delete("aaaaaaaa")  # dies at its delete_one
    note = claim_one(mongo, T0, "w", LEASE)
    assert note is not None
    mongo.complete_notifications([note], "w", T0)
    mongo.db["canaries"].delete_one({"id": "aaaaaaaa"})  # Coal Mine 0.7.1's delete
    assert claim_one(mongo, T0, "w", LEASE) is None
    assert mongo.pending_notifications() == []


def test_a_stale_copy_of_a_delivered_event_is_not_sent(mongo: MongoStore) -> None:
    """A mover that read the canary before the event was delivered moves it late."""
    mongo.create(canary())
    mongo.update("aaaaaaaa", {"late": True}, notifications=[late(0)])
    note = claim_one(mongo, T0, "w", LEASE)
    assert note is not None
    mongo.complete_notifications([note], "w", T0)
    stale = {"nid": note.id, "kind": "late", "created": T0.isoformat(), "payload": {"seq": 0}}
    mongo.canaries.update_one({"id": "aaaaaaaa"}, {"$push": {"notifications": stale}})
    assert claim_one(mongo, T0, "w", LEASE) is None
    assert mongo.pending_notifications() == []


class _DeleteDies:
    def __init__(self, real: Any) -> None:
        self.real = real
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def delete_one(self, query: Any) -> Any:
        if self.armed:
            self.armed = False
            raise OperationFailure("process killed here", code=2)
        return self.real.delete_one(query)


@pytest.fixture
def flaky_delete() -> Iterator[MongoStore]:
    store = mongomock_store()
    store.canaries = _DeleteDies(store.canaries)  # type: ignore[assignment]
    yield store
    store.close()


# --- finding 6 and issue 19 item 9: every process ensures indexes, and waits for MongoDB ------


def wait_for_log(server: ServerProcess, text: str, count: int = 1, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while server.log().count(text) < count:
        assert server.process is not None and server.process.poll() is None, server.log()
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times:\n{server.log()}"
        time.sleep(0.05)


@pytest.mark.parametrize("args", [(), ("--web",), ("--background",)], ids=["default", "web", "background"])
def test_a_process_started_before_its_database_waits_and_retries(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """MongoDB not up yet: every mode (web too) tries to ensure the indexes, logs why it
    cannot, retries, and keeps running instead of exiting with a traceback."""
    ini_extra = f"[mongodb]\nhosts = 127.0.0.1:{free_port()}\ndatabase = cm\nserverSelectionTimeoutMS = 100\n"
    with ServerProcess(tmp_path / "p", ini_extra=ini_extra, args=args) as server:
        wait_for_log(server, "Cannot ensure the database indexes yet", count=2)
        assert server.process is not None and server.process.poll() is None
        assert "Traceback" not in server.log()


@pytest.mark.parametrize(
    "uri, option", [("mongodb://db1/cm?tls=maybe", "tls"), ("mongodb://db1/cm?frobnicate=1", "frobnicate")]
)
def test_invalid_uri_options_are_refused_at_start(uri: str, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(from_environment({"MONGODB_URI": uri}))
    message = str(info.value)
    assert message.startswith(f"MONGODB_URI: option {option}: ") and "\n" not in message


def test_invalid_uri_option_stops_the_server_with_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coal_mine.server", "--web"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MONGODB_URI": "mongodb://db1/cm?tls=maybe"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1:] == [
        "coal-mine: configuration error: MONGODB_URI: option tls: The value of tls must be 'true' or 'false'"
    ]
