"""The store contract: every store (tests/stores.py) must pass all of this."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.models import AlreadyExistsError, Canary, HistoryEntry, NewNotification, PrunePolicy

T0 = datetime(2026, 3, 2, 12, 0, 0, 123000, tzinfo=UTC)


def make(cid: str = "aaaaaaaa", name: str = "Job", **fields) -> Canary:
    base = dict(
        id=cid,
        name=name,
        slug=name.lower().replace(" ", "-"),
        periodicity=60.0,
        description="",
        emails=[],
        paused=False,
        late=False,
        deadline=T0 + timedelta(seconds=60),
        history=[(T0, "Canary created")],
    )
    base.update(fields)
    return Canary(**base)


def test_create_and_get_round_trip(store: AbstractStore) -> None:
    canary = make(
        name="Ünïcode ✓ job",
        slug="ünïcode-job",
        description="d\nx",
        emails=["a@x", "b@y"],
        history=[(T0 + timedelta(seconds=1), "Triggered (é)"), (T0, "Canary created")],
    )
    store.create(canary)
    assert store.get("aaaaaaaa") == canary
    without = store.get("aaaaaaaa", history=False)
    assert without.history is None
    assert without.name == canary.name and without.deadline == canary.deadline


@pytest.mark.parametrize("periodicity", [60.0, 0.5, 86400.0 * 3650, "* * * * * 60 ; # comment"])
def test_periodicity_keeps_its_type(store: AbstractStore, periodicity) -> None:
    store.create(make(periodicity=periodicity))
    got = store.get("aaaaaaaa").periodicity
    assert got == periodicity and type(got) is type(periodicity)


def test_paused_canary_has_no_deadline(store: AbstractStore) -> None:
    store.create(make(paused=True, deadline=None))
    canary = store.get("aaaaaaaa")
    assert canary.paused and canary.deadline is None


@pytest.mark.parametrize(
    "clash, field", [({"id": "aaaaaaaa", "slug": "other"}, "id"), ({"id": "bbbbbbbb", "slug": "job"}, "slug")]
)
def test_create_refuses_duplicates(store: AbstractStore, clash, field) -> None:
    store.create(make())
    with pytest.raises(AlreadyExistsError) as info:
        store.create(make(**clash))
    assert info.value.field_name == field
    assert [c.id for c in store.iter_canaries()] == ["aaaaaaaa"]


def test_missing_canary(store: AbstractStore) -> None:
    assert store.get("zzzzzzzz") is None
    assert store.id_for_slug("nope") is None
    assert store.update("zzzzzzzz", {"late": True}) is False
    assert store.delete("zzzzzzzz") is False


def test_id_for_slug(store: AbstractStore) -> None:
    store.create(make())
    assert store.id_for_slug("job") == "aaaaaaaa"


def test_update_applies_changes(store: AbstractStore) -> None:
    store.create(make())
    assert store.update(
        "aaaaaaaa",
        {
            "name": "New",
            "slug": "new",
            "emails": ["x@y"],
            "description": "dd",
            "periodicity": "* * * * * 5",
            "paused": True,
            "deadline": None,
            "late": True,
        },
    )
    canary = store.get("aaaaaaaa")
    assert (canary.name, canary.slug, canary.emails, canary.description, canary.periodicity) == (
        "New",
        "new",
        ["x@y"],
        "dd",
        "* * * * * 5",
    )
    assert canary.paused and canary.late and canary.deadline is None
    assert store.id_for_slug("new") == "aaaaaaaa" and store.id_for_slug("job") is None


def test_update_is_conditional(store: AbstractStore) -> None:
    store.create(make())
    deadline = T0 + timedelta(seconds=60)
    assert not store.update(
        "aaaaaaaa",
        {"late": True},
        expect={"deadline": deadline + timedelta(1)},
        history=(T0, "nope"),
        notifications=[note()],
    )
    assert not store.update("aaaaaaaa", {"late": True}, expect={"paused": True})
    canary = store.get("aaaaaaaa")
    assert not canary.late and len(canary.history) == 1
    assert store.pending_notifications() == []
    assert store.update(
        "aaaaaaaa", {"late": True}, expect={"deadline": deadline, "late": False, "paused": False}
    )
    assert store.get("aaaaaaaa").late


def test_expect_missing_deadline(store: AbstractStore) -> None:
    store.create(make(paused=True, deadline=None))
    assert store.update("aaaaaaaa", {"paused": False, "deadline": T0}, expect={"deadline": None})
    assert not store.update("aaaaaaaa", {"late": True}, expect={"deadline": None})


def test_rename_onto_existing_slug_changes_nothing(store: AbstractStore) -> None:
    store.create(make())
    store.create(make("bbbbbbbb", "Other"))
    with pytest.raises(AlreadyExistsError):
        store.update("bbbbbbbb", {"name": "Job", "slug": "job"}, history=(T0, "x"))
    other = store.get("bbbbbbbb")
    assert other.name == "Other" and len(other.history) == 1


def test_history_is_newest_first(store: AbstractStore) -> None:
    store.create(make())
    for i in range(1, 4):
        store.update("aaaaaaaa", {}, history=(T0 + timedelta(seconds=i), f"Triggered ({i})"))
    store.update("aaaaaaaa", {}, history=(T0 + timedelta(seconds=3), "same time, later"))
    comments = [c for _, c in store.get("aaaaaaaa").history]
    assert comments == [
        "same time, later",
        "Triggered (3)",
        "Triggered (2)",
        "Triggered (1)",
        "Canary created",
    ]


# (age of the existing entries in days, how many, how many are kept after one more)
PRUNE_CASES = [
    (0, 1005, 1000),  # more than max_entries: cut to the max
    (8, 150, 100),  # old entries go while more than min_entries remain
    (8, 90, 91),  # at or under min_entries nothing old is dropped
    (3, 150, 151),  # recent entries are all kept under the max
    (8, 1200, 100),  # both rules at once
]
PRUNE_POLICY = PrunePolicy(max_entries=1000, min_entries=100, older_than=T0 - timedelta(days=7))


def aged_history(existing_age_days: int, entries: int) -> list[HistoryEntry]:
    """`entries` history entries, newest first, the newest `existing_age_days` before T0."""
    start = T0 - timedelta(days=existing_age_days, seconds=entries)
    return [(start + timedelta(seconds=i), f"e{i}") for i in range(entries)][::-1]


@pytest.mark.parametrize("existing_age_days, entries, expected", PRUNE_CASES)
def test_history_pruning(store: AbstractStore, existing_age_days, entries, expected) -> None:
    history = aged_history(existing_age_days, entries)
    store.create(make(history=history))
    store.update("aaaaaaaa", {}, history=(T0, "newest"), prune=PRUNE_POLICY)
    kept = store.get("aaaaaaaa").history
    assert len(kept) == expected
    assert kept[0] == (T0, "newest")
    assert kept == sorted(kept, key=lambda e: e[0], reverse=True)
    # Pruning keeps going on later writes from the count it left.
    store.update("aaaaaaaa", {}, history=(T0 + timedelta(seconds=1), "newer"), prune=PRUNE_POLICY)
    assert len(store.get("aaaaaaaa").history) == (expected if expected in (1000, 100) else expected + 1)


def test_delete_removes_canary_and_history(store: AbstractStore) -> None:
    store.create(make())
    assert store.delete("aaaaaaaa")
    assert store.get("aaaaaaaa") is None
    store.create(make(history=[(T0, "fresh")]))
    assert store.get("aaaaaaaa").history == [(T0, "fresh")]


def test_iter_canaries_filters_and_order(store: AbstractStore) -> None:
    flags = {
        "aaaaaaaa": (False, False),
        "bbbbbbbb": (True, False),
        "cccccccc": (False, True),
        "dddddddd": (True, True),
    }
    for i, (cid, (paused, late)) in enumerate(flags.items()):
        store.create(make(cid, f"Job {i}", paused=paused, late=late, deadline=None if paused else T0))
    ids = lambda **kw: [c.id for c in store.iter_canaries(**kw)]  # noqa: E731
    assert ids() == list(flags)
    assert ids(paused=True) == ["bbbbbbbb", "dddddddd"]
    assert ids(late=True) == ["cccccccc", "dddddddd"]
    assert ids(paused=False, late=False) == ["aaaaaaaa"]
    assert all(c.history is None for c in store.iter_canaries())
    assert all(c.history == [(T0, "Canary created")] for c in store.iter_canaries(history=True))


def test_iter_canaries_allows_writes_while_streaming(store: AbstractStore) -> None:
    for i in range(5):
        store.create(make(f"{chr(97 + i)}" * 8, f"Job {i}"))
    seen = []
    for canary in store.iter_canaries(history=True):
        store.update(canary.id, {"late": True}, history=(T0, "x"))
        seen.append(canary.id)
    assert len(seen) == 5


def test_deadline_queries(store: AbstractStore) -> None:
    store.create(make("aaaaaaaa", "a", deadline=T0 + timedelta(seconds=30)))
    store.create(make("bbbbbbbb", "b", deadline=T0 + timedelta(seconds=10)))
    store.create(make("cccccccc", "c", deadline=T0, late=True))
    store.create(make("dddddddd", "d", deadline=None, paused=True))
    store.create(make("eeeeeeee", "e", deadline=T0 + timedelta(seconds=20)))
    assert store.earliest_deadline() == T0 + timedelta(seconds=10)
    due = store.due_canaries(T0 + timedelta(seconds=30), limit=10)
    assert [c.id for c in due] == ["bbbbbbbb", "eeeeeeee"]  # strictly before now; not late/paused
    assert [c.id for c in store.due_canaries(T0 + timedelta(seconds=31), limit=2)] == ["bbbbbbbb", "eeeeeeee"]
    assert all(c.history is None for c in due)


def test_no_deadline_when_nothing_is_watched(store: AbstractStore) -> None:
    assert store.earliest_deadline() is None
    store.create(make(paused=True, deadline=None))
    assert store.earliest_deadline() is None
    assert store.due_canaries(T0 + timedelta(days=1), 10) == []


# --- notification outbox: one entry per event and target ------------------------------

E1, E2 = ("email", "a@x"), ("email", "b@y")
HOOK = ("webhook", "https://hooks.example/1")


def note(kind: str = "late", at: datetime = T0, targets=(E1,), **payload) -> NewNotification:
    return NewNotification(kind=kind, created=at, payload={"name": "Job", **payload}, targets=tuple(targets))


def with_notes(store: AbstractStore, *kinds_by_canary: tuple[str, list[str]], targets=(E1,)) -> None:
    for i, (cid, kinds) in enumerate(kinds_by_canary):
        store.create(make(cid, f"Job {cid}"))
        for j, kind in enumerate(kinds):
            store.update(
                cid,
                {"late": kind == "late"},
                notifications=[note(kind, T0 + timedelta(seconds=i + j), targets, seq=j)],
            )


def claim(store: AbstractStore, at: datetime, owner: str = "w", channel: str = "email", **kw):
    """The one entry a claim returns, or None."""
    got = store.claim_notifications(at, owner, at + timedelta(seconds=30), channel, **kw)
    assert len(got) <= 1
    return got[0] if got else None


def test_notification_recorded_with_state_change(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late"]), targets=(E1, E2, HOOK))
    pending = store.pending_notifications()
    assert [(n.channel, n.target) for n in pending] == [E1, E2, HOOK]
    assert len({n.event for n in pending}) == 1 and len({n.id for n in pending}) == 3
    first = pending[0]
    assert (first.canary_id, first.kind, first.created, first.attempts) == ("aaaaaaaa", "late", T0, 0)
    assert first.payload == {"name": "Job", "seq": 0} and first.not_before == T0
    assert first.last_error is None and not first.permanent
    assert store.get("aaaaaaaa").late
    assert store.pending_notifications("bbbbbbbb") == [] and len(store.pending_notifications("aaaaaaaa")) == 3


def test_event_without_targets_records_nothing(store: AbstractStore) -> None:
    store.create(make())
    assert store.update("aaaaaaaa", {"late": True}, notifications=[note(targets=())])
    assert store.pending_notifications() == [] and store.next_notification_time() is None


def test_claim_complete_in_order(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late", "resumed", "late"]), ("bbbbbbbb", ["late"]))
    later = T0 + timedelta(minutes=1)
    first = claim(store, later, "w1")
    second = claim(store, later, "w1")
    assert (first.canary_id, first.kind) == ("aaaaaaaa", "late")
    # aaaaaaaa's next message must wait for its first one: bbbbbbbb's comes next.
    assert (second.canary_id, second.kind) == ("bbbbbbbb", "late")
    assert claim(store, later, "w2") is None
    store.complete_notifications([first], "w1", later)
    third = claim(store, later, "w2")
    assert (third.kind, third.payload["seq"]) == ("resumed", 1)
    store.complete_notifications([third, second], "w2", later)  # second is not w2's
    assert len(store.pending_notifications()) == 2
    store.complete_notifications([second], "w1", later)
    fourth = claim(store, later, "w1")
    assert (fourth.kind, fourth.payload["seq"]) == ("late", 2)
    store.complete_notifications([fourth], "w1", later)
    assert store.pending_notifications() == []
    assert store.next_notification_time() is None


def test_count_notifications_counts_what_pending_lists(store: AbstractStore) -> None:
    assert store.count_notifications() == 0
    with_notes(store, ("aaaaaaaa", ["late", "resumed"]), ("bbbbbbbb", ["late"]))
    assert store.count_notifications() == len(store.pending_notifications()) == 3
    claimed = claim(store, T0 + timedelta(minutes=1))
    assert store.count_notifications() == 3  # leased is still pending
    store.complete_notifications([claimed], "w", T0)
    assert store.count_notifications() == len(store.pending_notifications()) == 2
    store.delete("bbbbbbbb")  # pending notifications outlive their canary
    assert store.count_notifications() == len(store.pending_notifications()) == 2


def test_each_target_has_its_own_order_and_state(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late", "resumed"]), targets=(E1, E2, HOOK))
    NOW = T0 + timedelta(minutes=1)
    hook = claim(store, NOW, channel="webhook")
    assert (hook.target, hook.kind) == (HOOK[1], "late")
    store.retry_notification(hook, "w", NOW + timedelta(hours=1), error="HTTP 404", permanent=True, now=NOW)
    # A failing webhook holds back neither the email of the same event nor later events' emails.
    a = claim(store, NOW)
    b = claim(store, NOW)
    assert (a.target, a.kind, b.target, b.kind) == ("a@x", "late", "b@y", "late")
    store.retry_notification(b, "w", NOW + timedelta(seconds=5), error="450 greylisted", now=NOW)
    store.complete_notifications([a], "w", NOW)
    a2 = claim(store, NOW)
    assert (a2.target, a2.kind) == ("a@x", "resumed")  # b@y's resumed waits for its late
    assert claim(store, NOW) is None and claim(store, NOW, channel="webhook") is None
    assert store.next_notification_time("email") == NOW + timedelta(seconds=5)
    assert store.next_notification_time("webhook") == NOW + timedelta(hours=1)
    assert store.next_notification_time() == NOW + timedelta(seconds=5)
    kept = {(n.target, n.kind): n for n in store.pending_notifications()}
    assert (kept["b@y", "late"].attempts, kept["b@y", "late"].last_error) == (1, "450 greylisted")
    assert kept[HOOK[1], "late"].permanent and not kept["b@y", "late"].permanent
    statuses = {(s.channel, s.target): s for s in store.target_statuses("aaaaaaaa")}
    assert statuses[E1].last_success == NOW and statuses[E1].last_error is None
    assert (statuses[E2].last_error, statuses[E2].last_error_at, statuses[E2].last_success) == (
        "450 greylisted",
        NOW,
        None,
    )
    assert statuses[HOOK].last_error == "HTTP 404"
    store.delete("aaaaaaaa")
    assert store.target_statuses("aaaaaaaa") == []
    assert len(store.pending_notifications()) == 5  # pending events survive the deletion


def test_group_claim_takes_every_sendable_target_of_one_event(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late", "resumed"]), targets=(E1, E2, HOOK))
    NOW = T0 + timedelta(minutes=1)
    got = store.claim_notifications(NOW, "w", NOW + timedelta(seconds=30), "email", group=True)
    assert [(n.target, n.kind) for n in got] == [("a@x", "late"), ("b@y", "late")]
    store.retry_notification(got[1], "w", NOW, error="451 later", now=NOW)
    store.complete_notifications(got[:1], "w", NOW)
    again = store.claim_notifications(NOW, "w", NOW + timedelta(seconds=30), "email", group=True)
    assert [(n.target, n.kind) for n in again] == [("b@y", "late")]  # a@x's resumed is another event
    assert [(n.target, n.kind) for n in store.claim_notifications(NOW, "w", NOW, "email", group=True)] == [
        ("a@x", "resumed")
    ]


def test_expired_lease_can_be_claimed_again(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late"]))
    first = claim(store, T0, "dead-worker")
    lease = T0 + timedelta(seconds=30)
    assert claim(store, T0 + timedelta(seconds=29), "w2") is None
    assert store.next_notification_time() == lease
    again = claim(store, lease, "w2")
    assert again.id == first.id
    # The dead worker's late completion does not remove what w2 now holds.
    store.complete_notifications([first], "dead-worker", lease)
    assert len(store.pending_notifications()) == 1
    store.complete_notifications([again], "w2", lease)
    assert store.pending_notifications() == []


def test_lease_extension(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late"]), targets=(E1, E2))
    held = store.claim_notifications(T0, "w1", T0 + timedelta(seconds=30), "email", group=True)
    assert store.extend_lease(held, "w1", T0 + timedelta(seconds=90))
    assert claim(store, T0 + timedelta(seconds=60), "w2") is None
    assert store.next_notification_time() == T0 + timedelta(seconds=90)
    assert not store.extend_lease(held, "w2", T0 + timedelta(hours=1))  # not w2's
    taken = claim(store, T0 + timedelta(seconds=90), "w2")
    assert taken is not None
    assert not store.extend_lease(held, "w1", T0 + timedelta(hours=1))  # w1 lost one of them


def test_retry_backs_off(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late", "resumed"]))
    claimed = claim(store, T0)
    retry_at = T0 + timedelta(seconds=10)
    store.retry_notification(claimed, "w", retry_at)
    assert claim(store, T0 + timedelta(seconds=9)) is None
    assert store.next_notification_time() == retry_at
    again = claim(store, retry_at)
    assert (again.id, again.attempts, again.kind, again.last_error) == (claimed.id, 1, "late", None)
    store.retry_notification(again, "other", retry_at + timedelta(hours=1))  # not its lease: no change
    assert store.pending_notifications()[0].attempts == 1


def test_notifications_survive_canary_deletion(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late"]))
    store.delete("aaaaaaaa")
    claimed = claim(store, T0)
    assert claimed is not None and claimed.payload["name"] == "Job"


def test_the_oldest_sendable_is_the_first_recorded_not_the_first_due(store: AbstractStore) -> None:
    """AbstractStore.claim_notifications: among sendable heads, the one recorded first,
    whatever its retry time. A was recorded before B; after failures A may be retried
    from t+5, B from t+4; at t+6 both may go, and A goes first."""
    with_notes(store, ("aaaaaaaa", ["late"]), ("bbbbbbbb", ["late"]))
    first = claim(store, T0 + timedelta(seconds=2))
    second = claim(store, T0 + timedelta(seconds=2))
    assert (first.canary_id, second.canary_id) == ("aaaaaaaa", "bbbbbbbb")
    store.retry_notification(first, "w", T0 + timedelta(seconds=5))
    store.retry_notification(second, "w", T0 + timedelta(seconds=4))
    assert claim(store, T0 + timedelta(seconds=6)).canary_id == "aaaaaaaa"


def test_last_entries_finds_each_canarys_newest_entry_with_a_prefix(store: AbstractStore) -> None:
    second = T0 + timedelta(seconds=2)
    store.create(
        make(
            history=[
                (T0 + timedelta(seconds=3), "Paused"),
                (second, "Triggered (b)"),
                (T0 + timedelta(seconds=1), "Triggered"),
                (T0, "Canary created"),
            ]
        )
    )
    store.create(make("bbbbbbbb", "Other", history=[(T0, "Canary created"), (T0, "triggered by hand")]))
    assert store.last_entries(["aaaaaaaa", "bbbbbbbb", "zzzzzzzz"], "Triggered") == {"aaaaaaaa": second}
    assert store.last_entries(["bbbbbbbb"], "Canary created") == {"bbbbbbbb": T0}
    assert store.last_entries([], "Triggered") == {}


def test_withdraw_and_drop(store: AbstractStore) -> None:
    with_notes(store, ("aaaaaaaa", ["late", "resumed"]), ("bbbbbbbb", ["late"]), targets=(E1, E2, HOOK))
    NOW = T0 + timedelta(minutes=1)
    gone = store.withdraw_notifications("aaaaaaaa", [E2])
    assert [(n.target, n.kind) for n in gone] == [("b@y", "late"), ("b@y", "resumed")]
    hook = claim(store, NOW, channel="webhook")
    store.retry_notification(hook, "w", NOW, error="HTTP 410", permanent=True, now=NOW)
    assert [n.target for n in store.withdraw_notifications("aaaaaaaa", permanent_only=True)] == [HOOK[1]]
    left = store.pending_notifications("aaaaaaaa")
    assert [(n.target, n.kind) for n in left] == [("a@x", "late"), ("a@x", "resumed"), (HOOK[1], "resumed")]
    dropped = store.drop_notification(str(left[0].id))
    assert dropped is not None and (dropped.id, dropped.target) == (left[0].id, "a@x")
    assert store.drop_notification(str(left[0].id)) is None
    assert store.drop_notification("not-an-id") is None
    assert store.drop_notification("9" * 30) is None and store.drop_notification("-1") is None
    assert claim(store, NOW).kind == "resumed"  # a@x's next event is free now
    assert len(store.pending_notifications("bbbbbbbb")) == 3
    assert store.withdraw_notifications("zzzzzzzz") == []
