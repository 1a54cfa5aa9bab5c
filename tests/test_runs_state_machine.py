"""A stateful property test of run reporting over real HTTP against a simple model:
start, success, fail, log, pause, snooze, unpause and time passing, in any order."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from coal_mine.clock import FakeClock
from coal_mine.memory_store import MemoryStore
from tests.runs_support import RunServer

PERIOD = 60.0
rids = st.sampled_from([None, "a", "b", "c"])


@dataclass
class Run:
    rid: str | None
    start: datetime
    overdue: bool = False


@dataclass
class Model:
    max_runtime: float | None
    deadline: datetime | None
    paused: bool = False
    late: bool = False
    failed: bool = False
    snooze: datetime | None = None
    runs: list[Run] = field(default_factory=list)
    history: list[str] = field(default_factory=lambda: ["Canary created"])
    notes: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.paused:
            return "paused"
        return "failed" if self.failed else "late" if self.late else "running" if self.runs else "ok"


class RunsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.server = RunServer(MemoryStore(), FakeClock()).__enter__()

    def teardown(self) -> None:
        self.server.__exit__(None, None, None)

    @initialize(max_runtime=st.sampled_from([None, 30.0]))
    def create(self, max_runtime: float | None) -> None:
        params: dict[str, Any] = {"periodicity": "60", "email": "ops@example.com"}
        if max_runtime:
            params["max_runtime"] = "30"
        self.cid = self.server.create(**params)
        now = self.server.clock.now()
        self.model = Model(max_runtime, now + timedelta(seconds=PERIOD))

    @property
    def now(self) -> datetime:
        return self.server.clock.now()

    def call(self, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
        status, body = self.server.call(path, **{k: v for k, v in params.items() if v is not None})
        assert status in (200, 400), (status, body)
        return status, body

    # --- events ---------------------------------------------------------------------------

    @rule(rid=rids)
    def start(self, rid: str | None) -> None:
        status, body = self.call(f"/{self.cid}/start", rid=rid)
        m = self.model
        m.runs = [Run(rid, self.now)] + [run for run in m.runs if run.rid != rid][:9]
        m.history.insert(0, "Started")
        assert status == 200 and body["state"] == m.state

    def _close(self, rid: str | None) -> str:
        m = self.model
        match = (
            [r for r in m.runs if r.rid == rid] if rid else [r for r in m.runs if r.rid is None] or m.runs[:1]
        )
        if not match:
            return ""
        m.runs.remove(match[0])
        return f", ran {round((self.now - match[0].start).total_seconds(), 3):.3f} s"

    def _end(self, failed: bool) -> None:
        m = self.model
        if failed and not m.failed:
            m.notes.append("failed")
        if not failed and m.late:
            m.notes.append("resumed")
        m.late = m.failed = failed
        m.paused, m.snooze = False, None
        m.deadline = self.now + timedelta(seconds=PERIOD)

    @rule(rid=rids, short=st.booleans())
    def success(self, rid: str | None, short: bool) -> None:
        m = self.model
        status, body = self.call(f"/{self.cid}/0" if short else f"/{self.cid}", rid=rid)
        assert body == {"status": "ok", "recovered": m.late, "unpaused": m.paused}
        m.history.insert(0, "Triggered" + self._close(rid))
        self._end(failed=False)

    @rule(rid=rids, exit_status=st.sampled_from([None, 1, 255]))
    def fail(self, rid: str | None, exit_status: int | None) -> None:
        m = self.model
        path = f"/{self.cid}/fail" if exit_status is None else f"/{self.cid}/{exit_status}"
        status, body = self.call(path, rid=rid)
        assert (body["recovered"], body["unpaused"]) == (False, m.paused)
        text = f"Failed (exit status {exit_status})" if exit_status else "Failed"
        m.history.insert(0, text + self._close(rid))
        self._end(failed=True)
        assert body["state"] == "failed"

    @rule()
    def log(self) -> None:
        status, body = self.call(f"/{self.cid}/log")
        self.model.history.insert(0, "Logged")
        assert body["state"] == self.model.state

    @rule(seconds=st.one_of(st.none(), st.sampled_from([1, 45, 200])))
    def pause(self, seconds: int | None) -> None:
        m = self.model
        status, _ = self.call("pause", id=self.cid, until=seconds)
        assert status == (400 if m.paused else 200)
        if status == 200:
            m.paused, m.deadline = True, None
            m.snooze = self.now + timedelta(seconds=seconds) if seconds else None
            m.history.insert(0, f"Paused until {m.snooze.isoformat()}" if m.snooze else "Paused")

    @rule()
    def unpause(self) -> None:
        m = self.model
        status, _ = self.call("unpause", id=self.cid)
        assert status == (200 if m.paused else 400)
        if status == 200:
            m.paused, m.snooze, m.deadline = False, None, self.now + timedelta(seconds=PERIOD)
            m.history.insert(0, "Unpaused")

    @rule(seconds=st.sampled_from([0.5, 10, 31, 61, 300]))
    def time_passes(self, seconds: float) -> None:
        self.server.tick(seconds)
        m, now = self.model, self.now
        changed = True
        while changed:
            changed = False
            if not m.paused and not m.late and m.deadline is not None and m.deadline < now:
                m.late, changed = True, True
                m.notes.append("late")
            if m.paused and m.snooze is not None and m.snooze <= now:
                m.paused, m.snooze, m.deadline = False, None, now + timedelta(seconds=PERIOD)
                m.history.insert(0, "Unpaused (snooze ended)")
                changed = True
            elif not m.paused and m.max_runtime:
                limit = timedelta(seconds=m.max_runtime)
                over = [run for run in m.runs if not run.overdue and run.start + limit <= now]
                for run in over:
                    run.overdue = True
                if over and not m.late:
                    m.late, changed = True, True
                    m.notes.append("late")

    # --- the model and the server agree ----------------------------------------------------------

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "cid"):
            return
        m = self.model
        canary = self.server.canary(self.cid)
        state = canary.get("state") or ("paused" if canary["paused"] else "late" if canary["late"] else "ok")
        assert state == m.state
        assert (canary["paused"], canary["late"]) == (m.paused, m.late)
        assert [comment for _, comment in canary["history"]] == m.history
        assert canary.get("deadline") == (m.deadline.isoformat() if m.deadline else None)
        assert [run["rid"] for run in canary.get("running", [])] == [run.rid for run in m.runs]
        assert canary.get("paused_until") == (m.snooze.isoformat() if m.snooze else None)
        assert self.server.kinds() == m.notes


RunsMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRunsStateMachine = RunsMachine.TestCase
