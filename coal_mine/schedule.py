"""Time-varying periodicities: `;`-separated crontab directives, each with a number of seconds.

Crontab fields are expanded by croniter; everything after that works on the
expanded sets. The timeline is a sequence of days; which directives apply on a
day depends only on (month, day-of-month, day-of-week), so each distinct day
layout is computed once and reused. All times are aware UTC datetimes.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from croniter import croniter

from coal_mine.clock import utc

__all__ = ["MAX_PERIODICITY", "Schedule", "ScheduleError", "parse_schedule"]

MAX_PERIODICITY: float = 10 * 365 * 86400

_DAY = 1440  # minutes per day
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_MONTH_NAMES = frozenset(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
_DAY_NAMES = frozenset(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
# Longest month lengths; February counts 29 because every 8-year span has a leap day.
_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# A run of identical minutes longer than this is treated as endless. Every
# (month, day-of-month) and (month, weekday) pair occurs within 8 years.
_HORIZON = (8 * 366 + 62) * _DAY

_NUMBER_ITEM = re.compile(r"(?:\*|\d+(?:-\d+)?)(?:/\d+)?\Z")
_NAMED_ITEM = re.compile(r"(?:\*|(?:\d+|[a-z]{3})(?:-(?:\d+|[a-z]{3}))?)(?:/\d+)?\Z")
_SAME_BOUNDS = re.compile(r"([0-9a-z]+)-\1(?:/\d+)?\Z")
_NUMBER = re.compile(r"\+?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?\Z", re.IGNORECASE)


def _day_bit(day: int, weekday: int) -> int:
    """Bit index of (day-of-month, cron weekday with 0 = Sunday)."""
    return day * 7 + weekday


_ALL_DAYS = ((1 << (31 * 7)) - 1) << 7
# Per month: the (day-of-month, weekday) bits that exist in some year.
_REAL_DAYS = (0,) + tuple(((1 << (n * 7)) - 1) << 7 for n in _MONTH_DAYS[1:])
_WEEKDAY_COLUMNS = tuple(sum(1 << _day_bit(d, w) for d in range(1, 32)) for w in range(7))


class ScheduleError(ValueError):
    """A schedule string that cannot be accepted; the message says why."""


class _Directive:
    """One crontab directive, reduced to bit sets."""

    __slots__ = ("days", "intervals", "minutes", "months", "text", "value")

    def __init__(self, text: str, value: float, expanded: list[list]) -> None:
        self.text = text
        self.value = value
        minute_f, hour_f, dom_f, month_f, dow_f = expanded
        minutes = range(60) if minute_f[0] == "*" else sorted(minute_f)
        hours = range(24) if hour_f[0] == "*" else sorted(hour_f)
        mask = 0
        for h in hours:
            for m in minutes:
                mask |= 1 << (h * 60 + m)
        self.minutes = mask
        self.intervals = _intervals(mask)
        self.months = 0b1111111111110 if month_f[0] == "*" else sum(1 << m for m in set(month_f))
        dom = _ALL_DAYS
        if dom_f[0] != "*":
            dom = sum(0x7F << _day_bit(d, 0) for d in set(dom_f))
        dow = _ALL_DAYS
        if dow_f[0] != "*":
            dow = 0
            for w in set(dow_f):
                dow |= _WEEKDAY_COLUMNS[w]
        # croniter (like cron): with both day fields restricted, either may match.
        if dom_f[0] != "*" and dow_f[0] != "*":
            self.days = dom | dow
        else:
            self.days = dom & dow

    def matches_day(self, month: int, day: int, weekday: int) -> bool:
        """Whether the directive applies on that calendar day."""
        return bool((self.months >> month) & 1 and (self.days >> _day_bit(day, weekday)) & 1)

    def every_day(self) -> bool:
        """Whether the directive applies on every real day."""
        return all(
            (self.months >> m) & 1 and self.days & _REAL_DAYS[m] == _REAL_DAYS[m] for m in range(1, 13)
        )

    def first_common_day(self, other: _Directive | None = None) -> tuple[int, int, int] | None:
        """A real (month, day, weekday) on which both directives apply, or None."""
        months = self.months & (other.months if other is not None else -1)
        days = self.days & (other.days if other is not None else -1)
        for m in range(1, 13):
            if (months >> m) & 1:
                common = days & _REAL_DAYS[m]
                if common:
                    bit = (common & -common).bit_length() - 1
                    return m, bit // 7, bit % 7
        return None


def _intervals(mask: int) -> tuple[tuple[int, int], ...]:
    """Runs of set bits in a minute-of-day mask, as (start, end) half-open pairs."""
    out = []
    i = 0
    while i < _DAY:
        if (mask >> i) & 1:
            j = i
            while j < _DAY and (mask >> j) & 1:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return tuple(out)


def _check_field(index: int, field: str, directive: str) -> str:
    """Reject syntax outside plain crontab; return the field with `a-a` read as `a`."""
    pattern = _NAMED_ITEM if index >= 3 else _NUMBER_ITEM
    names = _MONTH_NAMES if index == 3 else _DAY_NAMES
    items = []
    for item in field.lower().split(","):
        ok = bool(pattern.match(item))
        if ok and index >= 3:
            ok = all(word in names for word in re.findall(r"[a-z]+", item))
        if not ok:
            raise ScheduleError(
                f'invalid {_FIELD_NAMES[index]} field "{field}" in directive "{directive}"'
                " (use numbers, names, *, lists, ranges and /steps)"
            )
        same = _SAME_BOUNDS.match(item)
        items.append(same.group(1) if same else item)
    return ",".join(items)


def _parse_value(token: str, directive: str) -> float:
    """The directive's periodicity in seconds, validated."""
    try:
        value = float(token) if _NUMBER.match(token) else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ScheduleError(
            f'periodicity "{token}" in directive "{directive}" is not a positive number of seconds'
        )
    if value > MAX_PERIODICITY:
        raise ScheduleError(
            f'periodicity "{token}" in directive "{directive}" is larger than the maximum'
            f" of {MAX_PERIODICITY:.0f} seconds"
        )
    return value


