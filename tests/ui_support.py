"""Helpers for the dashboard tests: an in-process server with a fake clock, a cookie-keeping
HTTP client, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from pathlib import Path
from typing import Any

from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.config import WebConfig
from coal_mine.sqlite_store import SQLiteStore
from tests.helpers import REPO, InProcessServer

UI = "/coal-mine/ui/"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Filled in by the browser fixture; tests/conftest.py reports it in the summary.
BROWSER_STATUS: dict[str, str] = {}


class DashboardServer(InProcessServer):
    """The real Api (with its dashboard) on the real PooledWSGIServer, in this process, on a
    SQLite file, with a FakeClock the test moves (tests/helpers.InProcessServer)."""

    def __init__(
        self,
        workdir: Path,
        *,
        auth_key: str | None = None,
        read_only_auth_key: str | None = None,
        web: WebConfig | None = None,
        **server_options: Any,
    ) -> None:
        self.clock = FakeClock()
        self.store = SQLiteStore(str(workdir / "ui.sqlite3"))
        super().__init__(
            auth_key=auth_key,
            read_only_auth_key=read_only_auth_key,
            logic=BusinessLogic(self.store, self.clock),
            api_options={"web": web},
            **{"workers": 4, **server_options},
        )
        self.api = self.app

    def url(self, path: str = "") -> str:  # type: ignore[override]
        """A dashboard page's URL (`path` relative to the dashboard, or absolute)."""
        return self.base_url + (path if path.startswith("/") else UI + path)

    def make_late(self, canary_id: str) -> None:
        """Move the clock past the canary's deadline and let the rules mark it late."""
        canary = self.logic.get(canary_id)
        assert canary.deadline is not None
        self.clock.set(canary.deadline)
        self.clock.advance(1)
        assert self.logic.mark_late(self.store.get(canary_id, history=False))  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.store.close()


class Client:
    """A tiny browser without JavaScript: keeps cookies, does not follow redirects."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        path = path if path.startswith("/") else UI + path
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        all_headers = dict(headers or {})
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form, doseq=True).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", errors="replace")
        for header in response.headers.get_all("Set-Cookie") or []:
            name, value = header.split(";")[0].split("=", 1)
            if "Max-Age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: dict[str, Any], csrf: bool = True) -> tuple[int, dict[str, str], str]:
        if csrf and "csrf" not in form:
            form = {**form, "csrf": self.csrf_token()}
        return self.request("POST", path, form=form)

    def csrf_token(self) -> str:
        """The CSRF token the dashboard put in its forms for this client's session."""
        _, _, page = self.get(UI + "zone")
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        if found is None:
            _, _, page = self.get(UI + "signin")
            found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found, page[:500]
        return found.group(1)

    def sign_in(self, key: str) -> int:
        token = self.csrf_token()
        status, _, _ = self.request("POST", UI + "signin", form={"key": key, "csrf": token})
        return status
