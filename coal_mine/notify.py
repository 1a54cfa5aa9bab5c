"""Late/resumed email: message building, the SMTP notifier and the outbox sender.

Notifications are recorded by the store in the same write as the state change
that caused them (the outbox). The OutboxSender leases one at a time with
`claim_notification`, sends it, and removes it only once the SMTP server has
accepted it; a failure puts it back with a capped exponential backoff. Leases
keep several sending processes on one database from sending an event twice,
and expire if the claimer dies, so a crash never loses one.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import smtplib
import socket
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from coal_mine import email_text
from coal_mine.links import canary_page, with_link
from coal_mine.abstract_store import AbstractStore
from coal_mine.clock import Clock
from coal_mine.config import EmailConfig
from coal_mine.models import Notification
from coal_mine.watcher import BackgroundLoop

log = logging.getLogger(__name__)

# Fold headers only past SMTP's hard limit: Python's folding at 78 would put a long
# Subject on a continuation line of its own.
_POLICY = policy.SMTP.clone(max_line_length=998)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


class DeliveryError(Exception):
    """A message was not accepted. `retryable`: a later try may succeed (4xx, network)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Notifier(ABC):
    """Delivers messages. Implementations may keep a connection open between sends."""

    @abstractmethod
    def send(self, message: EmailMessage) -> None:
        """Deliver one message to its To addresses, or raise DeliveryError."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release any open connection (called when a batch is done)."""


# --- messages -------------------------------------------------------------------------


def one_line(text: str) -> str:
    """`text` with every control character (CR, LF, ...) turned into a space."""
    return _CONTROL.sub(" ", str(text)).strip()


def _addresses(emails: object) -> list[str]:
    if not isinstance(emails, list):
        return []
    return [address for address in (_CONTROL.sub("", str(e)).strip() for e in emails) if address]


def _message_id(notification: Notification, sender: str) -> str:
    """Stable for one event, so that a re-sent message can be recognised as the same."""
    domain = _MSGID_UNSAFE.sub("", sender.rpartition("@")[2]) or "coal-mine.invalid"
    created = notification.created.strftime("%Y%m%d%H%M%S%f")
    event = f"{notification.canary_id}.{notification.kind}.{created}.{notification.id}"
    local = _MSGID_UNSAFE.sub("-", event)
    return f"<coal-mine.{local}@{domain}>"


def build_message(
    notification: Notification,
    sender: str,
    *,
    now: datetime,
    delayed: bool = False,
    base_url: str | None = None,
) -> EmailMessage:
    """The email for one notification. Text from users never reaches a header with a
    line break in it, so it cannot add headers. With `base_url` ([web] base_url) the body
    ends with a link to the canary's dashboard page, after 0.7.1's unchanged text."""
    name = one_line(notification.payload.get("name", ""))
    message = EmailMessage(policy=_POLICY)
    message["From"] = formataddr(("Coal Mine", one_line(sender)))
    message["To"] = ", ".join(_addresses(notification.payload.get("emails")))
    message["Subject"] = email_text.subject(notification.kind, name)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = _message_id(notification, one_line(sender))
    message["X-Coal-Mine-Canary"] = one_line(notification.canary_id)
    message["X-Coal-Mine-Event"] = one_line(notification.kind)
    if delayed:
        # In a header, not the body: the body stays line for line as 0.7.1 writes it.
        message["X-Coal-Mine-Delayed"] = (
            f"event at {notification.created.isoformat()}, sent at {now.isoformat()}"
        )
    text = email_text.body(notification.kind, notification.payload)
    message.set_content(with_link(text, canary_page(base_url, notification.canary_id)), charset="utf-8")
    return message


# --- SMTP -------------------------------------------------------------------------------


def _is_transient(code: int) -> bool:
    return 400 <= code < 500


class SMTPNotifier(Notifier):
    """Sends through one SMTP server ([email] host, port, security, login, timeout).

    The connection is opened on the first send and kept for the next ones until
    `close()`, so a burst of messages costs one connection. Any failure drops it.
    """

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self.port = config.port or (465 if config.security == "ssl" else 25)
        self._smtp: smtplib.SMTP | None = None
        self._local_hostname: str | None = None

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        if self._local_hostname is None:
            # getfqdn() may wait on DNS; do it once, not per connection.
            self._local_hostname = socket.getfqdn()
        smtp: smtplib.SMTP
        if config.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                config.host,
                self.port,
                local_hostname=self._local_hostname,
                timeout=config.timeout,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(
                config.host, self.port, local_hostname=self._local_hostname, timeout=config.timeout
            )
        try:
            smtp.ehlo_or_helo_if_needed()
            if config.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, config.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: EmailMessage) -> None:
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            refused = self._smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"all recipients refused: {exc.recipients}", retryable=all(_is_transient(c) for c in codes)
            ) from exc
        except smtplib.SMTPServerDisconnected as exc:
            self.close()
            raise DeliveryError(f"SMTP server disconnected: {exc}", retryable=True) from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, data error, auth, greeting
            self.close()
            error = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise DeliveryError(
                f"SMTP error {exc.smtp_code}: {error}", retryable=_is_transient(exc.smtp_code)
            ) from exc
        except smtplib.SMTPException as exc:  # e.g. no STARTTLS, no SMTPUTF8, no AUTH
            self.close()
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=False) from exc
        except OSError as exc:  # refused, unreachable, timeout, TLS failure
            self.close()
            raise DeliveryError(
                f"cannot reach SMTP server {self.config.host}:{self.port}: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
        except (ValueError, UnicodeError) as exc:  # a message smtplib cannot put on the wire
            self.close()
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=False) from exc
        if refused:
            log.warning("SMTP server refused some recipients: %s", refused)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


