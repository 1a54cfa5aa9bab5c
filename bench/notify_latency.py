#!/usr/bin/env python3
"""How fast late email reaches the SMTP server. One command, prints figures:

    .venv/bin/python bench/notify_latency.py

(a) 10,000 canaries with long periodicities plus 100 short ones, no triggers:
    for each short one, deadline -> arrival at the SMTP server (p50/p99/max).
(b) 1,000 canaries whose deadlines fall in the same second: seconds from the
    start of that second until the last message arrives.
Baselines, same run, same SMTP server: one raw smtplib message on a fresh
connection (for a), and the same 1,000 messages sent raw over one connection
(for b). The server under test is a real `coal-mine --background` process on a
real SQLite file; the SMTP server is aiosmtpd in this process.
"""

from __future__ import annotations

import argparse
import multiprocessing
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coal_mine.business_logic import BusinessLogic  # noqa: E402
from coal_mine.clock import Clock  # noqa: E402
from coal_mine.models import Notification  # noqa: E402
from coal_mine.channels.email import build_message  # noqa: E402
from coal_mine.sqlite_store import SQLiteStore  # noqa: E402
from tests.smtp_sink import SMTPSink  # noqa: E402

LEAD = 4.0  # seconds between setting up and the first short deadline (server start-up fits in it)


def start_background(workdir: Path, db: Path, smtp_port: int, extra_ini: str = "") -> subprocess.Popen:
    """A real `coal-mine --background` process on `db`, mailing to 127.0.0.1:smtp_port."""
    ini = workdir / "coal-mine.ini"
    ini.write_text(
        f"[sqlite]\npath = {db}\n[email]\nsender = bench@example.net\nhost = 127.0.0.1\n"
        f"port = {smtp_port}\n{extra_ini}[logging]\nfile = {workdir / 'server.log'}\n"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "coal_mine.server", "--config", str(ini), "--background"],
        cwd=workdir,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def arrivals(sink: SMTPSink, ids: set[str], timeout: float) -> dict[str, float]:
    """Wait until every canary in `ids` has a message; canary id -> arrival time."""
    end = time.monotonic() + timeout
    got: dict[str, float] = {}
    seen = 0
    while time.monotonic() < end:
        # Only look at new messages: this shares a core (and the GIL) with the SMTP server.
        new, seen = sink.messages[seen:], len(sink.messages)
        got.update((m.canary, m.arrived) for m in new if m.canary in ids)
        if len(got) == len(ids):
            return got
        time.sleep(0.05)
    raise SystemExit(f"only {len(got)} of {len(ids)} messages arrived in {timeout} s")


def scenario_a(sink: SMTPSink, workdir: Path, long_count: int, short_count: int) -> list[float]:
    db = workdir / "a.sqlite3"
    logic = BusinessLogic(SQLiteStore(str(db)), Clock())
    for i in range(long_count):
        logic.create(f"long {i}", 86400.0 + i, emails=["ops@example.com"])
    base = time.time() + LEAD
    deadlines = {}
    for i in range(short_count):
        target = base + i * 0.05
        canary = logic.create(f"short {i}", round(target - time.time(), 3), emails=["ops@example.com"])
        deadlines[canary.id] = canary.deadline.timestamp()
    logic.store.close()
    process = start_background(workdir, db, sink.port)
    try:
        got = arrivals(sink, set(deadlines), timeout=LEAD + 60)
    finally:
        stop(process)
    return [(got[cid] - deadline) * 1000 for cid, deadline in deadlines.items()]


