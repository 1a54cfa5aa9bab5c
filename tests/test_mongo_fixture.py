"""A real Coal Mine 0.7.1 `canaries` collection (shared/fixtures), served by our MongoStore.

The fixture is loaded into mongomock with its indexes; every operation runs
through BusinessLogic, and what we write is compared, field by field and BSON
type by type, with what Coal Mine wrote.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import json_util

from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.mongo_store import MongoStore
from coal_mine.notification_payload import new_notification
from tests.stores import mongomock_database
from tests.stores import claim_one

# A copy of shared/fixtures/coal-mine-0.7-mongodb.json, kept here so the test never depends on a
# folder outside the checkout.
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "coal-mine-0.7-mongodb.json"
NOW = datetime(2026, 11, 26, 3, 40, tzinfo=UTC)  # a few minutes after the fixture was written
# What we may add to a Coal Mine document. `badge_key` is a plain string, which
# Coal Mine 0.7.1 keeps through its updates and shows in its JSON answers.
OUR_FIELDS = {"_id", "notifications", "badge_key"}
IDS = ["wmtoitnt", "ccujkbby", "itnhbufw", "zpjqttwq", "gnirvvzt"]


def load_fixture() -> dict[str, Any]:
    return json_util.loads(FIXTURE.read_text())


@pytest.fixture
def fixture_docs() -> dict[str, dict[str, Any]]:
    return {doc["id"]: doc for doc in load_fixture()["canaries"]}


@pytest.fixture
def db() -> Any:
    """A mongomock database holding the fixture's collection and indexes."""
    data = load_fixture()
    database = mongomock_database()
    collection = database["canaries"]
    for name, spec in data["indexes"].items():
        if name != "_id_":
            keys = [tuple(key) for key in spec["key"]]
            collection.create_index(keys, name=name, unique=spec.get("unique", False))
    collection.insert_many(data["canaries"])
    return database


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def logic(db: Any, clock: FakeClock) -> BusinessLogic:
    store = MongoStore(db, retry_delays=())
    return BusinessLogic(store, clock)


def raw(db: Any, cid: str) -> dict[str, Any]:
    """The document as stored, after a trip through BSON (so the types are BSON's)."""
    return bson.decode(bson.encode(db.database["canaries"].find_one({"id": cid})))


def bson_type(value: Any) -> str:
    """A document's shape: each value's BSON type, recursively for arrays."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float):
        return "double"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, list):
        return "array[" + ",".join(sorted({bson_type(v) for v in value})) + "]"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def shape(doc: dict[str, Any]) -> dict[str, str]:
    return {key: bson_type(value) for key, value in doc.items() if key not in OUR_FIELDS}


def assert_same_shape(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Same field names in Coal Mine's order and same BSON types (an empty array fits any)."""
    assert [k for k in ours if k not in OUR_FIELDS] == [k for k in theirs if k not in OUR_FIELDS]
    for key, kind in shape(ours).items():
        expected = shape(theirs)[key]
        if kind != expected:
            assert "array[]" in (kind, expected), (key, kind, expected)


def test_reads_every_document(logic: BusinessLogic, fixture_docs: dict[str, dict[str, Any]]) -> None:
    for cid, doc in fixture_docs.items():
        canary = logic.get(cid)
        assert (canary.name, canary.slug, canary.description, canary.emails) == (
            doc["name"],
            doc["slug"],
            doc["description"],
            doc["emails"],
        )
        assert canary.periodicity == doc["periodicity"]
        assert (canary.paused, canary.late) == (doc["paused"], doc["late"])
        assert canary.deadline == (doc["deadline"].replace(tzinfo=UTC) if "deadline" in doc else None)
        assert canary.history == [(ts.replace(tzinfo=UTC), c) for ts, c in doc["history"]]
        assert all(ts.tzinfo is UTC for ts, _ in canary.history)
    assert isinstance(logic.get("ccujkbby").periodicity, str)
    assert logic.find_identifier(name="Nightly Backup") == "wmtoitnt"


