"""Run reporting over real HTTP, on every store: URLs, states, durations, overruns, output, snooze, 400s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.clock import FakeClock
from coal_mine.limits import MAX_COMMENT_LENGTH, MAX_RID_LENGTH
from tests.runs_support import RunServer


@pytest.fixture
def srv(store: AbstractStore, clock: FakeClock) -> Iterator[RunServer]:
    with RunServer(store, clock, max_body=100) as server:
        yield server


# --- every URL form and method ------------------------------------------------------------

FORMS = [
    # (path pattern, extra params, expected history comment, expected state)
    ("/{id}/start", {}, "Started", "running"),
    ("start", {"id": "{id}"}, "Started", "running"),
    ("start", {"slug": "job"}, "Started", "running"),
    ("start", {"name": "Job"}, "Started", "running"),
    ("/{id}/fail", {}, "Failed", "failed"),
    ("fail", {"id": "{id}", "exit_status": "4"}, "Failed (exit status 4)", "failed"),
    ("fail", {"name": "Job", "comment": "disk full"}, "Failed (disk full)", "failed"),
    ("/{id}/log", {"m": "note"}, "Logged (note)", "ok"),
    ("log", {"slug": "job", "comment": "note"}, "Logged (note)", "ok"),
    ("/{id}/7", {"comment": "x"}, "Failed (exit status 7: x)", "failed"),
    ("/{id}/255", {}, "Failed (exit status 255)", "failed"),
]


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
@pytest.mark.parametrize(("path", "params", "comment", "state"), FORMS)
def test_every_url_form_and_method(
    srv: RunServer, method: str, path: str, params: dict, comment: str, state: str
) -> None:
    cid = srv.create(email="ops@example.com")
    path = path.format(id=cid)
    params = {k: v.format(id=cid) for k, v in params.items()}
    status, body = srv.request(method, path, **params)
    assert status == 200, body
    if method != "HEAD" or body:
        answer = json.loads(body)
        assert answer == {"status": "ok", "recovered": False, "unpaused": False, "state": state}
    assert srv.comments(cid)[0] == comment
    assert _state(srv.canary(cid)) == state


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_exit_status_zero_is_exactly_a_trigger(srv: RunServer, method: str) -> None:
    plain, zero = srv.create("Plain"), srv.create("Zero")
    srv.clock.advance(5)
    one = srv.request(method, f"/{plain}", comment="done")
    other = srv.request(method, f"/{zero}/0", comment="done")
    assert one == other
    assert srv.request(method, "fail", id=zero, exit_status="0")[0] == 200
    first, second = srv.canary(plain), srv.canary(zero)
    assert [c for _, c in first["history"]] == ["Triggered (done)", "Canary created"]
    assert [c for _, c in second["history"]] == ["Triggered", "Triggered (done)", "Canary created"]
    for key in ("late", "paused", "deadline"):
        assert first[key] == second[key]
    assert "state" not in first and "state" not in second  # neither used run reporting


def test_no_auth_key_needed(store: AbstractStore, clock: FakeClock) -> None:
    with RunServer(store, clock, auth_key="sekrit") as srv:
        status, body = srv.call("create", name="Job", periodicity="60", auth_key="sekrit")
        cid = body["canary"]["id"]
        for path in (f"/{cid}/start", f"/{cid}/log", f"/{cid}/0", f"/{cid}/3", "start?id=" + cid):
            assert srv.request("GET", path)[0] == 200, path
        assert srv.request("GET", "get", id=cid)[0] == 401


# --- state transitions: every event in every state ----------------------------------------------


def _enter(srv: RunServer, state: str) -> str:
    cid = srv.create(email="ops@example.com", periodicity="60")
    if state == "running":
        srv.call(f"/{cid}/start")
    elif state == "late":
        srv.tick(61)
    elif state == "failed":
        srv.call(f"/{cid}/fail")
    elif state == "paused":
        srv.call("pause", id=cid)
    assert _state(srv.canary(cid)) == state
    return cid


EVENTS = {
    "start": ("/{id}/start", {}),
    "success": ("/{id}", {}),
    "exit0": ("/{id}/0", {}),
    "fail": ("/{id}/fail", {}),
    "exit3": ("/{id}/3", {}),
    "log": ("/{id}/log", {}),
    "pause": ("pause", {"id": "{id}"}),
    "snooze": ("pause", {"id": "{id}", "until": "600"}),
    "unpause": ("unpause", {"id": "{id}"}),
}
# state -> event -> (HTTP status, state after, notification recorded or None)
TRANSITIONS: dict[str, dict[str, tuple[int, str, str | None]]] = {
    "ok": {
        "start": (200, "running", None),
        "success": (200, "ok", None),
        "exit0": (200, "ok", None),
        "fail": (200, "failed", "failed"),
        "exit3": (200, "failed", "failed"),
        "log": (200, "ok", None),
        "pause": (200, "paused", None),
        "snooze": (200, "paused", None),
        "unpause": (400, "ok", None),
    },
    "running": {
        "start": (200, "running", None),
        "success": (200, "ok", None),
        "exit0": (200, "ok", None),
        "fail": (200, "failed", "failed"),
        "exit3": (200, "failed", "failed"),
        "log": (200, "running", None),
        "pause": (200, "paused", None),
        "snooze": (200, "paused", None),
        "unpause": (400, "running", None),
    },
    "late": {
        "start": (200, "late", None),
        "success": (200, "ok", "resumed"),
        "exit0": (200, "ok", "resumed"),
        "fail": (200, "failed", "failed"),
        "exit3": (200, "failed", "failed"),
        "log": (200, "late", None),
        "pause": (200, "paused", None),
        "snooze": (200, "paused", None),
        "unpause": (400, "late", None),
    },
    "failed": {
        "start": (200, "failed", None),
        "success": (200, "ok", "resumed"),
        "exit0": (200, "ok", "resumed"),
        "fail": (200, "failed", None),
        "exit3": (200, "failed", None),
        "log": (200, "failed", None),
        "pause": (200, "paused", None),
        "snooze": (200, "paused", None),
        "unpause": (400, "failed", None),
    },
    "paused": {
        "start": (200, "paused", None),
        "success": (200, "ok", None),
        "exit0": (200, "ok", None),
        "fail": (200, "failed", "failed"),
        "exit3": (200, "failed", "failed"),
        "log": (200, "paused", None),
        "pause": (400, "paused", None),
        "snooze": (400, "paused", None),
        "unpause": (200, "ok", None),
    },
}
CASES = [(state, event) for state, row in TRANSITIONS.items() for event in row]


def _state(canary: dict) -> str:
    """The state field, or for a canary never touched by run reporting what 0.7.1's flags say."""
    if "state" in canary:
        return canary["state"]
    return "paused" if canary["paused"] else "late" if canary["late"] else "ok"


