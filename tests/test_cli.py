"""Tests for ``cmcli`` (coal_mine/cli.py).

Most tests run real ``cmcli`` processes with a temporary HOME. Some talk to a
small recording stub (to see exactly which requests are sent, and to serve
canned or broken answers); the rest talk to a real Coal Mine server started by
tests/helpers.py.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import pprint
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from coal_mine import cli, cli_output, cli_settings
from tests.helpers import REPO, free_port


CANARY: dict[str, Any] = {
    "id": "abcdefgh",
    "name": "Nightly backup",
    "slug": "nightly-backup",
    "description": "db dump",
    "periodicity": 3600.0,
    "emails": ["ops@example.com", "dba@example.com"],
    "paused": False,
    "late": False,
    "deadline": "2026-11-26T04:34:55.129000+00:00",
    "history": [
        ["2026-11-26T03:34:55.129000+00:00", "Triggered (nightly run)"],
        ["2026-11-25T23:00:00.000000+00:00", "Canary created"],
    ],
}


# --------------------------------------------------------------------------
# Helpers


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a cmcli process: temporary HOME, no proxies."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = str(home)
    env.pop("TZ", None)
    env.update(extra)
    return env


def cmcli(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m coal_mine.cli`` with ``args``."""
    return subprocess.run(
        [sys.executable, "-m", "coal_mine.cli", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(home),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def read_ini(home: Path) -> configparser.ConfigParser:
    """Parse the CLI's configuration file in ``home``."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(home / ".coal-mine.ini", encoding="utf-8")
    return config


class Stub:
    """A recording HTTP server that answers every request with a canned reply."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.replies: list[tuple[int, str]] = []
        self.default: tuple[int, str] = (200, json.dumps({"status": "ok"}))
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
                stub.requests.append((self.command, parts.path, query))
                status, body = stub.replies.pop(0) if stub.replies else stub.default
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, body: Any, status: int = 200) -> None:
        """Queue one reply (a dict is sent as JSON)."""
        self.replies.append((status, body if isinstance(body, str) else json.dumps(body)))

    def args(self) -> list[str]:
        """Connection options pointing cmcli at the stub."""
        return ["--host", "127.0.0.1", "--port", str(self.port)]


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


# --------------------------------------------------------------------------
# Argument parsing and request mapping (in-process)


def params_for(*argv: str) -> list[tuple[str, str]]:
    """Parse argv and return the query parameters cmcli would send."""
    return cli.request_params(cli.build_parser().parse_args(list(argv)))


def test_request_params_per_command() -> None:
    assert params_for(
        "create",
        "--name",
        "N",
        "--periodicity",
        "60",
        "--description",
        "d",
        "--email",
        "a@x",
        "--email",
        "b@x",
        "--paused",
    ) == [
        ("name", "N"),
        ("periodicity", "60"),
        ("description", "d"),
        ("email", "a@x"),
        ("email", "b@x"),
        ("paused", "true"),
    ]
    assert params_for("create", "--name", "N", "--periodicity", "* * * * * 60") == [
        ("name", "N"),
        ("periodicity", "* * * * * 60"),
    ]
    assert params_for("delete", "--slug", "s") == [("slug", "s")]
    assert params_for("get", "--name", "My canary") == [("name", "My canary")]
    assert params_for("update", "--id", "abcdefgh", "--name", "New", "--email", "-") == [
        ("id", "abcdefgh"),
        ("name", "New"),
        ("email", "-"),
    ]
    assert params_for("update", "--slug", "s", "--periodicity", "1.5", "--description", "x") == [
        ("slug", "s"),
        ("periodicity", "1.5"),
        ("description", "x"),
    ]
    assert params_for("list") == []
    assert params_for("list", "--verbose", "--paused", "--no-late", "--search", "^a") == [
        ("verbose", "true"),
        ("paused", "true"),
        ("late", "false"),
        ("search", "^a"),
    ]
    assert params_for("list", "--no-paused", "--late") == [("paused", "false"), ("late", "true")]
    for command in ("trigger", "pause", "unpause"):
        assert params_for(command, "--id", "abcdefgh", "--comment", "hi") == [
            ("id", "abcdefgh"),
            ("comment", "hi"),
        ]


def test_options_before_and_after_the_command() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["--host", "a", "--json", "get", "--id", "x", "--port", "81"])
    assert (args.host, args.port, args.format) == ("a", 81, "json")
    args = parser.parse_args(["--host", "a", "get", "--id", "x", "--host", "b"])
    assert args.host == "b"
    assert not hasattr(parser.parse_args(["list"]), "host")


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("localhost", None, "http://localhost/coal-mine/v1/canary/"),
        ("localhost", 8080, "http://localhost:8080/coal-mine/v1/canary/"),
        ("http://cm.example.com", None, "http://cm.example.com/coal-mine/v1/canary/"),
        ("HTTPS://cm.example.com/", None, "https://cm.example.com/coal-mine/v1/canary/"),
        (
            "https://proxy.example.com/monitor/",
            None,
            "https://proxy.example.com/monitor/coal-mine/v1/canary/",
        ),
        (
            "https://proxy.example.com:8443/a/b",
            None,
            "https://proxy.example.com:8443/a/b/coal-mine/v1/canary/",
        ),
        ("https://proxy.example.com:8443/a", 9443, "https://proxy.example.com:9443/a/coal-mine/v1/canary/"),
        ("::1", None, None),
        ("[::1]", 81, "http://[::1]:81/coal-mine/v1/canary/"),
    ],
)
def test_make_base_url(host: str, port: int | None, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            cli_settings.make_base_url(host, port)
    else:
        assert cli_settings.make_base_url(host, port) == expected


@pytest.mark.parametrize("host", ["ftp://x", "http://", "http://h/p?q=1", "http://h:99999"])
def test_make_base_url_rejects(host: str) -> None:
    with pytest.raises(ValueError):
        cli_settings.make_base_url(host, None)


def test_strip_history_and_durations() -> None:
    assert "history" not in cli_output.strip_history({"status": "ok", "canary": CANARY})["canary"]
    assert "history" in CANARY  # the input is not modified
    listed = cli_output.strip_history({"canaries": [CANARY, {"name": "n", "id": "i"}]})
    assert listed["canaries"] == [
        {k: v for k, v in CANARY.items() if k != "history"},
        {"name": "n", "id": "i"},
    ]
    assert cli_output.strip_history({"status": "ok"}) == {"status": "ok"}
    assert cli_output.format_duration(3600) == "1h"
    assert cli_output.format_duration(90061) == "1d 1h 1m 1s"
    assert cli_output.format_duration(0.5) == "0.5s"
    assert cli_output.format_periodicity(5400.0) == "5400 s (1h 30m)"
    assert cli_output.format_periodicity("* * * * * 60") == "* * * * * 60"


def test_format_time_zones() -> None:
    stamp = "2026-11-26T03:34:55.129000+00:00"
    assert cli_output.format_time(stamp, UTC) == "2026-11-26 03:34:55 UTC"
    assert cli_output.format_time(stamp, cli_settings.parse_zone("Europe/Paris")) == "2026-11-26 04:34:55 CET"
    assert (
        cli_output.format_time(stamp, cli_settings.parse_zone("America/New_York"))
        == "2026-11-25 22:34:55 EST"
    )
    # Coal Mine 0.7 sends naive UTC times; they are taken as UTC.
    assert cli_output.format_time("2015-03-19T02:08:44.885182", UTC) == "2015-03-19 02:08:44 UTC"
    assert cli_output.format_time("garbage", UTC) == "garbage"


# --------------------------------------------------------------------------
# Usage errors (exit 2, argparse's own)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["get"], "one of the arguments --id --name --slug is required"),
        (["get", "--id", "a", "--slug", "b"], "not allowed with argument"),
        (["delete"], "one of the arguments --id --name --slug is required"),
        (["trigger", "--name", "a", "--id", "b"], "not allowed with argument"),
        (["update", "--id", "a", "--slug", "b"], "not allowed with argument"),
        (["create", "--name", "x"], "the following arguments are required: --periodicity"),
        (["create", "--periodicity", "60"], "the following arguments are required: --name"),
        (["create", "--name", "x", "--periodicity", "1.2.3"], "not a number"),
        (["list", "--paused", "--no-paused"], "not allowed with argument"),
        (["list", "--late", "--no-late"], "not allowed with argument"),
        (["get", "--id", "a", "--port", "http"], "not a port number"),
        (["get", "--id", "a", "--port", "70000"], "port out of range"),
        (["get", "--id", "a", "--timeout", "0"], "timeout must be a positive number"),
        (["get", "--id", "a", "--auth-key", "k", "--no-auth-key"], "not allowed with argument"),
        (["get", "--id", "a", "--bogus"], "unrecognized arguments: --bogus"),
        (["list", "--tz", "Mars/Olympus_Mons"], "unknown time zone"),
        (["list", "--host", "ftp://example.com"], "unsupported URL scheme"),
        (["update", "--description", "x"], "one of --id, --slug or --name is required"),
        (
            ["get", "--id", "a", "--host", "https://h", "--cacert", "/nonexistent/ca.pem"],
            "cannot load CA certificates",
        ),
    ],
)
def test_usage_errors(home: Path, argv: list[str], message: str) -> None:
    result = cmcli(home, *argv)
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_help_documents_exit_codes(home: Path) -> None:
    result = cmcli(home, "--help")
    assert result.returncode == 0
    for line in (
        "exit status:",
        "1  the server answered with an HTTP error",
        "2  bad command-line arguments",
        "3  cannot connect",
        "4  timed out",
        "5  configuration problem",
    ):
        assert line in result.stdout
    for command in ("configure", "create", "delete", "update", "get", "list", "trigger", "pause", "unpause"):
        assert command in result.stdout
        sub = cmcli(home, command, "--help")
        assert sub.returncode == 0
        assert "--host" in sub.stdout and "--timeout" in sub.stdout
        assert "--cacert" in sub.stdout and "--no-auth-key" in sub.stdout


