"""A harness for the run-reporting tests: the real Api on the real HTTP server, in this
process, over any store, with a FakeClock and the background loops driven by hand."""

from __future__ import annotations

import json
from typing import Any

from coal_mine.abstract_store import AbstractStore
from coal_mine.api import Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.run_alarms import RunAlarmWatcher
from coal_mine.watcher import Watcher
from tests.helpers import InProcessServer, raw_request


class RunServer(InProcessServer):
    """`tick(seconds)` moves the clock and lets the deadline and alarm watchers run."""

    def __init__(self, store: AbstractStore, clock: FakeClock, max_body: int = 10000, **options: Any) -> None:
        logic = BusinessLogic(store, clock)
        super().__init__(Api(logic, max_body=max_body, **options), workers=4)
        self.logic = logic
        self.store = store
        self.clock = clock
        self.watcher = Watcher(logic)
        self.alarms = RunAlarmWatcher(logic)
        self.auth_key = options.get("auth_key")

    def call(self, command: str, timeout: float = 10.0, **params: Any) -> tuple[int, dict[str, Any]]:
        """As InProcessServer.call, with the server's auth key (ignored where none is needed)."""
        if self.auth_key:
            params.setdefault("auth_key", self.auth_key)
        return super().call(command, timeout, **params)

    def tick(self, seconds: float = 0.0) -> None:
        """Move the clock, then run both loops until nothing is due (as their wake-ups would)."""
        now = self.clock.advance(seconds)
        for _ in range(100):
            self.watcher.step()
            self.alarms.step()
            if not self.store.due_canaries(now, 1) and not self.store.due_alarms(now, 1):
                return
        raise AssertionError("the watchers keep finding work")

    def request(
        self, method: str, command: str, body: bytes | None = None, headers: str = "", **params: Any
    ) -> tuple[int, bytes]:
        """Any method, optionally with a body; (status, raw body)."""
        head = f"{method} {self.path(command, **params)} HTTP/1.0\r\n{headers}"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        return raw_request(self.port, head.encode() + b"\r\n" + (body or b""))

    def json(self, method: str, command: str, body: bytes | None = None, **params: Any) -> tuple[int, Any]:
        status, data = self.request(method, command, body, **params)
        return status, json.loads(data) if data else None

    def create(self, name: str = "Job", **params: Any) -> str:
        params.setdefault("periodicity", "3600")
        status, body = self.call("create", name=name, **params)
        assert status == 200, body
        return body["canary"]["id"]

    def canary(self, cid: str, **params: Any) -> dict[str, Any]:
        status, body = self.call("get", id=cid, **params)
        assert status == 200, body
        return body["canary"]

    def comments(self, cid: str) -> list[str]:
        return [comment for _, comment in self.canary(cid)["history"]]

    def kinds(self) -> list[str]:
        return [note.kind for note in self.store.pending_notifications()]
