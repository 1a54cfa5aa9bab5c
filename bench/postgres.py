#!/usr/bin/env python3
"""PostgreSQL against SQLite, same server binary, same run. One command, prints a table:

    .venv/bin/python bench/postgres.py [--seconds 3] [--rounds 3] [--canaries 1000]
                                       [--long 10000] [--short 100] [--tcp]

Starts a throw-away PostgreSQL cluster (tests/pg_cluster.py, with fsync on: PostgreSQL's
default durability) and compares three stores, each named with its durability setting:
SQLite with `[sqlite] synchronous = normal` (the default), PostgreSQL with
`[postgresql] synchronous_commit = on` (the default: a commit waits for its WAL flush) and
with `synchronous_commit = off` (the README's explicit trade-off). It measures
- trigger throughput and p99 at 1, 8 and 64 clients (wrk, a new connection per request,
  on --canaries canaries), and creates per second at 8 clients, against real `coal-mine`
  processes pinned to core 0, wrk pinned to core 1 (PostgreSQL unpinned, reached through
  its Unix socket as a server on the same machine is, or with --tcp over 127.0.0.1). The
  three servers run side by side and take turns at each level, --rounds times; a figure is
  a server's median round, a ratio the median of the rounds' ratios to SQLite, so that
  a change in the machine's load hits all three alike;
- late-alert delay: --long canaries with long periodicities plus --short ones falling
  due 50 ms apart; deadline -> arrival at the SMTP server (aiosmtpd in this process),
  p50/p99, from a real `coal-mine --background` process.
Each load line also shows the Coal Mine process's CPU time per request (PostgreSQL's own
is not in it). Targets (issue 16): PostgreSQL trigger throughput at least 50% of
SQLite's; late-alert p99 under 100 ms. The figures depend on the machine: run it on a
quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
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

LEAD = 6.0  # seconds from the last short canary's creation to the first short deadline


class Backend:
    """One store under test: its ini section and a way to open it from this process."""

    def __init__(self, name: str, section: str, opener: type[AbstractStore], *args: str) -> None:
        self.name, self.section, self._opener, self._args = name, section, opener, args
        self.key = "".join(c for c in name.lower() if c.isalnum())  # for file names and URLs

    def open(self) -> AbstractStore:
        return self._opener(*self._args)  # type: ignore[call-arg]


def backends(workdir: Path, cluster: Cluster, tag: str, tcp: bool) -> list[Backend]:
    """SQLite, and PostgreSQL twice (commits waiting for the WAL flush, and not), each in a
    database of its own (so that one's NOTIFY does not wake the other's listener),
    reached through the Unix socket (as a server on the same machine is) or TCP."""
    sqlite = workdir / f"{tag}.sqlite3"
    uris = {}
    with psycopg.connect(cluster.uri, autocommit=True) as conn:
        for name in ("on", "off"):
            conn.execute(f"CREATE DATABASE {tag}_{name}".encode())
            uris[name] = (
                f"{cluster.uri.rpartition('/')[0]}/{tag}_{name}"
                if tcp
                else f"postgresql://postgres@/{tag}_{name}?host={cluster.dir}&port={cluster.port}"
            )
    return [
        Backend("SQLite sync=normal", f"[sqlite]\npath = {sqlite}\n", SQLiteStore, str(sqlite)),
        *(
            Backend(
                f"PG sync_commit={name}",
                f"[postgresql]\nuri = {uris[name]}\nsynchronous_commit = {name}\n",
                PostgresStore,
                uris[name],
            )
            for name in ("on", "off")
        ),
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


def median_round(loads: list[Load]) -> Load:
    return sorted(loads, key=lambda load: load.rate)[len(loads) // 2]


def http_figures(
    wrk: str, workdir: Path, stores: list[Backend], canaries: int, seconds: float, rounds: int
) -> tuple[dict[str, dict[str, Load]], dict[str, dict[str, float]]]:
    """Each store's median round per level, and the median of each round's ratio to the first."""
    webs = []
    with contextlib.ExitStack() as stack:
        for backend in stores:
            store = backend.open()
            ids = list(populate(store, canaries, f"bench {backend.key}", random.Random(16)))  # type: ignore[arg-type]
            store.close()
            paths = write_paths(workdir / f"{backend.key}.paths", ids, random.Random(7))
            webs.append((backend, stack.enter_context(server(workdir, backend, f"web-{backend.key}")), paths))
        levels = [(f"trigger c={clients}", clients) for clients in CLIENTS] + [("create c=8", 8)]
        figures: dict[str, dict[str, Load]] = {backend.name: {} for backend in stores}
        ratios: dict[str, dict[str, float]] = {backend.name: {} for backend in stores}
        for figure, clients in levels:
            loads: dict[str, list[Load]] = {backend.name: [] for backend in stores}
            for round_number in range(rounds):
                for backend, web, paths in webs:
                    args = (
                        ["create", f"new-{backend.key}-{round_number}"]
                        if figure.startswith("create")
                        else ["paths", str(paths)]
                    )
                    loads[backend.name].append(run_wrk(wrk, web, LOAD_LUA, args, clients, seconds))
            base = loads[stores[0].name]
            for name, runs in loads.items():
                figures[name][figure] = median_round(runs)
                ratios[name][figure] = statistics.median(
                    run.rate / first.rate if first.rate else 0.0
                    for run, first in zip(runs, base, strict=True)
                )
    return figures, ratios


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
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per load level and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns each server takes at each level")
    parser.add_argument("--canaries", type=int, default=1000, help="canaries the triggers spread over")
    parser.add_argument("--tcp", action="store_true", help="reach PostgreSQL over TCP, not its Unix socket")
    parser.add_argument("--long", type=int, default=10_000, help="long-period canaries (late-alert delay)")
    parser.add_argument("--short", type=int, default=100, help="short-period canaries (late-alert delay)")
    args = parser.parse_args()
    wrk = install_wrk()
    with tempfile.TemporaryDirectory() as tmp, Cluster(fsync=True) as cluster, SMTPSink() as sink:
        workdir = Path(tmp)
        stores = backends(workdir, cluster, "http", args.tcp)
        http, ratios = http_figures(wrk, workdir, stores, args.canaries, args.seconds, max(1, args.rounds))
        late: dict[str, list[float]] = {}
        for backend in backends(workdir, cluster, "late", args.tcp):
            late[backend.name] = late_delays(sink, workdir, backend, args.long, args.short)
    names = list(http)
    print("\n" + f"{'figure':<26}" + "".join(f"{name:>22}" for name in names) + "   ratios to SQLite, target")
    for figure in http[names[0]]:
        loads = [http[name][figure] for name in names]
        shown = " ".join(f"{ratios[name][figure]:.2f}" for name in names[1:])
        target = " (>= 0.50)" if figure.startswith("trigger") else ""
        errors = [load.errors for load in loads if load.error_count]
        print(
            f"{figure + ' req/s':<26}"
            + "".join(f"{load.rate:>22.0f}" for load in loads)
            + f"   {shown}{target}"
            + (f"  errors {errors}" if errors else "")
        )
        print(f"{figure + ' p99 ms':<26}" + "".join(f"{load.p99_ms:>22.1f}" for load in loads))
        print(
            f"{figure + ' server CPU us':<26}"
            + "".join(f"{load.cpu_per_request_us:>22.0f}" for load in loads)
        )
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        print(
            f"{'late-alert ' + label + ' ms':<26}"
            + "".join(f"{percentile(late[name], fraction):>22.1f}" for name in names)
            + ("   (target < 100)" if label == "p99" else "")
        )
    print(
        f"(trigger load spread over {args.canaries} canaries, {args.seconds:g} s per level and round, "
        f"median of {max(1, args.rounds)} rounds taken in turn; late-alert delay with {args.long} + "
        f"{args.short} canaries; PostgreSQL on the same machine, fsync on, over "
        f"{'TCP' if args.tcp else 'its Unix socket'})"
    )


if __name__ == "__main__":
    main()