def test_bin_script_runs_from_checkout(home: Path, stub: Stub) -> None:
    stub.reply({"status": "ok", "canaries": []})
    script = REPO / "bin" / "cmcli"
    assert os.access(script, os.X_OK)
    result = subprocess.run(
        [sys.executable, str(script), "list", *stub.args()],
        capture_output=True,
        text=True,
        env=cli_env(home),
        cwd="/",
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "{'canaries': [], 'status': 'ok'}\n"


# --------------------------------------------------------------------------
# Configuration file


def test_configure_writes_private_file(home: Path) -> None:
    result = cmcli(
        home, "configure", "--host", "cm.example.com", "--port", "8080", "--auth-key", "s3cret%key"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    path = home / ".coal-mine.ini"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    section = read_ini(home)["coal-mine"]
    assert dict(section) == {"host": "cm.example.com", "port": "8080", "auth-key": "s3cret%key"}


def test_configure_defaults_and_keeps_other_keys(home: Path) -> None:
    path = home / ".coal-mine.ini"
    path.write_text("[coal-mine]\nformat = json\nauth-key = old\n\n[other]\nx = 1\n")
    path.chmod(0o644)
    assert cmcli(home, "configure").returncode == 0
    config = read_ini(home)
    assert dict(config["coal-mine"]) == {"format": "json", "auth-key": "old", "host": "localhost"}
    assert dict(config["other"]) == {"x": "1"}
    # A world-readable file is made private before the key is written again.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cmcli(home, "configure", "--no-auth-key", "--port", "81").returncode == 0
    assert dict(read_ini(home)["coal-mine"]) == {"format": "json", "host": "localhost", "port": "81"}
    assert (
        cmcli(
            home,
            "configure",
            "--host",
            "https://cm.example.com/prefix",
            "--human",
            "--tz",
            "Europe/Paris",
            "--timeout",
            "3",
        ).returncode
        == 0
    )
    assert dict(read_ini(home)["coal-mine"]) == {
        "format": "human",
        "host": "https://cm.example.com/prefix",
        "port": "81",
        "timeout": "3.0",
        "tz": "Europe/Paris",
    }


def test_configure_refuses_bad_values(home: Path) -> None:
    result = cmcli(home, "configure", "--host", "gopher://x")
    assert result.returncode == cli.EXIT_USAGE
    assert not (home / ".coal-mine.ini").exists()


def test_stored_settings_are_used_and_overridden(home: Path, stub: Stub) -> None:
    assert (
        cmcli(
            home, "configure", "--host", "127.0.0.1", "--port", str(stub.port), "--auth-key", "stored"
        ).returncode
        == 0
    )
    assert cmcli(home, "list").returncode == 0
    assert cmcli(home, "list", "--auth-key", "given").returncode == 0
    assert cmcli(home, "list", "--no-auth-key").returncode == 0
    assert [r[2] for r in stub.requests] == [{"auth_key": ["stored"]}, {"auth_key": ["given"]}, {}]
    # A command-line port wins over the stored one (nothing listens there).
    result = cmcli(home, "list", "--port", str(free_port()))
    assert result.returncode == cli.EXIT_CONNECT
    # A command-line host too.
    result = cmcli(home, "list", "--host", "localhost.invalid")
    assert result.returncode == cli.EXIT_CONNECT
    assert len(stub.requests) == 3


def test_stored_url_base_with_prefix(home: Path, stub: Stub) -> None:
    assert cmcli(home, "configure", "--host", f"http://127.0.0.1:{stub.port}/cm/").returncode == 0
    assert cmcli(home, "get", "--id", "abcdefgh").returncode == 0
    assert stub.requests[-1][1] == "/cm/coal-mine/v1/canary/get"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is not an ini file\n", "cannot parse"),
        ("[coal-mine]\nport = eighty\n", "bad port setting"),
        ("[coal-mine]\nhost = ftp://x\n", "bad host setting"),
        ("[coal-mine]\nformat = yaml\n", "bad format setting"),
        ("[coal-mine]\ntz = Nowhere/Special\n", "bad tz setting"),
        ("[coal-mine]\ntimeout = -1\n", "bad timeout setting"),
        ("[coal-mine]\nhost = https://h\ncacert = /nonexistent.pem\n", "cannot load CA"),
        ("[coal-mine]\nhost = a\nhost = b\n", "cannot parse"),
    ],
)
def test_config_problems(home: Path, content: str, message: str) -> None:
    (home / ".coal-mine.ini").write_text(content)
    result = cmcli(home, "list")
    assert result.returncode == cli.EXIT_CONFIG
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_unreadable_config(home: Path) -> None:
    (home / ".coal-mine.ini").mkdir()  # unreadable even for root
    for argv in (["list"], ["configure", "--port", "81"]):
        result = cmcli(home, *argv)
        assert result.returncode == cli.EXIT_CONFIG
        assert result.stderr.startswith("cmcli: cannot read ")
        assert result.stderr.count("\n") == 1


