"""The outbox sender: delivers recorded events through their channels, never dropping one.

Events are recorded by the store in the same write as the state change that
caused them, one entry per target (the outbox). An OutboxSender serves one
channel kind: it leases sendable entries with `claim_notifications`, hands them
to the channel, and removes each entry only once its target accepted it; a
failure puts that entry back with a capped exponential backoff. Leases keep
several sending processes on one database from sending an entry twice, are
extended while a send is in progress, and expire if the claimer dies, so a
crash never loses an event.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from coal_mine.abstract_store import AbstractStore
from coal_mine.channels import Channel, DeliveryError
from coal_mine.clock import Clock
from coal_mine.models import CoalMineError, Notification
from coal_mine.watcher import BackgroundLoop
import contextlib

log = logging.getLogger(__name__)

__all__ = ["DeliveryError", "OutboxSender"]

# How often, and after what real-time waits, a failed completion write is retried
# before the entry is left to the in-process journal.
_COMPLETION_RETRIES = (0.05, 0.2, 1.0)


class OutboxSender(BackgroundLoop):
    """Sends pending entries of one channel kind until there are none; never drops one.

    Failures back off per entry (1 s, 2 s, 4 s ... up to `retry_max_delay`); a
    permanent refusal is retried at `retry_max_delay`. When the channel's one
    server seems down (a temporary failure of a whole delivery, `shared_server`),
    all sending of that channel pauses for a growing while. With no channel (for
    email: no sender configured) entries are kept pending and the count is logged.
    """

    def __init__(
        self,
        store: AbstractStore,
        channel: Channel | None,
        *,
        kind: str | None = None,
        clock: Clock | None = None,
        owner: str | None = None,
        rescan_interval: float = 10.0,
        retry_base: float = 1.0,
        retry_max_delay: float = 300.0,
        delayed_after: float = 86400.0,
        lease_seconds: float = 150.0,
        batch_size: int = 100,
        held_reason: str = "no email sender is configured ([email] sender / EMAIL_SENDER)",
    ) -> None:
        super().__init__(clock or Clock())
        self.store = store
        self.channel = channel
        self.kind = kind or (channel.kind if channel else "email")
        self.name = f"{self.kind}-sender"
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.rescan_interval = rescan_interval
        self.retry_base = retry_base
        self.retry_max_delay = retry_max_delay
        self.delayed_after = timedelta(seconds=delayed_after)
        self.lease = timedelta(seconds=lease_seconds)
        self.batch_size = batch_size
        self.held_reason = held_reason
        # Told of each outcome: (entry, channel kind, None or the DeliveryError); see operations.py.
        self.outcome_listeners: list[Callable[[Notification, str, DeliveryError | None], None]] = []
        self.paused_until: datetime | None = None
        self._server_failures = 0
        self._held_reported: int | None = None
        # Entries delivered whose removal could not be written yet: never sent again
        # by this process, their removal is retried first thing in each step.
        self.delivered: dict[object, Notification] = {}
        self._in_flight: list[Notification] = []
        self._in_flight_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None

    # --- the loop ---------------------------------------------------------------------

    def step(self) -> bool:
        """Deliver up to `batch_size` claims; True if more are ready."""
        if self.channel is None:
            self._report_held()
            return False
        if self.delivered:
            self._complete(list(self.delivered.values()), retries=())
        now = self.clock.now()
        if self.paused_until is not None and now < self.paused_until:
            return False
        try:
            for _ in range(self.batch_size):
                claimed = self.store.claim_notifications(
                    now, self.owner, now + self.lease, self.kind, group=self.channel.group
                )
                if not claimed:
                    self.channel.close()
                    return False
                if not self._deliver(claimed):
                    self.channel.close()
                    return False
                now = self.clock.now()
        except BaseException:
            self.channel.close()
            raise
        return True

    def _deliver(self, claimed: list[Notification]) -> bool:
        """Deliver one claim (one event, one or more targets); False if the server looks down."""
        assert self.channel is not None
        done_before = [note for note in claimed if note.id in self.delivered]
        if done_before:  # delivered earlier; only the removal had failed
            self._complete(done_before)
            claimed = [note for note in claimed if note.id not in self.delivered]
            if not claimed:
                return True
        first = claimed[0]
        now = self.clock.now()
        targets = [note.target for note in claimed]
        where = f"Notification {first.event} (canary {first.canary_id}, {first.kind})"
        delayed = now - first.created > self.delayed_after
        reference = ""
        self._start_send(claimed)
        try:
            rendered = self.channel.render(first, targets, now=now, delayed=delayed)
            reference = self.channel.describe(rendered)
            refused = dict(self.channel.deliver(rendered, targets))
            whole: DeliveryError | None = None
        except DeliveryError as exc:
            whole, refused = exc, dict.fromkeys(targets, exc)
        except Exception as exc:  # a bug or odd data must not stop the outbox
            log.exception("%s: cannot render or deliver", where)
            whole = DeliveryError(f"{type(exc).__name__}: {exc}", retryable=False)
            refused = dict.fromkeys(targets, whole)
        finally:
            self._end_send()
        accepted = [note for note in claimed if note.target not in refused]
        if accepted:
            self._server_failures = 0
            self.paused_until = None
            log.info(
                "%s: sent to %s by %s (attempt %d)%s%s",
                where,
                ", ".join(note.target for note in accepted),
                self.kind,
                first.attempts + 1,
                f" [{reference}]" if reference else "",
                " [delayed]" if delayed else "",
            )
            self._complete(accepted)
        for note in claimed:
            if note.target in refused:
                self._failed(note, refused[note.target])
        if whole is not None and whole.retryable and self.channel.shared_server:
            self._server_failures += 1
            pause = min(self.retry_max_delay, self.retry_base * 2 ** (self._server_failures - 1))
            self.paused_until = self.clock.now() + timedelta(seconds=pause)
            return False
        return True

    # --- outcomes ---------------------------------------------------------------------

    def _complete(
        self, notes: Sequence[Notification], retries: Sequence[float] = _COMPLETION_RETRIES
    ) -> None:
        """Remove delivered entries, retrying the write; if it keeps failing, remember them."""
        for wait in (*retries, None):
            try:
                self.store.complete_notifications(notes, self.owner, self.clock.now())
            except CoalMineError as exc:  # the database refuses writes for now
                if wait is None:
                    log.error(
                        "Cannot record delivery of %s: %s; will retry (not resend) while this process runs",
                        ", ".join(str(note.id) for note in notes),
                        exc,
                    )
                    for note in notes:
                        self.delivered[note.id] = note
                    self._keep_leases(notes)
                    return
                time.sleep(wait)
                self._keep_leases(notes)
                continue
            for note in notes:
                self.delivered.pop(note.id, None)
                self._tell(note, None)
            return

    def _keep_leases(self, notes: Sequence[Notification]) -> None:
        with contextlib.suppress(CoalMineError):
            self.store.extend_lease(notes, self.owner, self.clock.now() + self.lease)

    def _tell(self, note: Notification, error: DeliveryError | None) -> None:
        for listener in self.outcome_listeners:
            listener(note, self.kind, error)

    def _failed(self, note: Notification, error: DeliveryError) -> None:
        now = self.clock.now()
        attempts = note.attempts + 1
        if error.retryable:
            delay = min(self.retry_max_delay, self.retry_base * 2 ** (attempts - 1))
        else:
            delay = self.retry_max_delay  # retried all the same: removed only once accepted
        self.store.retry_notification(
            note,
            self.owner,
            now + timedelta(seconds=delay),
            error=str(error),
            permanent=not error.retryable,
            now=now,
        )
        log.error(
            "Notification %s (canary %s, %s) to %s %s: delivery failed (attempt %d, %s): %s; "
            "next try in %.1f s",
            note.event,
            note.canary_id,
            note.kind,
            self.kind,
            note.target,
            attempts,
            "temporary" if error.retryable else "permanent",
            error,
            delay,
        )
        self._tell(note, error)

    # --- leases during a send ---------------------------------------------------------

    def _start_send(self, claimed: list[Notification]) -> None:
        with self._in_flight_lock:
            self._in_flight = list(claimed)
            if self._heartbeat is None or not self._heartbeat.is_alive():
                self._heartbeat = threading.Thread(
                    target=self._keep_alive, name=f"{self.name}-lease", daemon=True
                )
                self._heartbeat.start()

    def _end_send(self) -> None:
        with self._in_flight_lock:
            self._in_flight = []

    def _keep_alive(self) -> None:
        """While a send is in progress, extend its lease every third of the lease time,
        so a slow send is never taken over by another worker."""
        interval = self.lease.total_seconds() / 3
        seen: list[Notification] = []
        while not self._stopping.wait(interval):
            with self._in_flight_lock:
                current = self._in_flight
            if current and current is seen:  # the same send as a third of a lease ago
                try:
                    held = self.store.extend_lease(current, self.owner, self.clock.now() + self.lease)
                    with self._in_flight_lock:
                        still_sending = self._in_flight is current  # not finished meanwhile
                    if not held and still_sending:
                        log.warning("%s: a lease was lost during a send", self.name)
                except CoalMineError as exc:
                    log.warning("%s: cannot extend the lease of a send in progress: %s", self.name, exc)
            seen = current

    # --- idle -------------------------------------------------------------------------

    def _report_held(self) -> None:
        count = sum(1 for note in self.store.pending_notifications() if note.channel == self.kind)
        if count != self._held_reported:
            if count:
                log.warning("%d %s notification(s) pending and kept: %s", count, self.kind, self.held_reason)
            self._held_reported = count

    def seconds_until_next(self) -> float:
        now = self.clock.now()
        wake_at = now + timedelta(seconds=self.rescan_interval)
        if self.channel is not None:
            ready = self.store.next_notification_time(self.kind)
            if ready is not None:
                wake_at = min(wake_at, ready)
            if self.delivered:
                wake_at = min(wake_at, now + timedelta(seconds=1))
            if self.paused_until is not None:
                wake_at = max(wake_at, self.paused_until)
        return max(0.0, (wake_at - now).total_seconds())
