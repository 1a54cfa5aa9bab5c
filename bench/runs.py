"""Run reporting against the plain trigger: `/<id>/start` and `/<id>/<exit status>` may cost at most
10% more than `/<id>` (issue 14), measured in the same run on the same server.

    .venv/bin/python bench/runs.py [--seconds 4] [--rounds 3] [--clients 8] [--canaries 100]

One real server (SQLite, web and background work) pinned to core 0; wrk on core 1, a new
connection per request as curl in cron makes. Each URL kind has its own canaries, and the
kinds take turns round after round (in a rotating order), so drift on a shared machine
hits them all alike. The figures are each kind's median over the rounds: requests per
second, and the server's CPU time per request. Cost = trigger's rate / the kind's rate.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import tempfile
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent
TARGET = 1.10


def _load_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_run()

# kind -> how one canary's request path looks
KINDS = {
    "trigger": lambda cid: [f"/{cid}"],
    "start": lambda cid: [f"/{cid}/start"],
    "exit 0": lambda cid: [f"/{cid}/0"],
    "exit 1": lambda cid: [f"/{cid}/1"],
    "start+exit 0 (rid)": lambda cid: [f"/{cid}/start?rid=r{cid}", f"/{cid}/0?rid=r{cid}"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement (4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every kind (3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections (8)")
    parser.add_argument("--canaries", type=int, default=100, help="canaries per kind (100)")
    args = parser.parse_args(argv)
    wrk = bench.install_wrk()
    rng = random.Random(14)
    with tempfile.TemporaryDirectory(prefix="coal-mine-bench-runs-") as tmp:
        workdir = Path(tmp)
        db = workdir / "runs.sqlite3"
        store = bench.SQLiteStore(str(db))
        files = {}
        for number, (kind, paths) in enumerate(KINDS.items()):
            ids = list(bench.populate(store, args.canaries, f"kind{number}", rng))
            rng.shuffle(ids)
            files[kind] = workdir / f"paths{number}.txt"
            files[kind].write_text("".join(f"{path}\n" for cid in ids for path in paths(cid)))
        store.close()
        rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
        cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
        errors = 0
        with bench.coal_mine_server(workdir, db) as server:
            for kind in KINDS:  # warm-up, not counted
                bench.run_wrk(wrk, server, bench.LOAD_LUA, ["paths", str(files[kind])], args.clients, 1)
            order = list(KINDS)
            for round_number in range(args.rounds):
                for kind in order[round_number % len(order) :] + order[: round_number % len(order)]:
                    load = bench.run_wrk(
                        wrk, server, bench.LOAD_LUA, ["paths", str(files[kind])], args.clients, args.seconds
                    )
                    rates[kind].append(load.rate)
                    cpu[kind].append(load.cpu_per_request_us)
                    errors += load.error_count
                    print(f"round {round_number + 1} {kind:>20}: {load.rate:8.0f} req/s, "
                          f"{load.cpu_per_request_us:6.0f} us CPU/request, p99 {load.p99_ms:.1f} ms",
                          flush=True)  # fmt: skip
    base_rate = statistics.median(rates["trigger"])
    base_cpu = statistics.median(cpu["trigger"])
    print(f"\n{args.clients} clients, {args.rounds} rounds of {args.seconds:g} s; the machine may be shared.")
    print(f"{'URL':>20}  {'req/s':>8}  {'cost':>6}  {'CPU us/req':>10}  {'CPU cost':>8}  verdict")
    worst = 0.0
    for kind in KINDS:
        rate, used = statistics.median(rates[kind]), statistics.median(cpu[kind])
        cost, cpu_cost = base_rate / rate, used / base_cpu
        if kind != "trigger":
            worst = max(worst, cost)
        verdict = "baseline" if kind == "trigger" else ("ok" if cost <= TARGET else "OVER")
        print(f"{kind:>20}  {rate:8.0f}  {cost:6.3f}  {used:10.0f}  {cpu_cost:8.3f}  {verdict}")
    print(f"worst cost {worst:.3f} (target at most {TARGET:.2f}); wrk errors: {errors}")
    return 0 if worst <= TARGET and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