def test_format_setting_changes_default(home: Path, stub: Stub) -> None:
    (home / ".coal-mine.ini").write_text("[coal-mine]\nformat = json\n")
    stub.reply({"status": "ok", "canary": CANARY})
    stub.reply({"status": "ok", "canary": CANARY})
    result = cmcli(home, "get", "--id", "abcdefgh", *stub.args())
    assert json.loads(result.stdout) == {"status": "ok", "canary": CANARY}
    result = cmcli(home, "get", "--id", "abcdefgh", "--python", *stub.args())
    assert result.stdout == pprint.pformat({"status": "ok", "canary": CANARY}) + "\n"


# --------------------------------------------------------------------------
# Requests sent (recording stub)


def test_every_command_sends_the_right_request(home: Path, stub: Stub) -> None:
    key = ["--auth-key", "K", *stub.args()]
    runs = [
        [
            "create",
            "--name",
            "N",
            "--periodicity",
            "60",
            "--description",
            "d",
            "--email",
            "a@x",
            "--email",
            "b@x",
            "--paused",
        ],
        ["delete", "--id", "abcdefgh"],
        ["update", "--slug", "n", "--periodicity", "* * * * * 30", "--email", "-"],
        ["get", "--name", "N"],
        ["list", "--verbose", "--no-paused", "--late", "--search", "a|b"],
        ["pause", "--slug", "n", "--comment", "maintenance"],
        ["unpause", "--id", "abcdefgh", "--comment", "done"],
        ["trigger", "--name", "N", "--comment", "ran ok"],
    ]
    for argv in runs:
        result = cmcli(home, *argv, *key)
        assert result.returncode == 0, result.stderr
    assert all(method == "GET" for method, _, _ in stub.requests)
    assert [(path, query) for _, path, query in stub.requests] == [
        (
            "/coal-mine/v1/canary/create",
            {
                "name": ["N"],
                "periodicity": ["60"],
                "description": ["d"],
                "email": ["a@x", "b@x"],
                "paused": ["true"],
                "auth_key": ["K"],
            },
        ),
        ("/coal-mine/v1/canary/delete", {"id": ["abcdefgh"], "auth_key": ["K"]}),
        (
            "/coal-mine/v1/canary/update",
            {"slug": ["n"], "periodicity": ["* * * * * 30"], "email": ["-"], "auth_key": ["K"]},
        ),
        ("/coal-mine/v1/canary/get", {"name": ["N"], "auth_key": ["K"]}),
        (
            "/coal-mine/v1/canary/list",
            {
                "verbose": ["true"],
                "paused": ["false"],
                "late": ["true"],
                "search": ["a|b"],
                "auth_key": ["K"],
            },
        ),
        ("/coal-mine/v1/canary/pause", {"slug": ["n"], "comment": ["maintenance"], "auth_key": ["K"]}),
        ("/coal-mine/v1/canary/unpause", {"id": ["abcdefgh"], "comment": ["done"], "auth_key": ["K"]}),
        # trigger never sends the auth key
        ("/coal-mine/v1/canary/trigger", {"name": ["N"], "comment": ["ran ok"]}),
    ]


