"""Coal Mine benchmark suite: trigger, create, list, memory and start-up figures at scale.

Run with `bench/run` (installs wrk if needed) or `.venv/bin/python bench/run.py [--quick]`.
Every server is started here on a free 127.0.0.1 port and pinned to core 0; wrk runs
on core 1 and opens a new connection for every request, as curl in a cron line does.
Each figure is printed next to its baseline from the same run. See docs/bench.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coal_mine.business_logic import slugify  # noqa: E402
from coal_mine.clock import Clock, to_millis  # noqa: E402
from coal_mine.models import Canary  # noqa: E402
from coal_mine.sqlite_store import SQLiteStore  # noqa: E402

BENCH = Path(__file__).resolve().parent
LOAD_LUA = BENCH / "wrk" / "load.lua"
CLIENTS = (1, 8, 64)
SMALL, LARGE, HISTORY = 100, 100_000, 1000
PERIODICITY = 86400.0  # long enough that nothing falls due during a run
SERVER_CORE, CLIENT_CORE = "0", "1"
REFERENCE = "coal-mine==0.7.1"  # installed from PyPI into its own virtual environment
REFERENCE_VENV = Path(tempfile.gettempdir()) / "coal-mine-0.7.1-venv"  # outside the checkout


# --- processes ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(core: str, argv: list[str]) -> list[str]:
    """`argv` run on one CPU core, when taskset exists and the core does."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > int(core):
        return ["taskset", "-c", core, *argv]
    return argv


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> float:
    """Block until something accepts on the port; returns the time that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.002)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@dataclass
class Server:
    """A server process pinned to the server core; started and stopped by the benchmark."""

    argv: list[str]
    port: int
    workdir: Path
    name: str
    process: subprocess.Popen | None = None
    startup: float = 0.0
    this_checkout: bool = True  # False: the reference server, which must not import this code

    def start(self) -> Server:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if self.this_checkout:
            env["PYTHONPATH"] = str(REPO)
        env.pop("MONGODB_URI", None)
        out = open(self.workdir / f"{self.name}.out", "ab")  # noqa: SIM115 - lives with the process
        begin = time.monotonic()
        self.process = subprocess.Popen(
            pinned(SERVER_CORE, self.argv), cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        wait_for_port(self.port, self.process)
        self.startup = time.monotonic() - begin
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def memory(self) -> tuple[int, int]:
        assert self.process is not None
        return memory_kib(self.process.pid)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def coal_mine_server(workdir: Path, db: Path, name: str = "coal-mine") -> Server:
    """The real server (web and background work) on the benchmark database."""
    port = free_port()
    ini = workdir / f"{name}.ini"
    ini.write_text(
        f"[wsgi]\nhost = 127.0.0.1\nport = {port}\n"
        f"[sqlite]\npath = {db}\n"
        f"[logging]\nfile = {workdir / (name + '.log')}\n"
        "[email]\nsender = bench@example.com\nhost = 127.0.0.1\nport = 9\n"
    )
    return Server([sys.executable, "-m", "coal_mine.server", "--config", str(ini)], port, workdir, name)


def baseline_server(workdir: Path) -> Server:
    """The minimal constant-response WSGI app on the same server class."""
    port = free_port()
    return Server(
        [sys.executable, str(BENCH / "baseline_app.py"), str(port), str(workdir / "baseline.log")],
        port,
        workdir,
        "baseline",
    )


def reference_python() -> Path:
    """The Python of a virtual environment outside this checkout that holds Coal Mine 0.7.1
    from PyPI; created (pip install) on first use, then reused."""
    python = REFERENCE_VENV / "bin" / "python"
    probe = [
        str(python),
        "-I",
        "-c",
        "import importlib.metadata as m; assert m.version('coal-mine') == '0.7.1'",
    ]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"Installing {REFERENCE} from PyPI into {REFERENCE_VENV}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(REFERENCE_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", REFERENCE], check=True)
    subprocess.run(probe, check=True)
    return python


def reference_server(workdir: Path, ids_file: Path) -> Server:
    """Coal Mine 0.7.1 on its in-memory store with SMALL canaries (ids written to ids_file)."""
    port = free_port()
    argv = [
        str(reference_python()),
        "-I",  # isolated: never this checkout's coal_mine
        str(BENCH / "coal_mine_071.py"),
        str(port),
        str(SMALL),
        str(ids_file),
        str(workdir / "coal-mine-0.7.1.log"),
    ]
    return Server(argv, port, workdir, "coal-mine-0.7.1", this_checkout=False)


# --- load -----------------------------------------------------------------------------


@dataclass
class Load:
    """What wrk measured in one level."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # CPU seconds the server used during the level

    @property
    def cpu_per_request_us(self) -> float:
        return self.server_cpu / self.requests * 1e6 if self.requests else 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def install_wrk() -> str:
    """The wrk binary, installing Debian's package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it with apt-get", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still missing after apt-get install")
    return found


def parse_wrk(output: str) -> Load:
    """The JSON line our Lua `done` functions print."""
    for line in output.splitlines():
        if line.startswith("WRK-JSON "):
            data = json.loads(line[len("WRK-JSON ") :])
            errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
            return Load(
                data["requests"],
                data["duration_us"] / 1e6,
                data["p50_us"] / 1000,
                data["p99_us"] / 1000,
                data["max_us"] / 1000,
                errors,
            )
    raise RuntimeError(f"wrk printed no figures:\n{output}")


def run_wrk(
    wrk: str, server: Server, script: Path, script_args: Sequence[str], clients: int, seconds: float
) -> Load:
    """One level of load from wrk on the client core, with the server's CPU time used."""
    argv = pinned(
        CLIENT_CORE,
        [
            wrk,
            "-t",
            "1",
            "-c",
            str(clients),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{server.port}",
            "--",
            *script_args,
        ],
    )
    assert server.process is not None
    cpu_before = cpu_seconds(server.process.pid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu = cpu_seconds(server.process.pid) - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}")
    load = parse_wrk(done.stdout)
    load.server_cpu = cpu
    return load