def test_list_in_insertion_order_with_filters(logic: BusinessLogic) -> None:
    assert [c.id for c in logic.list_canaries()] == IDS
    assert [c.id for c in logic.list_canaries(paused=True)] == ["itnhbufw", "zpjqttwq"]
    assert [c.id for c in logic.list_canaries(late=True)] == ["zpjqttwq", "gnirvvzt"]
    assert [c.id for c in logic.list_canaries(search="dba@")] == ["wmtoitnt"]
    assert logic.store.earliest_deadline() == datetime(2026, 11, 26, 3, 36, 58, 77000, tzinfo=UTC)
    assert [c.id for c in logic.store.due_canaries(NOW, 10)] == ["ccujkbby"]


def test_writes_keep_coal_mines_shape(
    logic: BusinessLogic, db: Any, clock: FakeClock, fixture_docs: dict[str, dict[str, Any]]
) -> None:
    before = {cid: raw(db, cid) for cid in IDS}
    assert logic.trigger("wmtoitnt", "ok again") == (False, False)
    logic.pause("ccujkbby", "weekend")
    logic.unpause("itnhbufw")
    logic.update("zpjqttwq", description="now described", emails=["x@example.com"])
    logic.update("wmtoitnt", periodicity=43200)
    created = logic.create("Fresh One", 600, emails=["a@example.com"])
    scheduled = logic.create("Fresh Schedule", "* * * * * 60")

    unpaused_model, paused_model = fixture_docs["wmtoitnt"], fixture_docs["itnhbufw"]
    for cid in ("wmtoitnt", "itnhbufw", created.id):
        assert_same_shape(raw(db, cid), unpaused_model)
    for cid in ("ccujkbby", "zpjqttwq"):  # paused, each with its own kind of periodicity
        assert_same_shape(raw(db, cid), {**paused_model, "periodicity": fixture_docs[cid]["periodicity"]})
    assert_same_shape(raw(db, scheduled.id), fixture_docs["ccujkbby"])

    nightly = raw(db, "wmtoitnt")
    assert nightly["history"][0] == [NOW.replace(tzinfo=None), "Triggered (ok again)"]
    assert nightly["history"][1:] == before["wmtoitnt"]["history"]
    assert nightly["periodicity"] == 43200.0 and isinstance(nightly["periodicity"], float)
    assert nightly["deadline"] == (NOW + timedelta(hours=12)).replace(tzinfo=None)
    queue = raw(db, "ccujkbby")
    assert "deadline" not in queue and queue["paused"] is True
    assert queue["history"][0][1] == "Paused (weekend)"
    assert raw(db, "itnhbufw")["deadline"] == (NOW + timedelta(hours=1)).replace(tzinfo=None)
    assert raw(db, scheduled.id)["periodicity"] == "* * * * * 60"
    # Nothing of ours is left on documents without pending messages.
    coal_mine_fields = set().union(*fixture_docs.values(), {"_id"})
    for cid in IDS[:4]:
        assert set(raw(db, cid)) - coal_mine_fields == set(), cid
    for cid in (created.id, scheduled.id):  # new canaries: their badge key, a string, and nothing else
        assert set(raw(db, cid)) - coal_mine_fields == {"badge_key"}, cid
        assert isinstance(raw(db, cid)["badge_key"], str)


def test_delete_and_recreate(logic: BusinessLogic, db: Any) -> None:
    logic.delete("itnhbufw")
    assert [c.id for c in logic.list_canaries()] == ["wmtoitnt", "ccujkbby", "zpjqttwq", "gnirvvzt"]
    again = logic.create("Paused Job", 3600)
    assert logic.find_identifier(slug="paused-job") == again.id
    with pytest.raises(Exception, match="already exists"):
        logic.create("paused job", 60)


