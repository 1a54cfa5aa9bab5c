"""The slack channel: a Slack incoming-webhook message (also Mattermost, and Discord
through its `/slack` URL suffix).

Block Kit blocks for Slack, a plain-text `text` fallback (notifications, and
clients without blocks), and a coloured attachment: red for late and reminders,
green for resumed. The same safety rules as webhooks apply ([webhook] allow_private).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from coal_mine.channels import Channel, DeliveryError, http
from coal_mine.channels.webhook import dashboard_link
from coal_mine.models import Notification

COLOURS = {"late": "#d92626", "reminder": "#d92626", "resumed": "#2eb82e"}
HEADLINES = {
    "late": "[LATE] {name} has not reported",
    "resumed": "[RESUMED] {name} is reporting again",
    "reminder": "[STILL LATE] {name} has not reported",
    "test": "[TEST] {name}: test notification",
}

_HEADERS = {"Content-Type": "application/json"}


def _escape(text: object) -> str:
    """Text safe inside Slack mrkdwn: &, < and > are its only control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(event: Notification, base_url: str | None = None) -> dict[str, Any]:
    """The Slack message for one event."""
    payload = event.payload
    canary_id = str(payload.get("id", event.canary_id))
    name = " ".join(str(payload.get("name", "")).split())
    headline = HEADLINES.get(event.kind, "[{kind}] {name}").format(name=name, kind=event.kind.upper())
    if event.kind == "resumed":
        detail = f"Reported at {payload.get('when')}; next deadline {payload.get('deadline')}."
    else:
        detail = f"Expected before {payload.get('deadline')}."
    link = dashboard_link(base_url, canary_id)
    fallback = f"{headline} (canary {canary_id}). {detail}" + (f" {link}" if link else "")
    section = f"*{_escape(headline)}*\n{_escape(detail)}"
    if link:
        section += f"\n<{link}|Open canary {_escape(canary_id)}>"
    history = list(payload.get("history") or [])[:5]
    recent = "\n".join(f"{_escape(when)}  {_escape(comment)}" for when, comment in history)
    attachment: dict[str, Any] = {
        "color": COLOURS.get(event.kind, "#888888"),
        "fallback": fallback,
        "title": headline,
        "text": f"{detail}\n{recent}".strip(),
        "footer": f"Coal Mine canary {canary_id}",
    }
    if link:
        attachment["title_link"] = link
    return {
        "text": fallback,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Canary `{_escape(canary_id)}`"}]},
        ],
        "attachments": [attachment],
    }


class SlackChannel(Channel):
    """Targets are incoming-webhook URLs; each gets its own POST."""

    kind = "slack"

    def __init__(
        self, *, allow_private: bool = False, timeout: float = 10.0, base_url: str | None = None
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self.base_url = base_url

    def render(self, event: Notification, targets: Sequence[str], *, now: datetime, delayed: bool) -> bytes:
        return json.dumps(message(event, self.base_url), ensure_ascii=False).encode("utf-8")

    def deliver(self, rendered: bytes, targets: Sequence[str]) -> Mapping[str, DeliveryError]:
        return http.post_each(
            targets, rendered, lambda: _HEADERS, allow_private=self.allow_private, timeout=self.timeout
        )