@pytest.mark.parametrize(("state", "event"), CASES)
def test_transition(srv: RunServer, state: str, event: str) -> None:
    cid = _enter(srv, state)
    before = srv.kinds()
    path, params = EVENTS[event]
    status, body = srv.call(path.format(id=cid), **{k: v.format(id=cid) for k, v in params.items()})
    expected_status, expected_state, notification = TRANSITIONS[state][event]
    assert status == expected_status, body
    canary = srv.canary(cid)
    assert _state(canary) == expected_state
    assert srv.kinds() == before + ([notification] if notification else [])
    # The 0.7.1 flags keep their meanings: failed is late, paused is paused, pausing keeps late.
    kept_late = state in ("late", "failed") and expected_state == "paused"
    assert canary["late"] == (expected_state in ("late", "failed") or kept_late)
    assert canary["paused"] == (expected_state == "paused")
    if status == 200 and event in ("success", "exit0", "fail", "exit3"):
        assert canary["deadline"] == (srv.clock.now() + timedelta(seconds=60)).isoformat()


def test_a_new_periodicity_does_not_end_a_failure(srv: RunServer) -> None:
    cid = _enter(srv, "failed")
    status, body = srv.call("update", id=cid, periodicity="7200")
    assert status == 200 and body["canary"]["late"] is True and body["canary"]["state"] == "failed"
    assert srv.kinds() == ["failed"]


