"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, for tests and bench."""

from __future__ import annotations

import email
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.helpers import free_port


@dataclass
class Received:
    """One message as the SMTP server accepted it."""

    arrived: float  # time.time() at acceptance
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def canary(self) -> str:
        return str(self.message["X-Coal-Mine-Canary"])

    @property
    def event(self) -> str:
        return str(self.message["X-Coal-Mine-Event"])

    def body(self) -> str:
        return self.message.get_content()


class SMTPSink:
    """Start with `start()`, stop with `stop()`; can be restarted on the same port.

    `fail_with`, when set (e.g. "451 try later"), makes the server refuse DATA;
    `refuse` maps recipient addresses to the reply that refuses them at RCPT
    (e.g. "550 5.1.1 no such user", "450 4.2.0 greylisted").
    """

    def __init__(self, port: int | None = None, **smtp_kwargs: Any) -> None:
        self.port = port or free_port()
        self.messages: list[Received] = []
        self.fail_with: str | None = None
        self.refuse: dict[str, str] = {}
        self.connections = 0  # EHLO/HELO greetings seen, i.e. SMTP sessions
        self._cond = threading.Condition()
        self._smtp_kwargs = smtp_kwargs
        self._controller: Controller | None = None

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.connections += 1
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_with:
            return self.fail_with
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=policy.default)
        with self._cond:
            self.messages.append(
                Received(time.time(), envelope.mail_from, list(envelope.rcpt_tos), raw, message)
            )  # type: ignore[arg-type]
            self._cond.notify_all()
        return "250 OK"

    def start(self) -> SMTPSink:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **self._smtp_kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least `count` messages arrived; returns all of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} messages, got {len(self.messages)}: "
                        f"{[m.subject for m in self.messages]}"
                    )
                self._cond.wait(left)
            return list(self.messages)

    def __enter__(self) -> SMTPSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