# --- the outbox sender ------------------------------------------------------------------


class OutboxSender(BackgroundLoop):
    """Sends pending notifications until the outbox is empty; never drops one.

    Failures back off per message (1 s, 2 s, 4 s ... up to `retry_max_delay`); a
    failure that says the server itself is unavailable also pauses all sending for
    a growing while, so a dead server is not hammered. With no notifier (no sender
    configured) notifications are kept pending and the count is logged.
    """

    name = "notification-sender"

    def __init__(
        self,
        store: AbstractStore,
        notifier: Notifier | None,
        sender: str | None,
        *,
        clock: Clock | None = None,
        owner: str | None = None,
        rescan_interval: float = 10.0,
        retry_base: float = 1.0,
        retry_max_delay: float = 300.0,
        delayed_after: float = 86400.0,
        lease_seconds: float = 150.0,
        batch_size: int = 100,
        base_url: str | None = None,
    ) -> None:
        super().__init__(clock or Clock())
        self.store = store
        self.base_url = base_url
        self.notifier = notifier if sender else None
        self.sender = sender or ""
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.rescan_interval = rescan_interval
        self.retry_base = retry_base
        self.retry_max_delay = retry_max_delay
        self.delayed_after = timedelta(seconds=delayed_after)
        self.lease = timedelta(seconds=lease_seconds)
        self.batch_size = batch_size
        # Told of each outcome: (notification, channel, None or the DeliveryError); see operations.py.
        self.outcome_listeners: list[Callable[[Notification, str, DeliveryError | None], None]] = []
        self.paused_until: datetime | None = None
        self._server_failures = 0
        self._held_reported: int | None = None

    def step(self) -> bool:
        """Send up to `batch_size` notifications over one connection; True if more are ready."""
        if self.notifier is None:
            self._report_held()
            return False
        now = self.clock.now()
        if self.paused_until is not None and now < self.paused_until:
            return False
        try:
            for _ in range(self.batch_size):
                notification = self.store.claim_notification(now, self.owner, now + self.lease)
                if notification is None:
                    self.notifier.close()
                    return False
                if not self._deliver(notification):
                    self.notifier.close()
                    return False
                now = self.clock.now()
        except BaseException:
            self.notifier.close()
            raise
        return True

    def _deliver(self, notification: Notification) -> bool:
        """Send one claimed notification; False if the server looks unavailable."""
        assert self.notifier is not None
        now = self.clock.now()
        where = f"Notification {notification.id} (canary {notification.canary_id}, {notification.kind})"
        recipients = _addresses(notification.payload.get("emails"))
        if not recipients:
            log.info("%s: no email addresses, nothing to send", where)
            self.store.complete_notification(notification, self.owner)
            return True
        delayed = now - notification.created > self.delayed_after
        try:
            message = build_message(
                notification, self.sender, now=now, delayed=delayed, base_url=self.base_url
            )
            self.notifier.send(message)
        except DeliveryError as exc:
            return self._failed(notification, where, exc)
        except Exception as exc:  # a bug or odd data must not stop the outbox
            log.exception("%s: cannot build or send the message", where)
            return self._failed(notification, where, DeliveryError(str(exc), retryable=False))
        self._server_failures = 0
        self.paused_until = None
        log.info(
            "%s: sent to %s (attempt %d)%s",
            where,
            ", ".join(recipients),
            notification.attempts + 1,
            " [delayed]" if delayed else "",
        )
        self.store.complete_notification(notification, self.owner)
        self._tell(notification, None)
        return True

    def _tell(self, notification: Notification, error: DeliveryError | None) -> None:
        for listener in self.outcome_listeners:
            listener(notification, "email", error)

    def _failed(self, notification: Notification, where: str, error: DeliveryError) -> bool:
        now = self.clock.now()
        attempts = notification.attempts + 1
        if error.retryable:
            delay = min(self.retry_max_delay, self.retry_base * 2 ** (attempts - 1))
        else:
            delay = self.retry_max_delay  # retried all the same: removed only once accepted
        self.store.retry_notification(notification, self.owner, now + timedelta(seconds=delay))
        log.error(
            "%s: delivery failed (attempt %d, %s): %s; next try in %.1f s",
            where,
            attempts,
            "temporary" if error.retryable else "permanent",
            error,
            delay,
        )
        self._tell(notification, error)
        if not error.retryable:
            return True
        self._server_failures += 1
        pause = min(self.retry_max_delay, self.retry_base * 2 ** (self._server_failures - 1))
        self.paused_until = now + timedelta(seconds=pause)
        return False

    def _report_held(self) -> None:
        count = self.store.count_notifications()
        if count != self._held_reported:
            if count:
                log.warning(
                    "%d notification(s) pending and kept: no email sender is configured "
                    "([email] sender / EMAIL_SENDER)",
                    count,
                )
            self._held_reported = count

    def seconds_until_next(self) -> float:
        now = self.clock.now()
        wake_at = now + timedelta(seconds=self.rescan_interval)
        if self.notifier is not None:
            ready = self.store.next_notification_time()
            if ready is not None:
                wake_at = min(wake_at, ready)
            if self.paused_until is not None:
                wake_at = max(wake_at, self.paused_until)
        return max(0.0, (wake_at - now).total_seconds())
