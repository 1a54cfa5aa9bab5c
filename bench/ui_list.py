#!/usr/bin/env python3
"""The dashboard's list page with 10,000 canaries: server time to first byte and bytes per page.

    .venv/bin/python bench/ui_list.py [--canaries 10000] [--rounds 15]

A real `coal-mine --web` process on a real SQLite file holding the canaries (each with 100
history entries; 1% late, 5% paused, 10% on a schedule). Each request is one fresh
connection from this process; time to first byte (TTFB) and to the last byte are taken on
the client, over loopback. Baselines from the same run and server: the API's JSON list of the
same canaries, and a trigger (the cheapest request there is). Targets: the list page's first
byte within 200 ms, at most 150 KB per page.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coal_mine.business_logic import slugify  # noqa: E402
from coal_mine.clock import Clock, to_millis  # noqa: E402
from coal_mine.models import Canary  # noqa: E402
from coal_mine.sqlite_store import SQLiteStore  # noqa: E402
from tests.helpers import free_port, wait_for_port  # noqa: E402

HISTORY = 100  # as many entries as the history always keeps once there are that many
SCHEDULE = "* 0-11 * * mon-fri 3600; * 12-23 * * mon-fri 900; * * * * sat,sun 7200"


def populate(path: Path, count: int) -> list[str]:
    """Canaries written straight through the store (loading is not what is measured)."""
    store = SQLiteStore(str(path))
    rng = random.Random(7)
    now = Clock().now()
    ids = []
    for n in range(count):
        kind = n % 100
        late, paused, scheduled = kind == 0, kind in (1, 2, 3, 4, 5), kind >= 90
        periodicity: float | str = SCHEDULE if scheduled else 3600.0
        history = [(to_millis(now - timedelta(minutes=5 + 60 * i)), "Triggered") for i in range(HISTORY - 1)]
        history.append((to_millis(now - timedelta(minutes=5 + 60 * HISTORY)), "Canary created"))
        name = f"job {n:05} on host{rng.randrange(100):02}.example.com"
        canary = Canary(
            id="".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8)),
            name=name,
            slug=slugify(name),
            periodicity=periodicity,
            emails=[f"team{n % 40}@example.com", "oncall@example.com"],
            paused=paused,
            late=late,
            deadline=None if paused else to_millis(now + timedelta(minutes=55)),
            history=history,
        )
        store.create(canary)
        ids.append(canary.id)
    store.close()
    return ids


def fetch(port: int, path: str) -> tuple[float, float, int, int]:
    """(seconds to first byte, seconds to last byte, status, body bytes) of one GET."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        chunks = [sock.recv(65536)]
        first = time.perf_counter()
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        last = time.perf_counter()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return first - start, last - start, int(head.split()[1]), len(body)


def measure(port: int, path: str, rounds: int) -> dict[str, float]:
    fetch(port, path)  # warm the caches (templates, SQLite pages)
    runs = [fetch(port, path) for _ in range(rounds)]
    statuses = {status for _, _, status, _ in runs}
    assert statuses == {200}, (path, statuses)
    ttfb = sorted(r[0] * 1000 for r in runs)
    total = sorted(r[1] * 1000 for r in runs)
    return {
        "ttfb_p50": statistics.median(ttfb),
        "ttfb_p90": ttfb[int(0.9 * (len(ttfb) - 1))],
        "total_p50": statistics.median(total),
        "kb": runs[-1][3] / 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db = workdir / "bench.sqlite3"
        started = time.perf_counter()
        ids = populate(db, args.canaries)
        print(f"loaded {args.canaries} canaries in {time.perf_counter() - started:.1f} s", flush=True)
        port = free_port()
        (workdir / "coal-mine.ini").write_text(
            f"[sqlite]\npath = {db}\n[wsgi]\nhost = 127.0.0.1\nport = {port}\n"
            f"[logging]\nfile = {workdir / 'server.log'}\n"
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "coal_mine.server", "--config", str(workdir / "coal-mine.ini"), "--web"],
            cwd=workdir,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        try:
            wait_for_port(port, process=server)
            pages = [
                ("dashboard list, page 1", "/coal-mine/ui/"),
                ("dashboard list, page 100 (last)", "/coal-mine/ui/?page=100"),
                ("dashboard list, state=late", "/coal-mine/ui/?state=late"),
                ("dashboard list, search=host42", "/coal-mine/ui/?search=host42"),
                ("dashboard canary page", f"/coal-mine/ui/canary/{ids[len(ids) // 2]}"),
                ("baseline: API list (JSON, all)", "/coal-mine/v1/canary/list"),
                ("baseline: trigger", f"/{ids[0]}"),
            ]
            print(f"\n{args.canaries} canaries, {args.rounds} rounds each, one connection per request")
            print(f"{'request':34} {'TTFB p50':>9} {'TTFB p90':>9} {'total p50':>10} {'KB':>9}")
            for label, path in pages:
                row = measure(port, path, args.rounds)
                print(
                    f"{label:34} {row['ttfb_p50']:7.1f}ms {row['ttfb_p90']:7.1f}ms "
                    f"{row['total_p50']:8.1f}ms {row['kb']:9.1f}",
                    flush=True,
                )
            print("\ntargets: dashboard list page TTFB < 200 ms, < 150 KB per page")
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