def test_pending_notify_flag_is_delivered(
    logic: BusinessLogic, db: Any, fixture_docs: dict[str, dict[str, Any]]
) -> None:
    store = logic.store
    (pending,) = store.pending_notifications()
    assert (pending.canary_id, pending.kind) == ("gnirvvzt", "late")
    assert store.count_notifications() == 1  # Coal Mine's notify flag counts too
    deadline = "2026-11-26T03:35:28.094000+00:00"
    assert store.next_notification_time() == datetime.fromisoformat(deadline)

    claimed = claim_one(store, NOW, "worker-1", NOW + timedelta(minutes=2))
    assert (claimed.canary_id, claimed.kind, claimed.attempts) == ("gnirvvzt", "late", 0)
    assert claimed.payload == {
        "id": "gnirvvzt",
        "name": "Web Only Late",
        "slug": "web-only-late",
        "emails": ["ops@example.com"],
        "late": True,
        "paused": False,
        "when": deadline,
        "deadline": deadline,
        "history": [["2026-11-26T03:34:58.094000+00:00", "Canary created"]],
    }
    # The payload has exactly the keys our own notifications carry.
    own = new_notification("late", logic.get("gnirvvzt"), NOW, None, [])
    assert set(claimed.payload) == set(own.payload)
    # Moved into our outbox, so a Coal Mine background process cannot send it again.
    assert raw(db, "gnirvvzt")["notify"] is False
    assert claim_one(store, NOW, "worker-2", NOW + timedelta(minutes=2)) is None
    store.complete_notifications([claimed], "worker-1", NOW)
    doc = raw(db, "gnirvvzt")
    assert doc["notify"] is False and "notifications" not in doc
    assert store.pending_notifications() == [] and store.next_notification_time() is None
    assert_same_shape(doc, fixture_docs["gnirvvzt"])


def test_trigger_of_flagged_canary_sends_late_then_resumed(logic: BusinessLogic, db: Any) -> None:
    assert logic.trigger("gnirvvzt") == (True, False)
    kinds = [n.kind for n in logic.store.pending_notifications()]
    assert kinds == ["late", "resumed"]
    assert logic.store.count_notifications() == 2
    first = claim_one(logic.store, NOW, "w", NOW + timedelta(minutes=1))
    assert first.kind == "late" and first.payload["history"][0][1] == "Canary created"
    assert claim_one(logic.store, NOW, "w", NOW + timedelta(minutes=1)) is None  # in order
    logic.store.complete_notifications([first], "w", NOW)
    second = claim_one(logic.store, NOW, "w", NOW + timedelta(minutes=1))
    assert second.kind == "resumed" and second.payload["history"][0][1] == "Triggered"
    doc = raw(db, "gnirvvzt")
    assert doc["notify"] is False and doc["late"] is False


def test_deleting_flagged_canary_keeps_its_message(logic: BusinessLogic) -> None:
    logic.delete("gnirvvzt")
    claimed = claim_one(logic.store, NOW, "w", NOW + timedelta(minutes=1))
    assert (claimed.canary_id, claimed.kind, claimed.payload["name"]) == ("gnirvvzt", "late", "Web Only Late")
    logic.store.complete_notifications([claimed], "w", NOW)
    assert logic.store.pending_notifications() == []


def test_flag_without_emails_is_cleared_without_a_message(logic: BusinessLogic, db: Any) -> None:
    db["canaries"].update_one({"id": "zpjqttwq"}, {"$set": {"notify": True}})
    assert [n.canary_id for n in logic.store.pending_notifications()] == ["gnirvvzt"]
    claimed = claim_one(logic.store, NOW, "w", NOW + timedelta(minutes=1))
    assert claimed.canary_id == "gnirvvzt"
    assert raw(db, "zpjqttwq")["notify"] is False


def test_ensure_indexes_adds_only_what_is_missing(logic: BusinessLogic, db: Any) -> None:
    fixture_indexes = set(load_fixture()["indexes"])
    logic.store.ensure_indexes()
    names = set(db["canaries"].index_information())
    assert fixture_indexes <= names
    # Ours: events waiting in a document, badges, run alarms and reminders (sparse).
    assert names - fixture_indexes == {"notifications.nid_1", "badge_key_1", "alarm_1", "remind_at_1"}
    assert db["canaries"].index_information()["id_1"]["unique"] is True
