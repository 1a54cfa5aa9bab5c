"""`cmcli status`: the server's health answer, in human form (or as JSON with --format json)."""

from __future__ import annotations

import dataclasses
import json
from datetime import tzinfo
from typing import Any

from coal_mine.cli_http import HttpFailure, call
from coal_mine.cli_output import format_duration, format_time
from coal_mine.cli_settings import API_PATH, Settings

HEALTH = "health"


def status(settings: Settings) -> tuple[str, bool]:
    """(text to print, healthy?) for the server in `settings`. The auth key, when configured,
    is sent so that the answer includes the workers and the server badge key."""
    root = settings.base_url[: -len(API_PATH)]
    health = dataclasses.replace(settings, base_url=root + "/coal-mine/v1/")
    try:
        data = call(health, HEALTH, [])
    except HttpFailure as failure:
        if failure.status != 503:
            raise
        try:
            data = json.loads(failure.body)
        except ValueError:
            raise failure from None
    if settings.fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False), data.get("status") == "ok"
    return human(root, data, settings.tz), data.get("status") == "ok"


def human(root: str, data: dict[str, Any], tz: tzinfo | None) -> str:
    """The health answer as aligned lines for people."""

    def ago(seconds: Any) -> str:
        return "never" if seconds is None else f"{format_duration(round(float(seconds)))} ago"

    ok = data.get("status") == "ok"
    lines = [
        f"Server:     {root}",
        f"Health:     {'OK' if ok else 'NOT OK'}: {data.get('reason') or data.get('error') or ''}",
        f"Workers:    {data.get('workers_alive', 0)} alive "
        f"(dead after {format_duration(float(data.get('worker_timeout_seconds') or 0))} without a heartbeat)",
    ]
    if data.get("last_scan"):
        lines.append(
            f"Last scan:  {format_time(data['last_scan'], tz)} ({ago(data.get('last_scan_age_seconds'))})"
        )
    if "outbox_pending" in data:
        oldest = data.get("outbox_oldest_age_seconds")
        line = f"Outbox:     {data['outbox_pending']} notification(s) pending"
        lines.append(line + (f", oldest recorded {ago(oldest)}" if oldest is not None else ""))
    for worker in data.get("workers") or []:
        delivered = worker.get("last_delivery")
        lines.append(
            f"  {worker.get('host')} pid {worker.get('pid')}: "
            f"up since {format_time(worker.get('started'), tz)}, "
            f"last delivery {format_time(delivered, tz) if delivered else 'none'}"
        )
    if data.get("badge_key"):
        lines.append(f"Badge key:  {data['badge_key']} (all canaries)")
        lines.append(f"Badge:      {root}/coal-mine/v1/badge/{data['badge_key']}.svg")
    return "\n".join(lines)
