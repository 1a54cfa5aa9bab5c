"""How the dashboard shows things: durations, times in a zone, periodicities, the history timeline.

Pure functions over canaries and times; no I/O.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from collections.abc import Set
from typing import Any

from coal_mine.business_logic import BusinessLogic
from coal_mine.models import Canary
from coal_mine.schedule import ScheduleError, parse_schedule

_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*\Z")


@functools.cache
def available_zones() -> tuple[str, ...]:
    """The IANA zone names this machine knows, sorted."""
    return tuple(sorted(zoneinfo.available_timezones()))


def zone_or_none(name: str | None) -> tzinfo | None:
    """The zone of that IANA name, or None when it is not one."""
    if not name or len(name) > 64 or not _ZONE_NAME.match(name) or name not in set(available_zones()):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def seconds_text(seconds: float) -> str:
    """90 -> "90 s", 300 -> "5 min", 3600 -> "1 h", 5400 -> "90 min", 86400 -> "1 d"."""
    for size, unit in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def ago(when: datetime, now: datetime) -> str:
    """ "4 min ago", "in 3 h", "just now" (rounded down to the largest unit)."""
    delta = (now - when).total_seconds()
    future = delta < 0
    delta = abs(delta)
    if delta < 1:
        return "just now"
    for size, unit in _UNITS:
        if delta >= size:
            amount = f"{int(delta // size)} {unit}"
            return f"in {amount}" if future else f"{amount} ago"
    return "just now"  # pragma: no cover - delta >= 1 always matches "s"


def local_text(when: datetime, zone: tzinfo) -> str:
    """2026-03-08 03:30 EDT"""
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def utc_text(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Periodicity:
    """A periodicity as shown: `text` ("every 1 h"), whether it varies, and the directives."""

    text: str
    varies: bool
    directives: tuple[str, ...] = ()


def periodicity(value: float | str, now: datetime) -> Periodicity:
    if not isinstance(value, str):
        return Periodicity(f"every {seconds_text(float(value))}", False)
    directives = tuple(d.strip() for d in value.split(";") if d.strip())
    try:
        current = parse_schedule(value).value_at(now)
    except ScheduleError:
        return Periodicity("schedule", True, directives)
    text = f"every {seconds_text(current)} now" if current is not None else "inactive now"
    return Periodicity(text, True, directives)


def state(canary: Canary) -> str:
    """ "paused", "late" or "ok" (a paused canary reads as paused even if it was late)."""
    if canary.paused:
        return "paused"
    return "late" if canary.late else "ok"


def last_trigger(canary: Canary) -> datetime | None:
    for when, comment in canary.history or ():
        if comment.startswith("Triggered"):
            return when
    return None


@dataclass(frozen=True)
class Event:
    """One timeline entry: when, its kind (a CSS class and a word), its text."""

    when: datetime
    kind: str
    text: str
    inferred: bool = False


_KINDS = (
    ("Triggered", "trigger"),
    ("Canary created", "created"),
    ("Unpaused", "unpaused"),
    ("Paused", "paused"),
    ("Late", "late"),
    ("Resumed", "resumed"),
)


def _kind(comment: str) -> str:
    for prefix, kind in _KINDS:
        if comment.startswith(prefix):
            return kind
    return "other"


def timeline(canary: Canary) -> list[Event]:
    """The history newest first, with the late spells it implies.

    Coal Mine's history records triggers, creation and pausing, not lateness.
    Where a trigger came after the deadline the entry before it set, a "Late"
    entry at that deadline is inferred and the trigger reads as "resumed". The
    deadlines are worked out with today's periodicity.
    """
    entries = list(reversed(canary.history or []))  # oldest first
    explicit = any(_kind(comment) in ("late", "resumed") for _, comment in entries)
    events: list[Event] = []
    deadline: datetime | None = None
    for when, comment in entries:
        kind = _kind(comment)
        if not explicit and deadline is not None and when > deadline and kind == "trigger":
            events.append(Event(deadline, "late", "Late: the deadline passed", inferred=True))
            kind = "resumed"
        events.append(Event(when, kind, comment))
        if kind in ("trigger", "resumed", "created"):
            deadline = _deadline_after(canary.periodicity, when)
        elif kind == "paused":
            deadline = None
        elif kind == "unpaused":
            deadline = _deadline_after(canary.periodicity, when)
    if canary.late and not canary.paused and canary.deadline is not None and not explicit:
        events.append(Event(canary.deadline, "late", "Late: the deadline passed", inferred=True))
    events.reverse()  # newest first; the stable sort keeps same-time entries in that order
    events.sort(key=lambda e: e.when, reverse=True)
    return events


def _deadline_after(value: float | str, when: datetime) -> datetime | None:
    try:
        return BusinessLogic.deadline_after(value, when)
    except (ScheduleError, ValueError, OverflowError):
        return None


def cron_schedule(value: float | str) -> str:
    """A crontab time field that runs a job as often as a numeric periodicity expects."""
    if isinstance(value, str):
        return "0 * * * *"
    seconds = float(value)
    if seconds % 86400 == 0:
        return "0 0 * * *" if seconds == 86400 else f"0 0 */{int(seconds // 86400)} * *"
    if seconds % 3600 == 0 and seconds < 86400:
        return "0 * * * *" if seconds == 3600 else f"0 */{int(seconds // 3600)} * * *"
    if seconds % 60 == 0 and seconds < 3600:
        return "* * * * *" if seconds == 60 else f"*/{int(seconds // 60)} * * * *"
    return "* * * * *"


def extra_fields(data: dict[str, Any], known: Set[str]) -> list[tuple[str, Any]]:
    """Fields of the API's canary JSON that the page does not show in a special way."""
    return [(key, value) for key, value in data.items() if key not in known]
