#!/usr/bin/env python3
"""Do clients that read a long answer slowly stall the triggers? One command, prints figures:

    .venv/bin/python bench/slow_readers.py [--seconds 10] [--readers 40] [--canaries 20000]

A real `coal-mine` process (web and background work) on a real SQLite file holding
20,000 canaries (a non-verbose list of about 2.6 MB). Four clients trigger their own
canary (periodicity 1 s) every 100 ms over a new connection each time. Measured
twice in the same run, against the same server: alone (the baseline), then while
40 clients fetch the list and read it at 16 KB/s through a small receive buffer.
Then SIGTERM, with the slow readers still attached: how long the server takes to exit.
Targets: trigger p99 under 100 ms with the slow readers, no failed trigger, no
canary late.
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coal_mine.business_logic import BusinessLogic  # noqa: E402
from coal_mine.sqlite_store import SQLiteStore  # noqa: E402
from tests.helpers import ServerProcess  # noqa: E402

LIST_PATH = "/coal-mine/v1/canary/list"
READ_RATE = 16 * 1024  # bytes per second per slow reader
TRIGGER_INTERVAL = 0.1
TRIGGER_PERIODICITY = 1.0  # a trigger that waits longer than this makes its canary late


@dataclass
class Figures:
    """What the trigger clients saw, and what the slow readers got."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    read_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0

    def text(self) -> str:
        return (
            f"{len(self.latencies)} triggers, p50 {self.percentile(0.5) * 1000:.1f} ms, "
            f"p99 {self.percentile(0.99) * 1000:.1f} ms, max {max(self.latencies, default=0) * 1000:.1f} ms, "
            f"{len(self.failures)} failed"
        )


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """One GET over a new connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]) if head else 0, body


def slow_reader(port: int, stop: threading.Event, figures: Figures) -> None:
    """Fetch the list again and again, reading READ_RATE bytes a second."""
    while not stop.is_set():
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(300)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {LIST_PATH} HTTP/1.0\r\n\r\n".encode())
            while not stop.is_set():
                chunk = sock.recv(1024)
                if not chunk:
                    break
                with figures.lock:
                    figures.read_bytes += len(chunk)
                stop.wait(len(chunk) / READ_RATE)
        except OSError:
            stop.wait(0.1)
        finally:
            sock.close()


def triggerer(port: int, canary_id: str, stop: threading.Event, samples: list) -> None:
    """Trigger one canary every TRIGGER_INTERVAL until stopped: (start, seconds, failure) samples."""
    next_at = time.monotonic()
    while not stop.is_set():
        start = time.monotonic()
        failure = ""
        try:
            status, body = get(port, f"/{canary_id}")
            if status != 200 or b'"status": "ok"' not in body:
                failure = f"{status} {body[:100]!r}"
        except OSError as exc:
            failure = repr(exc)
        samples.append((start, time.monotonic() - start, failure))
        next_at += TRIGGER_INTERVAL
        stop.wait(max(0.0, next_at - time.monotonic()))


def window(samples: list, begin: float, end: float) -> Figures:
    figures = Figures()
    for start, seconds, failure in samples:
        if begin <= start < end:
            figures.latencies.append(seconds)
            if failure:
                figures.failures.append(failure)
    return figures


def populate(db: Path, canaries: int, triggered: int) -> list[str]:
    """`canaries` long-period canaries, plus `triggered` with a 1 s periodicity; their ids."""
    store = SQLiteStore(str(db))
    logic = BusinessLogic(store)
    rng = random.Random(19)
    try:
        for n in range(canaries):
            logic.create(f"big list {n} {rng.random():.12f}", 86400)
        # Paused until their first trigger, so that the server's start-up cannot make them late.
        return [logic.create(f"often {n}", TRIGGER_PERIODICITY, paused=True).id for n in range(triggered)]
    finally:
        store.close()


@dataclass
class Result:
    alone: Figures
    slowed: Figures
    shutdown_seconds: float
    late: list[str]
    log: str


def measure(
    workdir: Path, seconds: float, readers: int, canaries: int, env: dict[str, str] | None = None
) -> Result:
    """Triggers without, then with the slow readers (the triggers never pause, so a
    canary goes late only if a trigger stalls); then the server's shutdown under them."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "coal-mine.sqlite3"
    ids = populate(db, canaries, 4)
    server = ServerProcess(workdir, ini_extra=f"[sqlite]\npath = {db}\n", env=env).start()
    samples: list = []
    stop_readers, stop_triggers = threading.Event(), threading.Event()
    reading = Figures()
    threads = []
    try:
        triggers = [
            threading.Thread(target=triggerer, args=(server.port, cid, stop_triggers, samples), daemon=True)
            for cid in ids
        ]
        for thread in triggers:
            thread.start()
        alone_from = time.monotonic()
        time.sleep(seconds)
        slowed_from = time.monotonic()
        threads = [
            threading.Thread(target=slow_reader, args=(server.port, stop_readers, reading), daemon=True)
            for _ in range(readers)
        ]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        slowed_to, stopped_at = time.monotonic(), datetime.now()
        stop_triggers.set()
        for thread in triggers:
            thread.join(60)
        assert server.process is not None
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)
        shutdown = time.monotonic() - began
    finally:
        stop_readers.set()
        stop_triggers.set()
        for thread in threads:
            thread.join(10)
        server.stop()
    slowed = window(samples, slowed_from, slowed_to)
    slowed.read_bytes = reading.read_bytes
    log = server.log()
    return Result(
        window(samples, alone_from, slowed_from), slowed, shutdown, late_lines(log, stopped_at), log
    )


def late_lines(log: str, before: datetime) -> list[str]:
    """The log's "is late" lines from before the triggers stopped: false alarms (once they
    have stopped, the canaries do go late a second later)."""
    return [
        line
        for line in log.splitlines()
        if " is late" in line and datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") < before
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--readers", type=int, default=40, help="slow readers (default 40)")
    parser.add_argument("--canaries", type=int, default=20_000, help="canaries in the list (default 20,000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coal-mine-slow-") as tmp:
        result = measure(Path(tmp), args.seconds, args.readers, args.canaries)
    print(f"triggers alone (baseline):        {result.alone.text()}")
    print(f"with {args.readers} slow readers at 16 KB/s: {result.slowed.text()}")
    print(f"  the slow readers got {result.slowed.read_bytes / 1e6:.1f} MB in all")
    print(f"  canaries that went late while triggered: {len(result.late)}")
    print(f"SIGTERM to exit with the slow readers attached: {result.shutdown_seconds:.1f} s")
    p99 = result.slowed.percentile(0.99)
    ok = p99 < 0.1 and not result.slowed.failures and not result.late
    print(f"target p99 < 100 ms, no failure, none late: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