def test_late_and_paused_keeps_late_for_its_resumed(srv: RunServer) -> None:
    cid = _enter(srv, "late")
    srv.call("pause", id=cid, until="60")
    assert srv.canary(cid)["late"] is True
    assert srv.call(f"/{cid}")[1] == {"status": "ok", "recovered": True, "unpaused": True}
    assert srv.kinds() == ["late", "resumed"]


# --- durations and rid -----------------------------------------------------------------------


def test_durations_with_overlapping_runs(srv: RunServer) -> None:
    cid = srv.create()
    srv.call(f"/{cid}/start", rid="a")
    srv.clock.advance(10)
    srv.call(f"/{cid}/start", rid="b")
    running = srv.canary(cid)["running"]
    assert [run["rid"] for run in running] == ["b", "a"]
    srv.clock.advance(20)
    status, body = srv.call(f"/{cid}/0", rid="a")
    assert body == {"status": "ok", "recovered": False, "unpaused": False}
    canary = srv.canary(cid)
    assert canary["last_duration"] == 30.0 and canary["state"] == "running"
    assert canary["history"][0][1] == "Triggered, ran 30.000 s"
    srv.clock.advance(5.5)
    status, body = srv.call(f"/{cid}/2", rid="b", comment="oops")
    assert body["duration"] == 25.5 and body["state"] == "failed"
    canary = srv.canary(cid)
    assert canary["last_duration"] == 25.5 and "running" not in canary
    assert canary["history"][0][1] == "Failed (exit status 2: oops), ran 25.500 s"


def test_end_without_rid_takes_the_newest_run_without_one(srv: RunServer) -> None:
    cid = srv.create()
    srv.call(f"/{cid}/start", rid="x")
    srv.clock.advance(1)
    srv.call(f"/{cid}/start")
    srv.clock.advance(2)
    srv.call(f"/{cid}/start")  # replaces the open run without a rid
    srv.clock.advance(3)
    srv.call(f"/{cid}")
    canary = srv.canary(cid)
    assert canary["last_duration"] == 3.0
    assert [run["rid"] for run in canary["running"]] == ["x"]
    srv.call(f"/{cid}")  # no run without a rid left: the newest run ends
    assert srv.canary(cid)["last_duration"] == 6.0 and "running" not in srv.canary(cid)
    srv.call(f"/{cid}")  # nothing open: no duration
    assert srv.comments(cid)[0] == "Triggered"


def test_at_most_ten_open_runs(srv: RunServer) -> None:
    cid = srv.create()
    for number in range(12):
        srv.call(f"/{cid}/start", rid=f"r{number}")
        srv.clock.advance(1)
    running = srv.canary(cid)["running"]
    assert [run["rid"] for run in running] == [f"r{n}" for n in range(11, 1, -1)]
    srv.call(f"/{cid}/0", rid="r0")  # forgotten: no duration
    assert srv.comments(cid)[0] == "Triggered"


def test_start_with_an_open_rid_restarts_it(srv: RunServer) -> None:
    cid = srv.create()
    srv.call(f"/{cid}/start", rid="same")
    srv.clock.advance(100)
    srv.call(f"/{cid}/start", rid="same")
    srv.clock.advance(1)
    assert srv.call(f"/{cid}/1", rid="same")[1]["duration"] == 1.0


# --- max_runtime -----------------------------------------------------------------------------


def test_max_runtime_overrun_is_late_once(srv: RunServer) -> None:
    cid = srv.create(max_runtime="30", email="ops@example.com")
    assert srv.canary(cid)["max_runtime"] == 30.0
    srv.call(f"/{cid}/start", rid="one")
    srv.tick(29)
    assert srv.canary(cid)["state"] == "running" and srv.kinds() == []
    srv.clock.advance(5)
    srv.call(f"/{cid}/start", rid="two")
    srv.tick(0)
    canary = srv.canary(cid)
    assert canary["state"] == "late" and canary["late"] is True
    (note,) = srv.store.pending_notifications()
    assert note.kind == "late"
    assert note.payload["run_started"] == (srv.clock.now() - timedelta(seconds=34)).isoformat()
    srv.tick(60)  # the second run overruns too: the canary is late already, no second alert
    assert srv.kinds() == ["late"]
    assert srv.call(f"/{cid}/0", rid="one")[1]["recovered"] is True
    assert srv.kinds() == ["late", "resumed"]


