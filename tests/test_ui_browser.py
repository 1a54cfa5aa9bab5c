"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium), driven by Playwright.

Each test keeps a screenshot under test-artifacts/screenshots/, and every page any test
opens is checked for JavaScript errors (console errors, uncaught exceptions, CSP reports).
Without /usr/bin/chromium these tests skip, and the pytest summary says so.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coal_mine.config import WebConfig
from tests.ui_support import ARTIFACTS, BROWSER_STATUS, CHROMIUM, CHROMIUM_FLAGS, UI, DashboardServer

XSS = "<img src=x onerror=alert(1)>"

if os.path.exists(CHROMIUM):
    from playwright.sync_api import Browser, Page, expect, sync_playwright
else:  # the summary line in tests/conftest.py says why
    BROWSER_STATUS["skipped"] = f"{CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)"
    pytestmark = pytest.mark.skip(reason=BROWSER_STATUS["skipped"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        BROWSER_STATUS["ran"] = f"Chromium {launched.version} at {CHROMIUM}"
        yield launched
        launched.close()


OpenPage = Callable[..., "Page"]


@pytest.fixture
def open_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[OpenPage]:
    """Opens pages in fresh browser contexts; at the end, screenshots each and fails on any JS error."""
    opened: list[tuple[Page, list[str]]] = []

    def open_(**context_options: Any) -> Page:
        context = browser.new_context(**context_options)
        context.set_default_timeout(10000)
        page = context.new_page()
        errors: list[str] = []

        def console(msg: Any) -> None:
            url = msg.location.get("url", "")
            # A page answered with 4xx (a wrong key, a bad search) is logged as a failed load of
            # that page: an HTTP status, not a script error. A failed static file still counts.
            if msg.type == "error" and not (
                msg.text.startswith("Failed to load resource") and "/static/" not in url
            ):
                errors.append(f"{msg.type}: {msg.text} ({url})")

        page.on("console", console)
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        opened.append((page, errors))
        return page

    yield open_
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for i, (page, errors) in enumerate(opened):
        if not page.is_closed():
            page.screenshot(path=str(folder / f"{request.node.name}-{i}.png"), full_page=True)
        page.context.close()
        problems += errors
    assert not problems, problems


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DashboardServer]:
    with DashboardServer(tmp_path) as served:
        yield served


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[DashboardServer]:
    with DashboardServer(tmp_path, auth_key="full-key-123", read_only_auth_key="read-key-456") as served:
        yield served


def row_names(page: Page) -> list[str]:
    return page.locator("table.canaries tbody td[data-label=Name]").all_inner_texts()


def sign_in(page: Page, server: DashboardServer, key: str) -> None:
    page.goto(server.url(UI))
    page.get_by_label("Auth key").fill(key)
    page.get_by_role("button", name="Sign in").click()


# --- sign-in --------------------------------------------------------------------------------------------


def test_sign_in_with_wrong_right_and_read_only_key(
    auth_server: DashboardServer, open_page: OpenPage
) -> None:
    canary = auth_server.logic.create("nightly backup", 3600)
    page = open_page()
    page.goto(auth_server.url(f"canary/{canary.id}"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Auth key").fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That key is not right.")
    assert "not-the-key" not in page.content()
    page.get_by_label("Auth key").fill("full-key-123")
    page.get_by_role("button", name="Sign in").click()
    # Back on the page first asked for, with every action.
    expect(page.get_by_role("heading", name="nightly backup")).to_be_visible()
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    assert "full-key-123" not in page.content() and "key" not in page.url
    cookie = next(c for c in page.context.cookies() if c["name"] == "coal_mine_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    reader = open_page()
    sign_in(reader, auth_server, "read-key-456")
    expect(reader.get_by_role("link", name="nightly backup")).to_be_visible()
    expect(reader.get_by_role("link", name="New canary")).to_have_count(0)
    reader.get_by_role("link", name="nightly backup").click()
    expect(reader.get_by_role("heading", name="nightly backup")).to_be_visible()
    expect(reader.locator(".actions")).to_have_count(0)
    expect(reader.get_by_text("Sign out (read-only)")).to_be_visible()
    # A write from the read-only session, with a valid CSRF token, is refused.
    token = reader.locator("input[name=csrf]").first.get_attribute("value")
    answer = reader.request.post(auth_server.url(f"canary/{canary.id}/pause"), form={"csrf": token or ""})
    assert answer.status == 403
    assert not auth_server.logic.get(canary.id).paused
    reader.get_by_role("button", name="Sign out (read-only)").click()
    expect(reader.get_by_role("heading", name="Sign in")).to_be_visible()


# --- the list ----------------------------------------------------------------------------------------------


def test_list_with_ok_late_and_paused_canaries(server: DashboardServer, open_page: OpenPage) -> None:
    logic = server.logic
    logic.create("alpha ok", 3600, emails=["a@example.com"])
    logic.create("beta paused", 3600, paused=True)
    late = logic.create("gamma late", 60, emails=["a@example.com", "b@example.com"])
    logic.create("delta schedule", "* 0-11 * * * 300; * 12-23 * * * 90")
    server.make_late(late.id)
    server.clock.advance(240)
    page = open_page()
    page.goto(server.url(UI))
    expect(page.locator("#counts")).to_have_text("4 canaries · 1 late · 1 paused")
    assert row_names(page) == ["gamma late", "alpha ok", "beta paused", "delta schedule"]
    first = page.locator("table.canaries tbody tr").first
    expect(first.locator("td[data-label=State]")).to_have_text("! late")  # a word, not only a colour
    expect(first.locator("td[data-label=Recipients]")).to_have_text("2")
    expect(first.locator("td[data-label=Periodicity]")).to_have_text("every 1 min")
    schedule = page.locator("tr", has_text="delta schedule").locator(".varies")
    expect(schedule).to_have_text("every 90 s now (varies)")
    assert schedule.get_attribute("title") == "* 0-11 * * * 300\n* 12-23 * * * 90"
    expect(page.locator("tr", has_text="beta paused").locator("td[data-label=State]")).to_have_text(
        "‖ paused"
    )
    page.get_by_label("State").select_option("paused")
    page.get_by_role("button", name="Filter").click()
    assert row_names(page) == ["beta paused"]
    page.get_by_label("Search").fill("^(alpha|gamma)")
    page.get_by_label("State").select_option("")
    page.get_by_role("button", name="Filter").click()
    assert row_names(page) == ["gamma late", "alpha ok"]
    expect(page.locator("#counts")).to_contain_text("2 shown by the filter")


def test_list_refreshes_itself_after_a_canary_goes_late(server: DashboardServer, open_page: OpenPage) -> None:
    canaries = [server.logic.create(f"job {i:02}", 3600 + i) for i in range(40)]
    page = open_page(viewport={"width": 900, "height": 500})
    page.clock.install()
    page.goto(server.url(UI + "?search=job"))
    expect(page.locator("#counts")).to_have_text("40 canaries · 0 late · 0 paused · 40 shown by the filter")
    page.mouse.wheel(0, 600)
    # Polled from here: wait_for_function's string predicate is eval'd in the page,
    # which the dashboard's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
    scrolled_by = time.monotonic() + 10
    while page.evaluate("window.scrollY") == 0:
        assert time.monotonic() < scrolled_by, "the mouse wheel did not scroll the list"
        time.sleep(0.02)
    scrolled = page.evaluate("window.scrollY")
    server.make_late(canaries[0].id)
    page.clock.run_for(31_000)
    expect(page.locator("#counts")).to_have_text("40 canaries · 1 late · 0 paused · 40 shown by the filter")
    expect(page.locator("tr.late")).to_have_count(1)
    assert page.evaluate("window.scrollY") == scrolled and page.get_by_label("Search").input_value() == "job"


# --- forms and actions -----------------------------------------------------------------------------------


def test_create_through_the_form_with_a_validation_error(
    server: DashboardServer, open_page: OpenPage
) -> None:
    page = open_page()
    page.goto(server.url(UI))
    page.get_by_role("link", name="New canary").click()
    page.get_by_label("Name").fill("hourly report")
    page.get_by_label("Periodicity").fill("* * * * mon 0")
    page.get_by_label("Description").fill("mails the report")
    page.get_by_label("Emails").fill("ops@example.com\nboss@example.com")
    page.get_by_role("button", name="Create").click()
    error = page.locator("#periodicity-error")
    expect(error).to_contain_text("Invalid periodicity schedule")
    assert page.get_by_label("Periodicity").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Name").input_value() == "hourly report"
    assert page.get_by_label("Emails").input_value() == "ops@example.com\nboss@example.com"
    assert list(server.logic.list_canaries()) == []
    page.get_by_label("Periodicity").fill("3600")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status")).to_have_text("Canary created.")
    expect(page.get_by_role("heading", name="hourly report")).to_be_visible()
    (canary,) = server.logic.list_canaries()
    assert canary.periodicity == 3600 and canary.emails == ["ops@example.com", "boss@example.com"]


def test_canary_page_with_schedule_table_and_copy_buttons(tmp_path: Path, open_page: OpenPage) -> None:
    with DashboardServer(tmp_path, web=WebConfig(base_url="https://cm.example.com")) as server:
        server.clock.set(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))  # a Monday
        canary = server.logic.create(
            "office hours",
            "* 9-17 * * mon-fri 600",
            description="only\non weekdays",
            emails=["a@example.com"],
        )
        server.clock.advance(60)
        server.logic.trigger(canary.id, "ran fine")
        page = open_page(timezone_id="UTC")
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page.goto(server.url(f"canary/{canary.id}"))
        expect(page.get_by_role("heading", name="office hours")).to_be_visible()
        fields = page.locator("dl.fields")
        for text in (canary.id, "office-hours", "only\non weekdays", "a@example.com", "every 10 min now"):
            expect(fields).to_contain_text(text)
        rows = page.locator("table.schedule tbody tr")
        expect(rows.first).to_have_text(
            re.compile(r"2026-01-05 12:01 UTC\s*2026-01-05 17:59 UTC\s*every 10 min")
        )
        expect(rows.nth(1)).to_have_text(
            re.compile(r"2026-01-05 18:00 UTC\s*2026-01-06 08:59 UTC\s*inactive")
        )
        assert rows.count() >= 9
        timeline = page.locator("ol.timeline li")
        expect(timeline.first).to_contain_text("Triggered (ran fine)")
        expect(timeline.last).to_contain_text("Canary created")
        assert page.get_by_label("Short trigger URL").input_value() == f"https://cm.example.com/{canary.id}"
        expect(page.get_by_label("crontab line")).to_have_value(
            f"0 * * * * your-job && curl -s https://cm.example.com/{canary.id} >/dev/null"
        )
        copy = page.locator("button.copy[data-copy=copy-short]")
        copy.click()
        expect(copy).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == f"https://cm.example.com/{canary.id}"


def test_pause_unpause_trigger_edit_and_delete(server: DashboardServer, open_page: OpenPage) -> None:
    canary = server.logic.create("deploy check", 600, emails=["a@example.com"])
    page = open_page()
    page.goto(server.url(f"canary/{canary.id}"))
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_have_text("Canary paused.")
    assert server.logic.get(canary.id).paused
    page.get_by_role("button", name="Unpause").click()
    expect(page.get_by_role("status")).to_have_text("Canary unpaused.")
    page.get_by_label("Comment").fill("by hand")
    page.get_by_role("button", name="Trigger").click()
    expect(page.get_by_role("status")).to_have_text("Canary triggered.")
    expect(page.locator("ol.timeline li").first).to_contain_text("Triggered (by hand)")
    page.get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Periodicity")).to_have_value("600")
    page.get_by_label("Name").fill("deploy check v2")
    page.get_by_label("Emails").fill("")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    changed = server.logic.get(canary.id)
    assert changed.name == "deploy check v2" and changed.emails == []
    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("heading")).to_have_text("Delete “deploy check v2”?")
    page.get_by_role("button", name="Delete “deploy check v2”").click()
    expect(page.get_by_role("status")).to_have_text("Canary deleted.")
    expect(page.locator("#counts")).to_have_text("0 canaries · 0 late · 0 paused")
    assert list(server.logic.list_canaries()) == []


def test_csrf_rejection(server: DashboardServer, open_page: OpenPage) -> None:
    canary = server.logic.create("guarded", 600)
    page = open_page()
    page.goto(server.url(f"canary/{canary.id}"))
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => { i.value = 'forged'; })")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("heading", name="Form expired")).to_be_visible()
    assert not server.logic.get(canary.id).paused
    # A form posted from another site carries no session cookie (SameSite=Strict) and no token.
    answer = page.request.post(server.url(f"canary/{canary.id}/delete"), form={})
    assert answer.status == 403
    assert server.logic.get(canary.id).name == "guarded"


