"""Requests whose answer must be what Coal Mine 0.7.1 gives, checked against 0.7.1's own rules.

Each `rule_*` function re-states, in our words, the line of 0.7.1's server.py that
decides the case; the test sends the same request to a real server process and
checks that the server agrees with the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from tests.helpers import ServerProcess, http_get

KEY = "sekrit"


def rule_short_trigger(path: str) -> str | None:
    """0.7.1: `re.match(r'/([a-z]{8})$', PATH_INFO)` turns the path into a trigger of that id."""
    match = re.match(r"/([a-z]{8})$", path)
    return match.group(1) if match else None


def rule_is_number(periodicity: str) -> bool:
    """0.7.1: `re.match(r'[\\d.]+$', periodicity)` makes the value a float."""
    return re.match(r"[\d.]+$", periodicity) is not None


def rule_auth_key(query: str) -> str | None:
    """0.7.1: `parse_qs(QUERY_STRING).pop('auth_key', [None])[0]` is compared with the key."""
    return parse_qs(query).pop("auth_key", [None])[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(Path(tmp_path_factory.mktemp("fidelity")), auth_key=KEY) as process:
        yield process


def get(server: ServerProcess, path: str, query: str = "") -> tuple[int, dict]:
    return http_get(f"{server.base_url}{path}" + (f"?{query}" if query else ""))


def create(server: ServerProcess, name: str, periodicity: str = "60") -> dict:
    status, body = server.call("create", name=name, periodicity=periodicity, auth_key=KEY)
    assert status == 200, body
    return body["canary"]


@pytest.mark.parametrize(
    "query, expected_status",
    [
        (f"auth_key={KEY}&auth_key=wrong", 200),
        (f"auth_key=wrong&auth_key={KEY}", 401),
        (f"auth_key=&auth_key={KEY}", 200),  # a blank value counts as not given, in both
        (f"auth_key={KEY}", 200),
    ],
)
def test_repeated_auth_key_the_first_value_counts(
    server: ServerProcess, query: str, expected_status: int
) -> None:
    assert (rule_auth_key(query) == KEY) == (expected_status == 200)
    status, body = get(server, "/coal-mine/v1/canary/list", query)
    assert status == expected_status, body


def test_repeated_other_parameter_the_last_value_counts(server: ServerProcess) -> None:
    create(server, "First Of Two")
    create(server, "Second Of Two")
    status, body = get(
        server, "/coal-mine/v1/canary/get", f"auth_key={KEY}&slug=first-of-two&slug=second-of-two"
    )
    assert status == 200 and body["canary"]["name"] == "Second Of Two"


@pytest.mark.parametrize(
    "periodicity, number",
    [
        ("60\n", True),
        ("60", True),
        ("1.5\n", True),
        ("\n60", False),
        ("60\n\n", False),
        ("* * * * * 60\n", False),
    ],
)
def test_periodicity_with_one_trailing_newline_is_a_number(
    server: ServerProcess, periodicity: str, number: bool
) -> None:
    assert rule_is_number(periodicity) == number
    status, body = server.call(
        "create", name=f"Newline {periodicity!r}", periodicity=periodicity, auth_key=KEY
    )
    if number:
        assert status == 200, body
        assert body["canary"]["periodicity"] == float(periodicity)
    else:
        assert status == 400, body


@pytest.mark.parametrize(
    "suffix, triggers",
    [("%0A", True), ("", True), ("/", False), ("x", False), ("%0A%0A", False), ("%0D", False)],
)
def test_short_trigger_url_with_a_trailing_newline(
    server: ServerProcess, suffix: str, triggers: bool
) -> None:
    canary = create(server, f"Short {suffix or 'plain'}")
    path = f"/{canary['id']}{suffix}"
    decoded = path.replace("%0A", "\n").replace("%0D", "\r")
    assert (rule_short_trigger(decoded) == canary["id"]) == triggers
    status, body = get(server, path)
    if triggers:
        assert (status, body["status"]) == (200, "ok")
        status, got = server.call("get", id=canary["id"], auth_key=KEY)
        assert got["canary"]["history"][0][1] == "Triggered"
    else:
        assert status == 404, body


def test_short_trigger_url_upper_case_stays_404(server: ServerProcess) -> None:
    canary = create(server, "Short upper")
    assert rule_short_trigger(f"/{canary['id'].upper()}") is None
    status, _ = get(server, f"/{canary['id'].upper()}")
    assert status == 404