def test_max_runtime_update_and_clear(srv: RunServer) -> None:
    cid = srv.create()
    srv.call(f"/{cid}/start")
    status, body = srv.call("update", id=cid, max_runtime="10")
    assert status == 200 and body["canary"]["max_runtime"] == 10.0
    srv.tick(11)
    assert srv.canary(cid)["state"] == "late"
    status, body = srv.call("update", id=cid, max_runtime="-")
    assert status == 200 and "max_runtime" not in body["canary"]
    assert srv.call("update", id=cid, max_runtime="0") == (
        400,
        {"status": "error", "error": "No updates specified"},
    )


def test_no_overrun_while_paused(srv: RunServer) -> None:
    cid = srv.create(max_runtime="30", email="ops@example.com")
    srv.call(f"/{cid}/start")
    srv.call("pause", id=cid)
    srv.tick(100)
    assert srv.kinds() == [] and srv.canary(cid)["state"] == "paused"
    srv.call("unpause", id=cid)
    srv.tick(0)
    assert srv.kinds() == ["late"]


def test_the_normal_deadline_still_applies_while_running(srv: RunServer) -> None:
    cid = srv.create(periodicity="60", email="ops@example.com")
    srv.call(f"/{cid}/start")
    srv.tick(61)
    assert srv.canary(cid)["state"] == "late" and srv.kinds() == ["late"]


# --- output capture --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "text", "truncated"),
    [
        (b"x" * 100, "x" * 100, False),
        (b"y" * 101, "y" * 100, True),
        (b"z" * 5000, "z" * 100, True),
        (b"ok \xff\xfe end", "ok \ufffd\ufffd end", False),
        ("caf\u00e9 \u2713".encode(), "caf\u00e9 \u2713", False),
        (b"a\x00b\x1b[31mred\r\n", "a\ufffdb\x1b[31mred\r\n", False),
    ],
)
def test_output_capture(srv: RunServer, body: bytes, text: str, truncated: bool) -> None:
    cid = srv.create()
    status, answer = srv.json("POST", f"/{cid}/log", body)
    assert status == 200, answer
    (kept,) = srv.canary(cid, output="1")["outputs"]
    assert (kept["output"], kept["bytes"], kept["truncated"]) == (text, len(body), truncated)
    assert "outputs" not in srv.canary(cid)


def test_output_with_every_event_and_trigger(srv: RunServer) -> None:
    cid = srv.create()
    for number, path in enumerate([f"/{cid}/start", f"/{cid}", f"/{cid}/0", f"/{cid}/9", "trigger"]):
        srv.clock.advance(1)
        params = {"id": cid} if path == "trigger" else {}
        assert srv.request("POST", path, f"out {number}".encode(), **params)[0] == 200
    outputs = srv.canary(cid, output="true")["outputs"]
    assert [o["output"] for o in outputs] == [f"out {n}" for n in range(4, -1, -1)]
    srv.request("GET", f"/{cid}/log")  # no body, no output
    srv.request("POST", f"/{cid}/log")
    assert len(srv.canary(cid, output="1")["outputs"]) == 5


def test_output_goes_with_its_pruned_history_entry(srv: RunServer) -> None:
    cid = srv.create()
    srv.clock.advance(1)
    srv.request("POST", f"/{cid}/log", b"oldest")
    for _ in range(999):  # 1001 entries: "Canary created" goes
        srv.clock.advance(0.001)
        srv.logic.trigger(cid)
    assert [o["output"] for o in srv.canary(cid, output="1")["outputs"]] == ["oldest"]
    assert srv.comments(cid)[-1] == "Logged"
    srv.clock.advance(0.001)
    srv.logic.trigger(cid)  # and now the log entry, with its output
    assert srv.canary(cid, output="1")["outputs"] == []


