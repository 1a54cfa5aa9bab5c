"""Input limits and authentication over real HTTP: clear 400/401s and nothing stored half-way."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

import pytest

from coal_mine import api as api_module
from coal_mine.limits import (
    MAX_COMMENT_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_EMAILS,
    MAX_NAME_LENGTH,
    MAX_PERIODICITY,
    MAX_SCHEDULE_LENGTH,
    MAX_SEARCH_LENGTH,
)
from tests.helpers import InProcessServer, raw_request

KEY = "full-access-key-0123"
READ_KEY = "read-only-key-4567"


@pytest.fixture
def served() -> Iterator[InProcessServer]:
    with InProcessServer() as server:
        yield server


@pytest.fixture
def keyed() -> Iterator[InProcessServer]:
    with InProcessServer(auth_key=KEY, read_only_auth_key=READ_KEY) as server:
        yield server


def snapshot(server: InProcessServer) -> list[dict[str, Any]]:
    return [vars(c) for c in server.logic.store.iter_canaries(history=True)]


def assert_rejected(server: InProcessServer, command: str, fragment: str, **params: Any) -> None:
    before = snapshot(server)
    status, body = server.call(command, **params)
    assert status == 400, body
    assert body["status"] == "error" and fragment in body["error"]
    assert snapshot(server) == before  # nothing stored half-way


def create(server: InProcessServer, **params: Any) -> dict[str, Any]:
    params = {"name": "job", "periodicity": 60, **params}
    status, body = server.call("create", **params)
    assert status == 200, body
    return body["canary"]


def test_long_names_up_to_the_limit_are_fine(served: InProcessServer) -> None:
    assert create(served, name="n" * 1000)["name"] == "n" * 1000
    assert create(served, name="m" * MAX_NAME_LENGTH)["slug"] == "m" * MAX_NAME_LENGTH
    assert_rejected(served, "create", "Name is too long", name="x" * (MAX_NAME_LENGTH + 1), periodicity=60)
    canary = create(served, name="short")
    assert_rejected(served, "update", "Name is too long", id=canary["id"], name="x" * (MAX_NAME_LENGTH + 1))


def test_description_limit(served: InProcessServer) -> None:
    create(served, description="d" * MAX_DESCRIPTION_LENGTH)
    too_long = "d" * (MAX_DESCRIPTION_LENGTH + 1)
    assert_rejected(
        served, "create", "Description is too long", name="b", periodicity=60, description=too_long
    )
    canary = create(served, name="c")
    assert_rejected(served, "update", "Description is too long", id=canary["id"], description=too_long)


@pytest.mark.parametrize("command", ["trigger", "pause", "unpause"])
def test_comment_limit(served: InProcessServer, command: str) -> None:
    canary = create(served, paused=command == "unpause")
    status, _ = served.call(command, id=canary["id"], comment="c" * MAX_COMMENT_LENGTH)
    assert status == 200
    served.call("pause" if command == "unpause" else "unpause", id=canary["id"])
    assert_rejected(
        served, command, "Comment is too long", id=canary["id"], comment="c" * (MAX_COMMENT_LENGTH + 1)
    )


def test_short_trigger_comment_limit(served: InProcessServer) -> None:
    canary = create(served)
    assert_rejected(served, f"/{canary['id']}", "Comment is too long", m="c" * (MAX_COMMENT_LENGTH + 1))


def test_email_count_and_length_limits(served: InProcessServer) -> None:
    many = [f"owner{i}@example.com" for i in range(MAX_EMAILS)]
    assert create(served, email=many)["emails"] == many
    assert_rejected(
        served,
        "create",
        f"At most {MAX_EMAILS}",
        name="b",
        periodicity=60,
        email=[*many, "one-more@example.com"],
    )
    longest = "a" * 64 + "@" + "b" * (MAX_EMAIL_LENGTH - 69) + ".com"
    assert len(longest) == MAX_EMAIL_LENGTH
    create(served, name="c", email=longest)
    assert_rejected(
        served, "create", "Email address is too long", name="d", periodicity=60, email="a" + longest
    )


@pytest.mark.parametrize(
    "address",
    [
        "ops@example.com\r\nBcc: evil@attacker.example",
        "ops@example.com\nBcc: evil@attacker.example",
        "Ops Team <ops@example.com>",
        "ops@example.com, evil@attacker.example",
        "ops@example.com;evil@attacker.example",
        "ops@example.com evil@attacker.example",
        '"quoted"@example.com',
        "ops(comment)@example.com",
        "@example.com",
        "ops@",
        "ops@@example.com",
        "ops@example..com",
        ".ops@example.com",
        "ops@-example.com",
        "ops@example.com\x00",
        "ops@exa\u2028mple.com",
    ],
)
def test_email_must_be_one_plain_address(served: InProcessServer, address: str) -> None:
    assert_rejected(served, "create", "Bad email address", name="job", periodicity=60, email=address)
    canary = create(served, email="ops@example.com")
    assert_rejected(served, "update", "Bad email address", id=canary["id"], email=address)


@pytest.mark.parametrize(
    "address",
    [
        "root@localhost",
        "root",
        "first.last+tag@sub.example.co.uk",
        "jörg@bücher.example",
        "o'brien@example.ie",
    ],
)
def test_real_addresses_are_accepted(served: InProcessServer, address: str) -> None:
    assert create(served, email=address)["emails"] == [address]


@pytest.mark.parametrize(
    "periodicity",
    [
        "0",
        "0.0",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "-5",
        "1e9",
        "9" * 400,
        str(int(MAX_PERIODICITY) + 1),
        "1.2.3",
        ".",
    ],
)
def test_absurd_periodicities(served: InProcessServer, periodicity: str) -> None:
    assert_rejected(served, "create", "eriodicity", name="job", periodicity=periodicity)
    canary = create(served, name="other")
    assert_rejected(served, "update", "eriodicity", id=canary["id"], periodicity=periodicity)


def test_largest_periodicity_is_accepted(served: InProcessServer) -> None:
    assert create(served, periodicity=str(int(MAX_PERIODICITY)))["periodicity"] == MAX_PERIODICITY


def test_schedule_length_limit(served: InProcessServer) -> None:
    schedule = "* * * * * 60;" + "#" * (MAX_SCHEDULE_LENGTH - 13)
    assert create(served, periodicity=schedule)["periodicity"] == schedule
    assert_rejected(served, "create", "schedule is too long", name="b", periodicity=schedule + "#")


def test_search_length_limit(served: InProcessServer) -> None:
    create(served)
    status, body = served.call("list", search="j" + "o?" * ((MAX_SEARCH_LENGTH - 1) // 2))
    assert status == 200 and len(body["canaries"]) == 1
    assert_rejected(served, "list", "Search is too long", search="j" * (MAX_SEARCH_LENGTH + 1))


@pytest.mark.parametrize(
    "query",
    [
        "name=%ff&periodicity=60",
        "name=ok&periodicity=60&description=%c3%28",
        "name=%ed%a0%80&periodicity=60",
        "%ff=1",
    ],
)
def test_parameters_must_be_utf8(served: InProcessServer, query: str) -> None:
    status, body = raw_request(
        served.port, f"GET /coal-mine/v1/canary/create?{query} HTTP/1.0\r\n\r\n".encode()
    )
    assert status == 400 and b"valid UTF-8" in body
    assert snapshot(served) == []


# --- authentication -----------------------------------------------------------------

COMMANDS = ["create", "delete", "update", "get", "list", "pause", "unpause"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("key", [None, "", "wrong", KEY[:-1], KEY + "x", KEY.upper(), "ключ"])
def test_wrong_key_is_401_whatever_the_command(keyed: InProcessServer, command: str, key: str | None) -> None:
    params = {} if key is None else {"auth_key": key}
    # Parameters that would be a 400 or 404 with a good key: 401 comes first.
    status, body = keyed.call(command, id="zzzzzzzz", bogus="1", **params)
    assert status == 401 and body["status"] == "error" and "auth_key" in body["error"]
    assert KEY not in str(body) and READ_KEY not in str(body)
    status, body = raw_request(
        keyed.port,
        f"GET /coal-mine/v1/canary/{command}?name=%ff"
        f"{'&auth_key=' + key if key else ''} HTTP/1.0\r\n\r\n".encode(),
    )
    assert status == 401


def test_right_key_works_and_trigger_needs_none(keyed: InProcessServer) -> None:
    status, body = keyed.call("create", name="job", periodicity=60, auth_key=KEY)
    assert status == 200
    canary_id = body["canary"]["id"]
    for params in ({}, {"auth_key": "wrong"}):
        assert keyed.call("trigger", id=canary_id, **params)[0] == 200
        assert keyed.call(f"/{canary_id}", **params)[0] == 200
    status, body = keyed.call("create", name="job2", periodicity=60, auth_key=KEY + "%ff")
    assert status == 401


def test_read_only_key_allows_get_and_list_only(keyed: InProcessServer) -> None:
    canary_id = keyed.call("create", name="job", periodicity=60, auth_key=KEY)[1]["canary"]["id"]
    assert keyed.call("get", id=canary_id, auth_key=READ_KEY)[0] == 200
    status, body = keyed.call("list", verbose=1, auth_key=READ_KEY)
    assert status == 200 and body["canaries"][0]["id"] == canary_id
    assert keyed.call("trigger", id=canary_id, auth_key=READ_KEY)[0] == 200
    before = snapshot(keyed)
    for command, params in [
        ("create", {"name": "x", "periodicity": 60}),
        ("delete", {"id": canary_id}),
        ("update", {"id": canary_id, "name": "renamed"}),
        ("pause", {"id": canary_id}),
        ("unpause", {"id": canary_id}),
    ]:
        status, body = keyed.call(command, auth_key=READ_KEY, **params)
        assert status == 401 and f"read-only auth_key does not allow {command}" in body["error"]
    assert snapshot(keyed) == before


def test_read_only_key_without_full_key_changes_nothing() -> None:
    with InProcessServer(read_only_auth_key=READ_KEY) as server:  # no auth: everything is open
        assert server.call("create", name="job", periodicity=60)[0] == 200


def test_keys_are_always_compared_in_constant_time(
    keyed: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(api_module.hmac, "compare_digest", spy)
    for key in ("wrong", KEY, READ_KEY, "", "ключ"):
        calls.clear()
        keyed.call("get", id="zzzzzzzz", auth_key=key)
        # Both keys are compared, whichever matched, as bytes (compare_digest refuses non-ASCII str).
        assert sorted(b for _, b in calls) == sorted([KEY.encode(), READ_KEY.encode()])
        assert all(a == key.encode() for a, _ in calls)
    calls.clear()
    keyed.call("trigger", id="zzzzzzzz", auth_key="wrong")
    assert calls == []  # trigger needs no key, so none is looked at
