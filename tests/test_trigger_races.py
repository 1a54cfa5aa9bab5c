"""A trigger that takes the general path (its canary is not simply on time) reads the
canary and then writes conditionally. Whatever another process changes in between and
the trigger's decision depends on must make the write fail and the trigger read again:
these tests land such a change between the read and the write, on every store, and
compare the result with the same change landing before the trigger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.models import Canary


def _between_read_and_write(
    monkeypatch: pytest.MonkeyPatch, store: AbstractStore, change: Callable[[], Any]
) -> None:
    """Run `change` once, right after the trigger's first read of the canary."""
    original = store.postpone
    done: list[bool] = []

    def postpone(*args: Any, **kwargs: Any) -> Canary | bool:
        read = original(*args, **kwargs)
        if isinstance(read, Canary) and not done:
            done.append(True)
            change()
        return read

    monkeypatch.setattr(store, "postpone", postpone)


def test_a_periodicity_change_of_a_paused_canary_is_not_lost(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = logic.create("Job", 60).id
    logic.pause(cid)
    _between_read_and_write(monkeypatch, store, lambda: logic.update(cid, periodicity=3600))
    assert logic.trigger(cid) == (False, True)
    canary = logic.get(cid)
    assert canary.periodicity == 3600
    assert (canary.deadline - clock.now()).total_seconds() == pytest.approx(3600, abs=0.01)


def test_a_run_started_meanwhile_is_seen_by_the_trigger(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control: the run starts before the trigger.
    control = logic.create("Control", "* * * * * 3600").id
    logic.runs.report(control, "start", rid="r1")
    logic.trigger(control)
    expected = logic.get(control)

    cid = logic.create("Job", "* * * * * 3600").id  # a schedule: not the one-step trigger
    _between_read_and_write(monkeypatch, store, lambda: logic.runs.report(cid, "start", rid="r1"))
    logic.trigger(cid)
    canary = logic.get(cid)
    assert canary.runs == expected.runs
    assert [comment for _, comment in canary.history or []] == [
        comment for _, comment in expected.history or []
    ]