def test_update_by_name_looks_the_canary_up_first(home: Path, stub: Stub) -> None:
    stub.reply({"status": "ok", "canary": CANARY})
    stub.reply({"status": "ok", "canary": dict(CANARY, description="new")})
    result = cmcli(
        home, "update", "--name", "Nightly backup", "--description", "new", "--auth-key", "K", *stub.args()
    )
    assert result.returncode == 0, result.stderr
    assert [(path, query) for _, path, query in stub.requests] == [
        ("/coal-mine/v1/canary/get", {"name": ["Nightly backup"], "auth_key": ["K"]}),
        ("/coal-mine/v1/canary/update", {"id": ["abcdefgh"], "description": ["new"], "auth_key": ["K"]}),
    ]
    assert "'description': 'new'" in result.stdout


def test_update_by_name_lookup_failure(home: Path, stub: Stub) -> None:
    stub.reply({"status": "error", "error": "Canary not found"}, status=404)
    result = cmcli(home, "update", "--name", "ghost", "--periodicity", "5", *stub.args())
    assert result.returncode == cli.EXIT_HTTP
    assert "404" in result.stderr and "Canary not found" in result.stderr
    assert len(stub.requests) == 1


def test_update_with_id_and_name_renames(home: Path, stub: Stub) -> None:
    assert cmcli(home, "update", "--id", "abcdefgh", "--name", "Renamed", *stub.args()).returncode == 0
    assert stub.requests == [
        ("GET", "/coal-mine/v1/canary/update", {"id": ["abcdefgh"], "name": ["Renamed"]})
    ]


# --------------------------------------------------------------------------
# Output on canned answers


def test_default_output_is_coal_mine_pprint(home: Path, stub: Stub) -> None:
    answer = {"status": "ok", "canary": CANARY}
    stub.reply(answer)
    result = cmcli(home, "get", "--id", "abcdefgh", *stub.args())
    assert result.stdout == pprint.pformat(answer) + "\n"
    assert result.stdout.startswith("{'canary': {'deadline': '2026-11-26T04:34:55.129000+00:00',")


