"""Channels end to end: real server processes on SQLite, real receivers (HTTP and aiosmtpd),
real cmcli processes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, ServerProcess
from tests.http_sink import HTTPSink
from tests.smtp_sink import SMTPSink
from tests.test_cli import cli_env, cmcli
from tests.test_notify_e2e import wait_until

FAST = "[watcher]\nrescan_interval = 0.2\nretry_max_delay = 0.4\n"


def ini(smtp: SMTPSink | None = None, db: Path | None = None, extra: str = "") -> str:
    text = FAST + "[webhook]\nallow_private = true\nsecret = s3cret\ntimeout = 2\n" + extra
    if smtp is not None:
        text += f"[email]\nsender = coal@example.net\nhost = 127.0.0.1\nport = {smtp.port}\ntimeout = 5\n"
    if db is not None:
        text = f"[sqlite]\npath = {db}\n" + text
    return text


@pytest.fixture
def smtp() -> Iterator[SMTPSink]:
    with SMTPSink() as server:
        yield server


@pytest.fixture
def http() -> Iterator[HTTPSink]:
    with HTTPSink() as server:
        yield server


def create(server: ServerProcess, name: str, period: float = 0.3, **params: Any) -> dict[str, Any]:
    status, body = server.call("create", name=name, periodicity=period, **params)
    assert status == 200, body
    return body["canary"]


def hook_events(http: HTTPSink, path: str = "/hook") -> list[tuple[str, str]]:
    return [(d["id"], d["event"]) for d in (p.json() for p in http.posts if p.path == path)]


def test_api_fields_masking_validation_and_delivery_status(tmp_path: Path, http: HTTPSink) -> None:
    db = tmp_path / "db.sqlite3"
    extra = "read_only_auth_key = ro\n" + ini(db=db)
    secret_url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    with ServerProcess(tmp_path / "s", auth_key="full", ini_extra=extra) as server:
        status, body = server.call(
            "create",
            auth_key="full",
            name="Job",
            periodicity=3600,
            webhook=[http.url("/hook"), http.url("/hook")],
            slack=secret_url,
            repeat=120,
        )
        assert status == 200, body
        cid = body["canary"]["id"]
        assert body["canary"]["webhooks"] == [http.url("/hook")]  # each once
        assert (body["canary"]["slacks"], body["canary"]["repeat"]) == ([secret_url], 120)
        _, seen = server.call("get", id=cid, auth_key="ro")
        assert seen["canary"]["slacks"] == ["https://hooks.slack.com/***"]
        assert seen["canary"]["webhooks"] == [f"http://127.0.0.1:{http.port}/***"]
        _, listed = server.call("list", verbose=1, auth_key="ro")
        assert "XXXXSECRET" not in json.dumps(listed)
        _, plain = server.call("create", auth_key="full", name="Plain", periodicity=60)
        assert not {"webhooks", "slacks", "repeat", "delivery"} & set(plain["canary"])  # as in 0.7.1
        for params, message in (
            ({"webhook": "ftp://x.example/"}, "only http:// and https://"),
            ({"webhook": "https:///nohost"}, "no host"),
            ({"slack": "http://x.example/a b"}, "spaces"),
            ({"repeat": "30"}, "at least 60"),
            ({"repeat": "soon"}, "Bad repeat"),
            ({"repeat": "nan"}, "Bad repeat"),
        ):
            status, body = server.call("update", id=cid, auth_key="full", **params)
            assert status == 400 and message in body["error"], (params, body)
        status, body = server.call("update", id=cid, auth_key="full", slack="-", repeat=0)
        assert status == 200 and not {"slacks", "repeat"} & set(body["canary"])
        assert server.call("test", id=cid, auth_key="ro")[0] == 401
        assert server.call("/coal-mine/v1/outbox", auth_key="ro")[0] == 401
        status, tested = server.call("test", id=cid, auth_key="full")
        assert status == 200 and tested["results"] == [
            {"channel": "webhook", "target": http.url("/hook"), "ok": True, "error": None}
        ]
        assert http.wait_for(1)[0].json()["event"] == "test"
        status, tested = server.call("test", id=plain["canary"]["id"], auth_key="full")
        assert status == 400 and "no email addresses, webhooks or slack URLs" in tested["error"]
        # Delivery state shows in get (full key only) once something was delivered.
        server.call("update", id=cid, auth_key="full", periodicity=0.2)
        wait_until(lambda: len(http.posts) >= 2)
        wait_until(lambda: "delivery" in server.call("get", id=cid, auth_key="full")[1]["canary"])
        (row,) = server.call("get", id=cid, auth_key="full")[1]["canary"]["delivery"]
        assert (row["channel"], row["target"], row["last_error"]) == ("webhook", http.url("/hook"), None)
        assert (
            row["last_success"] and "delivery" not in server.call("get", id=cid, auth_key="ro")[1]["canary"]
        )


def test_outbox_list_and_drop_over_http_and_cmcli(tmp_path: Path, http: HTTPSink) -> None:
    http.status = 404  # a wrong URL: retried at the longest delay, never dropped by itself
    with ServerProcess(tmp_path / "s", ini_extra=ini()) as server:
        cid = create(server, "Typo", webhook=http.url("/wrong"), email="ops@example.com")["id"]
        wait_until(lambda: "HTTP 404" in server.log())
        _, body = server.call("/coal-mine/v1/outbox")
        by_channel = {e["channel"]: e for e in body["outbox"]}
        hook = by_channel["webhook"]
        assert (hook["canary"], hook["event"], hook["target"], hook["permanent"]) == (
            cid,
            "late",
            http.url("/wrong"),
            True,
        )
        assert hook["attempts"] >= 1 and hook["last_error"].startswith("HTTP 404") and hook["age"] >= 0
        assert by_channel["email"]["attempts"] == 0  # no sender configured: kept, not failed
        assert server.call("/coal-mine/v1/outbox", id="nosuchid")[1]["outbox"] == []
        home = tmp_path / "home"
        home.mkdir()
        base = ["--host", "127.0.0.1", "--port", str(server.port)]
        listed = cmcli(home, "outbox", "list", "--id", cid, *base, "--json")
        assert listed.returncode == 0, listed.stderr
        assert {e["id"] for e in json.loads(listed.stdout)["outbox"]} == {e["id"] for e in body["outbox"]}
        human = cmcli(home, "outbox", "list", *base, "--human")
        assert f"{hook['id']}  {cid} late -> webhook" in human.stdout and "HTTP 404" in human.stdout
        dropped = cmcli(home, "outbox", "drop", "--id", hook["id"], *base, "--human")
        assert dropped.returncode == 0 and dropped.stdout.startswith(f"Dropped {hook['id']} (late to webhook")
        again = cmcli(home, "outbox", "drop", "--id", hook["id"], *base)
        assert again.returncode == 1 and "404" in again.stderr and "No pending notification" in again.stderr
        assert [e["channel"] for e in server.call("/coal-mine/v1/outbox")[1]["outbox"]] == ["email"]
        tested = cmcli(home, "test", "--id", cid, *base, "--human")
        assert tested.returncode == 0
        assert "FAILED webhook" in tested.stdout and "HTTP 404" in tested.stdout
        assert "FAILED email" in tested.stdout and "not configured" in tested.stdout
        assert "Dropped pending webhook notification" not in server.log()
        assert "Dropped pending late notification" in server.log()


def test_cmcli_sets_and_clears_channels(tmp_path: Path, server: ServerProcess) -> None:
    home = tmp_path / "home"
    home.mkdir()
    base = ["--host", "127.0.0.1", "--port", str(server.port), "--json"]
    url = "https://hooks.example.com/x"
    made = cmcli(
        home, "create", "--name", "J", "--periodicity", "60", "--webhook", url, "--repeat", "60", *base
    )
    assert made.returncode == 0, made.stderr
    canary = json.loads(made.stdout)["canary"]
    assert (canary["webhooks"], canary["repeat"]) == ([url], 60)
    cleared = cmcli(home, "update", "--id", canary["id"], "--webhook", "-", "--slack", url, *base)
    assert json.loads(cleared.stdout)["canary"]["slacks"] == [url]
    assert "webhooks" not in json.loads(cleared.stdout)["canary"]
    bad = cmcli(home, "update", "--id", canary["id"], "--repeat", "5", *base)
    assert bad.returncode == 1 and "at least 60" in bad.stderr


def test_a_hung_webhook_does_not_delay_email(tmp_path: Path, smtp: SMTPSink, http: HTTPSink) -> None:
    http.hang.set()
    with ServerProcess(tmp_path / "s", ini_extra=ini(smtp, extra="")) as server:
        canary = create(server, "Hung", webhook=http.url("/hook"), email="ops@example.com")
        (late,) = smtp.wait_for(1, timeout=5)
        assert late.canary == canary["id"] and http.posts == []  # the webhook is still hanging
        http.release.set()
        http.hang.clear()
        wait_until(lambda: hook_events(http) == [(canary["id"], "late")], timeout=15)


def test_sigkill_during_delivery_then_restart_loses_nothing(tmp_path: Path, http: HTTPSink) -> None:
    """The one post in flight when the process dies may arrive twice (the at-least-once
    window); every event arrives, in order, and nothing else twice."""
    http.hang.set()
    server = ServerProcess(tmp_path / "s", ini_extra=ini()).start()
    try:
        cid = create(server, "Survivor", webhook=http.url("/hook"))["id"]
        wait_until(lambda: server.call("get", id=cid)[1]["canary"]["late"])
        assert server.call("trigger", id=cid)[0] == 200  # resumed, queued behind the hanging late
        assert server.call("update", id=cid, periodicity=3600)[0] == 200
        server.kill()
        http.release.set()
        http.hang.clear()
        server.start()
        # The dead process's lease (2 x [webhook] timeout + 10 s) runs out first.
        wait_until(lambda: "resumed" in [e for _, e in hook_events(http)], timeout=30)
    finally:
        server.stop()
    got = [e for _, e in hook_events(http)]
    assert got in (["late", "resumed"], ["late", "late", "resumed"]), got
    ids = [p.json()["event_id"] for p in http.posts]
    assert len(set(ids)) == 2  # a repeat carries the same event_id, so a receiver can drop it


def test_two_background_processes_post_each_event_once(tmp_path: Path, http: HTTPSink) -> None:
    db = tmp_path / "shared.sqlite3"
    web = ServerProcess(tmp_path / "web", ini_extra=ini(db=db), args=("--web",))
    workers = [
        ServerProcess(tmp_path / f"bg{i}", ini_extra=ini(db=db), args=("--background",)) for i in range(2)
    ]
    with web:
        for worker in workers:
            worker.start()
        try:
            ids = [create(web, f"Job {i}", period=0.5, webhook=http.url("/hook"))["id"] for i in range(15)]
            http.wait_for(15, timeout=20)
            for cid in ids:
                assert web.call("update", id=cid, periodicity=3600)[0] == 200
            http.wait_for(30, timeout=20)
            wait_until(lambda: not web.call("/coal-mine/v1/outbox")[1]["outbox"])
        finally:
            for worker in workers:
                worker.stop()
    assert Counter(hook_events(http)) == Counter([(cid, k) for cid in ids for k in ("late", "resumed")])
    for cid in ids:
        assert [e for c, e in hook_events(http) if c == cid] == ["late", "resumed"]


def test_a_refused_recipient_is_retried_alone_and_others_get_each_mail_once(
    tmp_path: Path, smtp: SMTPSink
) -> None:
    smtp.refuse = {"grey@example.com": "450 4.2.0 greylisted", "typo@example.com": "550 5.1.1 no such user"}
    with ServerProcess(tmp_path / "s", ini_extra=ini(smtp)) as server:
        emails = ["ok@example.com", "grey@example.com", "typo@example.com"]
        cid = create(server, "Mixed", email=emails)["id"]
        smtp.wait_for(1)
        wait_until(lambda: "550 5.1.1 no such user" in server.log() and "greylisted" in server.log())
        smtp.refuse.pop("grey@example.com")
        got = smtp.wait_for(2, timeout=10)
        assert [m.rcpt_tos for m in got] == [["ok@example.com"], ["grey@example.com"]]
        # The SMTP server has the message a moment before the sender records the delivery.
        wait_until(lambda: len(server.call("/coal-mine/v1/outbox")[1]["outbox"]) == 1)
        (left,) = server.call("/coal-mine/v1/outbox")[1]["outbox"]
        assert (left["target"], left["permanent"]) == ("typo@example.com", True)
        assert "550 5.1.1 no such user" in left["last_error"]
        assert "delivery" not in server.call("get", id=cid)[1]["canary"]  # a plain canary: as in 0.7.1
        # Correcting the address withdraws the message to the old one, with a history entry.
        _, body = server.call(
            "update", id=cid, email=["ok@example.com", "grey@example.com", "fixed@example.com"]
        )
        assert "Withdrew pending notifications to removed typo@example.com" in body["canary"]["history"][0][1]
        assert server.call("/coal-mine/v1/outbox")[1]["outbox"] == []
        assert "Withdrew pending late notification" in server.log()
        assert len(smtp.messages) == 2  # ok@ got the LATE once, never again


def test_bad_alert_settings_stop_the_server_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    for extra, named in (
        ("[webhook]\nurl = ftp://nope.example/\n", "[webhook] url"),
        ("[slack]\nurl = https://ok.example/a notaurl\n", "[slack] url"),
        ("[notify]\nrepeat = 5\n", "[notify] repeat"),
        ("[webhook]\nallow_private = maybe\n", "[webhook] allow_private"),
        ("[webhook]\ntimeout = 0\n", "[webhook] timeout"),
    ):
        path = tmp_path / "bad.ini"
        path.write_text(f"[sqlite]\npath = {tmp_path / 'x.sqlite3'}\n" + extra)
        result = subprocess.run(
            [sys.executable, "-m", "coal_mine.server", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
            env=cli_env(tmp_path),
        )
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], result.stderr


def test_server_wide_targets_get_every_canarys_events(tmp_path: Path, http: HTTPSink) -> None:
    urls = f"url = {http.url('/team')}\n    {http.url('/other')}\n"
    config = ini().replace("[webhook]\n", "[webhook]\n" + urls, 1) + f"[slack]\nurl = {http.url('/chat')}\n"
    with ServerProcess(tmp_path / "s", ini_extra=config) as server:
        cid = create(server, "Anyone")["id"]  # no targets of its own
        http.wait_for(3, timeout=10)
        assert sorted(p.path for p in http.posts) == ["/chat", "/other", "/team"]
        assert hook_events(http, "/team") == [(cid, "late")]


@pytest.mark.parametrize(
    "configured, header, envelope",
    [
        ("cm@example.com", "Coal Mine <cm@example.com>", "cm@example.com"),
        ("Coal Mine <cm@example.com>", "Coal Mine <cm@example.com>", "cm@example.com"),
        ('"Ops, Night Shift" <ops@example.com>', '"Ops, Night Shift" <ops@example.com>', "ops@example.com"),
        ("Bücher <cm@bücher.example>", "Bücher <cm@xn--bcher-kva.example>", "cm@xn--bcher-kva.example"),
    ],
)
def test_sender_forms(tmp_path: Path, smtp: SMTPSink, configured: str, header: str, envelope: str) -> None:
    config = ini(smtp).replace("sender = coal@example.net", f"sender = {configured}")
    with ServerProcess(tmp_path / "s", ini_extra=config) as server:
        create(server, "Sent", email="ops@example.org")
        (message,) = smtp.wait_for(1)
    assert (str(message.message["From"]), message.mail_from) == (header, envelope)
    assert message.message["Message-ID"].endswith(f"@{envelope.split('@')[1]}>")


@pytest.mark.parametrize(
    "configured, problem",
    [
        ("Coal Mine", "is not a sender address"),
        ("Coal Mine <>", "no user@domain address"),
        ("a@b c", "is not a sender address"),
        ("x <a@b> <c@d>", "is not a sender address"),
        ("jö@example.com", "SMTPUTF8"),
        ("cm@-bad-.example", "is not a domain name"),
        ("cm@" + "x" * 64 + ".example", "is not a domain name"),
    ],
)
def test_bad_senders_are_refused_at_start_with_one_line(
    tmp_path: Path, configured: str, problem: str
) -> None:
    import subprocess
    import sys

    path = tmp_path / "bad.ini"
    path.write_text(f"[sqlite]\npath = {tmp_path / 'x.sqlite3'}\n[email]\nsender = {configured}\n")
    result = subprocess.run(
        [sys.executable, "-m", "coal_mine.server", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=cli_env(tmp_path),
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "[email] sender" in lines[0] and problem in lines[0]
