#!/usr/bin/env python3
"""PostgreSQL against SQLite, same server binary, same run. One command, prints a table:

    .venv/bin/python bench/postgres.py [--seconds 5] [--canaries 1000] [--long 10000] [--short 100]

Starts a throw-away PostgreSQL cluster (tests/pg_cluster.py, with fsync on: PostgreSQL's
default durability) and then, for SQLite and for PostgreSQL in turn:
- trigger throughput and p99 at 1, 8 and 64 clients (wrk, a new connection per request,
  on --canaries canaries), and creates per second at 8 clients, against a real
  `coal-mine` process pinned to core 0, wrk pinned to core 1 (PostgreSQL unpinned);
- late-alert delay: --long canaries with long periodicities plus --short ones falling
  due 50 ms apart; deadline -> arrival at the SMTP server (aiosmtpd in this process),
  p50/p99, from a real `coal-mine --background` process.
Three stores: SQLite (synchronous = normal, the default), PostgreSQL with its default
synchronous_commit = on (a commit waits for its WAL flush), and PostgreSQL with
synchronous_commit = off (set in the URI, as the README describes). Each load line
also shows the Coal Mine process's CPU time per request (PostgreSQL's own is not in it).
Targets (issue 16): PostgreSQL trigger throughput at least 50% of SQLite's; late-alert
p99 under 100 ms. The figures depend on the machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from notify_latency import arrivals, percentile, stop  # noqa: E402
from run import (  # noqa: E402
    CLIENTS,
    LOAD_LUA,
    SERVER_CORE,
    Load,
    Server,
    free_port,
    install_wrk,
    pinned,
    populate,
    run_wrk,
    write_paths,
)

from coal_mine.abstract_store import AbstractStore  # noqa: E402
from coal_mine.business_logic import BusinessLogic  # noqa: E402
from coal_mine.clock import Clock  # noqa: E402
from coal_mine.postgres_store import PostgresStore  # noqa: E402
from coal_mine.sqlite_store import SQLiteStore  # noqa: E402
from tests.pg_cluster import Cluster  # noqa: E402
from tests.smtp_sink import SMTPSink  # noqa: E402

# In the URI's options: a commit does not wait for its WAL flush (see the README).
ASYNC_COMMIT = "%20-csynchronous_commit%3Doff"
LEAD = 6.0  # seconds from the last short canary's creation to the first short deadline


class Backend:
    """One store under test: its ini section and a way to open it from this process."""

    def __init__(self, name: str, section: str, opener: type[AbstractStore], *args: str) -> None:
        self.name, self.section, self._opener, self._args = name, section, opener, args
        self.key = "".join(c for c in name.lower() if c.isalnum())  # for file names and URLs

    def open(self) -> AbstractStore:
        return self._opener(*self._args)  # type: ignore[call-arg]


def backends(workdir: Path, cluster: Cluster, tag: str) -> list[Backend]:
    """SQLite, and PostgreSQL twice (commits waiting for the WAL flush, and not), each in a
    schema of its own."""
    sqlite = workdir / f"{tag}.sqlite3"
    uris = {}
    with psycopg.connect(cluster.uri, autocommit=True) as conn:
        for name, extra in (("sync", ""), ("async", ASYNC_COMMIT)):
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {tag}_{name}".encode())
            uris[name] = f"{cluster.uri}?options=-csearch_path%3D{tag}_{name}{extra}"
    return [
        Backend("SQLite", f"[sqlite]\npath = {sqlite}\n", SQLiteStore, str(sqlite)),
        Backend("PostgreSQL", f"[postgresql]\nuri = {uris['sync']}\n", PostgresStore, uris["sync"]),
        Backend("PG sync_commit=off", f"[postgresql]\nuri = {uris['async']}\n", PostgresStore, uris["async"]),
    ]


def server(workdir: Path, backend: Backend, name: str, *args: str, smtp_port: int = 9) -> Server:
    port = free_port()
    ini = workdir / f"{name}.ini"
    ini.write_text(
        f"[wsgi]\nhost = 127.0.0.1\nport = {port}\n{backend.section}"
        f"[logging]\nfile = {workdir / (name + '.log')}\n"
        f"[email]\nsender = bench@example.com\nhost = 127.0.0.1\nport = {smtp_port}\n"
    )
    return Server(
        [sys.executable, "-m", "coal_mine.server", "--config", str(ini), *args], port, workdir, name
    )


def http_figures(wrk: str, workdir: Path, backend: Backend, canaries: int, seconds: float) -> dict[str, Load]:
    store = backend.open()
    ids = list(populate(store, canaries, f"bench {backend.key}", random.Random(16)))  # type: ignore[arg-type]
    store.close()
    paths = write_paths(workdir / f"{backend.key}.paths", ids, random.Random(7))
    figures = {}
    with server(workdir, backend, f"web-{backend.key}") as web:
        for clients in CLIENTS:
            figures[f"trigger c={clients}"] = run_wrk(
                wrk, web, LOAD_LUA, ["paths", str(paths)], clients, seconds
            )
        figures["create c=8"] = run_wrk(wrk, web, LOAD_LUA, ["create", f"new-{backend.key}"], 8, seconds)
    return figures


def late_delays(
    sink: SMTPSink, workdir: Path, backend: Backend, long_count: int, short_count: int
) -> list[float]:
    store = backend.open()
    logic = BusinessLogic(store, Clock())
    for i in range(long_count):
        logic.create(f"long {i}", 86400.0 + i, emails=["ops@example.com"])
    base = time.time() + LEAD + short_count * 0.01
    deadlines = {}
    for i in range(short_count):
        canary = logic.create(
            f"short {i}", round(base + i * 0.05 - time.time(), 3), emails=["ops@example.com"]
        )
        deadlines[canary.id] = canary.deadline.timestamp()  # type: ignore[union-attr]
    store.close()
    background = server(workdir, backend, f"bg-{backend.key}", "--background", smtp_port=sink.port)
    log = open(workdir / f"bg-{backend.key}.out", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        pinned(SERVER_CORE, background.argv),
        cwd=workdir,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        got = arrivals(sink, set(deadlines), timeout=LEAD + 120)
    finally:
        stop(process)
    return [(got[cid] - deadline) * 1000 for cid, deadline in deadlines.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per load level")
    parser.add_argument("--canaries", type=int, default=1000, help="canaries the triggers spread over")
    parser.add_argument("--long", type=int, default=10_000, help="long-period canaries (late-alert delay)")
    parser.add_argument("--short", type=int, default=100, help="short-period canaries (late-alert delay)")
    args = parser.parse_args()
    wrk = install_wrk()
    with tempfile.TemporaryDirectory() as tmp, Cluster(fsync=True) as cluster, SMTPSink() as sink:
        workdir = Path(tmp)
        http: dict[str, dict[str, Load]] = {}
        for backend in backends(workdir, cluster, "http"):
            http[backend.name] = http_figures(wrk, workdir, backend, args.canaries, args.seconds)
        late: dict[str, list[float]] = {}
        for backend in backends(workdir, cluster, "late"):
            late[backend.name] = late_delays(sink, workdir, backend, args.long, args.short)
    names = list(http)
    print("\n" + f"{'figure':<26}" + "".join(f"{name:>20}" for name in names) + "   ratios to SQLite, target")
    for figure in http["SQLite"]:
        loads = [http[name][figure] for name in names]
        ratios = " ".join(f"{load.rate / loads[0].rate:.2f}" for load in loads[1:] if loads[0].rate)
        target = " (>= 0.50)" if figure.startswith("trigger") else ""
        errors = [load.errors for load in loads if load.error_count]
        print(
            f"{figure + ' req/s':<26}"
            + "".join(f"{load.rate:>20.0f}" for load in loads)
            + f"   {ratios}{target}"
            + (f"  errors {errors}" if errors else "")
        )
        print(f"{figure + ' p99 ms':<26}" + "".join(f"{load.p99_ms:>20.1f}" for load in loads))
        print(
            f"{figure + ' server CPU us':<26}"
            + "".join(f"{load.cpu_per_request_us:>20.0f}" for load in loads)
        )
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        print(
            f"{'late-alert ' + label + ' ms':<26}"
            + "".join(f"{percentile(late[name], fraction):>20.1f}" for name in names)
            + ("   (target < 100)" if label == "p99" else "")
        )
    print(
        f"(trigger load spread over {args.canaries} canaries, {args.seconds:g} s per level; late-alert "
        f"delay with {args.long} + {args.short} canaries)"
    )


if __name__ == "__main__":
    main()
