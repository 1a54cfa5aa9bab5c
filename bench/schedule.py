"""Benchmark coal_mine.schedule: deadline() and ranges() against their targets.

Run: .venv/bin/python bench/schedule.py
A plain croniter get_next() call is timed in the same run as a noise baseline.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from croniter import croniter

from coal_mine.schedule import ScheduleError, parse_schedule

README = (
    "# 5-minute delays are ok on weekends ; * * * * sat,sun 300 ; "
    "# 5-minute days are ok overnight ; * 0-12 * * mon-fri 300 ; "
    "# otherwise, we require a shorter periodicity ; * 13-23 * * mon-fri 90"
)


def median_seconds(call: Callable[[datetime], object], instants: list[datetime]) -> float:
    """Median wall time of one call, over the given arguments."""
    samples = []
    for t in instants:
        start = time.perf_counter()
        call(t)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def once_seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def report(label: str, seconds: float, target: float | None = None) -> None:
    line = f"{label:<52} {seconds * 1e3:9.4f} ms"
    if target is not None:
        verdict = "ok" if seconds < target else "OVER TARGET"
        line += f"   target < {target * 1e3:g} ms  [{verdict}]"
    print(line)


def main() -> None:
    rng = random.Random(4)
    base = datetime(2026, 1, 5, tzinfo=UTC)
    instants = [
        base + timedelta(seconds=rng.randrange(28 * 86400), milliseconds=rng.randrange(1000))
        for _ in range(5000)
    ]
    schedule = parse_schedule(README)

    baseline = median_seconds(
        lambda t: croniter("* 13-23 * * mon-fri", t).get_next(datetime), instants[:2000]
    )
    report("baseline: croniter(expr, t).get_next()", baseline)
    report("deadline(), 3-directive README schedule", median_seconds(schedule.deadline, instants), 1e-3)
    report(
        "parse_schedule(text).deadline() (cached parse)",
        median_seconds(lambda t: parse_schedule(README).deadline(t), instants),
        1e-3,
    )
    report("ranges(now), one week", median_seconds(schedule.ranges, instants[:300]), 20e-3)

    parse_schedule.cache_clear()
    report("parse_schedule(README), uncached", once_seconds(lambda: parse_schedule(README)))
    always = "0-59 0-23 1-31 1-12 0-6 5"
    report(
        f"'{always}': parse+deadline+ranges",
        once_seconds(lambda: (parse_schedule(always).deadline(base), parse_schedule(always).ranges(base))),
    )

    def refuse() -> None:
        try:
            parse_schedule("0 0 31 2 * 60")
        except ScheduleError:
            return
        raise AssertionError("0 0 31 2 * was accepted")

    report("'0 0 31 2 * 60' refused", once_seconds(refuse))
    leap = "* 0-11 * * * 60; * 12 29 2 * 30"
    report(
        f"'{leap}': ranges until Feb 29",
        once_seconds(lambda: parse_schedule(leap).ranges(datetime(2097, 3, 1, tzinfo=UTC))),
    )


if __name__ == "__main__":
    main()
