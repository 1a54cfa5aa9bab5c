"""Unit tests for coal_mine.schedule (time-varying periodicities)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from coal_mine.schedule import MAX_PERIODICITY, ScheduleError, parse_schedule

README = (
    "# 5-minute delays are ok on weekends ; * * * * sat,sun 300 ; "
    "# 5-minute days are ok overnight ; * 0-12 * * mon-fri 300 ; "
    "# otherwise, we require a shorter periodicity ; * 13-23 * * mon-fri 90"
)
# 2026-01-05 is a Monday.
DAYS = "* 0-11 * * * 600; * 12-17 * * * 60; * 20-23 * * * 300"
WARMUP = "0 2 * * * 3600; 1-59 2 * * * 600; * 3-23 * * * 600"


def at(day: int, hour: int, minute: int, second: int = 0, month: int = 1) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "trigger", "expected"),
    [
        # Case 1: T + p stays inside T's range.
        (DAYS, at(5, 10, 0, 30), at(5, 10, 10, 30)),
        (DAYS, at(5, 11, 49, 0), at(5, 11, 59, 0)),  # exactly the range's published end
        (DAYS, at(5, 12, 0, 0), at(5, 12, 1, 0)),
        (README, at(10, 12, 0), at(10, 12, 5)),  # Saturday
        # Case 2: T inactive -> next range start + its periodicity.
        (DAYS, at(5, 18, 30, 15), at(5, 20, 5)),
        (DAYS, at(5, 19, 59, 59), at(5, 20, 5)),
        (WARMUP, at(5, 1, 0), at(5, 3, 0)),  # even though that range is one minute long
        ("0 20 * * * 3600", at(5, 19, 0), at(5, 21, 0)),
        # Case 3: T + p lands in an inactive range -> next active range.
        (DAYS, at(5, 17, 59, 30), at(5, 20, 5)),
        (WARMUP, at(5, 23, 55), at(6, 3, 0)),
        # Case 4: T + p lands in a different active range with q.
        (DAYS, at(5, 11, 49, 1), at(5, 12, 0)),  # past the start of the last minute
        (DAYS, at(5, 11, 55), at(5, 12, 0)),  # max(start, T + q) = start
        (DAYS, at(5, 23, 58), at(6, 0, 8)),  # max(start, T + q) = T + q
        (WARMUP, at(5, 2, 30), at(5, 2, 40)),
        (README, at(5, 12, 58), at(5, 13, 0)),
        (README, at(9, 23, 59), at(10, 0, 4)),  # Friday night into the weekend
    ],
)
def test_deadline_cases(schedule: str, trigger: datetime, expected: datetime) -> None:
    assert parse_schedule(schedule).deadline(trigger) == expected


def test_deadline_keeps_subsecond_precision() -> None:
    t = at(5, 10, 0, 1).replace(microsecond=123000)
    assert parse_schedule(DAYS).deadline(t) == t + timedelta(seconds=600)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (at(10, 12, 0), 300.0),  # Saturday
        (at(11, 23, 59), 300.0),  # Sunday
        (at(5, 0, 0), 300.0),
        (at(5, 12, 59, 59), 300.0),
        (at(5, 13, 0), 90.0),
        (at(9, 23, 59), 90.0),
    ],
)
def test_readme_value_at(when: datetime, expected: float) -> None:
    assert parse_schedule(README).value_at(when) == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [(at(5, 11, 59), 600.0), (at(5, 12, 0), 60.0), (at(5, 18, 0), None), (at(5, 19, 59), None)],
)
def test_value_at_gaps(when: datetime, expected: float | None) -> None:
    assert parse_schedule(DAYS).value_at(when) == expected


def test_readme_ranges_one_week() -> None:
    # 2015-01-01 is a Thursday; every range ends at the start of its last
    # minute, except the last one, which ends exactly a week after the start.
    d = lambda day, h, m: datetime(2015, 1, day, h, m, tzinfo=UTC)  # noqa: E731
    assert parse_schedule(README).ranges(d(1, 0, 0)) == [
        (d(1, 0, 0), d(1, 12, 59), 300.0),
        (d(1, 13, 0), d(1, 23, 59), 90.0),
        (d(2, 0, 0), d(2, 12, 59), 300.0),
        (d(2, 13, 0), d(2, 23, 59), 90.0),
        (d(3, 0, 0), d(5, 12, 59), 300.0),
        (d(5, 13, 0), d(5, 23, 59), 90.0),
        (d(6, 0, 0), d(6, 12, 59), 300.0),
        (d(6, 13, 0), d(6, 23, 59), 90.0),
        (d(7, 0, 0), d(7, 12, 59), 300.0),
        (d(7, 13, 0), d(8, 0, 0), 90.0),
    ]


def test_ranges_start_at_the_minute_of_now() -> None:
    now = datetime(2015, 1, 1, 10, 17, 42, 500000, tzinfo=UTC)
    ranges = parse_schedule(README).ranges(now)
    assert ranges[0] == (now.replace(second=0, microsecond=0), ranges[0][1], 300.0)
    assert ranges[-1][1] == datetime(2015, 1, 8, 10, 17, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "now", "expected"),
    [
        # Gaps are "Inactive"; the listing covers every directive if that is longer.
        (
            "0 0 29 2 * 60",
            datetime(2015, 1, 1, tzinfo=UTC),
            [
                (datetime(2015, 1, 1, tzinfo=UTC), datetime(2016, 2, 28, 23, 59, tzinfo=UTC), "Inactive"),
                (datetime(2016, 2, 29, tzinfo=UTC), datetime(2016, 2, 29, tzinfo=UTC), 60.0),
            ],
        ),
        (
            "* * 1 * * 60",
            datetime(2015, 1, 2, 5, 0, tzinfo=UTC),
            [
                (
                    datetime(2015, 1, 2, 5, 0, tzinfo=UTC),
                    datetime(2015, 1, 31, 23, 59, tzinfo=UTC),
                    "Inactive",
                ),
                (datetime(2015, 2, 1, tzinfo=UTC), datetime(2015, 2, 1, 23, 59, tzinfo=UTC), 60.0),
            ],
        ),
        # Always active: one range of exactly one week.
        (
            "0-59 0-23 1-31 1-12 0-6 5",
            datetime(2026, 1, 5, 1, 2, 3, tzinfo=UTC),
            [(datetime(2026, 1, 5, 1, 2, tzinfo=UTC), datetime(2026, 1, 12, 1, 2, tzinfo=UTC), 5.0)],
        ),
        (
            "* * * * * 5",
            datetime(2026, 1, 5, tzinfo=UTC),
            [(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC), 5.0)],
        ),
        # Equal values are one range even when written differently.
        (
            "* * * * sat,sun 300; * * * * mon-fri 300.0",
            datetime(2026, 1, 5, tzinfo=UTC),
            [(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC), 300.0)],
        ),
    ],
)
def test_ranges(schedule: str, now: datetime, expected: list) -> None:
    assert parse_schedule(schedule).ranges(now) == expected


def test_ranges_gap_is_inactive() -> None:
    ranges = parse_schedule(DAYS).ranges(at(5, 0, 0))
    assert ranges[:4] == [
        (at(5, 0, 0), at(5, 11, 59), 600.0),
        (at(5, 12, 0), at(5, 17, 59), 60.0),
        (at(5, 18, 0), at(5, 19, 59), "Inactive"),
        (at(5, 20, 0), at(5, 23, 59), 300.0),
    ]


@pytest.mark.parametrize(
    ("schedule", "directives"),
    [
        ("* * * * * 60", 1),
        ("# comment only; * * * * * 60", 1),
        ("  ;;* * * * * 60 ;   # trailing comment ; ", 1),
        ("#* * * * * 60; * * * * * 60", 1),  # a commented-out directive
        (README, 3),
        ("\t* 0-11 * * * 60\t;\t* 12-23 * * * 90\t", 2),
    ],
)
def test_comments_and_whitespace(schedule: str, directives: int) -> None:
    s = parse_schedule(schedule)
    assert s.text == schedule
    assert s.value_at(at(5, 6, 0)) in (60.0, 300.0)
    assert len(s._directives) == directives


@pytest.mark.parametrize(
    ("schedule", "when", "expected"),
    [
        ("* * * * sat,sun 60; * * * * mon-fri 90", at(10, 0, 0), 60.0),
        ("* * * * SAT,Sun 60; * * * * Mon-Fri 90", at(11, 0, 0), 60.0),
        ("* * * * sat-sun 60; * * * * mon-fri 90", at(11, 0, 0), 60.0),  # wraps around
        ("* * * * sat-sun 60; * * * * mon-fri 90", at(9, 0, 0), 90.0),
        ("* * * * 7 60; * * * * 1-6 90", at(11, 0, 0), 60.0),  # 7 is Sunday
        ("* * * jan-mar * 60; * * * apr-dec * 90", at(5, 0, 0), 60.0),
        ("* * * jan-mar * 60; * * * apr-dec * 90", at(5, 0, 0, month=4), 90.0),
        ("*/15 * * * * 60; 1-14,16-29,31-44,46-59 * * * * 90", at(5, 0, 30), 60.0),
        ("*/15 * * * * 60; 1-14,16-29,31-44,46-59 * * * * 90", at(5, 0, 31), 90.0),
        ("5-5 * * * * 60", at(5, 0, 5), 60.0),  # an equal range is that one value
        ("5-5 * * * * 60", at(5, 0, 6), None),
    ],
)
def test_names_lists_ranges_steps(schedule: str, when: datetime, expected: float | None) -> None:
    assert parse_schedule(schedule).value_at(when) == expected


@pytest.mark.parametrize(
    ("schedule", "overlaps"),
    [
        ("* * * * * 60; 0 0 1 1 * 5", True),
        ("* 0-11 * * * 60; * 12-23 * * * 90", False),
        ("* 0-12 * * * 60; * 12-23 * * * 90", True),
        ("0-29 * * * * 60; 30-59 * * * * 90", False),
        ("*/2 * * * * 60; 1-59/2 * * * * 90", False),
        ("* * * * sat,sun 60; * * * * mon-fri 90", False),
        ("* * * * sat,sun 60; * * * * fri-sat 90", True),
        ("* * 1 * * 60; * * 2 * * 90", False),
        ("* * 1 * * 60; * * * * mon 90", True),  # some 1st is a Monday
        ("* * * 1 * 60; * * * 2 * 90", False),
        ("* * 1 1 * 60; * * 1 2 * 90", False),
        # Both day fields restricted: a day matches if EITHER matches.
        ("* * 1 * mon 60; * * 2 * tue 90", True),  # a 1st that is a Tuesday
        ("* * 1 * mon 60; * * 15 * * 90", True),  # a 15th that is a Monday
        ("* * 1 1 mon 60; * * 2 2 tue 90", False),  # different months
        ("* * 1-31 * * 60; * * * * * 90", True),
        # Only real dates count.
        ("* * 31 * * 60; * * * 2 * 90", False),  # there is no February 31
        ("* * 31 * * 60; * * * 4,6,9,11 * 90", False),
        ("* * 30 * * 60; * * * 2 * 90", False),
        ("* * 29 * * 60; * * * 2 * 90", True),  # leap years
        ("* * 29 2 * 60; * * * * mon 90", True),  # Feb 29 is sometimes a Monday
        ("* * 30 * sat 60; * * * 2 * 90", True),  # February Saturdays
        ("* * * 2 sat 60; * * 29 2 * 90", True),  # Feb 29 is sometimes a Saturday
        ("* * * 2 sat 60; * * 29 2 * 90; * * 1 3 * 30", True),
        ("0-59 0-23 1-31 1-12 0-6 5; 0 0 1 1 * 6", True),
        ("* * * * * 5; * * * * * 5", True),
    ],
)
def test_overlaps(schedule: str, overlaps: bool) -> None:
    if overlaps:
        with pytest.raises(ScheduleError, match="overlap"):
            parse_schedule(schedule)
    else:
        parse_schedule(schedule)


def test_overlap_message_names_both_directives() -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule("* 0-11 * * * 60 ; * 11 * * mon 90")
    message = str(info.value)
    assert '"* 0-11 * * * 60"' in message and '"* 11 * * mon 90"' in message
    assert "11:00" in message


@pytest.mark.parametrize(
    ("schedule", "valid"),
    [
        ("0 0 31 2 * 60", False),
        ("0 0 30 2 * 60", False),
        ("* * 31 4,6,9,11 * 60", False),
        ("* * 30,31 feb * 60", False),
        ("* 0-11 * * * 60; 0 0 31 2 * 30", False),  # one dead directive is an error
        ("0 0 29 2 * 60", True),
        ("* * 31 2,3 * 60", True),
        ("* * 31 2 mon 60", True),  # or any Monday in February
    ],
)
def test_never_active(schedule: str, valid: bool) -> None:
    start = time.perf_counter()
    if valid:
        s = parse_schedule(schedule)
        s.deadline(at(5, 0, 0))
        s.ranges(at(5, 0, 0))
    else:
        with pytest.raises(ScheduleError, match="never be active") as info:
            parse_schedule(schedule)
        assert "0 0 31 2 * 30" in str(info.value) or schedule in str(info.value)
    assert time.perf_counter() - start < 0.5


def test_always_active_written_as_ranges_is_fast() -> None:
    start = time.perf_counter()
    s = parse_schedule("0-59 0-23 1-31 1-12 0-6 5")
    t = at(5, 1, 2, 3)
    assert s.deadline(t) == t + timedelta(seconds=5)
    assert s.deadline(t + timedelta(days=400)) == t + timedelta(days=400, seconds=5)
    assert len(s.ranges(t)) == 1
    assert time.perf_counter() - start < 0.2


@pytest.mark.parametrize(
    "schedule",
    [
        "* * * * * 60\n",
        "* * * * * 60;\n* * * * * 90",
        "# comment\n* * * * * 60",
        "* * * * * 60\r",
        "\n",
    ],
)
def test_newline_rejected(schedule: str) -> None:
    with pytest.raises(ScheduleError, match="one line"):
        parse_schedule(schedule)


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "-5",
        "0.0",
        "abc",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e999",
        "60s",
        "0x10",
        "1_000",
        str(int(MAX_PERIODICITY) + 1),
        "1e10",
    ],
)
def test_bad_values(value: str) -> None:
    with pytest.raises(ScheduleError, match="periodicity") as info:
        parse_schedule(f"* * * * * {value}")
    assert f"* * * * * {value}" in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("300", 300.0), ("1.5", 1.5), (".5", 0.5), ("3e2", 300.0), (str(MAX_PERIODICITY), MAX_PERIODICITY)],
)
def test_good_values(value: str, expected: float) -> None:
    assert parse_schedule(f"* * * * * {value}").value_at(at(5, 0, 0)) == expected


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ("* * * 60", "has 4 fields"),
        ("* * * * *", "has 5 fields"),
        ("* * * * * * 60", "has 7 fields"),
        ("60 * * * * 5", 'minute field "60"'),
        ("* 24 * * * 5", 'hour field "24"'),
        ("* * 0 * * 5", 'day-of-month field "0"'),
        ("* * 32 * * 5", 'day-of-month field "32"'),
        ("* * * 13 * 5", 'month field "13"'),
        ("* * * * 8 5", 'day-of-week field "8"'),
        ("* * * * funday 5", 'day-of-week field "funday"'),
        ("* * * foo * 5", 'month field "foo"'),
        ("* * L * * 5", 'day-of-month field "L"'),
        ("* * 15W * * 5", 'day-of-month field "15W"'),
        ("* * * * 5#2 5", 'day-of-week field "5#2"'),
        ("* * * * 5L 5", 'day-of-week field "5L"'),
        ("* * ? * * 5", 'day-of-month field "?"'),
        ("H * * * * 5", 'minute field "H"'),
        ("*/0 * * * * 5", 'minute field "*/0"'),
        ("1,,2 * * * * 5", 'minute field "1,,2"'),
        ("-1 * * * * 5", 'minute field "-1"'),
        ("* * * * * 60; * 0-12 * *", 'directive "* 0-12 * *"'),
    ],
)
def test_bad_fields(schedule: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(schedule)
    assert fragment in str(info.value)


@pytest.mark.parametrize("schedule", ["", "   ", ";;", "# only a comment", " # a ; # b "])
def test_no_directives(schedule: str) -> None:
    with pytest.raises(ScheduleError, match="no directives"):
        parse_schedule(schedule)


def test_schedule_error_is_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


def test_parse_is_cached() -> None:
    assert parse_schedule(README) is parse_schedule(README)


def test_naive_and_other_timezones_are_read_as_utc_instants() -> None:
    s = parse_schedule(DAYS)
    aware = at(5, 10, 0)
    assert s.deadline(aware.replace(tzinfo=None)) == s.deadline(aware)
    other = aware.astimezone(datetime.now().astimezone().tzinfo)
    assert s.deadline(other) == s.deadline(aware)
    assert s.deadline(aware).tzinfo == UTC