def _parse_directive(text: str) -> _Directive:
    """Parse one non-comment directive."""
    tokens = text.split()
    if len(tokens) != 6:
        raise ScheduleError(
            f'directive "{text}" has {len(tokens)} fields; expected 5 crontab fields'
            " (minute hour day-of-month month day-of-week) and a number of seconds"
        )
    fields = [_check_field(i, f, text) for i, f in enumerate(tokens[:5])]
    try:
        expanded, nth = croniter.expand(" ".join(fields))
    except ValueError as exc:  # croniter's errors are ValueErrors
        for i, field in enumerate(fields):
            probe = ["*"] * 5
            probe[i] = field
            try:
                croniter.expand(" ".join(probe))
            except ValueError:
                raise ScheduleError(
                    f'invalid {_FIELD_NAMES[i]} field "{tokens[i]}" in directive "{text}"'
                ) from exc
        raise ScheduleError(f'invalid crontab fields in directive "{text}"') from exc
    if nth or any(v != "*" and not isinstance(v, int) for f in expanded for v in f):
        raise ScheduleError(f'unsupported crontab syntax in directive "{text}"')
    return _Directive(text, _parse_value(tokens[5], text), expanded)


def _describe_day(month: int, day: int, weekday: int) -> str:
    month_name = date(2000, month, 1).strftime("%b")
    weekday_name = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")[weekday]
    return f"{month_name} {day} when it is a {weekday_name}"


@functools.lru_cache(maxsize=1024)
def parse_schedule(text: str) -> Schedule:
    """Parse and fully validate a schedule string; raises ScheduleError."""
    if not isinstance(text, str):
        raise ScheduleError("a schedule must be a string")
    if "\n" in text or "\r" in text:
        raise ScheduleError("a schedule must be on one line: separate directives with ';', not newlines")
    directives: list[_Directive] = []
    for part in text.split(";"):
        part = part.strip()
        if part and not part.startswith("#"):
            directives.append(_parse_directive(part))
    if not directives:
        raise ScheduleError(
            "schedule has no directives; expected e.g. '* 0-11 * * mon-fri 300; * 12-23 * * * 90'"
        )
    for d in directives:
        if d.first_common_day() is None:
            raise ScheduleError(
                f'directive "{d.text}" can never be active: no real date matches'
                " its day-of-month, month and day-of-week fields"
            )
    for i, a in enumerate(directives):
        for b in directives[i + 1 :]:
            common_minutes = a.minutes & b.minutes
            if not common_minutes:
                continue
            day = a.first_common_day(b)
            if day is not None:
                minute = (common_minutes & -common_minutes).bit_length() - 1
                raise ScheduleError(
                    f'directives "{a.text}" and "{b.text}" overlap (both match e.g.'
                    f" {minute // 60:02d}:{minute % 60:02d} on {_describe_day(*day)});"
                    " at most one directive may match any minute"
                )
    return Schedule(text, directives)


