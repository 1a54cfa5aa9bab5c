"""Make the README's dashboard screenshots: `.venv/bin/python docs/make_screenshots.py`.

Sample canaries on an in-process server with a fixed clock, photographed by Debian's Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import sync_playwright

from coal_mine.config import WebConfig
from tests.ui_support import CHROMIUM, CHROMIUM_FLAGS, DashboardServer

DOCS = Path(__file__).resolve().parent


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        DashboardServer(Path(tmp), web=WebConfig(base_url="https://coal-mine.example.com")) as server,
    ):
        logic, clock = server.logic, server.clock
        clock.set(datetime(2026, 3, 2, 6, 0, tzinfo=UTC))
        backup = logic.create("nightly database backup", 86400, emails=["ops@example.com", "dba@example.com"])
        logic.create(
            "billing export",
            "* 0-11 * * mon-fri 3600; * 12-23 * * mon-fri 900",
            emails=["billing@example.com"],
        )
        logic.create("search index rebuild", 21600, emails=["search@example.com"])
        logic.create("legacy ftp sync", 3600, description="replaced by the S3 sync", paused=True)
        queue = logic.create("mail queue drain", 300, emails=["oncall@example.com"])
        logic.create("certificate renewal", 604800, emails=["ops@example.com"])
        clock.advance(240)
        for canary in (backup, queue):
            logic.trigger(canary.id, "ok")
        clock.advance(1200)
        server.make_late(queue.id)
        clock.advance(600)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 520}, timezone_id="Europe/London")
            page.goto(server.url(""))
            page.screenshot(path=str(DOCS / "dashboard-list.png"))
            phone = browser.new_page(
                viewport={"width": 390, "height": 844}, color_scheme="dark", timezone_id="America/New_York"
            )
            phone.goto(server.url(f"canary/{queue.id}"))
            phone.screenshot(path=str(DOCS / "dashboard-phone.png"))
            browser.close()


if __name__ == "__main__":
    main()
