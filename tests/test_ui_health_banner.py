"""The dashboard's red banner: shown while no live worker scans deadlines, gone once one does."""

from __future__ import annotations

from pathlib import Path

from coal_mine.health import Heartbeat
from coal_mine.watcher import Watcher
from tests.ui_support import UI, Client, DashboardServer

BANNER = '<aside class="health-banner" aria-label="Server health">'


def test_banner_follows_the_health_verdict(tmp_path: Path) -> None:
    with DashboardServer(tmp_path) as server:
        client = Client(server.port)
        status, _, page = client.get(UI)
        assert status == 200 and BANNER in page
        assert "Alerts are not going out:</strong> no background worker has ever reported" in page

        heartbeat = Heartbeat(server.store, server.clock, worker_timeout=60)
        watcher = Watcher(server.logic)
        watcher.scan_listeners.append(heartbeat.scanned)
        watcher.step()
        heartbeat.step()
        assert BANNER in client.get(UI)[2]  # the verdict is remembered for 5 s, not asked per page
        server.clock.advance(5)
        assert BANNER not in client.get(UI)[2]

        server.clock.advance(200)  # the worker went silent
        _, _, page = client.get(UI)
        assert BANNER in page and "no background worker has run for 3 min" in page


def test_banner_on_the_sign_in_page_too(tmp_path: Path) -> None:
    with DashboardServer(tmp_path, auth_key="sekrit") as server:
        status, _, page = Client(server.port).get(UI + "signin")
        assert status == 200 and BANNER in page
