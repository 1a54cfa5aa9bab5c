"""GET /coal-mine/v1/metrics on the real HTTP server in this process, on every store, read
back with prometheus_client's own text parser and checked against the store."""

from __future__ import annotations

import gc
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coal_mine.abstract_store import AbstractStore
from coal_mine.api import Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.health import Heartbeat
from coal_mine.memory_store import MemoryStore
from coal_mine.metrics import COUNTERS
from coal_mine.models import StoreUnavailableError
from coal_mine.watcher import Watcher
from tests.helpers import InProcessServer

PATH = "/coal-mine/v1/metrics"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: InProcessServer, query: str = "?auth_key=full", headers: dict | None = None) -> str:
    request = urllib.request.Request(server.base_url + PATH + query, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode("utf-8")


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, sorted labels), and each family's type, by prometheus_client's parser."""
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def canary_labels(canary) -> tuple[tuple[str, str], ...]:  # type: ignore[no-untyped-def]
    return tuple(sorted({"id": canary.id, "name": canary.name, "slug": canary.slug}.items()))


def status_code(server: InProcessServer, query: str = "", headers: dict | None = None) -> int:
    try:
        scrape(server, query, headers)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


@pytest.fixture
def served(store: AbstractStore, clock: FakeClock) -> Iterator[InProcessServer]:
    api = Api(BusinessLogic(store, clock), auth_key="full", read_only_auth_key="ro", worker_timeout=60)
    with InProcessServer(api) as server:
        yield server


def test_values_follow_the_store(served: InProcessServer, store: AbstractStore, clock: FakeClock) -> None:
    logic = served.app.logic
    triggers_before = COUNTERS.triggers._value.get()
    status, body = served.call("create", auth_key="full", name='Nightly <db> & "quotes"', periodicity="60")
    assert status == 200
    watched = store.get(body["canary"]["id"])
    late = logic.create("Goes late", 30.0, emails=["ops@example.com"])
    paused = logic.create("Paused one", 60.0, paused=True)
    clock.advance(10)
    assert served.call(f"/{watched.id}", m="done")[0] == 200  # the short trigger URL
    clock.advance(25)
    heartbeat = Heartbeat(store, clock, worker_timeout=60)
    watcher = Watcher(logic)
    watcher.scan_listeners.append(heartbeat.scanned)
    watcher.step()  # `late` is now late, with a notification pending
    heartbeat.step()

    samples, types = parse(scrape(served))
    watched, late, paused = (store.get(c.id) for c in (watched, late, paused))
    for canary in (watched, late, paused):
        labels = canary_labels(canary)
        assert samples[("coal_mine_canary_late", labels)] == float(canary.late)
        assert samples[("coal_mine_canary_paused", labels)] == float(canary.paused)
    assert samples[("coal_mine_canary_late", canary_labels(late))] == 1.0
    assert samples[("coal_mine_canary_paused", canary_labels(paused))] == 1.0
    deadline = ("coal_mine_canary_deadline_timestamp_seconds", canary_labels(watched))
    assert samples[deadline] == (watched.deadline - EPOCH).total_seconds()
    assert ("coal_mine_canary_deadline_timestamp_seconds", canary_labels(paused)) not in samples
    last = ("coal_mine_canary_last_trigger_timestamp_seconds", canary_labels(watched))
    assert samples[last] == (watched.history[0][0] - EPOCH).total_seconds()
    assert ("coal_mine_canary_last_trigger_timestamp_seconds", canary_labels(late)) not in samples
    assert samples[("coal_mine_canaries", ())] == 3
    assert samples[("coal_mine_canaries_late", ())] == 1
    assert samples[("coal_mine_canaries_paused", ())] == 1
    assert samples[("coal_mine_outbox_pending", ())] == len(store.pending_notifications()) == 1
    assert samples[("coal_mine_outbox_oldest_age_seconds", ())] == 0.0
    assert samples[("coal_mine_workers_alive", ())] == 1
    assert (
        samples[("coal_mine_watcher_last_scan_timestamp_seconds", ())]
        == (clock.now() - EPOCH).total_seconds()
    )
    assert samples[("coal_mine_triggers_total", ())] == triggers_before + 1
    assert samples[("coal_mine_http_responses_total", (("status_class", "2xx"),))] >= 2
    assert types["coal_mine_triggers"] == "counter" and types["coal_mine_canaries"] == "gauge"
    assert not [name for name, _ in samples if name.endswith("_total") and types.get(name[:-6]) != "counter"]

    clock.advance(90)
    logic.trigger(late.id)  # resumed: a second notification
    logic.pause(watched.id)
    samples, _ = parse(scrape(served))
    assert samples[("coal_mine_canaries_late", ())] == 0
    assert samples[("coal_mine_canaries_paused", ())] == 2
    assert samples[("coal_mine_outbox_pending", ())] == 2
    assert samples[("coal_mine_outbox_oldest_age_seconds", ())] == 90.0
    assert samples[("coal_mine_workers_alive", ())] == 0  # no heartbeat for 90 s
    assert ("coal_mine_watcher_last_scan_timestamp_seconds", ()) not in samples


def test_auth_rules(served: InProcessServer) -> None:
    assert status_code(served, "") == 401
    assert status_code(served, "?auth_key=wrong") == 401
    assert status_code(served, "", {"Authorization": "Bearer wrong"}) == 401
    assert status_code(served, "?auth_key=full") == 200
    assert status_code(served, "?auth_key=ro") == 200
    assert status_code(served, "", {"Authorization": "Bearer full"}) == 200
    assert status_code(served, "", {"Authorization": "bearer ro"}) == 200
    assert status_code(served, "?auth_key=full&verbose=1") == 400


def test_open_server_needs_no_key() -> None:
    with InProcessServer(Api(BusinessLogic(MemoryStore(), FakeClock()))) as server:
        samples, _ = parse(scrape(server, ""))
        assert samples[("coal_mine_canaries", ())] == 0


def test_name_filter(served: InProcessServer) -> None:
    samples, _ = parse(
        scrape(served, "?auth_key=full&name[]=coal_mine_canaries_late&name[]=coal_mine_creates_total")
    )
    assert {name for name, _ in samples} == {"coal_mine_canaries_late", "coal_mine_creates_total"}


def test_label_values_are_escaped(served: InProcessServer, store: AbstractStore) -> None:
    canary = served.app.logic.create('Back\\slash "quoted"\nnewline?', 60.0)
    samples, _ = parse(scrape(served))
    assert samples[("coal_mine_canary_late", canary_labels(store.get(canary.id)))] == 0.0


@pytest.mark.parametrize(
    "error, status",
    [(StoreUnavailableError("SQLite database is busy"), 503), (RuntimeError("bug"), 500)],
)
def test_a_failing_store_fails_the_scrape_not_the_server(error: Exception, status: int) -> None:
    class Broken(MemoryStore):
        def iter_canary_metrics(self):  # type: ignore[no-untyped-def]
            raise error

    with InProcessServer(Api(BusinessLogic(Broken(), FakeClock()))) as server:
        assert status_code(server) == status
        code, body = server.call(PATH)
        assert code == status and body["status"] == "error"
        assert server.call("/coal-mine/v1/health", check="live")[0] == 200


def test_cyclic_gc_paused_during_a_scrape_and_restored_after() -> None:
    seen: list[bool] = []
    both_inside = threading.Barrier(2, timeout=10)

    class Watching(MemoryStore):
        def iter_canary_metrics(self):  # type: ignore[no-untyped-def]
            seen.append(gc.isenabled())
            both_inside.wait()  # two scrapes overlap: the first to end must not re-enable it
            yield from super().iter_canary_metrics()
            seen.append(gc.isenabled())

    class Failing(MemoryStore):
        def iter_canary_metrics(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug")

    assert gc.isenabled()
    with InProcessServer(Api(BusinessLogic(Watching(), FakeClock()))) as server:
        threads = [threading.Thread(target=scrape, args=(server, "")) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert seen == [False] * 4 and gc.isenabled()
    with InProcessServer(Api(BusinessLogic(Failing(), FakeClock()))) as server:
        assert status_code(server) == 500
    assert gc.isenabled()


def test_overlapping_scrapes_never_pause_the_cyclic_gc_for_long() -> None:
    from coal_mine.metrics import _CyclicGCPause

    pause = _CyclicGCPause(max_pause=-1.0)  # any pause is too long
    collections: list[str] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(phase)

    gc.callbacks.append(seen)
    try:
        with pause():
            assert not gc.isenabled() and collections == []
            with pause():  # starts after max_pause: collects once, stays paused
                assert not gc.isenabled() and collections == ["start"]
            assert not gc.isenabled()
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(seen)