def test_failed_notification_excerpt_keeps_tabs_and_newlines(srv: RunServer) -> None:
    cid = srv.create(email="ops@example.com")
    srv.request("POST", f"/{cid}/fail", b"\x00one\ttwo\r\nthree\x07\x7f\xc2\x85")
    (note,) = srv.store.pending_notifications()
    assert note.payload["output"] == "\ufffdone\ttwo\nthree" and note.payload["output_truncated"] is False


def test_failed_notification_carries_an_excerpt(srv: RunServer) -> None:
    cid = srv.create(email="ops@example.com")
    srv.request("POST", f"/{cid}/3", b"\x1b[1m" + b"e" * 200)
    (note,) = srv.store.pending_notifications()
    assert note.payload["exit_status"] == 3
    # The first max_body (100) bytes are kept; the excerpt is their end, control characters removed.
    assert note.payload["output"] == "[1m" + "e" * 96
    assert note.payload["output_truncated"] is True


# --- snooze ----------------------------------------------------------------------------------


def test_snooze_ends_by_itself(srv: RunServer) -> None:
    cid = srv.create(periodicity="60")
    status, body = srv.call("pause", id=cid, until="120", comment="maintenance")
    until = srv.clock.now() + timedelta(seconds=120)
    assert body["canary"]["paused_until"] == until.isoformat() and body["canary"]["state"] == "paused"
    assert body["canary"]["history"][0][1] == f"Paused until {until.isoformat()} (maintenance)"
    srv.tick(119)
    assert srv.canary(cid)["paused"] is True
    srv.tick(1)
    canary = srv.canary(cid)
    assert canary["paused"] is False and canary["history"][0][1] == "Unpaused (snooze ended)"
    assert canary["deadline"] == (srv.clock.now() + timedelta(seconds=60)).isoformat()
    assert "paused_until" not in canary


def test_snooze_until_an_iso_time(srv: RunServer) -> None:
    cid = srv.create()
    until = srv.clock.now() + timedelta(hours=2)
    for text in (until.isoformat(), until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")):
        status, body = srv.call("pause", id=cid, until=text)
        assert status == 200 and body["canary"]["paused_until"] == until.isoformat()
        srv.call("unpause", id=cid)
    status, _ = srv.request("GET", f"pause?id={cid}&until={until.isoformat()}")  # "+" read as a space
    assert status == 200


def test_trigger_during_snooze_unpauses(srv: RunServer) -> None:
    cid = srv.create(periodicity="60")
    srv.call("pause", id=cid, until="600")
    assert srv.call(f"/{cid}")[1] == {"status": "ok", "recovered": False, "unpaused": True}
    assert "paused_until" not in srv.canary(cid)
    srv.tick(700)
    assert srv.comments(cid)[0] == "Triggered"  # no "snooze ended"


def test_plain_pause_after_an_ended_snooze_stays(srv: RunServer) -> None:
    cid = srv.create()
    srv.call("pause", id=cid, until="600")
    srv.call("unpause", id=cid)
    srv.call("pause", id=cid)
    srv.tick(700)
    assert srv.canary(cid)["paused"] is True


# --- list?state= --------------------------------------------------------------------------------


def test_list_by_state(srv: RunServer) -> None:
    ids = {state: _enter_named(srv, state) for state in ("ok", "running", "failed", "paused")}
    for state, cid in ids.items():
        status, body = srv.call("list", state=state)
        assert status == 200 and [c["id"] for c in body["canaries"]] == [cid], state
        status, body = srv.call("list", state=state, verbose="1")
        assert [_state(c) for c in body["canaries"]] == [state]
    assert srv.call("list", state="late")[1]["canaries"] == []
    assert len(srv.call("list", state="failed", late="true")[1]["canaries"]) == 1
    assert srv.call("list", state="failed", late="false")[1]["canaries"] == []


def _enter_named(srv: RunServer, state: str) -> str:
    cid = srv.create(f"Job {state}")
    path = {"ok": None, "running": f"/{cid}/start", "failed": f"/{cid}/fail", "paused": None}[state]
    if path:
        srv.call(path)
    if state == "paused":
        srv.call("pause", id=cid)
    return cid


# --- 400s -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "error"),
    [
        ("/{id}/256", {}, 'Bad exit status "256"'),
        ("/{id}/-1", {}, 'Bad exit status "-1"'),
        ("/{id}/abc", {}, 'Bad exit status "abc"'),
        ("/{id}/%C2%B2", {}, "Bad exit status"),
        ("fail", {"id": "{id}", "exit_status": "1000"}, 'Bad exit status "1000"'),
        ("fail", {"id": "{id}", "exit_status": "x"}, 'Bad exit status "x"'),
        ("/{id}/start", {"exit_status": "1"}, 'Unexpected argument "exit_status"'),
        ("/{id}/log", {"rid": "a"}, 'Unexpected argument "rid"'),
        ("/{id}/start", {"rid": "r" * (MAX_RID_LENGTH + 1)}, "rid is too long"),
        ("/{id}/fail", {"comment": "c" * (MAX_COMMENT_LENGTH + 1)}, "Comment is too long"),
        ("start", {}, "Must specify id, slug, or name"),
        ("pause", {"id": "{id}", "until": "yesterday"}, 'Bad "until" value "yesterday"'),
        ("pause", {"id": "{id}", "until": "2000-01-01T00:00:00"}, '"until" must be in the future'),
        ("pause", {"id": "{id}", "until": "0"}, '"until" must be in the future'),
        ("pause", {"id": "{id}", "until": "99999999999"}, '"until" must be at most'),
        ("create", {"name": "x", "periodicity": "60", "max_runtime": "-5"}, "Bad max_runtime"),
        ("create", {"name": "x", "periodicity": "60", "max_runtime": "nan"}, "Bad max_runtime"),
        ("update", {"id": "{id}", "max_runtime": "1e999"}, "Bad max_runtime"),
        ("list", {"state": "asleep"}, 'Bad state "asleep"'),
        ("get", {"id": "{id}", "output": "maybe"}, "Bad boolean value"),
    ],
)
def test_bad_requests(srv: RunServer, path: str, params: dict, error: str) -> None:
    cid = srv.create()
    before = srv.canary(cid)
    status, body = srv.request("GET", path.format(id=cid), **{k: v.format(id=cid) for k, v in params.items()})
    answer = json.loads(body)
    assert status == 400 and answer["status"] == "error" and answer["error"].startswith(error), answer
    assert srv.canary(cid) == before


