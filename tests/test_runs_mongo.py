"""Run reporting on MongoDB next to Coal Mine 0.7.1: documents 0.7.1 can still serve, output
in a collection 0.7.1 never reads, and a failure that a 0.7.1 trigger ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from coal_mine.clock import FakeClock
from coal_mine.mongo_store import MongoStore
from tests.runs_support import RunServer
from tests.stores import mongo_factories

COAL_MINE_071_FIELDS = {
    "id",
    "name",
    "slug",
    "periodicity",
    "description",
    "emails",
    "paused",
    "history",
    "late",
}


@pytest.fixture(params=[name for name, _ in mongo_factories()])
def mongo(request: pytest.FixtureRequest) -> Iterator[MongoStore]:
    store = dict(mongo_factories())[request.param]()
    yield store
    store.close()


@pytest.fixture
def srv(mongo: MongoStore) -> Iterator[RunServer]:
    with RunServer(mongo, FakeClock()) as server:
        yield server


def jsonify_canary_071(doc: dict[str, Any]) -> str:
    """What Coal Mine 0.7.1's server does with a document from `find_one({'id': ...}, {'_id': False})`:
    it converts `deadline` and `history` and hands the rest to json.dumps as it is."""
    canary = {k: v for k, v in doc.items() if v is not None}
    if "deadline" in canary:
        canary["deadline"] = canary["deadline"].isoformat()
    canary["history"] = [(when.isoformat(), comment) for when, comment in canary.get("history", [])]
    return json.dumps({"status": "ok", "canary": canary}, indent=4)


def raw(mongo: MongoStore, cid: str) -> dict[str, Any]:
    doc = mongo.canaries.find_one({"id": cid}, {"_id": False})
    assert doc is not None
    return doc


def test_a_canary_that_uses_none_of_it_keeps_the_071_document(srv: RunServer, mongo: MongoStore) -> None:
    cid = srv.create("Plain")
    srv.call(f"/{cid}")
    srv.call("pause", id=cid)
    srv.call("unpause", id=cid)
    srv.call(f"/{cid}/0")
    assert set(raw(mongo, cid)) <= COAL_MINE_071_FIELDS | {"deadline", "notify", "badge_key"}


def test_every_run_field_is_one_071_can_serve(srv: RunServer, mongo: MongoStore) -> None:
    cid = srv.create("Busy", max_runtime="30", email="ops@example.com")
    srv.call(f"/{cid}/start", rid="a")
    srv.call(f"/{cid}/start")
    srv.clock.advance(5)
    srv.request("POST", f"/{cid}/0", b"done", rid="a")
    srv.call(f"/{cid}/4")
    srv.call(f"/{cid}/start", rid="b")
    srv.call("pause", id=cid, until="600")
    doc = raw(mongo, cid)
    assert {"max_runtime", "runs", "last_duration", "failed", "snooze_until", "alarm"} <= set(doc)
    text = jsonify_canary_071(doc)  # raises TypeError for a field 0.7.1 could not serve
    assert '"failed": true' in text and "done" not in text
    assert "run_outputs" in mongo.db.database.list_collection_names()
    (kept,) = mongo.run_outputs.find({"canary": cid})
    assert kept["text"] == "done" and kept["size"] == 4
    srv.call("unpause", id=cid)
    srv.call(f"/{cid}")
    srv.tick(0)
    doc = raw(mongo, cid)
    assert "failed" not in doc and "snooze_until" not in doc and "alarm" not in doc


def test_a_071_trigger_ends_a_failure(srv: RunServer, mongo: MongoStore) -> None:
    cid = srv.create("Shared", email="ops@example.com")
    srv.call(f"/{cid}/2")
    assert srv.canary(cid)["state"] == "failed"
    # Coal Mine 0.7.1's trigger, as its MongoStore writes it: $set late, paused, deadline, history.
    doc = raw(mongo, cid)
    now = datetime(2026, 1, 5, 12, 1, tzinfo=UTC)
    history = [[now, "Triggered"], *doc["history"]]
    mongo.canaries.update_one({"id": cid}, {"$set": {"late": False, "paused": False, "history": history}})
    assert srv.canary(cid)["state"] == "ok"
    srv.call(f"/{cid}/3")  # a new failure alerts again
    assert [note.kind for note in mongo.pending_notifications()] == ["failed", "failed"]


def test_outputs_follow_their_history_entries(srv: RunServer, mongo: MongoStore) -> None:
    cid = srv.create("Chatty")
    srv.request("POST", f"/{cid}/log", b"first")
    for _ in range(1000):
        srv.clock.advance(0.001)
        srv.logic.trigger(cid)  # "Canary created" and the log entry are pruned
    assert srv.canary(cid, output="1")["outputs"] == []
    assert mongo.run_outputs.count_documents({"canary": cid}) == 0
    srv.request("POST", f"/{cid}/log", b"second")
    assert srv.call("delete", id=cid)[0] == 200
    assert mongo.run_outputs.count_documents({"canary": cid}) == 0
