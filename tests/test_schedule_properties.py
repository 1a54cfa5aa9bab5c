"""Property tests: coal_mine.schedule against a brute-force, minute-by-minute oracle."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coal_mine.schedule import ScheduleError, parse_schedule

MINUTE = timedelta(minutes=1)
WEEK = 7 * 1440
CAP = 100 * 1440  # the oracle calls a run endless after this many minutes
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


# -- the oracle -------------------------------------------------------------


class Oracle:
    """Evaluates a schedule one minute at a time by matching each directive directly."""

    def __init__(self, text: str) -> None:
        self.directives = []
        for part in text.split(";"):
            part = part.strip()
            if not part or part.startswith("#"):
                continue
            *fields, value = part.split()
            expanded, _ = croniter.expand(" ".join(fields))
            sets = [None if f[0] == "*" else set(f) for f in expanded]
            self.directives.append((sets, float(value)))
        self.n = len(self.directives)
        self._days: dict[tuple[int, int, int], list] = {}

    @staticmethod
    def day_matches(sets: list, d: date) -> bool:
        _, _, doms, months, dows = sets
        if months is not None and d.month not in months:
            return False
        dom_ok = doms is None or d.day in doms
        dow_ok = dows is None or d.isoweekday() % 7 in dows
        if doms is not None and dows is not None:
            return dom_ok or dow_ok
        return dom_ok and dow_ok

    @staticmethod
    def time_matches(sets: list, hour: int, minute: int) -> bool:
        minutes, hours = sets[0], sets[1]
        return (minutes is None or minute in minutes) and (hours is None or hour in hours)

    def matches(self, t: datetime) -> list[int]:
        """Indexes of the directives matching t's minute."""
        return [
            i
            for i, (sets, _) in enumerate(self.directives)
            if self.day_matches(sets, t.date()) and self.time_matches(sets, t.hour, t.minute)
        ]

    def day(self, d: date) -> list:
        """(value, directive) for each minute of the day; the result only depends on the
        month, day-of-month and weekday, so it is remembered by those."""
        key = (d.month, d.day, d.isoweekday())
        if key not in self._days:
            today = [i for i, (sets, _) in enumerate(self.directives) if self.day_matches(sets, d)]
            out = []
            for hour in range(24):
                for minute in range(60):
                    hit = [i for i in today if self.time_matches(self.directives[i][0], hour, minute)]
                    assert len(hit) <= 1, "accepted schedule has an overlapping minute"
                    out.append((self.directives[hit[0]][1], hit[0]) if hit else (None, None))
            self._days[key] = out
        return self._days[key]

    def overlaps(self) -> bool:
        """Whether two directives match the same minute on some day of a 28-year span,
        which holds every (month, day-of-month, weekday) combination."""
        first = date(2000, 1, 1)
        for i in range(self.n):
            for j in range(i + 1, self.n):
                a, b = self.directives[i][0], self.directives[j][0]
                if not any(
                    self.time_matches(a, h, m) and self.time_matches(b, h, m)
                    for h in range(24)
                    for m in range(60)
                ):
                    continue
                for k in range(28 * 366):
                    d = first + timedelta(days=k)
                    if self.day_matches(a, d) and self.day_matches(b, d):
                        return True
        return False

    def runs(self, start: datetime):
        """Maximal runs (first, end exclusive or None, value, directives) from start's minute."""
        t = start.replace(second=0, microsecond=0)
        run_start, run_value, run_dirs = t, self.day(t.date())[t.hour * 60 + t.minute][0], set()
        while True:
            value, directive = self.day(t.date())[t.hour * 60 + t.minute]
            if value != run_value:
                yield run_start, t, run_value, run_dirs
                run_start, run_value, run_dirs = t, value, set()
            if directive is not None:
                run_dirs.add(directive)
            if (t - run_start) / MINUTE > CAP:
                yield run_start, None, run_value, run_dirs
                return
            t += MINUTE

    def deadline(self, when: datetime) -> datetime:
        runs = self.runs(when)
        _, end, p, _ = next(runs)
        if p is not None:
            due = when + timedelta(seconds=p)
            if end is None or due <= end - MINUTE:
                return due
            start, _, q, _ = next(runs)
            if q is not None:
                return max(start, when + timedelta(seconds=q))
        start, _, q, _ = next(runs)
        return start + timedelta(seconds=q)

    def ranges(self, now: datetime) -> list:
        start = now.replace(second=0, microsecond=0)
        week_end = start + timedelta(days=7)
        week = []
        for a, b, v, _ in self.runs(now):
            if b is None or b >= week_end:
                week.append((a, week_end, v))
                break
            week.append((a, b - MINUTE, v))
        every, seen = [], set()
        for a, b, v, dirs in self.runs(now):
            if b is None:
                every = []
                break
            every.append((a, b - MINUTE, v))
            seen |= dirs
            if len(seen) == self.n:
                break
        chosen = every if len(every) > len(week) else week
        return [(a, b, "Inactive" if v is None else v) for a, b, v in chosen]


