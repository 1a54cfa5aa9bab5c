"""The one source of time. Everything inside the code is aware UTC."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import overload


@overload
def utc(dt: datetime) -> datetime: ...
@overload
def utc(dt: None) -> None: ...
@overload
def utc(dt: datetime | None) -> datetime | None: ...
def utc(dt: datetime | None) -> datetime | None:
    """Return `dt` as an aware UTC datetime (naive values are taken as UTC); None stays None."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 text of `dt`, or None for no time."""
    return dt.isoformat() if dt else None


def to_millis(dt: datetime) -> datetime:
    """Drop sub-millisecond precision, as MongoDB (and so Coal Mine) stores times."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


class Clock:
    """Wall clock. Subclassed by FakeClock in tests."""

    def now(self) -> datetime:
        return to_millis(datetime.now(UTC))


class FakeClock(Clock):
    """A clock that only moves when told to; for tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = to_millis(utc(start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)))
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now = to_millis(self._now + timedelta(seconds=seconds))
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = to_millis(utc(when))