def fetch(port: int, path: str) -> tuple[int, float, float, int]:
    """GET a path: (status, seconds to the first body byte, seconds to the end, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        start = time.monotonic()
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        first = response.read(1)
        first_at = time.monotonic() - start
        size = len(first)
        while chunk := response.read(65536):
            size += len(chunk)
        return response.status, first_at, time.monotonic() - start, size
    finally:
        conn.close()


# --- data -----------------------------------------------------------------------------


def random_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(8))


def populate(
    store: SQLiteStore, count: int, prefix: str, rng: random.Random, history: int = 1
) -> Iterator[str]:
    """Create canaries straight through the store (bulk loading is not what is measured)."""
    now = Clock().now()
    for n in range(count):
        name = f"{prefix} {n}"
        entries = [(to_millis(now - timedelta(seconds=60 * i)), "Triggered") for i in range(history - 1)]
        entries.append((to_millis(now - timedelta(seconds=60 * max(history - 1, 0))), "Canary created"))
        canary = Canary(
            id=random_id(rng),
            name=name,
            slug=slugify(name),
            periodicity=PERIODICITY,
            emails=[f"owner{n}@example.com"],
            history=entries,
            deadline=to_millis(now + timedelta(seconds=PERIODICITY)),
        )
        store.create(canary)
        yield canary.id


def write_paths(path: Path, ids: Sequence[str], rng: random.Random) -> Path:
    shuffled = list(ids)
    rng.shuffle(shuffled)
    path.write_text("".join(f"/{cid}\n" for cid in shuffled))
    return path


# --- report -----------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


class Report:
    """Collects figures, printing each as it is measured and all of them at the end."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)
        line = f"  {row.figure}: {row.value}"
        if row.baseline:
            line += f"  (baseline {row.baseline}, {row.ratio})"
        if row.target:
            line += f"  target {row.target}: {row.verdict}"
        print(line, flush=True)

    def table(self) -> str:
        head = Row("figure", "value", "baseline (same run)", "ratio", "target", "met")
        rows = [head, *self.rows]
        widths = [
            max(len(getattr(r, f)) for r in rows)
            for f in ("figure", "value", "baseline", "ratio", "target", "verdict")
        ]
        lines = []
        for i, r in enumerate(rows):
            cells = [r.figure, r.value, r.baseline, r.ratio, r.target, r.verdict]
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |")
            if i == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def load_text(load: Load) -> str:
    errors = f", errors {load.errors}" if load.errors else ""
    return (
        f"{load.rate:,.0f}/s p50 {load.p50_ms:.1f} ms p99 {load.p99_ms:.1f} ms "
        f"cpu {load.cpu_per_request_us:.0f} us/req{errors}"
    )