def test_no_history_and_terse(home: Path, stub: Stub) -> None:
    for flag in ("--no-history", "--terse"):
        stub.reply({"status": "ok", "canary": CANARY})
        result = cmcli(home, "get", "--id", "abcdefgh", flag, *stub.args())
        expected = {"status": "ok", "canary": {k: v for k, v in CANARY.items() if k != "history"}}
        assert ast.literal_eval(result.stdout) == expected
    stub.reply({"status": "ok", "canaries": [CANARY]})
    result = cmcli(home, "list", "--verbose", "--terse", "--json", *stub.args())
    assert "history" not in json.loads(result.stdout)["canaries"][0]


def test_human_canary_layout(home: Path, stub: Stub) -> None:
    schedule = dict(
        CANARY,
        periodicity="* 0-11 * * * 300",
        periodicity_schedule=[
            ["2026-11-26T03:35:00+00:00", "2026-11-26T11:59:00+00:00", 300.0],
            ["2026-11-26T12:00:00+00:00", "2026-11-26T23:59:00+00:00", "Inactive"],
        ],
    )
    stub.reply({"status": "ok", "canary": schedule})
    result = cmcli(home, "get", "--id", "abcdefgh", "--human", "--tz", "Europe/Paris", *stub.args())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Name:         Nightly backup",
        "ID:           abcdefgh",
        "Slug:         nightly-backup",
        "Description:  db dump",
        "Periodicity:  * 0-11 * * * 300",
        "Emails:       ops@example.com, dba@example.com",
        "State:        ok",
        "Deadline:     2026-11-26 05:34:55 CET",
        "Schedule:",
        "  from                     until                    periodicity",
        "  2026-11-26 04:35:00 CET  2026-11-26 12:59:00 CET  300 s (5m)",
        "  2026-11-26 13:00:00 CET  2026-11-27 00:59:00 CET  Inactive",
        "History (2, newest first):",
        "  2026-11-26 04:34:55 CET  Triggered (nightly run)",
        "  2026-11-26 00:00:00 CET  Canary created",
    ]


def test_human_paused_canary_utc_and_terse(home: Path, stub: Stub) -> None:
    paused = {k: v for k, v in CANARY.items() if k != "deadline"}
    paused.update(paused=True, late=True, emails=[], description="")
    stub.reply({"status": "ok", "canary": paused})
    result = cmcli(home, "pause", "--id", "abcdefgh", "--human", "--terse", *stub.args())
    assert result.stdout.splitlines() == [
        "Name:         Nightly backup",
        "ID:           abcdefgh",
        "Slug:         nightly-backup",
        "Description:  -",
        "Periodicity:  3600 s (1h)",
        "Emails:       -",
        "State:        paused, late",
        "Deadline:     -",
    ]


def test_human_list_layouts(home: Path, stub: Stub) -> None:
    late = dict(CANARY, id="zzzzzzzz", name="Late one", late=True, periodicity="* * * * * 9")
    stub.reply({"status": "ok", "canaries": [CANARY, late]})
    result = cmcli(home, "list", "--verbose", "--human", "--tz", "UTC", *stub.args())
    assert result.stdout.splitlines() == [
        "ID        STATE  DEADLINE                 PERIODICITY  NAME",
        "abcdefgh  ok     2026-11-26 04:34:55 UTC  3600 s       Nightly backup",
        "zzzzzzzz  LATE   2026-11-26 04:34:55 UTC  schedule     Late one",
    ]
    stub.reply(
        {"status": "ok", "canaries": [{"name": "A", "id": "aaaaaaaa"}, {"name": "Bee", "id": "bbbbbbbb"}]}
    )
    result = cmcli(home, "list", "--human", *stub.args())
    assert result.stdout == "ID        NAME\naaaaaaaa  A\nbbbbbbbb  Bee\n"
    stub.reply({"status": "ok", "canaries": []})
    assert cmcli(home, "list", "--human", *stub.args()).stdout == "No canaries.\n"


def test_human_trigger_and_delete(home: Path, stub: Stub) -> None:
    stub.reply({"status": "ok", "recovered": True, "unpaused": True})
    result = cmcli(home, "trigger", "--slug", "nightly-backup", "--human", *stub.args())
    assert result.stdout == (
        "Triggered canary (slug nightly-backup). It was late and has "
        "recovered. It was paused and is now unpaused.\n"
    )
    stub.reply({"status": "ok", "recovered": False, "unpaused": False})
    result = cmcli(home, "trigger", "--id", "abcdefgh", "--human", *stub.args())
    assert result.stdout == "Triggered canary (id abcdefgh).\n"
    stub.reply({"status": "ok"})
    result = cmcli(home, "delete", "--name", "Nightly backup", "--human", *stub.args())
    assert result.stdout == "Deleted canary (name 'Nightly backup').\n"


