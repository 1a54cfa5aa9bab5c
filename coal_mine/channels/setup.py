"""The senders of a background process: one OutboxSender per channel kind, built from
the configuration. A new kind adds one entry here."""

from __future__ import annotations

import logging
from typing import Any

from coal_mine.abstract_store import AbstractStore
from coal_mine.channels import Channel
from coal_mine.channels.email import EmailChannel, SMTPNotifier
from coal_mine.channels.slack import SlackChannel
from coal_mine.channels.webhook import WebhookChannel
from coal_mine.clock import Clock
from coal_mine.config import Config
from coal_mine.models import Target
from coal_mine.notify import OutboxSender

log = logging.getLogger(__name__)


def server_targets(config: Config) -> list[Target]:
    """The targets that get every canary's events ([webhook] url, [slack] url)."""
    alerts = config.alerts
    return [("webhook", url) for url in alerts.webhook_urls] + [("slack", url) for url in alerts.slack_urls]


def base_url(config: Config) -> str | None:
    """The dashboard's address, for links in messages (when a dashboard is configured)."""
    return config.web.base_url


def channels(config: Config) -> dict[str, Channel | None]:
    """Each channel kind and its channel (None: it cannot send, its events are kept)."""
    alerts, link = config.alerts, base_url(config)
    email = (
        EmailChannel(config.email.sender, SMTPNotifier(config.email), link) if config.email.sender else None
    )
    private, timeout = alerts.allow_private, alerts.webhook_timeout
    return {
        "email": email,
        "webhook": WebhookChannel(
            secret=alerts.webhook_secret, allow_private=private, timeout=timeout, base_url=link
        ),
        "slack": SlackChannel(allow_private=private, timeout=timeout, base_url=link),
    }


def senders(config: Config, store: AbstractStore, clock: Clock) -> list[OutboxSender]:
    """One sender per channel kind."""
    settings = config.watcher
    if not config.email.sender:
        log.warning(
            "No email sender configured ([email] sender / EMAIL_SENDER): "
            "late and resumed notifications are recorded but not sent"
        )
    common: dict[str, Any] = {
        "clock": clock,
        "rescan_interval": settings.rescan_interval,
        "retry_max_delay": settings.retry_max_delay,
        "delayed_after": settings.delayed_after,
    }
    # Longer than one send usually takes (each SMTP step has the timeout, a POST has its
    # own); a live sender extends its lease every third of it anyway, and a dead
    # sender's expires after this long, so a restarted process takes over soon.
    leases = {"email": 4 * config.email.timeout + 30, "webhook": 2 * config.alerts.webhook_timeout + 10}
    return [
        OutboxSender(store, channel, kind=kind, lease_seconds=leases.get(kind, leases["webhook"]), **common)
        for kind, channel in channels(config).items()
    ]
