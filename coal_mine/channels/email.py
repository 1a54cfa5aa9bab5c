"""The email channel: Coal Mine's late/resumed messages, sent through one SMTP server.

All recipients of one event get one message (To: every address of the canary, as
Coal Mine sends it); the envelope names only the recipients still to be served,
and each recipient's refusal is reported on its own.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any

from coal_mine import email_text
from coal_mine.channels import Channel, DeliveryError
from coal_mine.config import EmailConfig
from coal_mine.links import canary_page, with_link
from coal_mine.models import Notification

log = logging.getLogger(__name__)

# Fold headers only past SMTP's hard limit: Python's folding at 78 would put a long
# Subject on a continuation line of its own.
_POLICY = policy.SMTP.clone(max_line_length=998)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
SUBJECTS = {
    "reminder": "[STILL LATE] {name} has not reported",
    "test": "[TEST] {name}: test notification",
}


def one_line(text: object) -> str:
    """`text` with every control character (CR, LF, ...) turned into a space."""
    return _CONTROL.sub(" ", str(text)).strip()


def addresses(emails: object) -> list[str]:
    """The usable addresses of a payload's `emails`."""
    if not isinstance(emails, list):
        return []
    return [address for address in (_CONTROL.sub("", str(e)).strip() for e in emails) if address]


def _message_id(notification: Notification, sender: str) -> str:
    """Stable for one event, so that a re-sent message can be recognised as the same."""
    domain = _MSGID_UNSAFE.sub("", sender.rpartition("@")[2]) or "coal-mine.invalid"
    created = notification.created.strftime("%Y%m%d%H%M%S%f")
    event = notification.event if notification.event is not None else notification.id
    local = _MSGID_UNSAFE.sub("-", f"{notification.canary_id}.{notification.kind}.{created}.{event}")
    return f"<coal-mine.{local}@{domain}>"


def subject(kind: str, name: str) -> str:
    """The subject: 0.7.1's for late and resumed, ours for the kinds 0.7.1 does not have."""
    if kind in ("late", "resumed", "failed"):
        return email_text.subject(kind, name)
    return SUBJECTS.get(kind, "[{kind}] {name}").format(name=name, kind=one_line(kind).upper())


def body(kind: str, payload: dict[str, Any]) -> str:
    """The body: 0.7.1's text for late and resumed; a reminder reads like a late message
    and a test like a late one with a first line saying it is a test."""
    if kind in ("resumed", "failed"):
        return email_text.body(kind, payload)
    text = email_text.body("late", payload)
    if kind == "reminder":
        return "This canary is still late.\n\n" + text
    if kind == "test":
        return "This is a test notification; nothing happened to the canary.\n\n" + text
    return text


def build_message(
    notification: Notification,
    sender: str,
    *,
    now: datetime,
    delayed: bool = False,
    base_url: str | None = None,
) -> EmailMessage:
    """The email for one event. Text from users never reaches a header with a
    line break in it, so it cannot add headers."""
    name = one_line(notification.payload.get("name", ""))
    message = EmailMessage(policy=_POLICY)
    display, address = parseaddr(one_line(sender))
    message["From"] = formataddr((display or "Coal Mine", address or one_line(sender)))
    message["To"] = ", ".join(addresses(notification.payload.get("emails")))
    message["Subject"] = subject(notification.kind, name)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = _message_id(notification, address or one_line(sender))
    message["X-Coal-Mine-Canary"] = one_line(notification.canary_id)
    message["X-Coal-Mine-Event"] = one_line(notification.kind)
    if delayed:
        # In a header, not the body: the body stays line for line as 0.7.1 writes it.
        message["X-Coal-Mine-Delayed"] = (
            f"event at {notification.created.isoformat()}, sent at {now.isoformat()}"
        )
    text = body(notification.kind, notification.payload)
    # With [web] base_url, the canary's dashboard page after the (unchanged) text.
    message.set_content(with_link(text, canary_page(base_url, notification.canary_id)), charset="utf-8")
    return message


# --- SMTP -------------------------------------------------------------------------------


def _is_transient(code: int) -> bool:
    return 400 <= code < 500


def _reply(code: int, text: bytes | str) -> str:
    return f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"


class SMTPNotifier:
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

    def send(
        self, message: EmailMessage, recipients: Sequence[str] | None = None
    ) -> dict[str, DeliveryError]:
        """Send to `recipients` (default: the To addresses); return the refused ones.
        Raises DeliveryError when the message was not accepted for anyone."""
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            refused = self._smtp.send_message(message, to_addrs=list(recipients) if recipients else None)
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                "all recipients refused: "
                + "; ".join(f"{rcpt}: {_reply(code, text)}" for rcpt, (code, text) in exc.recipients.items()),
                retryable=all(_is_transient(c) for c in codes),
            ) from exc
        except smtplib.SMTPServerDisconnected as exc:
            self.close()
            raise DeliveryError(f"SMTP server disconnected: {exc}", retryable=True) from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, data error, auth, greeting
            self.close()
            raise DeliveryError(
                f"SMTP error {_reply(exc.smtp_code, exc.smtp_error)}", retryable=_is_transient(exc.smtp_code)
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
        return {
            rcpt: DeliveryError(f"recipient refused: {_reply(code, text)}", retryable=_is_transient(code))
            for rcpt, (code, text) in refused.items()
        }

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


class EmailChannel(Channel):
    """Targets are email addresses; one message per event for all its recipients."""

    kind = "email"
    group = True
    shared_server = True

    def __init__(self, sender: str, notifier: SMTPNotifier, base_url: str | None = None) -> None:
        self.sender = sender
        self.notifier = notifier
        self.base_url = base_url

    def render(
        self, event: Notification, targets: Sequence[str], *, now: datetime, delayed: bool
    ) -> EmailMessage:
        return build_message(event, self.sender, now=now, delayed=delayed, base_url=self.base_url)

    def deliver(self, rendered: EmailMessage, targets: Sequence[str]) -> Mapping[str, DeliveryError]:
        wanted = [address for address in targets if addresses([address])]
        refused: dict[str, DeliveryError] = {
            t: DeliveryError(f"not a usable address: {t!r}", retryable=False)
            for t in targets
            if t not in wanted
        }
        if wanted:
            refused.update(self.notifier.send(rendered, wanted))
        for rcpt, error in refused.items():
            log.warning("Email to %s refused: %s", rcpt, error)
        return refused

    def describe(self, rendered: EmailMessage) -> str:
        return f"Message-ID {rendered['Message-ID']}"

    def close(self) -> None:
        self.notifier.close()