def scenario_b(sink: SMTPSink, workdir: Path, count: int) -> tuple[float, float]:
    db = workdir / "b.sqlite3"
    logic = BusinessLogic(SQLiteStore(str(db)), Clock())
    second = int(time.time() + LEAD + count * 0.002) + 1  # set-up of `count` canaries fits before it
    deadlines = {}
    for i in range(count):
        target = second + 0.005 + 0.99 * i / count  # creation time is whole milliseconds: keep off the edges
        canary = logic.create(f"burst {i}", round(target - time.time(), 3), emails=["ops@example.com"])
        deadlines[canary.id] = canary.deadline.timestamp()
    logic.store.close()
    assert all(second <= d < second + 1 for d in deadlines.values()), "set-up was too slow"
    process = start_background(workdir, db, sink.port)
    try:
        got = arrivals(sink, set(deadlines), timeout=LEAD + 120)
    finally:
        stop(process)
    last = max(got.values())
    return last - second, last - max(deadlines.values())


def _raw_send(port: int, count: int, queue: multiprocessing.Queue) -> None:
    messages = []
    now = datetime.now(UTC)
    for i in range(count):
        note = Notification(
            id=i,
            canary_id=f"raw{i:05d}",
            kind="late",
            created=now,
            payload={
                "id": f"raw{i:05d}",
                "name": f"burst {i}",
                "emails": ["ops@example.com"],
                "deadline": now.isoformat(),
                "history": [[now.isoformat(), "Canary created"]],
            },
            not_before=now,
        )
        messages.append(build_message(note, "bench@example.net", now=now))
    started = time.time()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench", timeout=30) as smtp:
        for message in messages:
            smtp.send_message(message)
    queue.put(started)


def raw_burst(sink: SMTPSink, count: int) -> float:
    """Seconds for `count` prepared messages over one smtplib connection, in another process."""
    before = len(sink.messages)
    queue: multiprocessing.Queue = multiprocessing.Queue()
    worker = multiprocessing.Process(target=_raw_send, args=(sink.port, count, queue))
    worker.start()
    started = queue.get(timeout=120)
    worker.join()
    sink.wait_for(before + count, timeout=60)
    return sink.messages[-1].arrived - started


def raw_single(sink: SMTPSink, rounds: int) -> list[float]:
    """Milliseconds for one message on a fresh connection (connect, EHLO, send, QUIT)."""
    now = datetime.now(UTC)
    note = Notification(
        id=1,
        canary_id="single",
        kind="late",
        created=now,
        payload={
            "id": "single",
            "name": "single",
            "emails": ["ops@example.com"],
            "deadline": now.isoformat(),
            "history": [],
        },
        not_before=now,
    )
    message = build_message(note, "bench@example.net", now=now)
    times = []
    for _ in range(rounds):
        before = len(sink.messages)
        started = time.time()
        with smtplib.SMTP("127.0.0.1", sink.port, local_hostname="bench", timeout=30) as smtp:
            smtp.send_message(message)
        sink.wait_for(before + 1)
        times.append((sink.messages[-1].arrived - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=int, default=10_000, help="canaries with long periodicities (a)")
    parser.add_argument("--short", type=int, default=100, help="canaries with short periodicities (a)")
    parser.add_argument("--burst", type=int, default=1_000, help="canaries due in the same second (b)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SMTPSink() as sink:
        workdir = Path(tmp)
        single = raw_single(sink, 50)
        print(
            f"baseline: one raw SMTP message on a fresh connection: "
            f"p50 {statistics.median(single):.1f} ms, max {max(single):.1f} ms"
        )
        delays = scenario_a(sink, workdir, args.long, args.short)
        print(
            f"(a) {args.long} long + {args.short} short canaries: deadline -> arrival "
            f"p50 {percentile(delays, 0.5):.1f} ms, p99 {percentile(delays, 0.99):.1f} ms, "
            f"max {max(delays):.1f} ms (target p99 <= 100 ms)"
        )
        raw = raw_burst(sink, args.burst)
        print(f"baseline: {args.burst} messages sent raw over one SMTP connection: {raw:.2f} s")
        from_start, from_last = scenario_b(sink, workdir, args.burst)
        print(
            f"(b) {args.burst} canaries due in the same second: last message {from_start:.2f} s after "
            f"the start of that second ({from_last:.2f} s after the last deadline) (target <= 5 s)"
        )


if __name__ == "__main__":
    main()