def test_hostile_name_shows_as_text(server: DashboardServer, open_page: OpenPage) -> None:
    canary = server.logic.create(XSS, 600, description='"><script>alert(2)</script>')
    page = open_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for path in (UI, f"canary/{canary.id}", f"canary/{canary.id}/edit", f"canary/{canary.id}/delete"):
        page.goto(server.url(path))
        expect(page.get_by_text(XSS).first).to_be_visible()
    assert page.locator("img").count() == 0 and dialogs == []


# --- time zones --------------------------------------------------------------------------------------------


def test_times_in_two_zones_across_a_dst_change(server: DashboardServer, open_page: OpenPage) -> None:
    # New York springs forward at 07:00 UTC on 2026-03-08; the deadline is just after.
    server.clock.set(datetime(2026, 3, 8, 6, 30, tzinfo=UTC))
    canary = server.logic.create("dst", 3600)
    deadline = page_deadline = "td[data-label='Next deadline'] time"

    new_york = open_page(timezone_id="America/New_York")
    new_york.goto(server.url(UI))
    expect(new_york.locator(deadline)).to_have_text("2026-03-08 03:30 EDT")
    assert new_york.locator(deadline).get_attribute("title") == "2026-03-08 07:30:00 UTC"
    expect(new_york.locator("#zone-name")).to_have_text("America/New_York")
    new_york.goto(server.url(f"canary/{canary.id}"))
    expect(new_york.locator("ol.timeline time").first).to_have_text("2026-03-08 01:30 EST")

    tokyo = open_page(timezone_id="Asia/Tokyo")
    tokyo.goto(server.url(UI))
    expect(tokyo.locator(page_deadline)).to_have_text("2026-03-08 16:30 GMT+9")
    expect(tokyo.locator("#zone-name")).to_have_text("Asia/Tokyo")
    # The chooser overrides the browser's zone; the server renders it (JavaScript or not).
    tokyo.get_by_role("link", name=re.compile("Times in")).click()
    tokyo.get_by_label("Show times in").select_option("America/New_York")
    tokyo.get_by_role("button", name="Save").click()
    expect(tokyo.locator(deadline)).to_have_text("2026-03-08 03:30 EDT")
    expect(tokyo.locator("#zone-name")).to_have_text("America/New_York")

    no_script = open_page(timezone_id="Asia/Tokyo", java_script_enabled=False)
    no_script.goto(server.url(UI))
    expect(no_script.locator(deadline)).to_have_text("2026-03-08 07:30 UTC")
    expect(no_script.locator("#zone-name")).to_have_text("UTC")


