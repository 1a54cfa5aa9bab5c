"""The dashboard over real HTTP without a browser: routing, auth, CSRF, headers, escaping,
validation, time zones, and the settings. (tests/test_ui_browser.py drives it in Chromium.)"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coal_mine.config import ConfigError, WebConfig, load_config
from coal_mine.limits import MAX_REQUEST_BODY
from coal_mine.models import Canary
from coal_mine.ui import present
from tests.helpers import parse_response, read_all
from tests.helpers import ServerProcess, http_get
from tests.ui_support import UI, Client, DashboardServer

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[DashboardServer]:
    with DashboardServer(tmp_path) as server:
        yield server


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[DashboardServer]:
    with DashboardServer(
        tmp_path,
        auth_key="full-key-123",
        read_only_auth_key="read-key-456",
        web=WebConfig(session_lifetime=600),
    ) as server:
        yield server


# --- routing and headers -------------------------------------------------------------------------


def test_root_redirects_to_the_dashboard(open_server: DashboardServer) -> None:
    client = Client(open_server.port)
    for path in ("/", "/coal-mine/ui"):
        status, headers, _ = client.get(path)
        assert status == 302 and headers["location"] == UI


def test_pages_send_security_headers_and_no_store(open_server: DashboardServer) -> None:
    status, headers, page = Client(open_server.port).get(UI)
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"
    assert "<script>" not in page and " style=" not in page and " onclick" not in page


def test_static_files_are_cached_and_versioned(open_server: DashboardServer) -> None:
    client = Client(open_server.port)
    _, _, page = client.get(UI)
    css = re.search(r'href="(/coal-mine/ui/static/style\.css\?v=\w+)"', page).group(1)  # type: ignore[union-attr]
    status, headers, body = client.get(css)
    assert status == 200 and headers["content-type"].startswith("text/css") and ":root" in body
    assert "immutable" in headers["cache-control"] and "max-age=31536000" in headers["cache-control"]
    status, _, body = client.get(css, **{"If-None-Match": headers["etag"]})
    assert status == 304 and body == ""
    assert client.get(UI + "static/nothing.js")[0] == 404
    assert client.get(UI + "static/../views.py")[0] == 404


def test_unknown_page_is_404_html_and_short_triggers_still_work(open_server: DashboardServer) -> None:
    client = Client(open_server.port)
    status, headers, page = client.get(UI + "no/such/page")
    assert status == 404 and "No such page" in page and headers["content-type"].startswith("text/html")
    assert client.get(UI + "canary/zzzzzzzz")[0] == 404
    canary = open_server.logic.create("job", 60)
    status, body = http_get(f"{open_server.base_url}/{canary.id}")
    assert status == 200 and body["status"] == "ok"


def test_head_request_has_headers_and_no_body(open_server: DashboardServer) -> None:
    status, headers, body = Client(open_server.port).request("HEAD", UI)
    assert status == 200 and body == "" and int(headers["content-length"]) > 0


# --- forms, CSRF and writes ---------------------------------------------------------------------------


def test_create_keeps_input_and_shows_the_rules_error_by_the_field(open_server: DashboardServer) -> None:
    client = Client(open_server.port)
    form = {"name": "nightly <backup>", "periodicity": "0", "description": "d", "emails": "ops@example.com"}
    status, _, page = client.post("new", form)
    assert status == 400
    assert 'id="periodicity-error"' in page and "must be a positive number" in page
    assert 'value="nightly &lt;backup&gt;"' in page and "ops@example.com</textarea>" in page
    status, _, page = client.post("new", {**form, "periodicity": "60", "emails": "ops@@example.com"})
    assert status == 400 and 'id="emails-error"' in page and "Bad email address" in page
    assert list(open_server.logic.list_canaries()) == []
    status, headers, _ = client.post(
        "new", {**form, "periodicity": "3600", "emails": "a@example.com b@x.org"}
    )
    assert status == 303
    (canary,) = open_server.logic.list_canaries()
    assert headers["location"] == f"{UI}canary/{canary.id}?done=created"
    assert canary.name == "nightly <backup>" and canary.periodicity == 3600
    assert canary.emails == ["a@example.com", "b@x.org"]
    status, _, page = client.post("new", {**form, "periodicity": "60"})
    assert status == 400 and 'id="name-error"' in page and "already exists" in page


def test_post_without_or_with_a_wrong_csrf_token_is_403_and_changes_nothing(
    open_server: DashboardServer,
) -> None:
    canary = open_server.logic.create("job", 60)
    client = Client(open_server.port)
    client.get(UI)  # a session cookie, but no token sent
    for form in ({}, {"csrf": "forged"}, {"csrf": ""}):
        status, _, page = client.post(f"canary/{canary.id}/delete", form, csrf=False)
        assert status == 403 and "expired" in page
    # A token from another session is no good either.
    other = Client(open_server.port)
    status, _, _ = client.post(f"canary/{canary.id}/pause", {"csrf": other.csrf_token()}, csrf=False)
    assert status == 403
    # Nor is a token without its session cookie.
    token = client.csrf_token()
    client.cookies.clear()
    assert client.post(f"canary/{canary.id}/pause", {"csrf": token}, csrf=False)[0] == 403
    assert not open_server.logic.get(canary.id).paused


def test_actions_edit_and_delete(open_server: DashboardServer) -> None:
    canary = open_server.logic.create("job", 60, emails=["a@example.com"])
    client = Client(open_server.port)
    base = f"canary/{canary.id}"
    assert client.post(f"{base}/pause", {})[1]["location"].endswith("?done=paused")
    assert open_server.logic.get(canary.id).paused
    status, _, page = client.post(f"{base}/pause", {})
    assert status == 400 and "already paused" in page
    client.post(f"{base}/unpause", {})
    open_server.clock.advance(10)
    client.post(f"{base}/trigger", {"comment": "by hand"})
    history = [c for _, c in open_server.logic.get(canary.id).history or []]
    assert history[:3] == ["Triggered (by hand)", "Unpaused", "Paused"]
    status, _, page = client.get(f"{base}/edit")
    assert status == 200 and 'value="60"' in page
    form = {"name": "job", "periodicity": "60", "description": "", "emails": "a@example.com"}
    assert client.post(f"{base}/edit", form)[1]["location"].endswith("?done=unchanged")
    status, _, page = client.post(f"{base}/edit", {**form, "periodicity": "* * * * * 0"})
    assert status == 400 and "periodicity-error" in page and "* * * * * 0" in page
    assert client.post(f"{base}/edit", {**form, "name": "job 2", "emails": ""})[1]["location"].endswith(
        "?done=saved"
    )
    changed = open_server.logic.get(canary.id)
    assert changed.name == "job 2" and changed.emails == []
    status, _, page = client.get(f"{base}/delete")
    assert status == 200 and "Delete “job 2”?" in page
    assert client.post(f"{base}/delete", {})[1]["location"] == f"{UI}?done=deleted"
    assert list(open_server.logic.list_canaries()) == []
    assert client.post(f"{base}/trigger", {})[0] == 404


def test_form_body_limits(open_server: DashboardServer) -> None:
    def send(data: bytes) -> int:
        with socket.create_connection(("127.0.0.1", open_server.port), timeout=10) as sock:
            sock.sendall(data)
            return parse_response(read_all(sock))[0]

    head = "POST /coal-mine/ui/new HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    assert send(f"{head}Content-Length: {MAX_REQUEST_BODY + 1}\r\n\r\n".encode()) == 413
    assert send(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()) == 413
    assert send(f"{head}Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcde".encode()) == 413
    assert send(f"{head}Content-Length: x\r\n\r\n".encode()) == 413
    assert send(b"POST /coal-mine/ui/new HTTP/1.0\r\nContent-Length: 3\r\n\r\na=b") == 400  # not a form
    assert send(f"{head}Content-Length: 8\r\n\r\nname=%ff".encode()) == 400  # not UTF-8
    assert send(f"{head}Content-Length: 6\r\n\r\nname=x".encode()) == 403  # no session: CSRF


def test_form_body_arriving_in_pieces_is_read_whole(open_server: DashboardServer) -> None:
    client = Client(open_server.port)
    token = client.csrf_token()
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    body = f"csrf={token}&name=trickled&periodicity=60&description=&emails=".encode()
    head = (
        f"POST /coal-mine/ui/new HTTP/1.0\r\nCookie: {cookie}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", open_server.port), timeout=10) as sock:
        sock.sendall(head)
        for i in range(0, len(body), 7):
            sock.sendall(body[i : i + 7])
        status, _ = parse_response(read_all(sock))
    assert status == 303
    assert [c.name for c in open_server.logic.list_canaries()] == ["trickled"]


# --- sign-in --------------------------------------------------------------------------------------------


def test_with_a_key_every_page_asks_to_sign_in(auth_server: DashboardServer) -> None:
    client = Client(auth_server.port)
    status, headers, _ = client.get(UI + "canary/abcdefgh?x=1")
    assert status == 303
    assert headers["location"] == f"{UI}signin?next=%2Fcoal-mine%2Fui%2Fcanary%2Fabcdefgh%3Fx%3D1"
    status, _, page = client.get(headers["location"])
    assert status == 200 and 'type="password"' in page
    # A link from another site arrives without the SameSite=Strict cookie: reload from here.
    status, _, page = client.get(UI, **{"Sec-Fetch-Site": "cross-site"})
    assert status == 200 and 'http-equiv="refresh" content="0"' in page


def test_sign_in_wrong_right_and_read_only_key(
    auth_server: DashboardServer, caplog: pytest.LogCaptureFixture
) -> None:
    canary = auth_server.logic.create("job", 60)
    client = Client(auth_server.port)
    assert client.sign_in("wrong") == 401
    assert client.get(UI)[0] == 303
    # Signing in lands on the page asked for, never outside the dashboard.
    token = client.csrf_token()
    status, headers, _ = client.post(
        "signin", {"key": "full-key-123", "next": "//evil.example/", "csrf": token}
    )
    assert status == 303 and headers["location"] == UI
    status, _, page = client.get(UI)
    assert status == 200 and "job" in page and "New canary" in page
    assert "full-key-123" not in page and "read-key-456" not in page
    assert client.post(f"canary/{canary.id}/pause", {})[0] == 303

    reader = Client(auth_server.port)
    assert reader.sign_in("read-key-456") == 303
    status, _, page = reader.get(f"canary/{canary.id}")
    assert status == 200 and "job" in page
    assert "Unpause</button>" not in page and "/delete" not in page and "New canary" not in page
    assert reader.post(f"canary/{canary.id}/unpause", {})[0] == 403
    assert reader.post("new", {"name": "x", "periodicity": "60"})[0] == 403
    assert auth_server.logic.get(canary.id).paused
    status, _, _ = reader.post("signout", {})
    assert status == 303 and reader.get(UI)[0] == 303
    text = caplog.text
    assert "full-key-123" not in text and "read-key-456" not in text and "wrong key" in text


def test_session_cookie_flags_expiry_and_forgery(auth_server: DashboardServer, tmp_path: Path) -> None:
    client = Client(auth_server.port)
    token = client.csrf_token()
    _, headers, _ = client.request("POST", UI + "signin", form={"key": "full-key-123", "csrf": token})
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=600" in cookie
    assert "Path=/coal-mine/ui/" in cookie and "Secure" not in cookie
    assert client.get(UI)[0] == 200
    value = client.cookies["coal_mine_session"]
    payload, mac = value.rsplit(".", 1)
    client.cookies["coal_mine_session"] = payload + "." + mac[::-1]
    assert client.get(UI)[0] == 303
    client.cookies["coal_mine_session"] = value
    auth_server.clock.advance(601)
    assert client.get(UI)[0] == 303


def test_session_cookie_is_secure_over_tls(tmp_path: Path) -> None:
    from coal_mine.api import Api
    from coal_mine.business_logic import BusinessLogic
    from coal_mine.memory_store import MemoryStore

    api = Api(BusinessLogic(MemoryStore()), auth_key="full-key-123")
    captured: dict[str, list[tuple[str, str]]] = {}
    environ = {"PATH_INFO": UI + "signin", "REQUEST_METHOD": "GET", "wsgi.url_scheme": "https"}
    b"".join(api(environ, lambda status, headers: captured.setdefault("h", headers)))
    cookie = dict(captured["h"])["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_server_process_serves_the_dashboard_and_logs_no_key(tmp_path: Path) -> None:
    """The real `coal-mine` process, configured through coal-mine.ini."""
    with ServerProcess(
        tmp_path / "srv", auth_key="process-key-789", ini_extra="[web]\nsession_lifetime = 60\n"
    ) as server:
        client = Client(server.port)
        assert client.get("/")[0] == 302
        assert client.sign_in("process-key-789") == 303
        _, headers, page = client.get(UI)
        assert "0 canaries" in page
        assert client.post("new", {"name": "from ui", "periodicity": "60"})[0] == 303
        status, body = server.call("list", auth_key="process-key-789")
        assert [c["name"] for c in body["canaries"]] == ["from ui"]
    log = server.log()  # complete: the process has stopped
    assert "process-key-789" not in log, [line for line in log.splitlines() if "789" in line]
    assert "POST /coal-mine/ui/new" in log


# --- what pages show ---------------------------------------------------------------------------------


def test_hostile_name_is_shown_as_text(open_server: DashboardServer) -> None:
    canary = open_server.logic.create(XSS, 60, description="<script>alert(2)</script>")
    client = Client(open_server.port)
    for path in (
        UI,
        f"{UI}canary/{canary.id}",
        f"{UI}canary/{canary.id}/edit",
        f"{UI}canary/{canary.id}/delete",
    ):
        page = client.get(path)[2]
        assert "<img src=x" not in page and "<script>alert" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_list_counts_orders_late_first_filters_and_searches(open_server: DashboardServer) -> None:
    logic = open_server.logic
    ok = logic.create("alpha ok", 3600)
    paused = logic.create("beta paused", 3600, paused=True)
    late = logic.create("gamma late", 60, emails=["a@example.com", "b@example.com"])
    open_server.make_late(late.id)
    open_server.logic.trigger(ok.id, "done")
    open_server.clock.advance(240)
    client = Client(open_server.port)
    page = client.get(UI)[2]
    assert "3 canaries · 1 late · 1 paused" in page
    last = re.findall(r'data-label="Last trigger">(?:<time [^>]*>)?([^<]+)<', page)
    assert last == ["never", "4 min ago", "never"]
    names = re.findall(r'<a href="/coal-mine/ui/canary/\w+">([^<]+)</a>', page)
    assert names == ["gamma late", "alpha ok", "beta paused"]
    page = client.get(UI + "?state=paused")[2]
    assert re.findall(r'canary/\w+">([^<]+)<', page) == ["beta paused"] and "1 shown by the filter" in page
    page = client.get(UI + "?search=^al")[2]
    assert re.findall(r'canary/\w+">([^<]+)<', page) == ["alpha ok"]
    status, _, page = client.get(UI + "?search=(")
    assert status == 400 and "Invalid search regular expression" in page
    assert f'href="/coal-mine/ui/canary/{ok.id}"' in client.get(UI + "?state=ok")[2]
    assert paused.id in client.get(UI + "?state=nonsense")[2]


def test_list_paginates(open_server: DashboardServer) -> None:
    for i in range(205):
        open_server.logic.create(f"job {i:03}", 60)
    client = Client(open_server.port)
    page = client.get(UI)[2]
    assert page.count('<tr class="ok">') == 100 and "Page 1 of 3" in page and "205 canaries" in page
    page = client.get(UI + "?page=3")[2]
    assert page.count('<tr class="ok">') == 5 and "job 204" in page and "Previous" in page
    assert "Page 3 of 3" in client.get(UI + "?page=99")[2]
    assert "Page 1 of 3" in client.get(UI + "?page=x")[2]


def test_canary_page_fields_urls_schedule_and_timeline(tmp_path: Path) -> None:
    web = WebConfig(base_url="https://cm.example.com")
    with DashboardServer(tmp_path, web=web) as server:
        server.clock.set(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))  # a Monday
        canary = server.logic.create("sched", "* 0-12 * * mon-fri 300; * 13-23 * * mon-fri 90")
        server.clock.advance(30)
        server.logic.trigger(canary.id, "first run")
        page = Client(server.port).get(f"canary/{canary.id}")[2]
    assert f'value="https://cm.example.com/{canary.id}"' in page
    assert f'value="https://cm.example.com/coal-mine/v1/canary/trigger?id={canary.id}"' in page
    assert f"0 * * * * your-job &amp;&amp; curl -s https://cm.example.com/{canary.id} &gt;/dev/null" in page
    rows = re.findall(r"<tr><td>.*?</td><td>.*?</td><td>(.*?)</td></tr>", page)
    assert rows[:3] == ["every 5 min", "every 90 s", "every 5 min"] and "inactive" in rows
    assert "2026-01-05 12:00 UTC" in page and "2026-01-05 23:59 UTC" in page
    assert re.findall(r'class="kind">(\w+)</span> ([^<\n]+)', page) == [
        ("trigger", "Triggered (first run)"),
        ("created", "Canary created"),
    ]


def test_time_zone_cookie_renders_server_side_across_dst(open_server: DashboardServer) -> None:
    # 07:30 UTC on 2026-03-08 is just after New York sprang forward (02:00 EST -> 03:00 EDT).
    open_server.clock.set(datetime(2026, 3, 8, 6, 30, tzinfo=UTC))
    canary = open_server.logic.create("dst", 3600)
    client = Client(open_server.port)
    assert "2026-03-08 07:30 UTC" in client.get(UI)[2]
    status, headers, _ = client.post("zone", {"zone": "America/New_York", "next": UI})
    assert status == 303 and headers["location"] == UI
    page = client.get(UI)[2]
    assert "2026-03-08 03:30 EDT" in page and 'id="zone-name">America/New_York<' in page
    assert 'title="2026-03-08 07:30:00 UTC"' in page
    page = client.get(f"canary/{canary.id}")[2]
    assert "2026-03-08 01:30 EST" in page  # created before the change
    client.post("zone", {"zone": "Europe/Berlin"})
    assert "2026-03-08 08:30 CET" in client.get(UI)[2]
    status, _, page = client.post("zone", {"zone": "Mars/Olympus_Mons"})
    assert status == 400 and "not an IANA time zone" in page
    client.post("zone", {"zone": ""})
    assert "coal_mine_zone" not in client.cookies and "07:30 UTC" in client.get(UI)[2]
    client.cookies["coal_mine_zone"] = "../../etc/passwd"
    assert "07:30 UTC" in client.get(UI)[2]


# --- settings -------------------------------------------------------------------------------------------


def test_web_settings_from_ini_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "coal-mine.ini"
    path.write_text("[web]\nbase_url = https://cm.example.com/\nsession_lifetime = 3600\n")
    assert load_config(str(path)).web == WebConfig(base_url="https://cm.example.com", session_lifetime=3600)
    assert load_config(environ={"MONGODB_URI": "mongodb://db/x"}).web == WebConfig()
    config = load_config(environ={"MONGODB_URI": "mongodb://db/x", "BASE_URL": "http://cm:8080"})
    assert config.web.base_url == "http://cm:8080"


@pytest.mark.parametrize(
    "text, setting",
    [
        ("[web]\nbase_url = cm.example.com\n", "[web] base_url"),
        ("[web]\nbase_url = ftp://cm.example.com\n", "[web] base_url"),
        ("[web]\nbase_url = https://cm.example.com/?x=1\n", "[web] base_url"),
        ("[web]\nsession_lifetime = forever\n", "[web] session_lifetime"),
        ("[web]\nsession_lifetime = 0\n", "[web] session_lifetime"),
        ("[web]\nbase = x\n", "unknown setting [web] base"),
    ],
)
def test_malformed_web_settings_are_named(tmp_path: Path, text: str, setting: str) -> None:
    path = tmp_path / "coal-mine.ini"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert setting in str(info.value) and "\n" not in str(info.value)


def test_malformed_environment_web_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="BASE_URL"):
        load_config(environ={"MONGODB_URI": "mongodb://db/x", "BASE_URL": "nope"})
    with pytest.raises(ConfigError, match="WEB_SESSION_LIFETIME"):
        load_config(environ={"MONGODB_URI": "mongodb://db/x", "WEB_SESSION_LIFETIME": "-1"})


# --- presentation rules -------------------------------------------------------------------------------


def test_human_forms() -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert [present.seconds_text(s) for s in (90, 300, 3600, 5400, 86400, 0.5)] == [
        "90 s",
        "5 min",
        "1 h",
        "90 min",
        "1 d",
        "0.5 s",
    ]
    assert present.ago(datetime(2026, 1, 5, 11, 56, tzinfo=UTC), now) == "4 min ago"
    assert present.ago(datetime(2026, 1, 5, 15, 0, 1, tzinfo=UTC), now) == "in 3 h"
    assert present.ago(now, now) == "just now"
    assert present.periodicity(3600, now).text == "every 1 h"
    shown = present.periodicity("* 0-11 * * * 300; * 12-23 * * * 90", now)
    assert shown.varies and shown.text == "every 90 s now" and len(shown.directives) == 2
    assert present.periodicity("* 0-1 * * * 300", now).text == "inactive now"
    assert [present.cron_schedule(v) for v in (60, 300, 3600, 7200, 86400, 172800, 90, "x")] == [
        "* * * * *",
        "*/5 * * * *",
        "0 * * * *",
        "0 */2 * * *",
        "0 0 * * *",
        "0 0 */2 * *",
        "* * * * *",
        "0 * * * *",
    ]


def test_timeline_infers_late_spells_from_history() -> None:
    def at(minute: int) -> datetime:
        return datetime(2026, 1, 5, 12, minute, tzinfo=UTC)

    canary = Canary(
        id="abcdefgh",
        name="n",
        slug="n",
        periodicity=60,
        late=True,
        deadline=at(40),
        history=[
            (at(39), "Triggered"),
            (at(30), "Paused"),
            (at(20), "Triggered (back)"),
            (at(1), "Triggered"),
            (at(0), "Canary created"),
        ],
    )
    kinds = [(e.when.minute, e.kind, e.inferred) for e in present.timeline(canary)]
    assert kinds == [
        (40, "late", True),
        (39, "trigger", False),
        (30, "paused", False),
        (20, "resumed", False),
        (2, "late", True),
        (1, "trigger", False),
        (0, "created", False),
    ]
    assert present.last_trigger(canary) == at(39)
    assert present.zone_or_none("America/New_York") is not None
    assert present.zone_or_none("Not/AZone") is None and present.zone_or_none("") is None


# --- packaging and colours ------------------------------------------------------------------------------


def test_a_wheel_ships_every_template_and_static_file() -> None:
    """pyproject's package-data globs cover every file the dashboard loads."""
    import fnmatch
    import tomllib

    from tests.helpers import REPO

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "coal_mine*" in config["packages"]["find"]["include"]
    globs = config["package-data"]["coal_mine.ui"]
    ui = REPO / "coal_mine" / "ui"
    files = [p.relative_to(ui).as_posix() for p in ui.glob("*/*") if p.parent.name in ("templates", "static")]
    assert len(files) >= 12
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_colours_pass_wcag_aa(scheme: str) -> None:
    css = (Path(__file__).resolve().parent.parent / "coal_mine/ui/static/style.css").read_text()
    light = dict(
        re.findall(r"--([\w-]+): (#[0-9a-f]{6})", css.split("@media (prefers-color-scheme: dark)")[0])
    )
    dark_block = css.split("@media (prefers-color-scheme: dark)")[1].split("}\n}")[0]
    colours = (
        light
        if scheme == "light"
        else {**light, **dict(re.findall(r"--([\w-]+): (#[0-9a-f]{6})", dark_block))}
    )
    pairs = [
        ("fg", "bg"),
        ("muted", "bg"),
        ("link", "bg"),
        ("fg", "panel"),
        ("muted", "panel"),
        ("link", "panel"),
        ("danger", "bg"),
        ("danger", "panel"),
        ("ok-fg", "ok-bg"),
        ("late-fg", "late-bg"),
        ("paused-fg", "paused-bg"),
        ("fg", "late-bg"),  # a late row's text
        ("link", "late-bg"),  # a late row's link
    ]
    low = {f"{a}/{b}": round(_contrast(colours[a], colours[b]), 2) for a, b in pairs}
    assert {k: v for k, v in low.items() if v < 4.5} == {}