def test_tz_local_uses_the_system_zone(home: Path, stub: Stub) -> None:
    stub.reply({"status": "ok", "canary": CANARY})
    result = cmcli(
        home,
        "get",
        "--id",
        "abcdefgh",
        "--human",
        "--tz",
        "local",
        *stub.args(),
        env=cli_env(home, TZ="Asia/Tokyo"),
    )
    assert "Deadline:     2026-11-26 13:34:55 JST" in result.stdout
    # --tz stored in the ini is the default; the command line wins.
    (home / ".coal-mine.ini").write_text("[coal-mine]\ntz = America/New_York\n")
    stub.reply({"status": "ok", "canary": CANARY})
    result = cmcli(home, "get", "--id", "x", "--human", *stub.args())
    assert "Deadline:     2026-11-25 23:34:55 EST" in result.stdout
    stub.reply({"status": "ok", "canary": CANARY})
    result = cmcli(home, "get", "--id", "x", "--human", "--tz", "UTC", *stub.args())
    assert "Deadline:     2026-11-26 04:34:55 UTC" in result.stdout


# --------------------------------------------------------------------------
# Errors (canned)


def test_http_error_formats(home: Path, stub: Stub) -> None:
    error = {"status": "error", "error": "Canary not found"}
    stub.reply(error, status=404)
    result = cmcli(home, "get", "--id", "abcdefgh", *stub.args())
    assert result.returncode == cli.EXIT_HTTP
    assert result.stdout == ""
    assert result.stderr == "404 Not Found\n{'error': 'Canary not found', 'status': 'error'}\n"
    stub.reply(error, status=404)
    result = cmcli(home, "get", "--id", "abcdefgh", "--human", *stub.args())
    assert result.stderr == "cmcli: 404 Not Found: Canary not found\n"
    stub.reply(error, status=404)
    result = cmcli(home, "get", "--id", "abcdefgh", "--json", *stub.args())
    status, body = result.stderr.split("\n", 1)
    assert status == "404 Not Found"
    assert json.loads(body) == error
    stub.reply("<html>Bad gateway</html>", status=502)
    result = cmcli(home, "list", *stub.args())
    assert result.returncode == cli.EXIT_HTTP
    assert result.stderr == "502 Bad Gateway\n<html>Bad gateway</html>\n"


def test_answer_that_is_not_json(home: Path, stub: Stub) -> None:
    stub.reply("<html>hello</html>")
    result = cmcli(home, "list", *stub.args())
    assert result.returncode == cli.EXIT_RESPONSE
    assert result.stderr == f"cmcli: invalid response from http://127.0.0.1:{stub.port}: not JSON\n"