# --- everything else a person relies on --------------------------------------------------------------------


def test_works_without_javascript(server: DashboardServer, open_page: OpenPage) -> None:
    page = open_page(java_script_enabled=False)
    page.goto(server.url(UI))
    assert page.locator("noscript").count() == 1
    page.get_by_role("link", name="New canary").click()
    page.get_by_label("Name").fill("no script")
    page.get_by_label("Periodicity").fill("60")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status")).to_have_text("Canary created.")
    expect(page.locator("button.copy").first).to_be_hidden()
    page.get_by_role("button", name="Trigger").click()
    expect(page.get_by_role("status")).to_have_text("Canary triggered.")


def test_no_javascript_errors_on_any_page(auth_server: DashboardServer, open_page: OpenPage) -> None:
    number = auth_server.logic.create("plain", 600)
    schedule = auth_server.logic.create("sched", "* * * * * 300")
    page = open_page()
    page.goto(auth_server.url(UI))  # the sign-in page
    sign_in(page, auth_server, "full-key-123")
    for path in (
        UI,
        UI + "?state=late",
        UI + "?search=(",
        "new",
        f"canary/{number.id}",
        f"canary/{schedule.id}",
        f"canary/{number.id}/edit",
        f"canary/{number.id}/delete",
        "zone",
        "no/such/page",
    ):
        page.goto(auth_server.url(path))
        expect(page.locator("main")).to_be_visible()
    # The open_page fixture fails the test on any console error or uncaught exception.


