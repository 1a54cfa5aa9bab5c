"""The benchmark harness's pieces work (no timing is checked here: figures live in bench/)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from coal_mine.business_logic import BusinessLogic
from coal_mine.sqlite_store import SQLiteStore
from tests.helpers import REPO, http_get


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

WRK_LINE = (
    'WRK-JSON {"requests": 2000, "duration_us": 1000000, "p50_us": 1500, "p99_us": 9000, '
    '"max_us": 12000, "connect": 0, "read": 3, "write": 0, "status": 0, "timeout": 0}\n'
)


def test_parse_wrk_reads_the_lua_done_line() -> None:
    load = bench.parse_wrk("Running 1s test\n" + WRK_LINE)
    assert load.rate == 2000
    assert (load.p50_ms, load.p99_ms, load.max_ms) == (1.5, 9.0, 12.0)
    assert load.errors == {"read": 3}
    assert load.error_count == 3


def test_parse_wrk_without_figures_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no figures"):
        bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_populate_loads_canaries_with_long_histories(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "bench.sqlite3"))
    try:
        rng = bench.random.Random(1)
        ids = list(bench.populate(store, 3, "smoke", rng))
        (long_id,) = bench.populate(store, 1, "long", rng, history=bench.HISTORY)
        assert len(set(ids)) == 3
        assert [c.name for c in store.iter_canaries()] == ["smoke 0", "smoke 1", "smoke 2", "long 0"]
        long = store.get(long_id)
        assert long is not None and long.history is not None
        assert len(long.history) == bench.HISTORY
        assert long.history[-1][1] == "Canary created"
        assert long.deadline is not None and long.deadline > long.history[0][0]
    finally:
        store.close()


def test_write_paths_lists_every_id_once(tmp_path: Path) -> None:
    path = bench.write_paths(tmp_path / "p", ["abcdefgh", "bcdefghi"], bench.random.Random(2))
    assert sorted(path.read_text().split()) == ["/abcdefgh", "/bcdefghi"]


def test_report_table_lines_up() -> None:
    report = bench.Report()
    report.add(bench.Row("figure one", "1/s", "base 2/s", "50%", ">= 1/s", "yes"))
    lines = report.table().splitlines()
    assert len(lines) == 3
    assert len({len(line) for line in lines}) == 1
    assert "figure one" in lines[2] and "base 2/s" in lines[2]


def test_process_figures_of_this_process() -> None:
    assert bench.cpu_seconds(os.getpid()) > 0
    rss, hwm = bench.memory_kib(os.getpid())
    assert 0 < rss <= hwm


def test_baseline_app_answers_like_a_trigger(tmp_path: Path) -> None:
    server = bench.baseline_server(tmp_path)
    with server:
        status, body = http_get(f"http://127.0.0.1:{server.port}/abcdefgh")
        assert (status, body) == (200, {"status": "ok", "recovered": False, "unpaused": False})
        if shutil.which("wrk") is None:
            pytest.skip("wrk is not installed (bench/run installs it)")
        paths = bench.write_paths(tmp_path / "paths", ["abcdefgh"], bench.random.Random(3))
        load = bench.run_wrk(shutil.which("wrk"), server, bench.LOAD_LUA, ["paths", str(paths)], 2, 1)
    assert load.requests > 0
    assert load.error_count == 0
    assert load.server_cpu > 0


# --- scale guards: work per operation must not grow with the number of canaries ------------
# Counted in SQLite virtual-machine steps (a progress handler called on every step), so
# the check is exact and does not depend on the machine's speed.


def _steps(store: SQLiteStore, action: Callable[[], object]) -> int:
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    with store._read() as conn:
        conn.set_progress_handler(tick, 1)
    try:
        action()
    finally:
        with store._read() as conn:
            conn.set_progress_handler(None, 1)
    return count


def _work_at(size: int, tmp_path: Path) -> dict[str, int]:
    store = SQLiteStore(str(tmp_path / f"scale-{size}.sqlite3"))
    try:
        rng = bench.random.Random(size)
        ids = list(bench.populate(store, size, "scale", rng))
        (long_id,) = bench.populate(store, 1, "long", rng, history=bench.HISTORY)
        logic = BusinessLogic(store)
        now = logic.clock.now()
        target = ids[size // 2]
        return {
            "get": _steps(store, lambda: store.get(target, history=False)),
            "trigger": _steps(store, lambda: logic.trigger(target)),
            "trigger with 1,000 history entries": _steps(store, lambda: logic.trigger(long_id)),
            "id_for_slug": _steps(store, lambda: store.id_for_slug(f"scale-{size // 3}")),
            "earliest_deadline": _steps(store, store.earliest_deadline),
            "due_canaries": _steps(store, lambda: store.due_canaries(now, 100)),
            "claim_notifications": _steps(
                store, lambda: store.claim_notifications(now, "o", now, "email", group=True)
            ),
            "create": _steps(store, lambda: logic.create("one more", 60)),
        }
    finally:
        store.close()


def test_per_operation_work_does_not_grow_with_the_store(tmp_path: Path) -> None:
    small, large = _work_at(20, tmp_path), _work_at(4000, tmp_path)
    for operation, steps in small.items():
        # A b-tree one level deeper costs some steps; a scan would cost 200 times as many.
        assert large[operation] <= 2 * steps + 100, (operation, steps, large[operation])
