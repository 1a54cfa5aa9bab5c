"""The HTTP API against a real server process on 127.0.0.1: every command and error path."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from tests.helpers import ServerProcess, http_get


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("api")) as process:
        yield process


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("keyed"), auth_key="s3cret") as process:
        yield process


_counter = iter(range(10**6))


def create(srv: ServerProcess, **params) -> dict:
    params.setdefault("name", f"Canary {next(_counter)}")
    params.setdefault("periodicity", "3600")
    status, body = srv.call("create", **params)
    assert status == 200, body
    return body["canary"]


def raw(srv: ServerProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request(method, path, body=body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data), response.getheader("Content-Type")


def test_create_returns_the_canary(srv: ServerProcess) -> None:
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


def test_response_format(srv: ServerProcess) -> None:
    canary = create(srv)
    status, body, content_type = raw(srv, "GET", f"/{canary['id']}")
    assert status == 200 and content_type == "application/json; charset=utf-8"
    with http_client_text(srv, f"/{canary['id']}") as text:
        assert '"status": "ok"' in text  # the README's watchdog cron line greps for this


class http_client_text:  # reads like a function at the call site
    def __init__(self, srv: ServerProcess, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        self.path = path

    def __enter__(self) -> str:
        self.conn.request("GET", self.path)
        return self.conn.getresponse().read().decode()

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def test_create_paused_has_no_deadline(srv: ServerProcess) -> None:
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
        ({"name": "x", "periodicity": "-5"}, "Invalid periodicity schedule"),
        ({"name": "x", "periodicity": "9" * 12}, "Periodicity must be at most"),
        ({"name": "x", "periodicity": "* * * * 60"}, "Invalid periodicity schedule"),
    ],
)
def test_create_errors_store_nothing(srv: ServerProcess, params: dict, message: str) -> None:
    before = srv.call("list")[1]["canaries"]
    status, body = srv.call("create", **params)
    assert status == 400
    assert body["status"] == "error" and message in body["error"]
    assert srv.call("list")[1]["canaries"] == before


def test_duplicate_slug_is_refused(srv: ServerProcess) -> None:
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
def test_slug_rules(srv: ServerProcess, name: str, slug: str) -> None:
    assert create(srv, name=name)["slug"] == slug
    status, body = srv.call("get", name=name)
    assert status == 200 and body["canary"]["slug"] == slug


def test_get_by_every_identifier(srv: ServerProcess) -> None:
    canary = create(srv, name="Find Me Please")
    for params in ({"id": canary["id"]}, {"slug": "find-me-please"}, {"name": "find ME_please"}):
        status, body = srv.call("get", **params)
        assert status == 200 and body["canary"]["id"] == canary["id"], params
    other = create(srv)
    status, body = srv.call("get", id=canary["id"], slug=other["slug"])
    assert body["canary"]["id"] == canary["id"]  # id wins


@pytest.mark.parametrize("command", ["get", "delete", "trigger", "pause", "unpause"])
def test_identifier_errors(srv: ServerProcess, command: str) -> None:
    assert srv.call(command) == (400, {"status": "error", "error": "Must specify id, slug, or name"})
    for params in ({"id": "zzzzzzzz"}, {"slug": "no-such"}, {"name": "No Such"}):
        assert srv.call(command, **params) == (404, {"status": "error", "error": "Canary Not Found"})


def test_trigger_short_and_long_forms(srv: ServerProcess) -> None:
    canary = create(srv, name="Trigger Target")
    cid = canary["id"]
    assert srv.call(f"/{cid}", comment="short form") == (
        200,
        {"status": "ok", "recovered": False, "unpaused": False},
    )
    status, body, _ = raw(srv, "POST", f"/{cid}?m=posted", body=b"ignored=1&comment=nope")
    assert status == 200 and body["status"] == "ok"
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
        "/",
    ],
)
def test_unknown_paths_are_404_json(srv: ServerProcess, path: str) -> None:
    status, body = http_get(srv.base_url + path)
    assert status == 404 and body["status"] == "error" and "404" in body["error"]


def test_short_trigger_of_unknown_id(srv: ServerProcess) -> None:
    assert srv.call("/zzzzzzzz") == (404, {"status": "error", "error": "Canary Not Found"})


def test_trigger_unpauses(srv: ServerProcess) -> None:
    canary = create(srv, paused="1")
    assert srv.call(f"/{canary['id']}")[1] == {"status": "ok", "recovered": False, "unpaused": True}
    got = srv.call("get", id=canary["id"])[1]["canary"]
    assert got["paused"] is False and "deadline" in got


def test_pause_and_unpause(srv: ServerProcess) -> None:
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


def test_update(srv: ServerProcess) -> None:
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


def test_update_periodicity_moves_deadline_from_last_history_entry(srv: ServerProcess) -> None:
    cid = create(srv)["id"]
    srv.call(f"/{cid}")
    canary = srv.call("update", id=cid, periodicity="7200")[1]["canary"]
    last = datetime.fromisoformat(canary["history"][0][0])
    assert canary["periodicity"] == 7200.0
    assert datetime.fromisoformat(canary["deadline"]) - last == timedelta(hours=2)
    assert srv.call("update", id=cid, periodicity="0")[0] == 400


def test_update_periodicity_can_make_late_and_trigger_recovers(srv: ServerProcess) -> None:
    cid = create(srv)["id"]
    time.sleep(0.01)  # so that created + 1 ms is certainly in the past
    canary = srv.call("update", id=cid, periodicity="0.001")[1]["canary"]
    assert canary["late"] is True
    assert srv.call(f"/{cid}")[1] == {"status": "ok", "recovered": True, "unpaused": False}
    # The deadline watcher may already have found it late again (1 ms later): check the trigger.
    canary = srv.call("get", id=cid)[1]["canary"]
    triggered_at, comment = canary["history"][0]
    assert comment == "Triggered"
    assert datetime.fromisoformat(canary["deadline"]) - datetime.fromisoformat(triggered_at) == timedelta(
        milliseconds=1
    )


def test_delete(srv: ServerProcess) -> None:
    cid = create(srv, name="Short Lived")["id"]
    assert srv.call("delete", slug="short-lived") == (200, {"status": "ok"})
    assert srv.call("get", id=cid)[0] == 404
    assert srv.call("delete", id=cid)[0] == 404


def test_list(srv: ServerProcess) -> None:
    a = create(srv, name="Listed Alpha", email="alpha-owner@example.org")
    b = create(srv, name="Listed Beta", paused="true")
    status, body = srv.call("list")
    assert status == 200 and body["status"] == "ok"
    entries = {c["id"]: c for c in body["canaries"]}
    assert entries[a["id"]] == {"name": "Listed Alpha", "id": a["id"]}
    verbose = {c["id"]: c for c in srv.call("list", verbose="yes")[1]["canaries"]}
    assert verbose[a["id"]] == srv.call("get", id=a["id"])[1]["canary"]
    assert "periodicity_schedule" not in verbose[a["id"]]
    paused_ids = {c["id"] for c in srv.call("list", paused="1")[1]["canaries"]}
    assert b["id"] in paused_ids and a["id"] not in paused_ids
    unpaused_ids = {c["id"] for c in srv.call("list", paused="no")[1]["canaries"]}
    assert a["id"] in unpaused_ids and b["id"] not in unpaused_ids
    assert len(srv.call("list", paused="")[1]["canaries"]) == len(entries)  # blank: no filter
    assert all(c["late"] for c in srv.call("list", late="1", verbose="1")[1]["canaries"])


@pytest.mark.parametrize(
    "search, expected",
    [
        ("^Listed", {"Listed Alpha", "Listed Beta"}),
        ("listed-b", {"Listed Beta"}),  # slug
        ("alpha-owner@", {"Listed Alpha"}),  # email
    ],
)
def test_list_search(srv: ServerProcess, search: str, expected: set) -> None:
    if srv.call("get", name="Listed Alpha")[0] == 404:
        create(srv, name="Listed Alpha", email="alpha-owner@example.org")
        create(srv, name="Listed Beta")
    names = {c["name"] for c in srv.call("list", search=search)[1]["canaries"]}
    assert names == expected


def test_list_search_by_id(srv: ServerProcess) -> None:
    canary = create(srv)
    found = srv.call("list", search=canary["id"])[1]["canaries"]
    assert [c["id"] for c in found] == [canary["id"]]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"search": "(unclosed"}, "Invalid search regular expression"),
        ({"paused": "sometimes"}, 'Bad boolean value "sometimes" for parameter "paused"'),
        ({"verbose": "2"}, 'Bad boolean value "2" for parameter "verbose"'),
        ({"name": "x"}, 'Unexpected argument "name"'),
    ],
)
def test_list_errors(srv: ServerProcess, params: dict, message: str) -> None:
    status, body = srv.call("list", **params)
    assert status == 400 and message in body["error"]


def test_parameters_must_be_utf8(srv: ServerProcess) -> None:
    status, body = http_get(srv.base_url + "/coal-mine/v1/canary/create?name=%ff%fe&periodicity=60")
    assert status == 400 and "UTF-8" in body["error"]


def test_repeated_parameters_last_wins(srv: ServerProcess) -> None:
    canary = create(srv, name=["First Name", "Second Name"], periodicity=["60", "120"])
    assert (canary["name"], canary["periodicity"]) == ("Second Name", 120.0)


def test_auth_key_ignored_where_not_needed(srv: ServerProcess) -> None:
    canary = create(srv, auth_key="whatever")
    assert srv.call(f"/{canary['id']}", auth_key="whatever")[0] == 200


# --- authentication ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, params",
    [
        ("create", {"name": "x", "periodicity": "60"}),
        ("create", {}),  # 401 comes before 400
        ("get", {"id": "zzzzzzzz"}),  # and before 404
        ("list", {}),
        ("delete", {"id": "zzzzzzzz"}),
        ("update", {"id": "zzzzzzzz", "name": "n"}),
        ("pause", {"id": "zzzzzzzz"}),
        ("unpause", {"id": "zzzzzzzz"}),
    ],
)
def test_auth_required(keyed: ServerProcess, command: str, params: dict) -> None:
    for key in (None, "wrong", "s3cret-but-longer", ""):
        query = dict(params, **({"auth_key": key} if key is not None else {}))
        status, body = keyed.call(command, **query)
        assert status == 401 and body["status"] == "error", (command, key)
        assert "s3cret" not in json.dumps(body)


def test_auth_key_accepted_and_trigger_is_open(keyed: ServerProcess) -> None:
    status, body = keyed.call("create", name="Keyed", periodicity="60", auth_key="s3cret")
    assert status == 200
    cid = body["canary"]["id"]
    assert keyed.call(f"/{cid}")[0] == 200
    assert keyed.call("trigger", id=cid)[0] == 200
    assert keyed.call("get", id=cid, auth_key="s3cret")[0] == 200
    assert keyed.call("get", id="zzzzzzzz", auth_key="s3cret")[0] == 404
    assert "s3cret" not in keyed.log()


SCHEDULE = "# weekends ; * * * * sat,sun 600 ; * * * * mon-fri 120"


def test_schedule_periodicity(srv: ServerProcess) -> None:
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
def test_bad_schedules_are_400_and_store_nothing(srv: ServerProcess, schedule: str, message: str) -> None:
    before = srv.call("list")[1]["canaries"]
    status, body = srv.call("create", name="Bad schedule", periodicity=schedule)
    assert status == 400 and message in body["error"].lower()
    assert srv.call("list")[1]["canaries"] == before