def test_phone_keyboard_labels_and_dark_mode(server: DashboardServer, open_page: OpenPage) -> None:
    server.logic.create("a rather long canary name that must wrap on a small phone screen", 600)
    late = server.logic.create("late one", 60, emails=["oncall@example.com"])
    server.make_late(late.id)
    phone = open_page(viewport={"width": 360, "height": 740}, color_scheme="dark", is_mobile=True)
    phone.goto(server.url(UI))
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(22, 24, 27)"
    phone.goto(server.url(f"canary/{late.id}"))
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    page = open_page(color_scheme="light")
    page.goto(server.url(UI))
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.type("late")
    page.keyboard.press("Enter")  # submits the filter
    expect(page.locator("#counts")).to_contain_text("1 shown by the filter")
    for path in (UI, "new", f"canary/{late.id}", "zone"):
        page.goto(server.url(path))
        unlabeled = page.evaluate(
            "[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
            ".filter(e => e.labels.length === 0).map(e => e.outerHTML)"
        )
        assert unlabeled == [], path


# --- links in alerts --------------------------------------------------------------------------------------


def test_alert_emails_end_with_a_link_that_opens_the_canary(tmp_path: Path, open_page: OpenPage) -> None:
    """A real server process, real SMTP: with [web] base_url every late and resumed email ends
    with the canary's dashboard link after 0.7.1's unchanged text; the link opens the page."""
    from tests.helpers import ServerProcess, free_port
    from tests.smtp_sink import SMTPSink
    from tests.test_notify_e2e import create, ini

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with SMTPSink() as sink:
        extra = ini(sink.port) + f"[web]\nbase_url = {base}/\n"
        with ServerProcess(tmp_path / "linked", ini_extra=extra, port=port) as server:
            canary = create(server, "Nightly <backup>")
            (late,) = sink.wait_for(1)
            link = f"{base}/coal-mine/ui/canary/{canary['id']}"
            text = late.body().replace("\r\n", "\n")
            assert text.rstrip("\n").endswith(f"Canary created\n\n{link}"), text
            assert text.startswith(
                f"The canary Nightly <backup> ({canary['id']}) was expected to report before "
            )
            server.call(f"/{canary['id']}")
            resumed = sink.wait_for(2)[1]
            resumed_text = resumed.body().replace("\r\n", "\n").rstrip("\n")
            assert resumed.subject.startswith("[RESUMED]") and " Triggered\n" in resumed_text
            assert resumed_text.endswith(f"Canary created\n\n{link}")
            page = open_page()
            page.goto(link)
            expect(page.get_by_role("heading", name="Nightly <backup>")).to_be_visible()
            expect(page.locator("ol.timeline")).to_contain_text("Triggered")  # it may be late again
    with SMTPSink() as sink, ServerProcess(tmp_path / "unlinked", ini_extra=ini(sink.port)) as server:
        create(server, "No link")
        (late,) = sink.wait_for(1)
        assert "http" not in late.body() and "/coal-mine/ui/" not in late.body()
