"""Many processes on one PostgreSQL database, and what happens when things break:
two --web and two --background processes under concurrent load, kill -9 of a web
process mid-burst, and PostgreSQL itself restarted mid-run.

Real server processes, real PostgreSQL (COAL_MINE_TEST_POSTGRESQL_URI, or a cluster of
the test's own), real SMTP (aiosmtpd). Skipped without COAL_MINE_TEST_POSTGRESQL_URI.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import ServerProcess
from tests.pg_cluster import Cluster
from tests.smtp_sink import Received, SMTPSink
from tests.stores import ThrowAwaySchema, postgresql_uri
from tests.test_notify_e2e import ini, wait_until


@pytest.fixture
def schema() -> Iterator[ThrowAwaySchema]:
    made = ThrowAwaySchema()
    yield made
    made.drop()


@pytest.fixture
def sink() -> Iterator[SMTPSink]:
    with SMTPSink() as server:
        yield server


class Client:
    """Calls the API of several servers in turn, remembering every status it got."""

    def __init__(self, servers: list[ServerProcess], timeout: float = 15.0) -> None:
        self.servers = servers
        self.timeout = timeout
        self.statuses: list[int] = []
        self.slowest = 0.0
        self._lock = threading.Lock()
        self._turn = 0

    def call(self, command: str, **params: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._turn += 1
            server = self.servers[self._turn % len(self.servers)]
        url = server.url(command, **params)
        start = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.loads(exc.read() or b"{}")
        with self._lock:
            self.statuses.append(status)
            self.slowest = max(self.slowest, time.monotonic() - start)
        return status, body


def pending(uri: str) -> int:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]  # type: ignore[index]


def by_canary(messages: list[Received]) -> dict[str, list[str]]:
    events: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        events[message.canary].append(message.event)
    return events


def alternates(events: list[str]) -> bool:
    """late, resumed, late, …: each change of state exactly once, in order."""
    return all(event == ("late" if i % 2 == 0 else "resumed") for i, event in enumerate(events))


def test_two_web_two_background_processes_under_load(
    tmp_path: Path, schema: ThrowAwaySchema, sink: SMTPSink
) -> None:
    store = f"[postgresql]\nuri = {schema.uri}\n"
    webs = [
        ServerProcess(tmp_path / f"web{i}", ini_extra=ini(sink.port, store), args=("--web",)) for i in (0, 1)
    ]
    workers = [
        ServerProcess(tmp_path / f"bg{i}", ini_extra=ini(sink.port, store), args=("--background",))
        for i in (0, 1)
    ]
    client = Client(webs)
    stop = threading.Event()
    errors: list[str] = []
    rng = random.Random(16)
    flappers: list[str] = []
    deleted: set[str] = set()

    def flap(cid: str, seed: int) -> None:
        """Keep a canary fresh for a while, then let it go late, then bring it back."""
        local = random.Random(seed)
        while not stop.is_set():
            for _ in range(local.randint(2, 5)):
                status, _ = client.call("trigger", id=cid, comment="tick")
                if status != 200:
                    errors.append(f"trigger {cid}: {status}")
                time.sleep(0.25)
            time.sleep(local.uniform(1.2, 1.8))  # late after 1 s

    def churn(tag: str) -> None:
        """Create, update and delete other canaries meanwhile (some go late first)."""
        n = 0
        while not stop.is_set():
            n += 1
            status, body = client.call(
                "create", name=f"Churn {tag}{n}", periodicity=0.6, email="ops@example.com"
            )
            if status != 200:
                errors.append(f"create: {status}")
                continue
            cid = body["canary"]["id"]
            time.sleep(rng.uniform(0.1, 1.0))
            client.call("update", id=cid, description=f"d{n}")
            if n % 3 == 0:
                client.call("update", id=cid, periodicity=30)  # resumes it if it was late
            time.sleep(rng.uniform(0.1, 0.5))
            if n % 2 == 0:
                client.call("delete", id=cid)
                deleted.add(cid)

    for process in webs + workers:
        process.start()
    try:
        for i in range(8):
            status, body = client.call(
                "create", name=f"Flapper {i}", periodicity=1.0, email="ops@example.com"
            )
            assert status == 200, body
            flappers.append(body["canary"]["id"])
        threads = [threading.Thread(target=flap, args=(cid, i)) for i, cid in enumerate(flappers)]
        threads += [threading.Thread(target=churn, args=(tag,)) for tag in "ab"]
        for thread in threads:
            thread.start()
        time.sleep(9)
        stop.set()
        for thread in threads:
            thread.join()
        # Bring every remaining canary back for good, then let the outbox drain.
        status, body = client.call("list")
        for canary in body["canaries"]:
            assert client.call("update", id=canary["id"], periodicity=3600)[0] in (200, 400)
        wait_until(lambda: pending(schema.uri) == 0, timeout=30)
        time.sleep(1)  # a duplicate would show now
        status, body = client.call("list", verbose=1)
    finally:
        for process in webs + workers:
            process.stop()
    assert errors == []
    assert [s for s in client.statuses if s >= 500] == []
    assert all(not canary["late"] for canary in body["canaries"])
    events = by_canary(list(sink.messages))
    for cid, sequence in events.items():
        assert alternates(sequence), (cid, sequence)
        if cid not in deleted:
            assert sequence[-1] == "resumed", (cid, sequence)
    # Every flapper went late and came back (most several times; a loaded machine slows them).
    assert all(events[cid].count("late") >= 1 for cid in flappers), {c: events[c] for c in flappers}
    assert sum(events[cid].count("late") for cid in flappers) >= 2 * len(flappers)
    sent = sum(worker.log().count("): sent to") for worker in workers)
    assert sent == len(sink.messages)
    for process in webs + workers:
        assert "Traceback" not in process.log(), process.log()


def test_acknowledged_triggers_survive_kill_9_of_a_web_process(
    tmp_path: Path, schema: ThrowAwaySchema
) -> None:
    store = f"[postgresql]\nuri = {schema.uri}\n"
    victim = ServerProcess(tmp_path / "victim", ini_extra=store, args=("--web",)).start()
    survivor = ServerProcess(tmp_path / "survivor", ini_extra=store, args=("--web",)).start()
    try:
        ids = [
            victim.call("create", name=f"Burst {i}", periodicity="3600")[1]["canary"]["id"] for i in range(4)
        ]
        acknowledged: list[tuple[str, str]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def fire(worker: int) -> None:
            for n in range(400):
                if stop.is_set():
                    return
                cid, comment = ids[n % len(ids)], f"w{worker}-{n}"
                server = victim if worker % 2 == 0 else survivor
                try:
                    with urllib.request.urlopen(
                        f"{server.base_url}/{cid}?comment={comment}", timeout=10
                    ) as r:
                        if r.status == 200 and b'"status": "ok"' in r.read():
                            with lock:
                                acknowledged.append((cid, comment))
                except (urllib.error.URLError, http.client.HTTPException, OSError):
                    if server is victim:
                        return  # the victim is gone (a cut-off answer is no acknowledgement)
                    raise

        threads = [threading.Thread(target=fire, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 150, timeout=30)
        victim.kill()  # SIGKILL in the middle of the burst
        after_kill = len(acknowledged)
        wait_until(lambda: len(acknowledged) >= after_kill + 50, timeout=30)  # the survivor serves on
        stop.set()
        for thread in threads:
            thread.join()
        stored = set()
        for cid in ids:
            status, body = survivor.call("get", id=cid)
            assert status == 200
            stored |= {(cid, c[len("Triggered (") : -1]) for _, c in body["canary"]["history"]}
    finally:
        victim.stop()
        survivor.stop()
    assert [a for a in acknowledged if a not in stored] == []


def test_postgresql_restart_mid_run(tmp_path: Path, sink: SMTPSink) -> None:
    postgresql_uri()  # skips without a test server: this test starts a cluster of its own
    with Cluster() as cluster:
        store = f"[postgresql]\nuri = {cluster.uri}\n"
        server = ServerProcess(tmp_path / "srv", ini_extra=ini(sink.port, store)).start()
        try:
            client = Client([server], timeout=20)
            ids = [
                client.call("create", name=f"Job {i}", periodicity=3600)[1]["canary"]["id"] for i in range(4)
            ]
            acknowledged: list[tuple[str, str]] = []
            answers: list[tuple[int, dict[str, Any]]] = []
            lock = threading.Lock()
            stop = threading.Event()

            def fire(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    cid, comment = ids[n % len(ids)], f"w{worker}-{n}"
                    status, body = client.call("trigger", id=cid, comment=comment)
                    with lock:
                        answers.append((status, body))
                        if status == 200:
                            acknowledged.append((cid, comment))
                    time.sleep(0.01)

            threads = [threading.Thread(target=fire, args=(w,)) for w in range(4)]
            for thread in threads:
                thread.start()
            wait_until(lambda: len(acknowledged) >= 50, timeout=30)
            cluster.restart()  # a fast shutdown: every connection is dropped
            restarted_at = len(answers)
            wait_until(lambda: sum(1 for s, _ in answers[restarted_at:] if s == 200) >= 50, timeout=60)
            stop.set()
            for thread in threads:
                thread.join()
            # Down for longer than a request may wait: 503 with a JSON error, promptly.
            cluster.stop()
            outage = [client.call("trigger", id=ids[0], comment="during outage") for _ in range(3)]
            cluster.start_server()
            wait_until(lambda: client.call("trigger", id=ids[1], comment="back")[0] == 200, timeout=30)
            # The background work carries on: a new canary goes late and its email arrives.
            late = client.call("create", name="After restart", periodicity=0.3, email="ops@example.com")[1]
            (message,) = sink.wait_for(1, timeout=30)
            assert (message.canary, message.event) == (late["canary"]["id"], "late")
            stored = set()
            for cid in ids:
                history = client.call("get", id=cid)[1]["canary"]["history"]
                stored |= {(cid, c[len("Triggered (") : -1]) for _, c in history}
        finally:
            server.stop()
        log = server.log()
    assert [status for status, _ in outage] == [503] * 3
    assert all("PostgreSQL is unavailable" in body["error"] for _, body in outage)
    statuses = {status for status, _ in answers}
    assert statuses <= {200, 503}, statuses
    unavailable = [body for status, body in answers if status == 503]
    assert all(body.get("status") == "error" and body.get("error") for body in unavailable)
    assert client.slowest < 10, client.slowest  # never a hang past the request timeout
    assert [a for a in acknowledged if a not in stored] == []
    assert "Traceback" not in log and "Unexpected error" not in log


def test_background_process_hears_other_processes_at_once(
    tmp_path: Path, schema: ThrowAwaySchema, sink: SMTPSink
) -> None:
    """With a rescan interval of an hour, only PostgreSQL's NOTIFY can tell the background
    process about a canary another process created, or a notification it recorded."""
    settings = ini(sink.port, f"[postgresql]\nuri = {schema.uri}\n").replace(
        "rescan_interval = 0.2", "rescan_interval = 3600"
    )
    web = ServerProcess(tmp_path / "web", ini_extra=settings, args=("--web",))
    background = ServerProcess(tmp_path / "bg", ini_extra=settings, args=("--background",))
    with web, background:
        wait_until(lambda: "notification sender started" in background.log())
        time.sleep(0.5)  # its first scan has found nothing to wait for
        cid = web.call("create", name="Elsewhere", periodicity=0.5, email="ops@example.com")[1]["canary"][
            "id"
        ]
        (late,) = sink.wait_for(1, timeout=15)
        assert web.call("trigger", id=cid, comment="back")[1]["recovered"] is True
        _, resumed = sink.wait_for(2, timeout=15)
    assert [(m.canary, m.event) for m in (late, resumed)] == [(cid, "late"), (cid, "resumed")]
