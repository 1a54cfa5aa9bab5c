"""Metrics benchmark: /coal-mine/v1/metrics scrape time at 10,000 and 100,000 canaries, and
trigger throughput while a client scrapes nonstop, against none, in the same run.

    .venv/bin/python bench/metrics.py [--quick]

The server (web and background work, as `coal-mine` runs by default) is pinned to
core 0 and wrk to core 1, as in bench/run.py, whose helpers this uses. The
databases are filled with SQL straight away (loading is not what is measured).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

BENCH = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
assert spec is not None and spec.loader is not None
run = importlib.util.module_from_spec(spec)
sys.modules["bench_run"] = run
spec.loader.exec_module(run)

from coal_mine.sqlite_store import SQLiteStore  # noqa: E402

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCRAPE = "/coal-mine/v1/metrics"
LIST = "/coal-mine/v1/canary/list"


def us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def fill(db: Path, count: int, rng: random.Random) -> list[str]:
    """`count` canaries with two history entries each (created, triggered): a tenth paused,
    a hundredth late, so every per-canary series has samples."""
    SQLiteStore(str(db)).close()  # the schema
    now = datetime.now(UTC)
    ids = set()
    while len(ids) < count:
        ids.add(run.random_id(rng))
    ordered = sorted(ids)
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO canaries (id, name, slug, periodicity, emails, paused, late, deadline, "
            "history_count, history_oldest, badge_key) VALUES (?, ?, ?, 86400.0, '[]', ?, ?, ?, 2, ?, ?)",
            (
                (
                    cid,
                    f"Bench job {n}",
                    f"bench-job-{n}",
                    int(n % 10 == 0),
                    int(n % 100 == 1),
                    None if n % 10 == 0 else us(now + timedelta(days=1)),
                    us(now - timedelta(hours=1)),
                    f"{n:032x}",
                )
                for n, cid in enumerate(ordered)
            ),
        )
        conn.execute(
            "INSERT INTO history (canary_seq, ts, comment) SELECT seq, ?, 'Canary created' FROM canaries",
            (us(now - timedelta(hours=1)),),
        )
        conn.execute(
            "INSERT INTO history (canary_seq, ts, comment) SELECT seq, ?, 'Triggered' FROM canaries",
            (us(now - timedelta(minutes=5)),),
        )
    conn.close()
    return ordered


def scrape_times(port: int, times: int) -> tuple[list[float], int]:
    results, size = [], 0
    for _ in range(times):
        status, _first, total, size = run.fetch(port, SCRAPE)
        assert status == 200, status
        results.append(total)
    return results, size


def breakdown(db: Path) -> tuple[float, float]:
    """Where a scrape's CPU time goes: the store's scan alone, and the rest (our collector and
    prometheus_client's formatting)."""
    from coal_mine.clock import Clock
    from coal_mine.metrics import exposition, make_registry

    store = SQLiteStore(str(db))
    try:
        start = time.process_time()
        for _ in store.iter_canary_metrics():
            pass
        scan = time.process_time() - start
        start = time.process_time()
        exposition(make_registry(store, Clock(), 60.0))
        return scan, time.process_time() - start - scan
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter loads, fewer scrapes")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else 8.0
    repeats = 2 if args.quick else 5
    wrk = run.install_wrk()
    rng = random.Random(15)
    print("Machine: 2 cores, shared with other work during this run; figures are indicative.")
    print(f"prometheus_client {version('prometheus_client')}, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="coal-mine-metrics-bench-") as tmp:
        work = Path(tmp)
        for count in (10_000, 100_000):
            db = work / f"metrics-{count}.sqlite3"
            start = time.monotonic()
            ids = fill(db, count, rng)
            print(f"\n{count:,} canaries (filled in {time.monotonic() - start:.1f} s)")
            with run.coal_mine_server(work, db, name=f"metrics-{count}") as server:
                taken, size = scrape_times(server.port, repeats)
                listed = [run.fetch(server.port, LIST)[2] for _ in range(repeats)]
                print(
                    f"  scrape: median {statistics.median(taken):.2f} s, max {max(taken):.2f} s "
                    f"({size / 1e6:.1f} MB, {repeats} scrapes)  target < 2 s: "
                    f"{'met' if max(taken) < 2.0 else 'NOT met'}"
                )
                print(
                    f"  baseline, same run: the JSON list of the same canaries, median "
                    f"{statistics.median(listed):.2f} s"
                )
                scan, formatting = breakdown(db)
                print(
                    f"  CPU in this process: store scan {scan:.2f} s, collector and "
                    f"prometheus_client formatting {formatting:.2f} s"
                )
                if count != 100_000:
                    continue
                paths = run.write_paths(work / "paths.txt", ids[:2000], rng)
                quiet = run.run_wrk(wrk, server, run.LOAD_LUA, ["paths", str(paths)], 8, seconds)
                stop = threading.Event()
                scrapes: list[float] = []

                def scrape_forever(port: int, stop: threading.Event, scrapes: list[float]) -> None:
                    while not stop.is_set():
                        scrapes.append(run.fetch(port, SCRAPE)[2])

                scraper = threading.Thread(target=scrape_forever, args=(server.port, stop, scrapes))
                scraper.start()
                try:
                    busy = run.run_wrk(wrk, server, run.LOAD_LUA, ["paths", str(paths)], 8, seconds)
                finally:
                    stop.set()
                    scraper.join()
                for label, load in (("no scraping", quiet), ("continuous scraping", busy)):
                    print(
                        f"  triggers, 8 clients, {label}: {load.rate:.0f}/s, p50 {load.p50_ms:.1f} ms, "
                        f"p99 {load.p99_ms:.1f} ms, max {load.max_ms:.0f} ms, errors {load.error_count}"
                    )
                print(
                    f"  during it {len(scrapes)} scrapes took median {statistics.median(scrapes):.2f} s; "
                    f"trigger rate {busy.rate / quiet.rate:.0%} of the quiet rate"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
