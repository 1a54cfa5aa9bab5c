"""Canary operations: the only place where Coal Mine's rules live."""

from __future__ import annotations

import logging
import math
import re
import secrets
import string
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any


from coal_mine import alert_rules, limits
from coal_mine.abstract_store import AbstractStore
from coal_mine.clock import Clock, to_millis
from coal_mine.models import (
    AlreadyExistsError,
    BadRequestError,
    Canary,
    CanaryNotFoundError,
    HistoryEntry,
    NewNotification,
    PrunePolicy,
    StoreUnavailableError,
    Target,
)
from coal_mine.input_rules import number_problem, unique_addresses
from coal_mine.runs import IDLE, RunLogic
from coal_mine.schedule import ScheduleError, parse_schedule
from coal_mine.search import search_canaries

log = logging.getLogger(__name__)

HISTORY_MAX_ENTRIES = 1000
HISTORY_MIN_ENTRIES = 100
HISTORY_MAX_AGE = timedelta(days=7)
_ID_ALPHABET = string.ascii_lowercase
_CONFLICT_RETRIES = 50
# A canary that a trigger only moves on: watched, on time, no reminder due, no run rules.
_ON_TIME = {"late": False, "paused": False, "remind_at": None, **IDLE}

# One addr-spec in dot-atom form (RFC 5322, with RFC 6531's UTF-8): no display
# name, no list, no comment, no quoted local part, no whitespace.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]"
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*[A-Za-z0-9\u0080-\U0010ffff])?"
# The domain may be left out (`root`): Coal Mine accepted local user names, which a
# local mail server delivers, and such an address cannot smuggle anything either.
_ADDR_SPEC = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*(?:@{_LABEL}(?:\.{_LABEL})*)?")


def slugify(name: str) -> str:
    """The slug of a name: lower case, separators folded to one '-', the rest dropped."""
    return re.sub(r"[^-\w]", "", re.sub(r"[-\s_]+", "-", name.lower()))


def history_comment(action: str, comment: str) -> str:
    """'Triggered' or 'Triggered (comment)', as Coal Mine writes them."""
    return f"{action} ({comment})" if comment else action


