"""The webhook channel: a JSON document (schema version 1) POSTed to each URL.

The document (README "Webhooks" shows an example):
`version` (1), `event` (late, resumed, reminder, test, ...), `event_id` (the same on
every retry: receivers can drop duplicates), `time` (of the event), `id`, `name`,
`slug`, `deadline`, `late`, `paused`, `history` (up to 15 newest entries) and `url`
(the canary's dashboard page, or null without a base URL). With a secret, the
`X-Coal-Mine-Signature` header is `sha256=` and the hex HMAC-SHA256 of the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from coal_mine.channels import Channel, DeliveryError, http
from coal_mine.models import Notification

SCHEMA_VERSION = 1


def event_id(event: Notification) -> str:
    """A stable identifier of one event (the same for every target and every retry)."""
    number = event.event if event.event is not None else event.id
    return f"{event.canary_id}.{event.kind}.{event.created.strftime('%Y%m%dT%H%M%S%fZ')}.{number}"


def dashboard_link(base_url: str | None, canary_id: str) -> str | None:
    """The canary's page in the dashboard, if a base URL is configured."""
    return f"{base_url.rstrip('/')}/coal-mine/ui/canary/{canary_id}" if base_url else None


def document(event: Notification, base_url: str | None = None) -> dict[str, Any]:
    """The webhook document for one event."""
    payload = event.payload
    canary_id = str(payload.get("id", event.canary_id))
    return {
        "version": SCHEMA_VERSION,
        "event": event.kind,
        "event_id": event_id(event),
        "time": event.created.isoformat(),
        "id": canary_id,
        "name": payload.get("name", ""),
        "slug": payload.get("slug"),
        "deadline": payload.get("deadline"),
        "late": bool(payload.get("late", event.kind in ("late", "reminder"))),
        "paused": bool(payload.get("paused", False)),
        "history": list(payload.get("history") or [])[:15],
        "url": dashboard_link(base_url, canary_id),
    }


def signature(secret: str, body: bytes) -> str:
    """The X-Coal-Mine-Signature value for `body`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookChannel(Channel):
    """Targets are http(s) URLs; each gets its own POST."""

    kind = "webhook"

    def __init__(
        self,
        *,
        secret: str | None = None,
        allow_private: bool = False,
        timeout: float = 10.0,
        base_url: str | None = None,
    ) -> None:
        self.secret = secret
        self.allow_private = allow_private
        self.timeout = timeout
        self.base_url = base_url

    def render(self, event: Notification, targets: Sequence[str], *, now: datetime, delayed: bool) -> bytes:
        return json.dumps(document(event, self.base_url), ensure_ascii=False).encode("utf-8")

    def headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Coal-Mine-Timestamp": str(int(time.time()))}
        if self.secret:
            headers["X-Coal-Mine-Signature"] = signature(self.secret, body)
        return headers

    def deliver(self, rendered: bytes, targets: Sequence[str]) -> Mapping[str, DeliveryError]:
        return http.post_each(
            targets,
            rendered,
            lambda: self.headers(rendered),
            allow_private=self.allow_private,
            timeout=self.timeout,
        )
