"""MongoStore beyond the shared contract: settings, retries, outages, concurrency.

The contract suite itself runs on MongoStore through tests/stores.py.
Concurrency tests run on mongomock behind SerializedDatabase (each single
operation atomic, as on a server; see tests/stores.py) and, when
COAL_MINE_TEST_MONGODB_URI is set, on that live server.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure, ServerSelectionTimeoutError

from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.config import ConfigError, MongoConfig, from_environment, from_ini
from coal_mine.models import Canary, NewNotification, StoreUnavailableError
from coal_mine.mongo_store import MongoStore
from coal_mine.server import open_store
from tests.helpers import REPO, ServerProcess, free_port
from tests.stores import mongo_factories, mongomock_database
from tests.stores import ONE, claim_one

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(params=[name for name, _ in mongo_factories()])
def mongo(request: pytest.FixtureRequest) -> Iterator[MongoStore]:
    store = dict(mongo_factories())[request.param]()
    yield store
    store.close()


# --- settings -----------------------------------------------------------------------------


def ini_store(tmp_path: Path, body: str) -> MongoStore:
    path = tmp_path / "coal-mine.ini"
    path.write_text("[mongodb]\n" + body)
    store = open_store(from_ini(str(path)))
    assert isinstance(store, MongoStore)
    return store


@pytest.mark.parametrize(
    "body, setting",
    [
        ("hosts = mongodb://[bad\ndatabase = cm\n", "[mongodb] hosts: "),
        ("hosts = db1:notaport,db2\ndatabase = cm\n", "[mongodb] hosts: "),
        ("hosts = db1,db2\n", "[mongodb] database: "),
        ("hosts = db1\ndatabase = bad/name\n", "[mongodb] database: "),
        ("hosts = db1\ndatabase = cm\nfrobnicate = 1\n", "[mongodb] frobnicate: "),
        (
            "hosts = db1\ndatabase = cm\nserverSelectionTimeoutMS = soon\n",
            "[mongodb] serverselectiontimeoutms: ",
        ),
        ("hosts = db1\ndatabase = cm\nreplicaSet =\n", "[mongodb] replicaset is empty"),
        ("hosts = db1\ndatabase = cm\nusername = u\n", "[mongodb] username and password"),
    ],
)
def test_bad_settings_give_one_line_naming_the_setting(tmp_path: Path, body: str, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        ini_store(tmp_path, body)
    message = str(info.value)
    assert setting in message and "\n" not in message


@pytest.mark.parametrize(
    "uri, setting", [("mongodb://db1", "MONGODB_URI: "), ("mongodb://db1:x/cm", "MONGODB_URI: ")]
)
def test_bad_environment_uri(uri: str, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(from_environment({"MONGODB_URI": uri}))
    assert str(info.value).startswith(setting)


def test_settings_reach_the_client_without_connecting(tmp_path: Path) -> None:
    started = time.monotonic()
    store = ini_store(
        tmp_path,
        f"hosts = 127.0.0.1:{free_port()}, 127.0.0.1:{free_port()}\n"
        "database = coal\nreplicaSet = rs0\nusername = u\npassword = p\n"
        "appname = coal-test\n",
    )
    try:
        options = store._client.options
        assert store.db.name == "coal" and options.replica_set_name == "rs0"
        assert options.pool_options.metadata["application"]["name"] == "coal-test"
        assert options.server_selection_timeout == 5  # our default instead of pymongo's 30 s
        assert options.codec_options.tz_aware
        assert time.monotonic() - started < 1
    finally:
        store.close()


def test_uri_database_and_configured_timeout(tmp_path: Path) -> None:
    store = open_store(from_environment({"MONGODB_URI": "mongodb://db1/fromuri"}))
    assert store.db.name == "fromuri"
    store.close()
    store = ini_store(tmp_path, "hosts = mongodb://db1/x?serverSelectionTimeoutMS=1500\n")
    assert store.db.name == "x" and store._client.options.server_selection_timeout == 1.5
    store.close()
    config = MongoConfig(hosts="db1")
    assert config.setting_name("database") == "[mongodb] database"


def test_bad_setting_stops_the_server_with_one_line(tmp_path: Path) -> None:
    ini = tmp_path / "coal-mine.ini"
    ini.write_text("[mongodb]\nhosts = db1\ndatabase = cm\nfrob = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "coal_mine.server", "--config", str(ini), "--web"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith("coal-mine: configuration error: [mongodb] frob: Unknown option")
    assert "Connect" not in result.stderr  # stopped before trying to reach any server


def test_unreachable_server_gives_503_and_start_is_fast(tmp_path: Path) -> None:
    """A real server process whose MongoDB does not answer: it starts, and requests get 503s."""
    ini_extra = f"[mongodb]\nhosts = 127.0.0.1:{free_port()}\ndatabase = cm\nserverSelectionTimeoutMS = 200\n"
    started = time.monotonic()
    with ServerProcess(tmp_path / "web", ini_extra=ini_extra, args=("--web",)) as server:
        assert time.monotonic() - started < 10
        for command, params in (
            ("list", {}),
            ("create", {"name": "x", "periodicity": 60}),
            ("trigger", {"id": "abcdefgh"}),
        ):
            status, body = server.call(command, **params)
            assert status == 503, (command, body)
            assert body["status"] == "error" and "MongoDB is unavailable" in body["error"]


# --- retries --------------------------------------------------------------------------------


class Flaky:
    """Wraps a collection: the next `failures` calls of `methods` raise `error`,
    before the call reaches the database, or after it was applied (`after=True`)."""

    def __init__(self, collection: Any, methods: set[str]) -> None:
        self.collection = collection
        self.methods = methods
        self.failures = 0
        self.after = False
        self.error: Exception = AutoReconnect("connection reset")
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.collection, name)
        if name not in self.methods:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.failures and not self.after:
                self.failures -= 1
                raise self.error
            result = attribute(*args, **kwargs)
            if self.failures:
                self.failures -= 1
                raise self.error
            return result

        return call


@pytest.fixture
def flaky() -> Iterator[tuple[MongoStore, Flaky, list[float]]]:
    sleeps: list[float] = []
    store = MongoStore(mongomock_database(), retry_delays=(0.01, 0.02, 0.04), sleep=sleeps.append)
    store.ensure_indexes()
    wrapper = Flaky(store.canaries, {"update_one", "insert_one", "delete_one", "find_one", "find"})
    store.canaries = wrapper
    yield store, wrapper, sleeps
    store.close()


def canary(cid: str = "aaaaaaaa", name: str = "Job") -> Canary:
    return Canary(
        id=cid, name=name, slug=name.lower(), periodicity=60.0, deadline=T0, history=[(T0, "Canary created")]
    )


@pytest.mark.parametrize(
    "error",
    [AutoReconnect("reset"), NotPrimaryError("not primary"), OperationFailure("stepping down", code=189)],
)
@pytest.mark.parametrize("after", [False, True], ids=["before", "after-applied"])
def test_transient_errors_are_retried_without_double_writes(flaky, error: Exception, after: bool) -> None:
    store, wrapper, sleeps = flaky
    wrapper.error, wrapper.after = error, after
    wrapper.failures = 2
    store.create(canary())
    assert [c.id for c in store.iter_canaries()] == ["aaaaaaaa"]
    wrapper.failures = 2
    assert store.update(
        "aaaaaaaa",
        {"late": True},
        history=(T0 + timedelta(seconds=1), "Triggered"),
        notifications=[NewNotification("late", T0, {"name": "Job"}, targets=ONE)],
    )
    got = store.get("aaaaaaaa")
    assert got.late and [c for _, c in got.history] == ["Triggered", "Canary created"]
    assert len(store.pending_notifications()) == 1
    wrapper.failures = 2
    assert store.update("aaaaaaaa", {"description": "d", "deadline": None})
    assert store.get("aaaaaaaa").description == "d"
    wrapper.failures = 2
    assert store.delete("aaaaaaaa")
    assert store.get("aaaaaaaa") is None and len(store.pending_notifications()) == 1
    assert sleeps[:2] == [0.01, 0.02]


def test_long_outage_raises_unavailable_and_writes_nothing(flaky) -> None:
    store, wrapper, sleeps = flaky
    store.create(canary())
    wrapper.failures = 100
    with pytest.raises(StoreUnavailableError, match="MongoDB is unavailable"):
        store.update("aaaaaaaa", {"late": True}, history=(T0, "x"))
    assert sleeps == [0.01, 0.02, 0.04]
    wrapper.failures = 0
    assert [c for _, c in store.get("aaaaaaaa").history] == ["Canary created"]


def test_server_selection_timeout_is_not_retried(flaky) -> None:
    store, wrapper, sleeps = flaky
    wrapper.error, wrapper.failures = ServerSelectionTimeoutError("no primary"), 1
    with pytest.raises(StoreUnavailableError):
        store.get("aaaaaaaa")
    assert sleeps == []


def test_other_database_errors_are_not_hidden(flaky) -> None:
    store, wrapper, sleeps = flaky
    wrapper.error, wrapper.failures = OperationFailure("bad query", code=2), 1
    with pytest.raises(OperationFailure):
        store.get("aaaaaaaa")
    assert sleeps == []


def test_listing_resumes_after_a_dropped_connection(flaky) -> None:
    store, wrapper, _ = flaky
    for i in range(4):
        store.create(canary(chr(97 + i) * 8, f"Job {i}"))
    original = wrapper.collection.find
    state = {"broken": False}

    def find_breaking_once(*args: Any, **kwargs: Any) -> Iterator[dict]:
        for n, doc in enumerate(original(*args, **kwargs)):
            if n == 2 and not state["broken"]:
                state["broken"] = True
                raise AutoReconnect("connection closed mid-stream")
            yield doc

    wrapper.collection = type(
        "C",
        (),
        {
            "find": staticmethod(find_breaking_once),
            "__getattr__": lambda s, n: getattr(store.db["canaries"], n),
        },
    )()
    assert [c.id for c in store.iter_canaries()] == ["aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd"]
    assert state["broken"]


def test_a_staged_copy_left_by_an_older_version_is_released(mongo: MongoStore) -> None:
    """An older version of this store staged copies while deleting; a process that died
    mid-delete left one behind. ensure_indexes (run by every process) releases it."""
    mongo.outbox.insert_one(
        {
            "_id": "old-nid",
            "canary_id": "aaaaaaaa",
            "staged": True,
            "kind": "late",
            "created": T0,
            "payload": {"n": 1, "emails": ["ops@example.com"]},
            "attempts": 0,
            "not_before": T0,
            "lease_owner": None,
            "lease_until": None,
        }
    )
    mongo.ensure_indexes()
    claimed = claim_one(mongo, T0, "w", T0 + timedelta(seconds=30))
    # Released, and (as an entry of the layout before per-target delivery) split per recipient.
    assert claimed is not None and claimed.payload == {"n": 1, "emails": ["ops@example.com"]}
    assert (claimed.event, claimed.channel, claimed.target) == ("old-nid", "email", "ops@example.com")


def test_an_event_in_both_places_is_sent_once(mongo: MongoStore) -> None:
    """A mover that died between the outbox upsert and the pull leaves the event in both."""
    mongo.create(canary())
    mongo.update(
        "aaaaaaaa", {"late": True}, notifications=[NewNotification("late", T0, {"n": 1}, targets=ONE)]
    )
    (doc,) = mongo.outbox.find({})
    event = {"nid": doc["_id"], "kind": "late", "created": T0.isoformat(), "payload": {"n": 1}}
    mongo.canaries.update_one({"id": "aaaaaaaa"}, {"$push": {"notifications": event}})
    first = claim_one(mongo, T0, "w", T0 + timedelta(seconds=30))
    assert first is not None and claim_one(mongo, T0, "w2", T0 + timedelta(seconds=30)) is None
    assert len(mongo.pending_notifications()) == 1
    mongo.complete_notifications([first], "w", T0)
    assert claim_one(mongo, T0, "w2", T0 + timedelta(seconds=30)) is None
    assert mongo.pending_notifications() == []


# --- concurrency ----------------------------------------------------------------------------


def run_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def test_concurrent_triggers_lose_no_history(mongo: MongoStore) -> None:
    clock = FakeClock(T0)
    logic = BusinessLogic(mongo, clock)
    cid = logic.create("Busy", 60, emails=["a@b"]).id
    threads, each = 8, 15

    def trigger(i: int) -> None:
        for j in range(each):
            logic.trigger(cid, f"{i}-{j}")
            clock.advance(0.001)

    run_threads(threads, trigger)
    comments = [c for _, c in logic.get(cid).history]
    expected = {f"Triggered ({i}-{j})" for i in range(threads) for j in range(each)}
    assert len(comments) == threads * each + 1 and set(comments[:-1]) == expected
    assert comments[-1] == "Canary created"
    for i in range(threads):  # each thread's triggers in the order it made them
        mine = [c for c in comments if c.startswith(f"Triggered ({i}-")][::-1]
        assert mine == [f"Triggered ({i}-{j})" for j in range(each)]


def test_concurrent_late_and_trigger_record_one_consistent_story(mongo: MongoStore) -> None:
    clock = FakeClock(T0)
    logic = BusinessLogic(mongo, clock)
    cid = logic.create("Racy", 1, emails=["a@b"]).id
    for _ in range(20):
        clock.advance(2)
        due = mongo.due_canaries(clock.now(), 10)
        run_threads(2, lambda i, due=due: logic.trigger(cid) if i else [logic.mark_late(c) for c in due])
    kinds = [n.kind for n in mongo.pending_notifications()]
    # Every late is followed by its resumed: never two of a kind in a row.
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    assert not kinds or kinds[0] == "late"
    assert len(kinds) % 2 == 0 and not logic.get(cid).late


def test_several_claimers_send_each_notification_once(mongo: MongoStore) -> None:
    canaries, per_canary = 6, 5
    for c in range(canaries):
        cid = chr(97 + c) * 8
        mongo.create(canary(cid, f"Job {c}"))
        for seq in range(per_canary):
            new = NewNotification("late", T0 + timedelta(milliseconds=seq), {"seq": seq}, targets=ONE)
            mongo.update(cid, {"late": seq % 2 == 0}, notifications=[new])
    sent: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    now, lease = T0 + timedelta(seconds=1), T0 + timedelta(hours=1)

    def claimer(i: int) -> None:
        idle = 0
        while idle < 3:
            note = claim_one(mongo, now, f"w{i}", lease)
            if note is None:
                idle += 1
                time.sleep(0.005)
                continue
            idle = 0
            with lock:
                sent.append((note.canary_id, note.payload["seq"], note.id))
            mongo.complete_notifications([note], f"w{i}", T0)

    run_threads(6, claimer)
    assert len(sent) == canaries * per_canary
    assert len({nid for _, _, nid in sent}) == len(sent)
    for c in range(canaries):
        assert [seq for cid, seq, _ in sent if cid == chr(97 + c) * 8] == list(range(per_canary))
    assert mongo.pending_notifications() == []


def test_delete_keeps_leases_and_order_of_pending_messages(mongo: MongoStore) -> None:
    mongo.create(canary())
    for seq in range(3):
        mongo.update(
            "aaaaaaaa",
            {"late": seq % 2 == 0},
            notifications=[NewNotification("late", T0 + timedelta(seconds=seq), {"seq": seq}, targets=ONE)],
        )
    lease = T0 + timedelta(minutes=5)
    held = claim_one(mongo, T0 + timedelta(seconds=5), "w1", lease)
    assert mongo.delete("aaaaaaaa") and mongo.get("aaaaaaaa") is None
    # Still leased by w1 after the move, and the later ones wait behind it.
    assert claim_one(mongo, T0 + timedelta(seconds=5), "w2", lease) is None
    assert mongo.next_notification_time() == lease
    mongo.retry_notification(held, "w1", T0 + timedelta(seconds=10))
    again = claim_one(mongo, T0 + timedelta(seconds=10), "w2", lease)
    assert (again.id, again.attempts, again.payload) == (held.id, 1, {"seq": 0})
    mongo.complete_notifications([again], "w2", T0)
    rest = []
    while (note := claim_one(mongo, T0 + timedelta(seconds=10), "w2", lease)) is not None:
        rest.append(note.payload["seq"])
        mongo.complete_notifications([note], "w2", T0)
    assert rest == [1, 2] and mongo.pending_notifications() == []


def test_delete_racing_a_new_message_moves_it_too(flaky) -> None:
    store, wrapper, _ = flaky
    store.create(canary())
    store.update(
        "aaaaaaaa", {"late": True}, notifications=[NewNotification("late", T0, {"seq": 0}, targets=ONE)]
    )
    real_delete = store.db["canaries"].delete_one
    raced = []

    def delete_after_a_concurrent_write(query: dict) -> Any:
        if not raced:  # another process records a message between our read and our delete
            raced.append(
                store.update(
                    "aaaaaaaa",
                    {"late": False},
                    notifications=[
                        NewNotification("resumed", T0 + timedelta(seconds=1), {"seq": 1}, targets=ONE)
                    ],
                )
            )
        return real_delete(query)

    wrapper.delete_one = delete_after_a_concurrent_write
    assert store.delete("aaaaaaaa") and raced == [True]
    assert [n.payload["seq"] for n in store.pending_notifications()] == [0, 1]


def test_delete_gives_up_when_messages_never_settle(flaky) -> None:
    """Another process keeps recording events (and has not moved them yet) between our
    move and our delete: the delete gives up, and every event is still there."""
    store, wrapper, _ = flaky
    store.create(canary())
    store.update(
        "aaaaaaaa", {"late": True}, notifications=[NewNotification("late", T0, {"seq": 0}, targets=ONE)]
    )
    counter = iter(range(1, 1000))

    def always_raced(query: dict) -> Any:
        seq = next(counter)
        event = {
            "nid": f"raced-{seq:04d}",
            "kind": "late",
            "created": T0.isoformat(),
            "payload": {"seq": seq},
        }
        store.db["canaries"].update_one({"id": "aaaaaaaa"}, {"$push": {"notifications": event}})
        return store.db["canaries"].delete_one(query)

    wrapper.delete_one = always_raced
    with pytest.raises(StoreUnavailableError, match="try the delete again"):
        store.delete("aaaaaaaa")
    assert store.get("aaaaaaaa") is not None
    seqs = sorted(n.payload["seq"] for n in store.pending_notifications())
    assert seqs == list(range(seqs[-1] + 1))  # none lost