def _check_length(what: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise BadRequestError(f"{what} is too long ({len(value)} characters; the limit is {limit})")
    return value


class BusinessLogic:
    """Create, change and watch canaries on top of any store.

    `on_change` is called after every successful write, so that a watcher in
    this process can re-plan at once.
    """

    def __init__(
        self,
        store: AbstractStore,
        clock: Clock | None = None,
        on_change: Callable[[], None] | None = None,
        alerts: alert_rules.AlertSettings | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or Clock()
        self.on_change = on_change or (lambda: None)
        self.runs = RunLogic(self)
        self.alerts = alerts or alert_rules.AlertSettings()  # server-wide targets, default repeat

    # --- validation ---------------------------------------------------------------

    @staticmethod
    def check_periodicity(periodicity: float | str) -> float | str:
        """Return a valid periodicity (a number of seconds or a schedule string) or raise 400."""
        if isinstance(periodicity, str):
            _check_length("Periodicity schedule", periodicity, limits.MAX_SCHEDULE_LENGTH)
            problem = number_problem(periodicity)
            if problem is not None:
                raise BadRequestError(problem)
            try:
                parse_schedule(periodicity)
            except ScheduleError as exc:
                raise BadRequestError(f"Invalid periodicity schedule: {exc}") from exc
            return periodicity
        value = float(periodicity)
        if not math.isfinite(value) or value <= 0:
            raise BadRequestError("Periodicity must be a positive number of seconds")
        if value > limits.MAX_PERIODICITY:
            raise BadRequestError(f"Periodicity must be at most {limits.MAX_PERIODICITY:.0f} seconds")
        return value

    @staticmethod
    def _check_name(name: str) -> str:
        if not name:
            raise BadRequestError("Name must not be empty")
        _check_length("Name", name, limits.MAX_NAME_LENGTH)
        if not slugify(name):
            # Coal Mine 0.7.1 gave every such name the slug "", so they answered for each other.
            raise BadRequestError(
                f"Name {name!r} needs at least one letter or digit (its slug would be empty)"
            )
        return name

    @staticmethod
    def check_emails(emails: list[str]) -> list[str]:
        """Return the addresses, each once, if there are not too many and each is one plain
        address, else raise 400."""
        emails = unique_addresses(emails)
        if len(emails) > limits.MAX_EMAILS:
            raise BadRequestError(f"At most {limits.MAX_EMAILS} email addresses are allowed")
        for address in emails:
            _check_length("Email address", address, limits.MAX_EMAIL_LENGTH)
            if address == "-":
                raise BadRequestError('"-" is not an address: email=- alone means no addresses')
            if not _ADDR_SPEC.fullmatch(address) or not address.isprintable():
                raise BadRequestError(
                    f"Bad email address {address!r}: give one plain address (user@example.com, or a "
                    "local user name) "
                    "per email parameter"
                )
        return emails

    # --- rules --------------------------------------------------------------------

    @staticmethod
    def deadline_after(periodicity: float | str, when: datetime) -> datetime:
        """When a canary with this periodicity, last heard of at `when`, is due next."""
        if isinstance(periodicity, str):
            return to_millis(parse_schedule(periodicity).deadline(when))
        return to_millis(when + timedelta(seconds=periodicity))

    def _prune_policy(self, now: datetime) -> PrunePolicy:
        return PrunePolicy(HISTORY_MAX_ENTRIES, HISTORY_MIN_ENTRIES, now - HISTORY_MAX_AGE)

    def targets(self, canary: Canary) -> list[Target]:
        """Where the canary's events go: its own targets, then the server-wide ones."""
        return alert_rules.targets(canary, self.alerts.server_targets)

    def _notifications_for(
        self, kind: str, canary: Canary, now: datetime, deadline: datetime | None, history: list[HistoryEntry]
    ) -> list[NewNotification]:
        new = alert_rules.event(kind, canary, now, deadline, history, self.targets(canary))
        return [new] if new.targets else []

    def _log_change(self, kind: str, canary: Canary) -> None:
        """Said once the change is stored (not on each attempt to store it)."""
        alert_rules.log_change(kind, canary, bool(self.targets(canary)), self.store)

    def _require(self, canary_id: str, *, history: bool = False) -> Canary:
        canary = self.store.get(canary_id, history=history)
        if canary is None:
            raise CanaryNotFoundError()
        return canary

    @staticmethod
    def _expect(canary: Canary) -> dict[str, Any]:
        return {"late": canary.late, "paused": canary.paused, "deadline": canary.deadline}

    def _retry(self, attempt: Callable[[], Any], *, wake: bool = True) -> Any:
        """Run an optimistic read-then-conditional-write until no one else wrote in between;
        then tell watchers in this process (`on_change`), unless `wake` is False."""
        for _ in range(_CONFLICT_RETRIES):
            result = attempt()
            if result is not None:
                if wake:
                    self.on_change()
                return result
        raise StoreUnavailableError("The canary is changing too fast; try again")

    # --- operations -----------------------------------------------------------------

    def find_identifier(
        self, name: str | None = None, slug: str | None = None, identifier: str | None = None
    ) -> str:
        """The id of the canary named by id, else slug, else name."""
        if identifier:
            if self.store.get(identifier, history=False) is None:
                raise CanaryNotFoundError()
            return identifier
        if not slug and name:
            slug = slugify(name)
            if not slug:
                raise CanaryNotFoundError()  # such a name never names a canary (see _check_name)
        found = self.store.id_for_slug(slug) if slug is not None else None
        if found is None:
            raise CanaryNotFoundError()
        return found

    def create(
        self,
        name: str,
        periodicity: float | str,
        description: str = "",
        emails: list[str] | None = None,
        paused: bool = False,
        max_runtime: float | None = None,
        webhooks: list[str] | None = None,
        slacks: list[str] | None = None,
        repeat: float | None = None,
    ) -> Canary:
        """Add a canary; its deadline starts now unless it is created paused."""
        name = self._check_name(name)
        periodicity = self.check_periodicity(periodicity)
        _check_length("Description", description or "", limits.MAX_DESCRIPTION_LENGTH)
        emails = self.check_emails(list(emails or []))
        extra = self.alerts.new_canary_fields(webhooks, slacks, repeat)
        slug = slugify(name)
        if self.store.id_for_slug(slug) is not None:
            raise AlreadyExistsError("slug", slug)
        now = self.clock.now()
        for _ in range(_CONFLICT_RETRIES):
            canary = Canary(
                id="".join(secrets.choice(_ID_ALPHABET) for _ in range(8)),
                name=name,
                slug=slug,
                periodicity=periodicity,
                description=description or "",
                emails=list(emails or []),
                paused=bool(paused),
                late=False,
                deadline=None if paused else self.deadline_after(periodicity, now),
                history=[(now, "Canary created")],
                badge_key=secrets.token_hex(16),
                max_runtime=max_runtime or None,
                **extra,
            )
            try:
                self.store.create(canary)
            except AlreadyExistsError as exc:
                if exc.field_name in ("id", "badge_key"):
                    continue
                raise
            log.info("Created canary %s (%s)", canary.id, name)
            self.on_change()
            return canary
        raise StoreUnavailableError("Could not find a free canary id")

    def get(self, canary_id: str) -> Canary:
        return self._require(canary_id, history=True)

    def delete(self, canary_id: str) -> None:
        if not self.store.delete(canary_id):
            raise CanaryNotFoundError()
        log.info("Deleted canary %s", canary_id)
        alert_rules.withdraw(self.store, canary_id, None, "the canary was deleted")
        self.on_change()

    def update(
        self,
        canary_id: str,
        name: str | None = None,
        periodicity: float | str | None = None,
        description: str | None = None,
        emails: list[str] | None = None,
        max_runtime: float | None = None,
        webhooks: list[str] | None = None,
        slacks: list[str] | None = None,
        repeat: float | None = None,
    ) -> Canary:
        """Change the given attributes; a new periodicity moves the deadline (and maybe lateness)."""
        alerts = alert_rules.AlertArguments.checked(webhooks, slacks, repeat)
        if name is not None:
            self._check_name(name)
        if periodicity is not None:
            periodicity = self.check_periodicity(periodicity)
        if description is not None:
            _check_length("Description", description, limits.MAX_DESCRIPTION_LENGTH)
        if emails is not None:
            emails = self.check_emails(list(emails))

        def attempt() -> Canary | None:
            canary = self._require(canary_id, history=True)
            changes: dict[str, Any] = {}
            if name is not None and name != canary.name:
                changes["name"] = name
                if slugify(name) != canary.slug:
                    changes["slug"] = slugify(name)
            if description is not None and description != canary.description:
                changes["description"] = description
            # Like Coal Mine, the same addresses in another order (or repeated) are no change.
            if emails is not None and set(emails) != set(canary.emails):
                changes["emails"] = list(emails)
            expect = self.runs.max_runtime_changes(canary, max_runtime, changes)
            changes.update(alerts.changes(canary))
            notifications: list[NewNotification] = []
            if periodicity is not None and periodicity != canary.periodicity:
                changes["periodicity"] = periodicity
                if not canary.paused:
                    now = self.clock.now()
                    last = canary.history[0][0] if canary.history else now
                    deadline = self.deadline_after(periodicity, last)
                    changes["deadline"] = deadline
                    late = deadline < now or canary.failed and canary.late  # only a success ends a failure
                    if late != canary.late:
                        changes["late"] = late
                        updated = Canary(**{**canary.__dict__, **changes})
                        notifications = self._notifications_for(
                            "late" if late else "resumed", updated, now, deadline, canary.history or []
                        )
            if not changes:
                raise BadRequestError("No updates specified")
            done = alert_rules.complete_changes(self.store, canary, changes, self.clock.now(), self.alerts)
            history, prune = done.entry, self._prune_policy(self.clock.now())
            if not self.store.update(
                canary_id, changes, expect=expect, history=history, prune=prune, notifications=notifications
            ):
                return None
            if "late" in changes:
                self._log_change("late" if changes["late"] else "resumed", canary)
            return done.finish(self.store)

        return self._retry(attempt)

    def trigger(self, canary_id: str, comment: str = "", **run: Any) -> tuple[bool, bool]:
        """Record a run: new deadline, not late, not paused. Returns (recovered, unpaused)."""
        _check_length("Comment", comment, limits.MAX_COMMENT_LENGTH)
        if run:  # a run id or output (see runs.py)
            return self.runs.report(canary_id, "success", comment, **run)[:2]
        # The usual trigger, of a canary _ON_TIME with a periodicity in seconds, moves
        # its deadline later: one store step (one statement where the store can). It
        # changes nothing the watcher plans by and records nothing to send, so no wake.
        now = self.clock.now()
        entry = (now, history_comment("Triggered", comment))
        read = self.store.postpone(
            canary_id, now, expect=_ON_TIME, history=entry, prune=self._prune_policy(now)
        )
        if read is True:
            return False, False
        if not isinstance(read, Canary):
            raise CanaryNotFoundError()
        first = [read]

        def attempt() -> tuple[bool, bool] | None:
            canary = first.pop() if first else self._require(canary_id)
            if self.runs.in_use(canary):
                return self.runs.trigger_attempt(canary, comment)
            now = self.clock.now()
            deadline = self.deadline_after(canary.periodicity, now)
            entry = (now, history_comment("Triggered", comment))
            notifications: list[NewNotification] = []
            if canary.late:
                full = self._require(canary_id, history=True)  # 404 if deleted meanwhile
                recent = [entry] + (full.history or [])
                notifications = self._notifications_for("resumed", canary, now, deadline, recent)
            ok = self.store.update(
                canary_id,
                {"late": False, "paused": False, "deadline": deadline, **alert_rules.no_reminder(canary)},
                # Everything this decision read: a periodicity changed meanwhile (of a paused
                # canary, whose deadline stays None) or a run started meanwhile makes it retry.
                expect={**self._expect(canary), "periodicity": canary.periodicity, **IDLE},
                history=entry,
                prune=self._prune_policy(now),
                notifications=notifications,
            )
            if not ok:
                return None
            if canary.late:
                self._log_change("resumed", canary)
            # The usual trigger only moves a watched canary's deadline later and
            # records nothing to send: the watcher's plan still holds, so waking
            # it (and the sender) would be work on the hot path for nothing.
            if canary.late or canary.paused or canary.deadline is None or deadline < canary.deadline:
                self.on_change()
            return canary.late, canary.paused

        return self._retry(attempt, wake=False)

    def pause(self, canary_id: str, comment: str = "") -> Canary:
        """Stop watching the canary; its late flag stays as it is."""
        _check_length("Comment", comment, limits.MAX_COMMENT_LENGTH)

        def attempt() -> Canary | None:
            canary = self._require(canary_id)
            if canary.paused:
                raise BadRequestError("Canary is already paused")
            now = self.clock.now()
            changes, expect = self.runs.with_pause(canary, paused=True, now=now)
            changes.update(alert_rules.no_reminder(canary))
            ok = self.store.update(
                canary_id,
                changes,
                expect=expect,
                history=(now, history_comment("Paused", comment)),
                prune=self._prune_policy(now),
            )
            return self._require(canary_id, history=True) if ok else None

        return self._retry(attempt)

    def unpause(self, canary_id: str, comment: str = "") -> Canary:
        """Watch the canary again, with a fresh deadline from now."""
        _check_length("Comment", comment, limits.MAX_COMMENT_LENGTH)

        def attempt() -> Canary | None:
            canary = self._require(canary_id)
            if not canary.paused:
                raise BadRequestError("Canary is not paused")
            now = self.clock.now()
            changes, expect = self.runs.with_pause(canary, paused=False, now=now)
            changes.update(alert_rules.reminder_from(canary, now, paused=False))
            ok = self.store.update(
                canary_id,
                changes,
                expect=expect,
                history=(now, history_comment("Unpaused", comment)),
                prune=self._prune_policy(now),
            )
            return self._require(canary_id, history=True) if ok else None

        return self._retry(attempt)

    def list_canaries(
        self,
        verbose: bool = False,
        paused: bool | None = None,
        late: bool | None = None,
        search: str | None = None,
    ) -> Iterator[Canary]:
        """Canaries in creation order; `search` is a regular expression over name, slug, id, emails.

        Matching a search has a total time budget (limits.SEARCH_TIME_LIMIT) and
        is done before anything is returned, so a pathological pattern is a 400,
        never a truncated answer or a busy server.
        """
        if not search:
            return self.store.iter_canaries(paused=paused, late=late, history=verbose)
        matching = search_canaries(self.store, search, paused, late)
        if not verbose:
            return iter(matching)
        ids = {canary.id for canary in matching}
        return (c for c in self.store.iter_canaries(paused=paused, late=late, history=True) if c.id in ids)

    def last_triggers(self, canary_ids: Sequence[str]) -> dict[str, datetime]:
        """When each canary was last triggered, by its history (left out: not since creation,
        or that entry was pruned)."""
        return self.store.last_entries(canary_ids, "Triggered")

    def periodicity_schedule(self, canary: Canary) -> list[tuple[datetime, datetime, float | str]] | None:
        """How a schedule periodicity plays out from now; None for a plain number."""
        if not isinstance(canary.periodicity, str):
            return None
        return parse_schedule(canary.periodicity).ranges(self.clock.now())

    # --- deadline watching ----------------------------------------------------------------

    def mark_late(self, canary: Canary) -> bool:
        """Mark a due canary late (and record its notification), unless it changed since read.

        The write is conditional on the deadline and flags the watcher saw, so a
        trigger that lands in between wins and no false alarm is recorded.
        """
        now = self.clock.now()
        if canary.paused or canary.late or canary.deadline is None or not canary.deadline < now:
            return False
        full = self.store.get(canary.id, history=True)
        if full is None or self._expect(full) != self._expect(canary):
            return False
        notifications = self._notifications_for("late", full, now, full.deadline, full.history or [])
        changes = {"late": True, **alert_rules.reminder_from(full, now, late=True)}
        ok = self.store.update(canary.id, changes, expect=self._expect(canary), notifications=notifications)
        if ok:
            self._log_change("late", full)
            self.on_change()
        return ok