# -- strategies -------------------------------------------------------------


def render(values: list[int], names: list[str] | None = None) -> str:
    """A crontab field for a set of values: runs become ranges, maybe spelled as names."""
    values = sorted(set(values))
    parts, i = [], 0
    spell = (lambda v: names[v]) if names else str
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        if j > i:
            parts.append(f"{spell(values[i])}-{spell(values[j])}")
        else:
            parts.append(spell(values[i]))
        i = j + 1
    return ",".join(parts)


@st.composite
def field(draw, low: int, high: int, names: list[str] | None = None) -> str:
    kind = draw(st.sampled_from(["star", "star", "set", "step"]))
    if kind == "star":
        return "*"
    if kind == "step":
        step = draw(st.integers(2, max(2, (high - low) // 2)))
        first = draw(st.integers(low, low + step - 1))
        return f"{first}-{high}/{step}" if draw(st.booleans()) else f"*/{step}"
    values = draw(st.lists(st.integers(low, high), min_size=1, max_size=6))
    use_names = names is not None and draw(st.booleans())
    return render(values, names if use_names else None)


@st.composite
def schedules(draw) -> str:
    count = draw(st.integers(1, 3))
    split_hours = draw(st.booleans())
    if split_hours:  # disjoint hours: mostly accepted schedules
        owner = draw(st.lists(st.integers(0, count), min_size=24, max_size=24))
    parts = []
    for i in range(count):
        minute = draw(field(0, 59))
        if split_hours:
            hours = [h for h in range(24) if owner[h] == i] or [draw(st.integers(0, 23))]
            hour = render(hours)
        else:
            hour = draw(field(0, 23))
        dom = draw(st.one_of(st.just("*"), field(1, 31)))
        month = draw(st.sampled_from(["*", "*", "1-12", "jan-dec"]))
        dow = draw(field(0, 6, DAY_NAMES))
        value = draw(st.sampled_from(["60", "90", "300", "600", "1.5", "3600", "7200", "86400"]))
        parts.append(f"{minute} {hour} {dom} {month} {dow} {value}")
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), "# a comment")
    return " ; ".join(parts)


instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2031, 12, 31)).map(
    lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000, tzinfo=UTC)
)


# -- properties -------------------------------------------------------------

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(text=schedules(), now=instants, offsets=st.lists(st.integers(0, 3 * 1440), max_size=5))
def test_matches_brute_force(text: str, now: datetime, offsets: list[int]) -> None:
    oracle = Oracle(text)
    try:
        schedule = parse_schedule(text)
    except ScheduleError as exc:
        assert "overlap" in str(exc)
        assert oracle.overlaps()
        return
    assert not oracle.overlaps()
    for k in offsets:
        t = now + timedelta(minutes=k)
        assert schedule.value_at(t) == oracle.day(t.date())[t.hour * 60 + t.minute][0]
    assert schedule.deadline(now) == oracle.deadline(now)
    assert schedule.ranges(now) == oracle.ranges(now)


@SETTINGS
@given(text=schedules(), now=instants, seconds=st.integers(0, 10 * 86400))
def test_deadlines_from_many_instants(text: str, now: datetime, seconds: int) -> None:
    try:
        schedule = parse_schedule(text)
    except ScheduleError:
        return
    oracle = Oracle(text)
    for t in (now, now + timedelta(seconds=seconds), now.replace(second=59, microsecond=999000)):
        assert schedule.deadline(t) == oracle.deadline(t)


@settings(max_examples=60, deadline=None)
@given(text=schedules(), now=instants)
def test_oracle_matching_agrees_with_croniter(text: str, now: datetime) -> None:
    oracle = Oracle(text)
    parts = [p.strip() for p in text.split(";") if p.strip() and not p.strip().startswith("#")]
    naive = now.replace(tzinfo=None, second=0, microsecond=0)
    for k in range(0, 3 * 1440, 97):
        t = naive + timedelta(minutes=k)
        expected = [i for i, p in enumerate(parts) if croniter.match(p.rsplit(None, 1)[0], t)]
        assert oracle.matches(t) == expected


@pytest.mark.parametrize(
    "text",
    [
        "# 5-minute delays are ok on weekends ; * * * * sat,sun 300 ; "
        "# 5-minute days are ok overnight ; * 0-12 * * mon-fri 300 ; "
        "# otherwise, we require a shorter periodicity ; * 13-23 * * mon-fri 90",
        "0 2 * * * 3600; 1-59 2 * * * 600; * 3-23 * * * 600",
        "* 0-11 31 * * 60; * 12-23 1 * mon 90",
    ],
)
def test_fixed_schedules_over_a_month_of_starts(text: str) -> None:
    schedule, oracle = parse_schedule(text), Oracle(text)
    t = datetime(2026, 1, 1, 0, 0, 17, tzinfo=UTC)
    for _ in range(31 * 8):
        assert schedule.deadline(t) == oracle.deadline(t)
        t += timedelta(hours=3, minutes=1)
