"""Coal Mine's rules, with a fake clock, on every store."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.business_logic import BusinessLogic, history_comment, slugify
from coal_mine.clock import FakeClock
from coal_mine.models import AlreadyExistsError, BadRequestError, CanaryNotFoundError


@pytest.mark.parametrize(
    "name, slug",
    [
        ("My First Canary", "my-first-canary"),
        ("a - b _ c\td", "a-b-c-d"),
        ("__x__", "-x-"),
        ("Ça va?", "ça-va"),
        ("!!!", ""),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_history_comment() -> None:
    assert history_comment("Triggered", "") == "Triggered"
    assert history_comment("Paused", "x y") == "Paused (x y)"


def test_create_sets_deadline(logic: BusinessLogic, clock: FakeClock) -> None:
    canary = logic.create("Job", 90, emails=["a@b"])
    assert canary.deadline == clock.now() + timedelta(seconds=90)
    assert canary.history == [(clock.now(), "Canary created")]
    assert logic.get(canary.id) == canary


def test_create_refuses_same_slug(logic: BusinessLogic) -> None:
    logic.create("Job One", 60)
    with pytest.raises(AlreadyExistsError):
        logic.create("job_one", 60)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 10**12])
def test_bad_periodicity(logic: BusinessLogic, bad: float) -> None:
    with pytest.raises(BadRequestError):
        logic.create("Job", bad)


def test_empty_name(logic: BusinessLogic) -> None:
    with pytest.raises(BadRequestError):
        logic.create("", 60)


def test_trigger(logic: BusinessLogic, clock: FakeClock) -> None:
    cid = logic.create("Job", 60).id
    clock.advance(30)
    assert logic.trigger(cid, "run 1") == (False, False)
    canary = logic.get(cid)
    assert canary.deadline == clock.now() + timedelta(seconds=60)
    assert canary.history[0] == (clock.now(), "Triggered (run 1)")


def test_late_then_trigger_records_both_notifications(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    cid = logic.create("Job", 60, emails=["ops@example.com"]).id
    clock.advance(60)
    assert store.due_canaries(clock.now(), 10) == []  # exactly at the deadline it is not late yet
    clock.advance(0.001)
    (due,) = store.due_canaries(clock.now(), 10)
    assert logic.mark_late(due)
    assert logic.get(cid).late
    assert logic.trigger(cid) == (True, False)
    kinds = [(n.kind, n.canary_id) for n in store.pending_notifications()]
    assert kinds == [("late", cid), ("resumed", cid)]
    late, resumed = store.pending_notifications()
    assert late.payload["name"] == "Job" and late.payload["emails"] == ["ops@example.com"]
    assert resumed.payload["history"][0][1] == "Triggered"


def test_no_notification_without_emails(logic: BusinessLogic, clock: FakeClock, store: AbstractStore) -> None:
    cid = logic.create("Job", 60).id
    clock.advance(61)
    assert logic.mark_late(store.due_canaries(clock.now(), 10)[0])
    assert logic.get(cid).late and store.pending_notifications() == []


def test_trigger_between_read_and_mark_wins(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    cid = logic.create("Job", 60, emails=["a@b"]).id
    clock.advance(61)
    (seen,) = store.due_canaries(clock.now(), 10)
    logic.trigger(cid)  # lands after the watcher read the canary
    assert not logic.mark_late(seen)
    assert not logic.get(cid).late and store.pending_notifications() == []


def test_pause_keeps_late_and_trigger_still_resumes(
    logic: BusinessLogic, clock: FakeClock, store: AbstractStore
) -> None:
    cid = logic.create("Job", 60, emails=["a@b"]).id
    clock.advance(61)
    logic.mark_late(store.due_canaries(clock.now(), 10)[0])
    paused = logic.pause(cid, "maint")
    assert paused.late and paused.paused and paused.deadline is None
    assert logic.trigger(cid) == (True, True)
    assert [n.kind for n in store.pending_notifications()] == ["late", "resumed"]


def test_pause_unpause_errors(logic: BusinessLogic) -> None:
    cid = logic.create("Job", 60).id
    with pytest.raises(BadRequestError):
        logic.unpause(cid)
    logic.pause(cid)
    with pytest.raises(BadRequestError):
        logic.pause(cid)


def test_unpause_sets_deadline_from_now(logic: BusinessLogic, clock: FakeClock) -> None:
    cid = logic.create("Job", 60, paused=True).id
    assert logic.get(cid).deadline is None
    clock.advance(1000)
    canary = logic.unpause(cid, "back")
    assert canary.deadline == clock.now() + timedelta(seconds=60)
    assert canary.history[0] == (clock.now(), "Unpaused (back)")


def test_update_periodicity_rules(logic: BusinessLogic, clock: FakeClock, store: AbstractStore) -> None:
    cid = logic.create("Job", 600, emails=["a@b"]).id
    created = clock.now()
    clock.advance(300)
    canary = logic.update(cid, periodicity=120)  # created + 120 is in the past: late now
    assert canary.deadline == created + timedelta(seconds=120) and canary.late
    assert [n.kind for n in store.pending_notifications()] == ["late"]
    canary = logic.update(cid, periodicity=3600)
    assert not canary.late
    assert [n.kind for n in store.pending_notifications()] == ["late", "resumed"]


def test_update_periodicity_of_paused_canary_keeps_it_without_deadline(logic: BusinessLogic) -> None:
    cid = logic.create("Job", 600, paused=True).id
    canary = logic.update(cid, periodicity=30)
    assert canary.periodicity == 30 and canary.deadline is None


def test_update_requires_a_change(logic: BusinessLogic) -> None:
    cid = logic.create("Job", 60, description="d", emails=["a@b"]).id
    with pytest.raises(BadRequestError, match="No updates specified"):
        logic.update(cid, name="Job", periodicity=60, description="d", emails=["a@b"])


def test_find_identifier(logic: BusinessLogic) -> None:
    cid = logic.create("Find Me", 60).id
    assert logic.find_identifier(identifier=cid) == cid
    assert logic.find_identifier(slug="find-me") == cid
    assert logic.find_identifier(name="FIND  me") == cid
    for kwargs in ({"identifier": "zzzzzzzz"}, {"slug": "x"}, {"name": "x"}, {}):
        with pytest.raises(CanaryNotFoundError):
            logic.find_identifier(**kwargs)


def test_history_is_pruned_through_triggers(logic: BusinessLogic, clock: FakeClock) -> None:
    cid = logic.create("Job", 60).id
    for _ in range(1010):
        clock.advance(1)
        logic.trigger(cid)
    assert len(logic.get(cid).history) == 1000
    clock.advance(8 * 86400)  # everything is now older than a week: keep 100 + the new entry
    logic.trigger(cid)
    assert len(logic.get(cid).history) == 100


def test_concurrent_triggers_lose_no_history(logic: BusinessLogic, store: AbstractStore) -> None:
    cid = logic.create("Job", 60).id
    threads = [
        threading.Thread(target=lambda i=i: [logic.trigger(cid, f"{i}-{j}") for j in range(20)])
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    comments = {c for _, c in logic.get(cid).history}
    assert {f"Triggered ({i}-{j})" for i in range(8) for j in range(20)} <= comments


def test_on_change_called_after_writes(store: AbstractStore, clock: FakeClock) -> None:
    calls = []
    logic = BusinessLogic(store, clock, on_change=lambda: calls.append(1))
    cid = logic.create("Job", 60, paused=True).id
    logic.trigger(cid)  # was paused: now watched, the watcher must plan for it
    logic.update(cid, description="x")
    logic.pause(cid)
    logic.unpause(cid)
    logic.delete(cid)
    assert len(calls) == 6


def test_plain_trigger_does_not_wake_the_watcher(store: AbstractStore, clock: FakeClock) -> None:
    calls = []
    logic = BusinessLogic(store, clock, on_change=lambda: calls.append(1))
    cid = logic.create("Job", 60, emails=["a@b"]).id
    calls.clear()
    clock.advance(10)
    logic.trigger(cid)  # deadline moves later, nothing to send: the watcher's plan holds
    assert calls == []
    clock.advance(61)
    logic.mark_late(store.due_canaries(clock.now(), 1)[0])
    calls.clear()
    logic.trigger(cid)  # recovered: a resumed message is waiting to be sent
    assert calls == [1]


# Same addresses in another order are no change (Coal Mine 0.7.1 compares them as sets).


def test_update_with_the_same_emails_in_another_order_changes_nothing(logic: BusinessLogic) -> None:
    cid = logic.create("Job", 60, emails=["a@example.com", "b@example.com"]).id
    for emails in (["b@example.com", "a@example.com"], ["a@example.com", "b@example.com", "a@example.com"]):
        with pytest.raises(BadRequestError, match="No updates specified"):
            logic.update(cid, emails=emails)
    assert logic.get(cid).emails == ["a@example.com", "b@example.com"]


def test_update_with_reordered_emails_keeps_the_stored_order(logic: BusinessLogic) -> None:
    """Another change in the same request goes through; the address list stays as it was."""
    cid = logic.create("Job", 60, emails=["a@example.com", "b@example.com"]).id
    canary = logic.update(cid, description="new", emails=["b@example.com", "a@example.com"])
    assert canary.description == "new"
    assert logic.get(cid).emails == ["a@example.com", "b@example.com"]
