"""The rules about events and their targets: what an event carries, where it goes,
and when pending deliveries are withdrawn. Used by business_logic."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from coal_mine import limits
from coal_mine.abstract_store import AbstractStore
from coal_mine.logs import log_event
from coal_mine.notification_payload import new_notification
from coal_mine.models import (
    BadRequestError,
    Canary,
    HistoryEntry,
    NewNotification,
    Target,
)

log = logging.getLogger(__name__)
rules_log = logging.getLogger("coal_mine.business_logic")  # where these lines always were


def targets(canary: Canary, server_targets: Sequence[Target] = ()) -> list[Target]:
    """The canary's own targets, then the server-wide ones, each once."""
    own: list[Target] = [("email", e) for e in canary.emails]
    own += [("webhook", url) for url in canary.webhooks] + [("slack", url) for url in canary.slacks]
    return list(dict.fromkeys(own + list(server_targets)))


def event(
    kind: str,
    canary: Canary,
    now: datetime,
    deadline: datetime | None,
    history: list[HistoryEntry],
    to: Sequence[Target],
) -> NewNotification:
    """An event of `kind` with a snapshot of the canary, for the targets `to`."""
    return new_notification(kind, canary, now, deadline, history, to)


def recorded_event(store: AbstractStore, canary_id: str, kind: str) -> Any:
    """The id of the event a state change of `kind` just recorded for the canary: its newest
    pending one of that kind (None if already delivered, or unreadable)."""
    try:
        pending = [note for note in store.pending_notifications(canary_id) if note.kind == kind]
    except Exception:  # noqa: BLE001 - a log line must never fail the change it reports
        log.warning("Canary %s: cannot read the id of its %s event for the log", canary_id, kind)
        return None
    if not pending:
        return None
    return pending[-1].event if pending[-1].event is not None else pending[-1].id


def log_change(kind: str, canary: Canary, has_targets: bool, store: AbstractStore | None = None) -> None:
    """Log a stored state change (with the id of the event it recorded, when `store` is
    given), and that nothing is sent when the canary has no targets."""
    state = {"late": "late", "resumed": "reporting again", "reminder": "still late", "failed": "failing"}.get(
        kind, kind
    )
    message = f"Canary {canary.id} ({canary.name}) is {state}"
    event_id = recorded_event(store, canary.id, kind) if has_targets and store is not None else None
    log_event(rules_log, logging.INFO, kind, message, canary_id=canary.id, event_id=event_id)
    if not has_targets:
        rules_log.info(
            "Canary %s has no email addresses or other targets: no %s message to send", canary.id, kind
        )


@dataclass(frozen=True)
class AlertArguments:
    """The checked webhook, slack and repeat arguments of an update (None: not given)."""

    webhooks: list[str] | None
    slacks: list[str] | None
    repeat: float | None

    @classmethod
    def checked(
        cls, webhooks: list[str] | None, slacks: list[str] | None, repeat: float | None
    ) -> AlertArguments:
        """The arguments, or a 400 naming the bad one."""
        return cls(
            None if webhooks is None else check_urls("webhook", webhooks),
            None if slacks is None else check_urls("slack", slacks),
            None if repeat is None else check_repeat(repeat),
        )

    def changes(self, canary: Canary) -> dict[str, Any]:
        """The fields they change (the same URLs in another order are no change)."""
        changes: dict[str, Any] = {}
        for name, urls in (("webhooks", self.webhooks), ("slacks", self.slacks)):
            if urls is not None and set(urls) != set(getattr(canary, name)):
                changes[name] = urls
        if self.repeat is not None and self.repeat != canary.repeat:
            changes["repeat"] = self.repeat
        return changes


@dataclass(frozen=True)
class AlertSettings:
    """The server-wide alert settings business logic applies."""

    server_targets: tuple[Target, ...] = ()  # get every canary's events ([webhook] url, [slack] url)
    default_repeat: float = 0.0  # [notify] repeat

    def new_canary_fields(
        self, webhooks: list[str] | None, slacks: list[str] | None, repeat: float | None
    ) -> dict[str, Any]:
        """The checked alert fields of a new canary (a 400 names a bad one)."""
        return {
            "webhooks": check_urls("webhook", webhooks or []),
            "slacks": check_urls("slack", slacks or []),
            "repeat": check_repeat(self.default_repeat if repeat is None else repeat),
        }


@dataclass(frozen=True)
class UpdateBookkeeping:
    """What an update adds for alerts: the canary as it will be, the targets it loses, and
    the history entry for withdrawing what was pending for them."""

    updated: Canary
    removed: list[Target]
    entry: HistoryEntry | None

    def finish(self, store: AbstractStore) -> Canary:
        """After the update was stored: withdraw what the removed targets had pending."""
        if self.removed:
            withdraw(store, self.updated.id, self.removed)
        if self.entry is not None and self.updated.history is not None:
            self.updated.history = [self.entry, *self.updated.history]
        return self.updated