def test_unknown_canary_is_404(srv: RunServer) -> None:
    for path in ("/abcdefgh/start", "/abcdefgh/fail", "/abcdefgh/log", "/abcdefgh/0", "/abcdefgh/3"):
        assert srv.call(path)[0] == 404
    assert srv.call("/abcdefgh/start/more")[0] == 404


def test_run_urls_are_served_first_like_triggers() -> None:
    from coal_mine.api import Api

    for path in ("/abcdefgh/start", "/abcdefgh/3", "/coal-mine/v1/canary/fail", "/coal-mine/v1/canary/log"):
        assert Api.is_trigger_path(path), path
    for path in ("/coal-mine/v1/canary/get", "/coal-mine/v1/canary/start/x", "/abcdefgh/start/x"):
        assert not Api.is_trigger_path(path), path


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("262144", True), ("262145", False), ("lots", False)])
def test_max_body_setting(tmp_path: Path, value: str, ok: bool) -> None:
    from coal_mine.config import ConfigError, load_config

    ini = tmp_path / "coal-mine.ini"
    ini.write_text(f"[wsgi]\nmax_body = {value}\n")
    if ok:
        assert load_config(str(ini)).wsgi.max_body == int(value)
    else:
        with pytest.raises(ConfigError, match=r"\[wsgi\] max_body"):
            load_config(str(ini))


def test_a_body_over_the_server_limit_is_a_413(store: AbstractStore, clock: FakeClock) -> None:
    from coal_mine.limits import MAX_REQUEST_BODY

    with RunServer(store, clock) as srv:
        cid = srv.create()
        status, _ = srv.request("POST", f"/{cid}/fail", b"x" * (MAX_REQUEST_BODY + 1))
        assert status == 413 and srv.comments(cid) == ["Canary created"]