def test_connection_refused(home: Path) -> None:
    port = free_port()
    result = cmcli(home, "list", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == cli.EXIT_CONNECT
    assert result.stderr == (f"cmcli: cannot connect to http://127.0.0.1:{port}: Connection refused\n")


def test_timeout_against_silent_server(home: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted: list[socket.socket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)  # keep it open, never answer

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        result = cmcli(
            home, "get", "--id", "x", "--host", "127.0.0.1", "--port", str(port), "--timeout", "0.5"
        )
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert accepted, "cmcli never connected"
    assert result.returncode == cli.EXIT_TIMEOUT
    assert result.stderr == f"cmcli: timed out after 0.5 s waiting for http://127.0.0.1:{port}\n"


class Trickler:
    """A server that answers every connection one byte a second, for as long as it runs."""

    def __init__(self, head_at_once: bool) -> None:
        body = json.dumps({"status": "ok", "canaries": []}).encode() + b" " * 120
        head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        self.at_once, self.trickled = (head, body) if head_at_once else (b"", head + body)
        self.stop = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(5)
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)  # the request
            conn.sendall(self.at_once)
            for byte in self.trickled:
                if self.stop.wait(1.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return  # the client gave up
                self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.mark.parametrize("head_at_once", [False, True], ids=["trickled-head", "trickled-body"])
def test_timeout_is_a_total_deadline_against_a_trickling_server(home: Path, head_at_once: bool) -> None:
    """--timeout bounds the whole request: a byte a second must not keep cmcli waiting (issue 19)."""
    trickler = Trickler(head_at_once)
    try:
        result = cmcli(
            home, "list", "--host", "127.0.0.1", "--port", str(trickler.port), "--timeout", "2", timeout=20
        )
    finally:
        trickler.close()
    assert trickler.sent >= 1, "the server never trickled: the test proves nothing"
    assert result.returncode == cli.EXIT_TIMEOUT, result.stderr
    assert result.stderr == f"cmcli: timed out after 2 s waiting for http://127.0.0.1:{trickler.port}\n"
    # Per-read timeouts would have read on until the server stopped (over a minute of bytes).
    assert trickler.sent < 10


def test_timeout_setting_from_config(home: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)  # connections queue in the backlog; nobody answers
        port = listener.getsockname()[1]
        (home / ".coal-mine.ini").write_text(f"[coal-mine]\nhost = 127.0.0.1\nport = {port}\ntimeout = 0.3\n")
        result = cmcli(home, "list")
    assert result.returncode == cli.EXIT_TIMEOUT
    assert "timed out after 0.3 s" in result.stderr


# --------------------------------------------------------------------------
# TLS


@pytest.fixture
def tls_stub(tmp_path: Path, stub: Stub) -> Iterator[tuple[Stub, Path]]:
    """The stub behind TLS with a self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    stub.server.socket = context.wrap_socket(stub.server.socket, server_side=True)
    yield stub, cert


def test_https_verifies_certificates(home: Path, tls_stub: tuple[Stub, Path]) -> None:
    stub, cert = tls_stub
    host = f"https://127.0.0.1:{stub.port}"
    result = cmcli(home, "list", "--host", host, "--timeout", "5")
    assert result.returncode == cli.EXIT_CONNECT
    assert "certificate verify failed" in result.stderr
    assert result.stderr.count("\n") == 1
    stub.reply({"status": "ok", "canaries": []})
    result = cmcli(home, "list", "--host", host, "--cacert", str(cert))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "{'canaries': [], 'status': 'ok'}\n"
    # A stored cacert is used too.
    assert cmcli(home, "configure", "--host", host, "--cacert", str(cert)).returncode == 0
    stub.reply({"status": "ok", "canaries": []})
    assert cmcli(home, "list").returncode == 0


# --------------------------------------------------------------------------
# Against a real Coal Mine server (fixtures `server` and `auth_server` from
# tests/conftest.py)


def api(server: Any, command: str, **params: Any) -> Any:
    """Call the server's API directly with urllib; return the decoded answer."""
    query = urllib.parse.urlencode(params, doseq=True)
    url = f"http://127.0.0.1:{server.port}/coal-mine/v1/canary/{command}?{query}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def conn(server: Any) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(server.port)]


def test_real_server_round_trip(home: Path, server: Any) -> None:
    c = conn(server)
    created = cmcli(
        home,
        "create",
        "--name",
        "Nightly Backup",
        "--periodicity",
        "3600",
        "--description",
        "db",
        "--email",
        "a@example.com",
        "--email",
        "b@example.com",
        *c,
    )
    assert created.returncode == 0, created.stderr
    canary = ast.literal_eval(created.stdout)["canary"]
    assert canary["slug"] == "nightly-backup"
    assert canary["emails"] == ["a@example.com", "b@example.com"]
    assert canary["periodicity"] == 3600.0
    cid = canary["id"]

    # Default output: exactly pprint of the API answer.
    for argv in (
        ["get", "--id", cid],
        ["get", "--slug", "nightly-backup"],
        ["get", "--name", "Nightly Backup"],
    ):
        result = cmcli(home, *argv, *c)
        assert result.stdout == pprint.pformat(api(server, "get", id=cid)) + "\n"
    assert ast.literal_eval(created.stdout) == api(server, "get", id=cid)

    # --json parses and equals the API answer.
    result = cmcli(home, "get", "--id", cid, "--json", *c)
    assert json.loads(result.stdout) == api(server, "get", id=cid)
    result = cmcli(home, "list", "--verbose", "--json", *c)
    assert json.loads(result.stdout) == api(server, "list", verbose="true")
    result = cmcli(home, "list", *c)
    assert result.stdout == pprint.pformat(api(server, "list")) + "\n"
    assert ast.literal_eval(result.stdout)["canaries"] == [{"name": "Nightly Backup", "id": cid}]

    # trigger
    result = cmcli(home, "trigger", "--id", cid, "--comment", "ran", *c)
    assert ast.literal_eval(result.stdout) == {"status": "ok", "recovered": False, "unpaused": False}
    assert api(server, "get", id=cid)["canary"]["history"][0][1] == "Triggered (ran)"

    # pause / unpause with comments
    result = cmcli(home, "pause", "--slug", "nightly-backup", "--comment", "maint", *c)
    paused = ast.literal_eval(result.stdout)["canary"]
    assert paused["paused"] is True and "deadline" not in paused
    assert paused["history"][0][1] == "Paused (maint)"
    result = cmcli(home, "list", "--paused", *c)
    assert [x["id"] for x in ast.literal_eval(result.stdout)["canaries"]] == [cid]
    result = cmcli(home, "list", "--no-paused", *c)
    assert ast.literal_eval(result.stdout)["canaries"] == []
    result = cmcli(home, "trigger", "--name", "Nightly Backup", "--human", *c)
    assert result.stdout == ("Triggered canary (name 'Nightly Backup'). It was paused and is now unpaused.\n")
    cmcli(home, "pause", "--id", cid, *c)
    result = cmcli(home, "unpause", "--id", cid, "--comment", "back", "--terse", *c)
    unpaused = ast.literal_eval(result.stdout)["canary"]
    assert unpaused["paused"] is False and "history" not in unpaused
    assert api(server, "get", id=cid)["canary"]["history"][0][1] == "Unpaused (back)"

    # update: by id, by slug, by name lookup, clearing emails
    result = cmcli(home, "update", "--id", cid, "--description", "new", *c)
    assert ast.literal_eval(result.stdout)["canary"]["description"] == "new"
    result = cmcli(home, "update", "--slug", "nightly-backup", "--email", "-", *c)
    assert ast.literal_eval(result.stdout)["canary"]["emails"] == []
    result = cmcli(home, "update", "--name", "Nightly Backup", "--periodicity", "7200", *c)
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout)["canary"]["periodicity"] == 7200.0
    result = cmcli(home, "update", "--id", cid, "--name", "Weekly Backup", *c)
    assert ast.literal_eval(result.stdout)["canary"]["slug"] == "weekly-backup"

    # list filters and search
    cmcli(home, "create", "--name", "Other", "--periodicity", "60", "--paused", *c)
    result = cmcli(home, "list", "--search", "^week", *c)
    assert ast.literal_eval(result.stdout)["canaries"] == [{"name": "Weekly Backup", "id": cid}]
    result = cmcli(home, "list", "--no-late", "--verbose", "--terse", *c)
    entries = ast.literal_eval(result.stdout)["canaries"]
    assert {x["name"] for x in entries} == {"Weekly Backup", "Other"}
    assert all("history" not in x for x in entries)
    result = cmcli(home, "list", "--late", *c)
    assert ast.literal_eval(result.stdout)["canaries"] == []

    # delete
    result = cmcli(home, "delete", "--id", cid, *c)
    assert ast.literal_eval(result.stdout) == {"status": "ok"}
    result = cmcli(home, "get", "--id", cid, *c)
    assert result.returncode == cli.EXIT_HTTP
    assert result.stderr.startswith("404 ")


def test_real_server_human_output(home: Path, server: Any) -> None:
    c = conn(server)
    created = cmcli(home, "create", "--name", "Hourly", "--periodicity", "3600", "--json", *c)
    canary = json.loads(created.stdout)["canary"]
    result = cmcli(home, "get", "--id", canary["id"], "--human", "--tz", "Asia/Kolkata", *c)
    lines = result.stdout.splitlines()
    assert lines[0] == "Name:         Hourly"
    assert lines[1] == f"ID:           {canary['id']}"
    assert "Periodicity:  3600 s (1h)" in lines
    expected = cli_output.format_time(canary["deadline"], cli_settings.parse_zone("Asia/Kolkata"))
    assert expected.endswith(" IST")
    assert f"Deadline:     {expected}" in lines
    assert lines[-2] == "History (1, newest first):"
    assert lines[-1].endswith(" IST  Canary created")
    result = cmcli(home, "list", "--verbose", "--human", *c)
    assert result.stdout.splitlines()[1].startswith(f"{canary['id']}  ok ")


def test_real_server_errors(home: Path, auth_server: Any) -> None:
    server = auth_server  # auth key "sekrit"
    c = conn(server)
    # 401: no key
    result = cmcli(home, "list", *c)
    assert result.returncode == cli.EXIT_HTTP
    assert result.stderr.startswith("401 ")
    error = ast.literal_eval(result.stderr.split("\n", 1)[1])
    assert error["status"] == "error" and error["error"]
    # with the key (stored), it works; trigger works without sending it
    assert cmcli(home, "configure", *c, "--auth-key", "sekrit").returncode == 0
    created = cmcli(home, "create", "--name", "Keyed", "--periodicity", "60")
    assert created.returncode == 0, created.stderr
    cid = ast.literal_eval(created.stdout)["canary"]["id"]
    assert cmcli(home, "trigger", "--id", cid).returncode == 0
    assert cmcli(home, "trigger", "--id", cid, "--no-auth-key").returncode == 0
    # wrong key on the command line overrides the stored one
    result = cmcli(home, "get", "--id", cid, "--auth-key", "wrong", "--human")
    assert result.returncode == cli.EXIT_HTTP
    assert result.stderr.startswith("cmcli: 401 ")
    # 404
    result = cmcli(home, "get", "--slug", "no-such-canary")
    assert result.returncode == cli.EXIT_HTTP
    assert result.stderr.startswith("404 ")
    assert "'status': 'error'" in result.stderr
    # 400: a bad schedule, a duplicate, an update with nothing in it
    for argv in (
        ["create", "--name", "Bad", "--periodicity", "not a schedule"],
        ["create", "--name", "keyed", "--periodicity", "60"],
        ["update", "--id", cid],
    ):
        result = cmcli(home, *argv)
        assert result.returncode == cli.EXIT_HTTP, argv
        assert result.stderr.startswith("400 "), result.stderr
        assert result.stdout == ""
    result = cmcli(home, "create", "--name", "Bad", "--periodicity", "x", "--human")
    assert result.stderr.startswith("cmcli: 400 Bad Request: ")
    # pausing twice is an error too
    assert cmcli(home, "pause", "--id", cid).returncode == 0
    result = cmcli(home, "pause", "--id", cid)
    assert result.returncode == cli.EXIT_HTTP
    assert "Traceback" not in result.stderr
