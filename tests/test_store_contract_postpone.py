"""The store contract, continued: `postpone`, the usual trigger in one step (every store)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.business_logic import BusinessLogic
from coal_mine.models import Canary, PrunePolicy
from tests.test_store_contract import PRUNE_CASES, PRUNE_POLICY, T0, aged_history, make

ON_TIME = {"late": False, "paused": False, "remind_at": None, "runs": [], "failed": False}
WHEN = T0 + timedelta(seconds=30, microseconds=456789)


@pytest.mark.parametrize("periodicity", [60.0, 0.3, 1.0000015, 86400.0 * 3650 + 0.0005, 12345.6785])
def test_postpone_moves_the_deadline_and_appends_history(store: AbstractStore, periodicity: float) -> None:
    store.create(make(periodicity=periodicity, deadline=T0))
    assert store.postpone("aaaaaaaa", WHEN, expect=ON_TIME, history=(WHEN, "Triggered")) is True
    canary = store.get("aaaaaaaa")
    assert canary.deadline == BusinessLogic.deadline_after(periodicity, WHEN)
    assert canary.history[0][1] == "Triggered" and len(canary.history) == 2
    assert not canary.late and not canary.paused and canary.periodicity == periodicity


@pytest.mark.parametrize(
    "fields",
    [
        {"late": True},
        {"paused": True, "deadline": None},
        {"periodicity": "* * * * * 60"},
        {"remind_at": T0},
        {"failed": True},
        {"deadline": T0 + timedelta(days=1)},  # the new deadline would come earlier
    ],
)
def test_postpone_changes_nothing_else_and_returns_the_canary(store: AbstractStore, fields: dict) -> None:
    store.create(make(**fields))
    before = store.get("aaaaaaaa", history=False)
    got = store.postpone("aaaaaaaa", WHEN, expect=ON_TIME, history=(WHEN, "Triggered"))
    assert isinstance(got, Canary) and got == before
    assert store.get("aaaaaaaa") == make(**fields)


def test_postpone_of_a_missing_canary(store: AbstractStore) -> None:
    assert store.postpone("zzzzzzzz", WHEN, expect=ON_TIME, history=(WHEN, "Triggered")) is False
    assert list(store.iter_canaries()) == []


def test_postpone_prunes(store: AbstractStore) -> None:
    history = [(T0 - timedelta(minutes=i), "Triggered") for i in range(5)]
    store.create(make(history=history, deadline=T0))
    policy = PrunePolicy(max_entries=3, min_entries=1, older_than=T0 - timedelta(days=1))
    entry = (T0 + timedelta(seconds=31), "Last")
    assert store.postpone("aaaaaaaa", WHEN, expect=ON_TIME, history=entry, prune=policy) is True
    assert store.get("aaaaaaaa").history == [entry, *history[:2]]


@pytest.mark.parametrize("existing_age_days, entries, expected", PRUNE_CASES)
def test_postpone_prunes_as_update_does(store: AbstractStore, existing_age_days, entries, expected) -> None:
    history = aged_history(existing_age_days, entries)
    store.create(make(history=history, deadline=T0))
    policy = PRUNE_POLICY
    assert store.postpone("aaaaaaaa", T0, expect=ON_TIME, history=(T0, "newest"), prune=policy) is True
    kept = store.get("aaaaaaaa").history
    assert len(kept) == expected
    assert kept == [(T0, "newest"), *history[: expected - 1]]
    # Pruning keeps going on later writes from the count (and oldest entry) it left.
    later = T0 + timedelta(seconds=1)
    assert store.postpone("aaaaaaaa", later, expect=ON_TIME, history=(later, "newer"), prune=policy) is True
    assert len(store.get("aaaaaaaa").history) == (expected if expected in (1000, 100) else expected + 1)
    store.update("aaaaaaaa", {}, history=(later, "by update"), prune=policy)
    assert len(store.get("aaaaaaaa").history) == (expected if expected in (1000, 100) else expected + 2)


def test_postpone_computes_the_deadline_exactly_as_python(store: AbstractStore) -> None:
    """A store's deadline arithmetic (SQL in the SQL stores) equals
    BusinessLogic.deadline_after for awkward periodicities: ties of half a microsecond
    (both parities), fractions just below and above them, tiny and huge ones, and
    random ones."""
    rng = random.Random(18)
    periodicities = [0.0000005, 0.0000015, 0.0000025, 1.0000005, 2.0000015, 0.4999995, 3.1415926535]
    periodicities += [k + m / 1e6 + 0.5e-6 for k in (0, 1, 7, 86399) for m in (0, 1, 2, 3, 999998)]
    periodicities += [86400.0 * 3650 + 0.0005, 1e-9, 0.001, 59.9999999]
    periodicities += [rng.uniform(0.0001, 1e6) for _ in range(300)]
    periodicities += [round(rng.uniform(0, 1000), 7) for _ in range(300)]
    when = T0 + timedelta(seconds=30, microseconds=456000)
    for n, periodicity in enumerate(periodicities):
        cid = f"{n:08d}".translate(str.maketrans("0123456789", "abcdefghij"))
        store.create(Canary(id=cid, name=cid, slug=cid, periodicity=periodicity, deadline=T0))
        assert store.postpone(cid, when, expect=ON_TIME, history=(when, "Triggered")) is True
        assert store.get(cid).deadline == BusinessLogic.deadline_after(periodicity, when), periodicity