# --- the suite -----------------------------------------------------------------------------


@dataclass
class Bench:
    wrk: str
    workdir: Path
    seconds: float
    large: int
    report: Report = field(default_factory=Report)
    rng: random.Random = field(default_factory=lambda: random.Random(8))

    def triggers(self, server: Server, paths: Path) -> dict[int, Load]:
        args = ["paths", str(paths)]
        return {c: run_wrk(self.wrk, server, LOAD_LUA, args, c, self.seconds) for c in CLIENTS}

    def kept_alive(self, server: Server, paths: Path) -> Load:
        """8 clients that keep their connections open (HTTP/1.1, as requests.Session does)."""
        return run_wrk(self.wrk, server, LOAD_LUA, ["paths", str(paths), "keepalive"], 8, self.seconds)

    def side_by_side(
        self,
        reference: dict[int, Load],
        ours: dict[int, Load],
        minimal: dict[int, Load],
        kept: tuple[Load, Load, Load],
    ) -> str:
        """Coal Mine 0.7.1, this server and the minimal app, measured in this run."""
        rows = [["", "Coal Mine 0.7.1", "this server", "ratio", "minimal app", "of minimal", "target", "met"]]
        for c in CLIENTS:
            ref, load, base = reference[c], ours[c], minimal[c]
            ratio = load.rate / ref.rate if ref.rate else 0.0
            share = load.rate / base.rate if base.rate else 0.0
            target, ok = "", True
            if c == 8:
                target, ok = ">= 3x 0.7.1, >= 75% of minimal", ratio >= 3 and share >= 0.75
            rows.append(
                [
                    f"triggers/s, {c} client{'s' if c > 1 else ''}",
                    f"{ref.rate:,.0f}",
                    f"{load.rate:,.0f}",
                    f"{ratio:.2f}x",
                    f"{base.rate:,.0f}",
                    f"{share:.0%}",
                    target,
                    verdict(ok) if target else "",
                ]
            )
        ref, load, base = reference[64], ours[64], minimal[64]
        ok = load.p99_ms < 50 and not load.error_count
        rows.append(
            [
                "trigger p99, 64 clients",
                f"{ref.p99_ms:,.1f} ms",
                f"{load.p99_ms:,.1f} ms",
                "",
                f"{base.p99_ms:,.1f} ms",
                "",
                "< 50 ms, no errors",
                verdict(ok),
            ]
        )
        ref, load, base = reference[8], ours[8], minimal[8]
        rows.append(
            [
                "server CPU per trigger, 8 clients",
                f"{ref.cpu_per_request_us:.0f} us",
                f"{load.cpu_per_request_us:.0f} us",
                f"{ref.cpu_per_request_us / load.cpu_per_request_us:.2f}x less" if load.requests else "",
                f"{base.cpu_per_request_us:.0f} us",
                "",
                "",
                "",
            ]
        )
        ref, load, base = kept
        rows.append(
            [
                "triggers/s, 8 clients keeping connections open",
                f"{ref.rate:,.0f}",
                f"{load.rate:,.0f} (cpu {load.cpu_per_request_us:.0f} us)",
                f"{load.rate / ref.rate:.2f}x" if ref.rate else "",
                f"{base.rate:,.0f}",
                f"{load.rate / base.rate:.0%}" if base.rate else "",
                "no errors",
                verdict(not load.error_count),
            ]
        )
        errors = [f"{name}: {load.errors}" for name, load in (("0.7.1", reference[64]),) if load.errors]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = []
        for i, row in enumerate(rows):
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
            if i == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines + [f"(errors of the reference, not counted: {e})" for e in errors])

    def creates(self, server: Server, prefix: str) -> Load:
        return run_wrk(self.wrk, server, LOAD_LUA, ["create", prefix], 8, self.seconds)

    def trigger_rows(
        self,
        label: str,
        loads: dict[int, Load],
        base: dict[int, Load],
        base_name: str,
        want: float | None,
        targets: bool = False,
    ) -> None:
        for c in CLIENTS:
            load, ref = loads[c], base[c]
            ratio = load.rate / ref.rate if ref.rate else 0.0
            target, ok = "", True
            if want is not None and c == 8:
                target = f">= {want:.0%} of baseline"
                ok = ratio >= want
            if targets and c == 64:
                target = "p99 < 50 ms, no errors"
                ok = load.p99_ms < 50 and not load.error_count
            if load.error_count and not target:
                target, ok = "no errors", False
            self.report.add(
                Row(
                    f"{label}, {c} client{'s' if c > 1 else ''}",
                    load_text(load),
                    f"{base_name} {ref.rate:,.0f}/s p99 {ref.p99_ms:.1f} ms "
                    f"cpu {ref.cpu_per_request_us:.0f} us/req",
                    f"{ratio:.0%}",
                    target,
                    verdict(ok) if target else "",
                )
            )

    def run(self) -> None:
        db = self.workdir / "bench.sqlite3"
        print(f"Working in {self.workdir}; {self.seconds:g} s per level", flush=True)

        print("Baseline: minimal WSGI app on PooledWSGIServer", flush=True)
        small_ids: list[str] = []
        store = SQLiteStore(str(db))
        small_ids = list(populate(store, SMALL, "small", self.rng))
        (history_id,) = populate(store, 1, "history", self.rng, history=HISTORY)
        store.close()
        small_paths = write_paths(self.workdir / "small.paths", small_ids, self.rng)
        history_paths = write_paths(self.workdir / "history.paths", [history_id], self.rng)
        with baseline_server(self.workdir) as base:
            baseline = self.triggers(base, small_paths)
            base_kept = self.kept_alive(base, small_paths)
            base_rss, base_hwm = base.memory()
        for c in CLIENTS:
            print(f"  baseline, {c} clients: {load_text(baseline[c])}", flush=True)
        print(f"  baseline, 8 clients keeping connections open: {load_text(base_kept)}", flush=True)

        print(f"Coal Mine 0.7.1 ({REFERENCE} from PyPI) on its in-memory store, {SMALL} canaries", flush=True)
        reference_ids = self.workdir / "reference.ids"
        with reference_server(self.workdir, reference_ids) as reference_server_:
            reference_paths = write_paths(
                self.workdir / "reference.paths", reference_ids.read_text().split(), self.rng
            )
            reference = self.triggers(reference_server_, reference_paths)
            reference_kept = self.kept_alive(reference_server_, reference_paths)
        for c in CLIENTS:
            print(f"  Coal Mine 0.7.1, {c} clients: {load_text(reference[c])}", flush=True)
        print(
            f"  Coal Mine 0.7.1, 8 clients keeping connections open: {load_text(reference_kept)}", flush=True
        )

        print(f"Coal Mine with {SMALL} canaries", flush=True)
        empty_db = self.workdir / "empty.sqlite3"
        SQLiteStore(str(empty_db)).close()
        with coal_mine_server(self.workdir, empty_db, "empty") as empty:
            empty_startup = empty.startup
        with coal_mine_server(self.workdir, db) as server:
            small = self.triggers(server, small_paths)
            small_kept = self.kept_alive(server, small_paths)
            self.trigger_rows(f"trigger, {SMALL} canaries", small, baseline, "minimal app", 0.75, True)
            print(f"  8 clients keeping connections open: {load_text(small_kept)}", flush=True)
            history = self.triggers(server, history_paths)
            self.trigger_rows(
                f"trigger, 1 canary with {HISTORY} history entries", history, small, f"{SMALL} canaries", 0.90
            )
            created_small = self.creates(server, "small-create")
            small_count = SMALL + 1 + created_small.requests
            _, _, small_list, _ = fetch(server.port, "/coal-mine/v1/canary/list")

        store = SQLiteStore(str(db))
        existing = sum(1 for _ in store.iter_canaries())
        print(f"Growing from {existing:,} to {self.large:,} canaries through the store", flush=True)
        large_ids = list(small_ids)
        chunk = max((self.large - existing) // 4, 1)
        grown = existing
        while grown < self.large:
            step = min(chunk, self.large - grown)
            began = time.monotonic()
            large_ids.extend(populate(store, step, f"large {grown}", self.rng))
            grown += step
            print(
                f"  store-level creates up to {grown:,}: {step / (time.monotonic() - began):,.0f}/s",
                flush=True,
            )
        store.close()
        large_paths = write_paths(self.workdir / "large.paths", large_ids, self.rng)

        print(f"Coal Mine with {self.large:,} canaries", flush=True)
        startups = []
        for _ in range(3):
            with coal_mine_server(self.workdir, db, "startup") as probe:
                startups.append(probe.startup)
        startup = statistics.median(startups)
        self.report.add(
            Row(
                f"start-up with {self.large:,} canaries (median of 3)",
                f"{startup * 1000:.0f} ms",
                f"empty database {empty_startup * 1000:.0f} ms",
                f"{startup / empty_startup:.2f}x",
                "< 1 s",
                verdict(startup < 1),
            )
        )
        with coal_mine_server(self.workdir, db) as server:
            large = self.triggers(server, large_paths)
            self.trigger_rows(f"trigger, {self.large:,} canaries", large, small, f"{SMALL} canaries", 0.90)
            count = grown
            status, _, total, size = fetch(server.port, "/coal-mine/v1/canary/list")
            self.report.add(
                Row(
                    f"list (not verbose) of {count:,}",
                    f"{total * 1000:.0f} ms, {size / 1e6:.1f} MB",
                    f"{small_count:,} canaries: {small_list * 1000:.0f} ms",
                    "",
                    "< 1 s",
                    verdict(total < 1 and status == 200),
                )
            )
            _, hwm_before = server.memory()
            status, first, total, size = fetch(server.port, "/coal-mine/v1/canary/list?verbose=true")
            _, hwm_after = server.memory()
            grew = (hwm_after - hwm_before) * 1024
            self.report.add(
                Row(
                    f"list verbose of {count:,}",
                    f"first byte {first * 1000:.0f} ms, all {total:.1f} s, {size / 1e6:.0f} MB",
                    f"peak RSS {hwm_before / 1024:.1f} MiB before",
                    f"+{grew / 2**20:.1f} MiB",
                    "streams: peak RSS grows < 16 MiB",
                    verdict(status == 200 and grew < 16 * 2**20),
                )
            )
            created_large = self.creates(server, "large-create")
            rss, hwm = server.memory()
        self.report.add(
            Row(
                f"creates over HTTP from {SMALL} canaries, 8 clients",
                load_text(created_small),
                f"minimal app {baseline[8].rate:,.0f}/s",
                f"{created_small.rate / baseline[8].rate:.0%}",
                "no errors",
                verdict(not created_small.error_count),
            )
        )
        self.report.add(
            Row(
                f"creates over HTTP from {count:,} canaries, 8 clients",
                load_text(created_large),
                f"from {SMALL}: {created_small.rate:,.0f}/s",
                f"{created_large.rate / created_small.rate:.0%}",
                ">= 1,000/s, no errors",
                verdict(created_large.rate >= 1000 and not created_large.error_count),
            )
        )
        self.report.add(
            Row(
                "server memory at the end (VmRSS / VmHWM)",
                f"{rss / 1024:.1f} / {hwm / 1024:.1f} MiB",
                f"minimal app {base_rss / 1024:.1f} / {base_hwm / 1024:.1f} MiB",
                "",
                "< 60 MiB",
                verdict(hwm < 60 * 1024),
            )
        )
        print()
        print(self.report.table())
        print()
        print(
            f"Side by side, {SMALL} canaries, same run "
            f"(servers on core {SERVER_CORE}, wrk on core {CLIENT_CORE}):"
        )
        print(self.side_by_side(reference, small, baseline, (reference_kept, small_kept, base_kept)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per level and 10,000 canaries: a try-out")
    parser.add_argument("--seconds", type=float, help="seconds per level (default 10, or 2 with --quick)")
    parser.add_argument("--canaries", type=int, help=f"size of the large store (default {LARGE:,})")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    wrk = install_wrk()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    large = args.canaries or (10_000 if args.quick else LARGE)
    workdir = Path(tempfile.mkdtemp(prefix="coal-mine-bench-"))
    try:
        Bench(wrk, workdir, seconds, large).run()
    finally:
        if args.keep:
            print(f"Kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