def _to_minute(t: datetime) -> int:
    """Absolute minute number (days since 0001-01-01 times 1440 plus minute of day)."""
    return t.toordinal() * _DAY + t.hour * 60 + t.minute


def _from_minute(n: int) -> datetime:
    days, minute = divmod(n, _DAY)
    d = date.fromordinal(days)
    return datetime(d.year, d.month, d.day, minute // 60, minute % 60, tzinfo=UTC)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return _MONTH_DAYS[month]


# A run: (first minute, end minute exclusive or None if endless, value or None, directive bits)
_Run = tuple[int, "int | None", "float | None", int]


class Schedule:
    """A validated schedule; use parse_schedule() to get one."""

    def __init__(self, text: str, directives: list[_Directive]) -> None:
        self.text = text
        self._directives = tuple(directives)
        self._all = (1 << len(directives)) - 1
        self._months = 0
        for d in directives:
            self._months |= d.months
        self._by_day: dict[tuple[int, int, int], tuple] = {}
        self._by_set: dict[int, tuple] = {}
        self._constant: float | None = None
        self._uniform: bool | None = None
        if all(d.every_day() for d in directives):
            layout = self._layout(self._all)
            if len(layout) == 1 and layout[0][2] is not None:
                self._constant = layout[0][2]

    def __repr__(self) -> str:
        return f"parse_schedule({self.text!r})"

    # -- day layouts -------------------------------------------------------

    def _layout(self, active: int) -> tuple:
        """Runs of one day on which the directives in bit set `active` apply."""
        cached = self._by_set.get(active)
        if cached is not None:
            return cached
        pieces: list[tuple[int, int, float, int]] = []
        for i, d in enumerate(self._directives):
            if (active >> i) & 1:
                pieces.extend((a, b, d.value, 1 << i) for a, b in d.intervals)
        pieces.sort()
        runs: list[list] = []
        pos = 0
        for a, b, value, bit in pieces:
            if a > pos:
                runs.append([pos, a, None, 0])
            if runs and runs[-1][1] == a and runs[-1][2] == value:
                runs[-1][1] = b
                runs[-1][3] |= bit
            else:
                runs.append([a, b, value, bit])
            pos = b
        if pos < _DAY:
            runs.append([pos, _DAY, None, 0])
        layout = tuple(tuple(r) for r in runs)
        self._by_set[active] = layout
        return layout

    def _day_layout(self, month: int, day: int, weekday: int) -> tuple:
        key = (month, day, weekday)
        layout = self._by_day.get(key)
        if layout is None:
            active = 0
            for i, d in enumerate(self._directives):
                if d.matches_day(month, day, weekday):
                    active |= 1 << i
            layout = self._by_day[key] = self._layout(active)
        return layout

    def _same_every_day(self, value: float | None) -> bool:
        """Whether every real day is one whole-day run of `value` (worked out once)."""
        if self._uniform is None:
            self._uniform = self._months == 0b1111111111110 and all(
                len(layout) == 1 and layout[0][2] == value
                for layout in {
                    self._day_layout(m, d, w)
                    for m in range(1, 13)
                    for d in range(1, _MONTH_DAYS[m] + 1)
                    for w in range(7)
                }
            )
            if self._uniform:
                self._constant = value
        return self._uniform

    def _pieces(self, ordinal: int) -> Iterator[tuple[int, int, float | None, int]]:
        """Day-layout runs from the start of day `ordinal` on, not yet merged."""
        d = date.fromordinal(ordinal)
        year, month, day = d.year, d.month, d.day
        weekday = (d.weekday() + 1) % 7
        base = ordinal * _DAY
        while True:
            last = _days_in_month(year, month)
            if not (self._months >> month) & 1:
                span = last - day + 1
                yield base, base + span * _DAY, None, 0
                base += span * _DAY
                weekday = (weekday + span) % 7
            else:
                for dd in range(day, last + 1):
                    for a, b, value, bits in self._day_layout(month, dd, weekday):
                        yield base + a, base + b, value, bits
                    base += _DAY
                    weekday = (weekday + 1) % 7
            day = 1
            month += 1
            if month == 13:
                month = 1
                year += 1

    def _runs(self, start: int) -> Iterator[_Run]:
        """Maximal runs of equal value, the first one beginning at minute `start`."""
        if self._constant is not None:
            yield start, None, self._constant, self._all
            return
        cur: list | None = None
        for a, b, value, bits in self._pieces(start // _DAY):
            if b <= start:
                continue
            if cur is None:
                cur = [max(a, start), b, value, bits]
            elif value == cur[2]:
                cur[1] = b
                cur[3] |= bits
                length = b - cur[0]
                if length > _HORIZON or (length > 62 * _DAY and self._same_every_day(value)):
                    yield cur[0], None, cur[2], cur[3]
                    return
            else:
                yield cur[0], cur[1], cur[2], cur[3]
                cur = [a, b, value, bits]

    # -- public interface ----------------------------------------------------

    def value_at(self, t: datetime) -> float | None:
        """Periodicity in force during t's minute, or None when inactive."""
        t = utc(t)
        weekday = (t.weekday() + 1) % 7
        minute = t.hour * 60 + t.minute
        for d in self._directives:
            if (d.minutes >> minute) & 1 and d.matches_day(t.month, t.day, weekday):
                return d.value
        return None

    def deadline(self, t: datetime) -> datetime:
        """When a canary triggered at t is next due (Coal Mine's four cases)."""
        t = utc(t)
        runs = self._runs(_to_minute(t))
        _, end, value, _ = next(runs)
        if value is not None:
            due = t + timedelta(seconds=value)
            # Case 1: still inside the range, compared with the start of its
            # last minute, as the range's published end.
            if end is None or due <= _from_minute(end - 1):
                return due
            start, _, value, _ = self._next_run(runs)
            if value is not None:
                # Case 4: a different active range follows directly.
                return max(_from_minute(start), t + timedelta(seconds=value))
        # Cases 2 and 3: start of the next active range plus its periodicity.
        start, _, value, _ = self._next_run(runs)
        if value is None:  # pragma: no cover - inactive and active runs alternate
            raise ScheduleError(f"schedule {self.text!r} has no next active range")
        return _from_minute(start) + timedelta(seconds=value)

    def _next_run(self, runs: Iterator[_Run]) -> _Run:
        run = next(runs, None)
        if run is None:  # pragma: no cover - excluded by validation
            raise ScheduleError(f"schedule {self.text!r} has no next active range")
        return run

    def ranges(self, now: datetime) -> list[tuple[datetime, datetime, float | str]]:
        """Coal Mine's periodicity_schedule: [start, end, value or "Inactive"] from now.

        Starts at now's minute; each end is the start of the range's last
        minute, except that the one-week listing ends exactly one week after
        its start. The listing that shows every directive is used if it has
        more ranges than the one-week listing.
        """
        start = _to_minute(utc(now))
        week_end = start + 7 * _DAY
        week: list[tuple[int, int, float | None]] = []
        for a, b, value, _ in self._runs(start):
            if b is None or b >= week_end:
                week.append((a, week_end, value))
                break
            week.append((a, b - 1, value))
        chosen = week
        if self._constant is None:
            every: list[tuple[int, int, float | None]] = []
            seen = 0
            for a, b, value, bits in self._runs(start):
                if b is None:
                    every = []
                    break
                every.append((a, b - 1, value))
                seen |= bits
                if seen == self._all:
                    break
            if len(every) > len(week):
                chosen = every
        return [
            (_from_minute(a), _from_minute(b), "Inactive" if v is None else float(v)) for a, b, v in chosen
        ]
