"""The HTTP API's rules, calling the WSGI application directly (real SQLite file, fake clock),
plus a few smoke tests against a real server process on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coal_mine.api import Api, canary_to_json
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.memory_store import MemoryStore
from coal_mine.models import CANARY_JSON_FIELDS, Canary
from coal_mine.sqlite_store import SQLiteStore
from tests.helpers import ServerProcess, WsgiClient


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WsgiClient]:
    store = SQLiteStore(str(tmp_path_factory.mktemp("api") / "coal-mine.sqlite3"))
    yield WsgiClient(Api(BusinessLogic(store, FakeClock())))
    store.close()


def clock_of(srv: WsgiClient) -> FakeClock:
    clock = srv.app.logic.clock
    assert isinstance(clock, FakeClock)
    return clock


_counter = iter(range(10**6))


def create(srv: WsgiClient | ServerProcess, **params: Any) -> dict[str, Any]:
    params.setdefault("name", f"Canary {next(_counter)}")
    params.setdefault("periodicity", "3600")
    status, body = srv.call("create", **params)
    assert status == 200, body
    return body["canary"]


def test_create_returns_the_canary(srv: WsgiClient) -> None:
    canary = create(
        srv,
        name="My First Canary",
        periodicity="3600",
        description="nightly",
        email=["a@example.com", "b@example.com"],
    )
    assert set(canary) == {
        "id",
        "name",
        "slug",
        "periodicity",
        "description",
        "emails",
        "paused",
        "history",
        "late",
        "deadline",
        "badge_key",
    }
    assert len(canary["id"]) == 8 and canary["id"].isalpha() and canary["id"].islower()
    assert canary["slug"] == "my-first-canary"
    assert canary["periodicity"] == 3600.0 and isinstance(canary["periodicity"], float)
    assert canary["emails"] == ["a@example.com", "b@example.com"]
    assert (canary["paused"], canary["late"], canary["description"]) == (False, False, "nightly")
    ((created, comment),) = canary["history"]
    assert comment == "Canary created"
    created_at = datetime.fromisoformat(created)
    assert created_at.utcoffset() == timedelta(0) and created.endswith("+00:00")
    assert datetime.fromisoformat(canary["deadline"]) - created_at == timedelta(hours=1)


def test_create_paused_has_no_deadline(srv: WsgiClient) -> None:
    canary = create(srv, paused="yes")
    assert canary["paused"] is True and "deadline" not in canary


@pytest.mark.parametrize(
    "params, message",
    [
        ({"periodicity": "60"}, 'Missing argument "name"'),
        ({"name": "x"}, 'Missing argument "periodicity"'),
        ({"name": "x", "periodicity": "60", "colour": "red"}, 'Unexpected argument "colour"'),
        (
            {"name": "x", "periodicity": "60", "paused": "maybe"},
            'Bad boolean value "maybe" for parameter "paused"',
        ),
        ({"name": "x", "periodicity": "0"}, "Periodicity must be a positive number"),
        ({"name": "x", "periodicity": "1.2.3"}, 'Bad periodicity "1.2.3"'),
        ({"name": "x", "periodicity": "-5"}, 'Bad periodicity "-5": a number of seconds'),
        ({"name": "x", "periodicity": "9" * 12}, "Periodicity must be at most"),
        ({"name": "x", "periodicity": "* * * * 60"}, "Invalid periodicity schedule"),
    ],
)
def test_create_errors_store_nothing(srv: WsgiClient, params: dict, message: str) -> None:
    before = srv.call("list")[1]["canaries"]
    status, body = srv.call("create", **params)
    assert status == 400
    assert body["status"] == "error" and message in body["error"]
    assert srv.call("list")[1]["canaries"] == before


def test_duplicate_slug_is_refused(srv: WsgiClient) -> None:
    create(srv, name="Dup Check")
    status, body = srv.call("create", name="dup   check", periodicity="60")
    assert status == 400 and "dup-check" in body["error"]


@pytest.mark.parametrize(
    "name, slug",
    [
        ("Hello World", "hello-world"),
        ("  Spaces__and--dashes  ", "-spaces-and-dashes-"),
        ("Ünïcode Näme", "ünïcode-näme"),
        ("a.b/c!d", "abcd"),
    ],
)
def test_slug_rules(srv: WsgiClient, name: str, slug: str) -> None:
    assert create(srv, name=name)["slug"] == slug
    status, body = srv.call("get", name=name)
    assert status == 200 and body["canary"]["slug"] == slug


def test_get_by_every_identifier(srv: WsgiClient) -> None:
    canary = create(srv, name="Find Me Please")
    for params in ({"id": canary["id"]}, {"slug": "find-me-please"}, {"name": "find ME_please"}):
        status, body = srv.call("get", **params)
        assert status == 200 and body["canary"]["id"] == canary["id"], params
    other = create(srv)
    status, body = srv.call("get", id=canary["id"], slug=other["slug"])
    assert body["canary"]["id"] == canary["id"]  # id wins


@pytest.mark.parametrize("command", ["get", "delete", "trigger", "pause", "unpause"])
def test_identifier_errors(srv: WsgiClient, command: str) -> None:
    assert srv.call(command) == (400, {"status": "error", "error": "Must specify id, slug, or name"})
    for params in ({"id": "zzzzzzzz"}, {"slug": "no-such"}, {"name": "No Such"}):
        assert srv.call(command, **params) == (404, {"status": "error", "error": "Canary Not Found"})


def test_trigger_short_and_long_forms(srv: WsgiClient) -> None:
    canary = create(srv, name="Trigger Target")
    cid = canary["id"]
    assert srv.call(f"/{cid}", comment="short form") == (
        200,
        {"status": "ok", "recovered": False, "unpaused": False},
    )
    status, _, data = srv.request("POST", f"/{cid}?m=posted", body=b"ignored=1&comment=nope")
    assert status == 200 and json.loads(data)["status"] == "ok"
    assert srv.call("trigger", slug="trigger-target", comment="long form")[0] == 200
    assert srv.call("trigger", name="Trigger Target")[0] == 200
    history = srv.call("get", id=cid)[1]["canary"]["history"]
    assert [c for _, c in history] == [
        "Triggered",
        "Triggered (long form)",
        "Triggered (posted)",
        "Triggered (short form)",
        "Canary created",
    ]
    times = [datetime.fromisoformat(t) for t, _ in history]
    assert times == sorted(times, reverse=True)
    deadline = datetime.fromisoformat(srv.call("get", id=cid)[1]["canary"]["deadline"])
    assert deadline - times[0] == timedelta(hours=1)


@pytest.mark.parametrize(
    "path",
    [
        "/abcdefg",
        "/abcdefghi",
        "/ABCDEFGH",
        "/coal-mine/v1/canary/",
        "/coal-mine/v1/canary/explode",
        "/coal-mine/v2/canary/get",
    ],
)
def test_unknown_paths_are_404_json(srv: WsgiClient, path: str) -> None:
    status, body = srv.call(path)
    assert status == 404 and body["status"] == "error" and "404" in body["error"]


def test_short_trigger_of_unknown_id(srv: WsgiClient) -> None:
    assert srv.call("/zzzzzzzz") == (404, {"status": "error", "error": "Canary Not Found"})


def test_trigger_unpauses(srv: WsgiClient) -> None:
    canary = create(srv, paused="1")
    assert srv.call(f"/{canary['id']}")[1] == {"status": "ok", "recovered": False, "unpaused": True}
    got = srv.call("get", id=canary["id"])[1]["canary"]
    assert got["paused"] is False and "deadline" in got


def test_pause_and_unpause(srv: WsgiClient) -> None:
    cid = create(srv)["id"]
    status, body = srv.call("pause", id=cid, comment="maintenance")
    assert status == 200 and body["canary"]["paused"] is True and "deadline" not in body["canary"]
    assert body["canary"]["history"][0][1] == "Paused (maintenance)"
    assert srv.call("pause", id=cid) == (400, {"status": "error", "error": "Canary is already paused"})
    status, body = srv.call("unpause", id=cid)
    assert status == 200 and body["canary"]["paused"] is False
    assert body["canary"]["history"][0][1] == "Unpaused"
    unpaused_at = datetime.fromisoformat(body["canary"]["history"][0][0])
    assert datetime.fromisoformat(body["canary"]["deadline"]) - unpaused_at == timedelta(hours=1)
    assert srv.call("unpause", id=cid) == (400, {"status": "error", "error": "Canary is not paused"})
    assert srv.call("pause", id=cid, reason="x")[0] == 400


def test_update(srv: WsgiClient) -> None:
    cid = create(srv, name="Before Rename", email="old@example.com")["id"]
    status, body = srv.call(
        "update",
        id=cid,
        name="After Rename",
        description="new text",
        email=["x@example.com", "y@example.com"],
    )
    assert status == 200
    canary = body["canary"]
    assert (canary["name"], canary["slug"], canary["description"], canary["emails"]) == (
        "After Rename",
        "after-rename",
        "new text",
        ["x@example.com", "y@example.com"],
    )
    assert srv.call("get", slug="before-rename")[0] == 404
    assert srv.call("update", slug="after-rename", email="-")[1]["canary"]["emails"] == []
    assert srv.call("update", id=cid, name="After Rename") == (
        400,
        {"status": "error", "error": "No updates specified"},
    )
    assert srv.call("update", name="After Rename", description="x") == (
        400,
        {"status": "error", "error": "Must specify id or slug"},
    )
    assert srv.call("update", id=cid, paused="1")[0] == 400
    create(srv, name="Taken Name")
    status, body = srv.call("update", id=cid, name="taken name")
    assert status == 400 and "taken-name" in body["error"]
    assert srv.call("get", id=cid)[1]["canary"]["name"] == "After Rename"


def test_update_periodicity_moves_deadline_from_last_history_entry(srv: WsgiClient) -> None:
    cid = create(srv)["id"]
    srv.call(f"/{cid}")
    canary = srv.call("update", id=cid, periodicity="7200")[1]["canary"]
    last = datetime.fromisoformat(canary["history"][0][0])
    assert canary["periodicity"] == 7200.0
    assert datetime.fromisoformat(canary["deadline"]) - last == timedelta(hours=2)
    assert srv.call("update", id=cid, periodicity="0")[0] == 400


def test_update_periodicity_can_make_late_and_trigger_recovers(srv: WsgiClient) -> None:
    cid = create(srv)["id"]
    clock_of(srv).advance(0.01)  # created + 1 ms is in the past
    canary = srv.call("update", id=cid, periodicity="0.001")[1]["canary"]
    assert canary["late"] is True
    assert srv.call(f"/{cid}")[1] == {"status": "ok", "recovered": True, "unpaused": False}
    canary = srv.call("get", id=cid)[1]["canary"]
    triggered_at, comment = canary["history"][0]
    assert comment == "Triggered"
    assert datetime.fromisoformat(canary["deadline"]) - datetime.fromisoformat(triggered_at) == timedelta(
        milliseconds=1
    )


def test_delete(srv: WsgiClient) -> None:
    cid = create(srv, name="Short Lived")["id"]
    assert srv.call("delete", slug="short-lived") == (200, {"status": "ok"})
    assert srv.call("get", id=cid)[0] == 404
    assert srv.call("delete", id=cid)[0] == 404


def test_list(srv: WsgiClient) -> None:
    a = create(srv, name="Listed Alpha", email="alpha-owner@example.org")
    b = create(srv, name="Listed Beta", paused="true")
    status, body = srv.call("list")
    assert status == 200 and body["status"] == "ok"
    entries = {c["id"]: c for c in body["canaries"]}
    assert entries[a["id"]] == {"name": "Listed Alpha", "id": a["id"]}
    verbose = {c["id"]: c for c in srv.call("list", verbose="yes")[1]["canaries"]}
    got = srv.call("get", id=a["id"])[1]["canary"]
    assert len(got.pop("badge_key")) == 32  # not in list: see coal_mine/badges.py
    assert verbose[a["id"]] == got
    assert "periodicity_schedule" not in verbose[a["id"]]
    paused_ids = {c["id"] for c in srv.call("list", paused="1")[1]["canaries"]}
    assert b["id"] in paused_ids and a["id"] not in paused_ids
    unpaused_ids = {c["id"] for c in srv.call("list", paused="no")[1]["canaries"]}
    assert a["id"] in unpaused_ids and b["id"] not in unpaused_ids
    assert len(srv.call("list", paused="")[1]["canaries"]) == len(entries)  # blank: no filter
    assert all(c["late"] for c in srv.call("list", late="1", verbose="1")[1]["canaries"])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"search": "(unclosed"}, "Invalid search regular expression"),
        ({"paused": "sometimes"}, 'Bad boolean value "sometimes" for parameter "paused"'),
        ({"verbose": "2"}, 'Bad boolean value "2" for parameter "verbose"'),
        ({"name": "x"}, 'Unexpected argument "name"'),
    ],
)
def test_list_errors(srv: WsgiClient, params: dict, message: str) -> None:
    status, body = srv.call("list", **params)
    assert status == 400 and message in body["error"]


def test_repeated_parameters_last_wins(srv: WsgiClient) -> None:
    canary = create(srv, name=["First Name", "Second Name"], periodicity=["60", "120"])
    assert (canary["name"], canary["periodicity"]) == ("Second Name", 120.0)


def test_auth_key_ignored_where_not_needed(srv: WsgiClient) -> None:
    canary = create(srv, auth_key="whatever")
    assert srv.call(f"/{canary['id']}", auth_key="whatever")[0] == 200


SCHEDULE = "# weekends ; * * * * sat,sun 600 ; * * * * mon-fri 120"


def test_schedule_periodicity(srv: WsgiClient) -> None:
    canary = create(srv, periodicity=SCHEDULE)
    assert canary["periodicity"] == SCHEDULE
    ranges = canary["periodicity_schedule"]
    assert ranges and all(len(r) == 3 for r in ranges)
    assert {r[2] for r in ranges} == {600.0, 120.0}
    starts = [datetime.fromisoformat(r[0]) for r in ranges]
    assert starts == sorted(starts)
    assert datetime.fromisoformat(ranges[-1][1]) - starts[0] >= timedelta(days=7)
    got = srv.call("get", id=canary["id"])[1]["canary"]
    assert got["periodicity_schedule"][0][2] in (600.0, 120.0)
    listed = [c for c in srv.call("list", verbose="1")[1]["canaries"] if c["id"] == canary["id"]]
    assert "periodicity_schedule" not in listed[0]
    plain = srv.call("update", id=canary["id"], periodicity="60")[1]["canary"]
    assert "periodicity_schedule" not in plain and plain["periodicity"] == 60.0


@pytest.mark.parametrize(
    "schedule, message",
    [
        ("* * * * sat,sun 60 ; * 0-11 * * * 90", "overlap"),
        ("0 0 31 2 * 60", "never"),
        ("* * * * * 0", "positive"),
    ],
)
def test_bad_schedules_are_400_and_store_nothing(srv: WsgiClient, schedule: str, message: str) -> None:
    before = srv.call("list")[1]["canaries"]
    status, body = srv.call("create", name="Bad schedule", periodicity=schedule)
    assert status == 400 and message in body["error"].lower()
    assert srv.call("list")[1]["canaries"] == before


# --- the streamed list, byte for byte ----------------------------------------------------


@pytest.mark.parametrize("verbose", [False, True])
def test_streamed_list_is_byte_for_byte_json_dumps_indent_4(verbose: bool) -> None:
    """Api streams `list` a piece at a time; the bytes must be exactly what
    json.dumps(indent=4) writes for the whole answer, across chunk boundaries too."""
    store, clock = MemoryStore(), FakeClock()
    app = WsgiClient(Api(BusinessLogic(store, clock)))
    query = {"verbose": "1"} if verbose else {}
    _, _, empty = app.request("GET", app.path("list", **query))
    assert empty == (json.dumps({"status": "ok", "canaries": []}, indent=4) + "\n").encode()
    awkward = ['quote " and \\ backslash', "tab\tnew\nline", "Zürich ✓ 夜間 \U0001f600", "\x00\x1f"]
    now = clock.now()
    for i in range(400):  # several 64 KiB chunks
        name = f"{awkward[i % len(awkward)]} {i} " + "x" * 150
        history = [(now, "Triggered (\u00e9)"), (now, "Canary created")] if i % 2 else []
        paused = i % 7 == 0
        deadline = None if paused else now + timedelta(seconds=60 + i)
        store.create(
            Canary(
                f"id{i:06d}", name, f"slug-{i}", 60.0 + i, "d", ["a@b.c"], paused, False, deadline, history
            )
        )
    _, headers, body = app.request("GET", app.path("list", **query))
    canaries = list(store.iter_canaries(history=verbose))
    entries = [canary_to_json(c) if verbose else {"name": c.name, "id": c.id} for c in canaries]
    expected = json.dumps({"status": "ok", "canaries": entries}, indent=4) + "\n"
    assert len(body) > 65536  # more than one chunk
    assert body == expected.encode("utf-8")
    assert headers["Content-Type"] == "application/json; charset=utf-8"


# --- a smoke test over a real server process -----------------------------------------------


def test_smoke_real_server(tmp_path: Path) -> None:
    """The API wired into the real server: the key, headers, a POST trigger, the grep-able body."""
    with ServerProcess(tmp_path, auth_key="s3cret") as real:
        assert real.call("create", name="Smoke", periodicity="60")[0] == 401
        status, body = real.call("create", name="Smoke", periodicity="60", auth_key="s3cret")
        assert status == 200
        cid = body["canary"]["id"]
        conn = http.client.HTTPConnection("127.0.0.1", real.port, timeout=10)
        try:
            conn.request("POST", f"/{cid}?m=posted", body=b"comment=ignored")  # no key needed
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json; charset=utf-8"
        assert '"status": "ok"' in text  # the README's watchdog cron line greps for this
        got = real.call("get", slug="smoke", auth_key="s3cret")[1]["canary"]
        assert got["history"][0][1] == "Triggered (posted)"
        assert real.call("list", auth_key="s3cret")[1]["canaries"] == [{"name": "Smoke", "id": cid}]
        assert real.call("/coal-mine/v1/canary/explode")[0] == 404
        assert real.call("delete", id=cid, auth_key="s3cret") == (200, {"status": "ok"})
        assert "s3cret" not in real.log()


def test_canary_json_fields_are_the_declared_ones() -> None:
    """models.CANARY_JSON_FIELDS (which cmcli --human and the dashboard rely on) is what the API writes."""
    logic = BusinessLogic(MemoryStore(), FakeClock())
    canary = logic.create("All fields", "* * * * * 60")
    data = canary_to_json(canary, logic.periodicity_schedule(canary))
    assert tuple(data) == CANARY_JSON_FIELDS
