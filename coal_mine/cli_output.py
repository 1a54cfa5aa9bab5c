"""What ``cmcli`` prints: the --python, --json and --human renderings of the server's answers."""

from __future__ import annotations

import json
import pprint
from datetime import UTC, datetime, tzinfo
from typing import Any

from coal_mine import cli_alerts
from coal_mine.models import CANARY_JSON_FIELDS

FORMATS = ("python", "json", "human")


def strip_history(data: Any) -> Any:
    """Return ``data`` without the history of any canary it contains."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if isinstance(data.get("canary"), dict):
        data["canary"] = {k: v for k, v in data["canary"].items() if k != "history"}
    if isinstance(data.get("canaries"), list):
        data["canaries"] = [
            {k: v for k, v in c.items() if k != "history"} if isinstance(c, dict) else c
            for c in data["canaries"]
        ]
    return data


def format_time(value: Any, tz: tzinfo | None) -> str:
    """Show an ISO-8601 timestamp in ``tz`` (None: local time), to the second."""
    if not isinstance(value, str):
        return str(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(tz) if tz is not None else when.astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S ") + (when.tzname() or when.strftime("%z"))


def format_duration(seconds: float) -> str:
    """Describe a number of seconds briefly, e.g. ``1d 2h`` or ``1m 30s``."""
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    fraction = seconds - int(seconds)
    if rest or fraction or not parts:
        parts.append(f"{rest + fraction:g}s")
    return " ".join(parts)


def format_periodicity(value: Any, brief: bool = False) -> str:
    """Show a periodicity: seconds with a readable duration, or the schedule."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "schedule" if brief else str(value)
    text = f"{value:g} s"
    if value >= 60 and not brief:
        text += f" ({format_duration(value)})"
    return text


def _state(canary: dict[str, Any]) -> str:
    """One word for a canary's state."""
    if canary.get("paused"):
        return "paused, late" if canary.get("late") else "paused"
    return "LATE" if canary.get("late") else "ok"


def _table(rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns separated by two spaces."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def human_canary(canary: dict[str, Any], tz: tzinfo | None) -> str:
    """Aligned fields, then the schedule and history tables."""
    c = canary
    fields: list[tuple[str, str]] = [
        ("Name", str(c.get("name", ""))),
        ("ID", str(c.get("id", ""))),
        ("Slug", str(c.get("slug", ""))),
        ("Description", str(c.get("description") or "-")),
        ("Periodicity", format_periodicity(c.get("periodicity"))),
        ("Emails", ", ".join(map(str, c.get("emails") or [])) or "-"),
        ("State", _state(c)),
        ("Deadline", format_time(c["deadline"], tz) if c.get("deadline") else "-"),
    ]
    known = set(CANARY_JSON_FIELDS)
    fields += [(key, str(value)) for key, value in c.items() if key not in known]
    width = max(len(label) for label, _ in fields) + 3
    lines = [f"{label + ':':<{width}}{value}".rstrip() for label, value in fields]
    schedule = c.get("periodicity_schedule")
    if isinstance(schedule, list) and schedule:
        lines.append("Schedule:")
        rows = [["from", "until", "periodicity"]]
        for entry in schedule:
            if isinstance(entry, (list, tuple)) and len(entry) == 3:
                value = entry[2]
                rows.append(
                    [
                        format_time(entry[0], tz),
                        format_time(entry[1], tz),
                        value if isinstance(value, str) else format_periodicity(value),
                    ]
                )
        lines += _table(rows, "  ")
    if "history" in c:
        history = c.get("history") or []
        lines.append(f"History ({len(history)}, newest first):")
        rows = []
        for entry in history:
            if isinstance(entry, (list, tuple)) and len(entry) == 2:
                rows.append([format_time(entry[0], tz), str(entry[1])])
            else:
                rows.append([str(entry), ""])
        lines += _table(rows, "  ")
    return "\n".join(lines)


def human_list(canaries: list[Any], tz: tzinfo | None) -> str:
    """One canary per line, under a header."""
    if not canaries:
        return "No canaries."
    entries = [c if isinstance(c, dict) else {"name": str(c)} for c in canaries]
    verbose = any(set(c) - {"name", "id"} for c in entries)
    if verbose:
        rows = [["ID", "STATE", "DEADLINE", "PERIODICITY", "NAME"]]
        for c in entries:
            rows.append(
                [
                    str(c.get("id", "")),
                    _state(c),
                    format_time(c["deadline"], tz) if c.get("deadline") else "-",
                    format_periodicity(c.get("periodicity"), brief=True),
                    str(c.get("name", "")),
                ]
            )
    else:
        rows = [["ID", "NAME"]]
        rows += [[str(c.get("id", "")), str(c.get("name", ""))] for c in entries]
    return "\n".join(_table(rows))


def render_human(command: str, subject: str, data: Any, tz: tzinfo | None) -> str:
    """The --human text for a successful response; `subject` names the canary ("id abcdefgh")."""
    alert_text = cli_alerts.human(data)
    if alert_text is not None:
        return alert_text
    if isinstance(data, dict):
        if isinstance(data.get("canaries"), list):
            return human_list(data["canaries"], tz)
        if isinstance(data.get("canary"), dict):
            return human_canary(data["canary"], tz)
        if command == "trigger":
            text = f"Triggered canary ({subject})."
            if data.get("recovered"):
                text += " It was late and has recovered."
            if data.get("unpaused"):
                text += " It was paused and is now unpaused."
            return text
        if command == "delete":
            return f"Deleted canary ({subject})."
    return pprint.pformat(data)


def render(data: Any, fmt: str, tz: tzinfo | None, *, command: str, subject: str, history: bool) -> str:
    """Text to print for a successful response, in format `fmt`."""
    if not history:
        data = strip_history(data)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if fmt == "human":
        return render_human(command, subject, data, tz)
    return pprint.pformat(data)


def render_failure(fmt: str, status: str, body: bytes) -> str:
    """Text for stderr when the server answered with an HTTP error `status` ("404 Not Found")."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if fmt == "human":
        message = data.get("error") if isinstance(data, dict) else None
        return f"cmcli: {status}: {message or ' '.join(text.split()) or 'no details'}"
    if fmt == "json" or data is None:
        return f"{status}\n{text}" if text else status
    return f"{status}\n{pprint.pformat(data).strip()}"