def test_make_app_serves_the_dashboard_to_any_wsgi_server(tmp_path: Path) -> None:
    from wsgiref.util import setup_testing_defaults

    from coal_mine.server import make_app

    ini = tmp_path / "coal-mine.ini"
    ini.write_text(f"[sqlite]\npath = {tmp_path / 'db.sqlite3'}\n[web]\nbase_url = https://cm.example.com\n")
    app = make_app(str(ini))
    app.logic.create("via make_app", 60)
    answers: list[str] = []
    for path in ("/", UI):
        environ = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        body = b"".join(app(environ, lambda status, headers: answers.append(status)))
    assert answers == ["302 Found", "200 OK"] and b"via make_app" in body


def test_canary_page_lists_fields_it_does_not_know(
    open_server: DashboardServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fields that later versions add to the API's canary JSON show up without a template change."""
    import coal_mine.api

    original = coal_mine.api.canary_to_json

    def extended(canary: Canary, schedule: list | None = None, **options: Any) -> dict:
        return {**original(canary, schedule, **options), "state": "<running>", "channels": ["slack"]}

    monkeypatch.setattr(coal_mine.api, "canary_to_json", extended)
    canary = open_server.logic.create("job", 60)
    page = Client(open_server.port).get(f"canary/{canary.id}")[2]
    assert "<dt>state</dt><dd>&lt;running&gt;</dd>" in page
    assert '<dt>channels</dt><dd><code>["slack"]</code></dd>' in page
    assert "<dt>periodicity_schedule</dt>" not in page and "<dt>history</dt>" not in page


def test_links_need_a_configured_base_url() -> None:
    from coal_mine.links import canary_page, with_link

    assert canary_page(None, "abcdefgh") is None and canary_page("", "abcdefgh") is None
    link = canary_page("https://cm.example.com/", "abcdefgh")
    assert link == "https://cm.example.com/coal-mine/ui/canary/abcdefgh"
    assert canary_page("http://h:8080/base", "a/b") == "http://h:8080/base/coal-mine/ui/canary/a%2Fb"
    assert with_link("text\n", None) == "text\n"
    assert with_link("text\n", link) == f"text\n\n{link}\n"
    assert with_link("text", link) == f"text\n\n{link}\n"


def test_webhook_urls_are_masked_for_the_read_only_key_and_delivery_shows_for_the_full_key(
    auth_server: DashboardServer,
) -> None:
    secret = "https://hooks.slack.com/services/T0/B0/SECRETPART"
    canary = auth_server.logic.create("hooked", 60, emails=["ops@example.com"], slacks=[secret])
    auth_server.make_late(canary.id)  # the LATE waits in the outbox: one pending entry per target
    reader = Client(auth_server.port)
    assert reader.sign_in("read-key-456") == 303
    _, _, page = reader.get(f"canary/{canary.id}")
    assert "SECRETPART" not in page and "https://hooks.slack.com/***" in page
    assert "delivery" not in page
    owner = Client(auth_server.port)
    assert owner.sign_in("full-key-123") == 303
    _, _, page = owner.get(f"canary/{canary.id}")
    shown = re.search(r"<dt>delivery</dt><dd>(.*?)</dd>", page, flags=re.S)
    assert "SECRETPART" in page and shown is not None, page[page.find("<dl") :][:1500]
    assert "pending" in shown.group(1) and "ops@example.com" in shown.group(1)