def complete_changes(
    store: AbstractStore, canary: Canary, changes: dict[str, Any], now: datetime, settings: AlertSettings
) -> UpdateBookkeeping:
    """Add the reminder schedule to an update's `changes` and work out its bookkeeping."""
    if "late" in changes or "repeat" in changes:
        changes.update(reminder_from(Canary(**{**canary.__dict__, **changes}), now))
    updated = Canary(**{**canary.__dict__, **changes})
    after = targets(updated, settings.server_targets)
    removed = [t for t in targets(canary, settings.server_targets) if t not in after]
    return UpdateBookkeeping(updated, removed, withdrawal_entry(store, canary.id, removed, now))


def _describe(removed: Sequence[Target]) -> str:
    return ", ".join(target if channel == "email" else f"{channel} {target}" for channel, target in removed)


def withdrawal_entry(
    store: AbstractStore, canary_id: str, removed: Sequence[Target], now: datetime
) -> HistoryEntry | None:
    """The history entry for withdrawing pending deliveries to removed targets, if any are pending."""
    if not removed:
        return None
    pending = {(n.channel, n.target) for n in store.pending_notifications(canary_id)}
    hit = [target for target in removed if target in pending]
    if not hit:
        return None
    return (now, f"Withdrew pending notifications to removed {_describe(hit)}")


def withdraw(
    store: AbstractStore,
    canary_id: str,
    removed: Sequence[Target] | None,
    why: str = "the target was removed from the canary",
) -> None:
    """Withdraw pending deliveries to `removed` targets. None: the ones a target refused for
    good, as when a canary is deleted (its other pending events are still delivered;
    these would otherwise be retried forever)."""
    for note in store.withdraw_notifications(canary_id, removed, permanent_only=removed is None):
        log.warning(
            "Withdrew pending %s notification %s of canary %s to %s %s (%s; last error: %s)",
            note.kind,
            note.id,
            canary_id,
            note.channel,
            note.target,
            why,
            note.last_error or "none",
        )


# --- validation ---------------------------------------------------------------------------

MIN_REPEAT = 60.0


def check_urls(kind: str, urls: Sequence[str]) -> list[str]:
    """The URLs of a `webhook` or `slack` parameter, each once, or a 400 naming the bad one."""
    if len(urls) > limits.MAX_URLS:
        raise BadRequestError(f"At most {limits.MAX_URLS} {kind} URLs are allowed")
    for url in urls:
        if len(url) > limits.MAX_URL_LENGTH:
            raise BadRequestError(
                f"{kind} URL is too long ({len(url)} characters; the limit is {limits.MAX_URL_LENGTH})"
            )
        problem = url_problem(url)
        if problem:
            raise BadRequestError(f"Bad {kind} URL {url!r}: {problem}")
    return list(dict.fromkeys(urls))


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook address (None: it can)."""
    if not url.isprintable() or any(c.isspace() for c in url):
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"it is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// URLs are allowed"
    if not parts.hostname:
        return "it has no host name"
    if parts.fragment:
        return "it has a #fragment"
    return None


def check_repeat(repeat: float) -> float:
    """A valid reminder interval in seconds (0: no reminders), or a 400."""
    if not math.isfinite(repeat) or repeat < 0 or 0 < repeat < MIN_REPEAT:
        raise BadRequestError(f"Repeat must be 0 (no reminders) or at least {MIN_REPEAT:g} seconds")
    if repeat > limits.MAX_PERIODICITY:
        raise BadRequestError(f"Repeat must be at most {limits.MAX_PERIODICITY:.0f} seconds")
    return float(repeat)


def mask_url(url: str) -> str:
    """`url` with everything that may be a secret (user, path, query) hidden: a webhook
    URL is often a credential. Only the scheme, host and port stay."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}/***"


# --- reminders ----------------------------------------------------------------------------


def no_reminder(canary: Canary) -> dict[str, Any]:
    """The change that stops a canary's reminders (none if it has none due)."""
    return {"remind_at": None} if canary.remind_at is not None else {}


def reminder_from(
    canary: Canary, now: datetime, *, late: bool | None = None, paused: bool | None = None
) -> dict[str, Any]:
    """The change that schedules the canary's next reminder `repeat` seconds from now, if it
    is (or is about to be) late and not paused; else the change that stops them."""
    late = canary.late if late is None else late
    paused = canary.paused if paused is None else paused
    when = now + timedelta(seconds=canary.repeat) if late and not paused and canary.repeat > 0 else None
    return {"remind_at": when} if when != canary.remind_at else {}


def next_reminder(remind_at: datetime, repeat: float, now: datetime) -> datetime:
    """The reminder after the one due at `remind_at`: on the `repeat` grid and after `now`, so
    that an outage or restart never causes a burst of missed reminders."""
    step = timedelta(seconds=repeat)
    missed = max(0, (now - remind_at) // step)
    return remind_at + (missed + 1) * step
