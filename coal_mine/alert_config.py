"""Settings of the alert channels and reminders: [webhook], [slack] and [notify] in the
ini file, or WEBHOOK_*, SLACK_URL and NOTIFY_REPEAT in the environment mode."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import formataddr

from coal_mine.alert_rules import MIN_REPEAT, url_problem

# Known settings of each section (merged into config._KNOWN).
KNOWN = {
    "webhook": {"url", "secret", "allow_private", "timeout"},
    "slack": {"url"},
    "notify": {"repeat"},
}
ENVIRONMENT = {
    ("webhook", "url"): "WEBHOOK_URL",
    ("webhook", "secret"): "WEBHOOK_SECRET",
    ("webhook", "allow_private"): "WEBHOOK_ALLOW_PRIVATE",
    ("webhook", "timeout"): "WEBHOOK_TIMEOUT",
    ("slack", "url"): "SLACK_URL",
    ("notify", "repeat"): "NOTIFY_REPEAT",
}

Get = Callable[[str, str], "str | None"]  # (section, key) -> value or None
Where = Callable[[str, str], str]  # (section, key) -> how to name the setting in an error


class AlertConfigError(ValueError):
    """A bad alert setting; the message names it."""


@dataclass(frozen=True)
class AlertConfig:
    webhook_urls: tuple[str, ...] = ()  # server-wide targets: every canary's events
    webhook_secret: str | None = None
    allow_private: bool = False  # also for slack URLs
    webhook_timeout: float = 10.0
    slack_urls: tuple[str, ...] = ()
    repeat: float = 0.0  # default `repeat` of new canaries


def _urls(where: str, value: str | None) -> tuple[str, ...]:
    urls = tuple(dict.fromkeys((value or "").split()))  # several: separated by spaces or lines
    for url in urls:
        problem = url_problem(url)
        if problem:
            raise AlertConfigError(f'{where}: "{url}": {problem}')
    return urls


def _number(where: str, value: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise AlertConfigError(f'{where}: "{value}" is not a number of seconds') from None


def load(get: Get, where: Where) -> AlertConfig:
    """Read the alert settings; AlertConfigError names a bad one."""
    allow, timeout, repeat = (
        get("webhook", "allow_private"),
        get("webhook", "timeout"),
        get("notify", "repeat"),
    )
    config = AlertConfig(
        webhook_urls=_urls(where("webhook", "url"), get("webhook", "url")),
        webhook_secret=get("webhook", "secret") or None,
        slack_urls=_urls(where("slack", "url"), get("slack", "url")),
    )
    if allow is not None:
        lowered = allow.strip().lower()
        if lowered not in ("1", "yes", "true", "on", "0", "no", "false", "off"):
            raise AlertConfigError(
                f'{where("webhook", "allow_private")}: "{allow}" is not a boolean (use true or false)'
            )
        config = replace(config, allow_private=lowered in ("1", "yes", "true", "on"))
    if timeout is not None:
        seconds = _number(where("webhook", "timeout"), timeout)
        if not 0 < seconds <= 300:
            raise AlertConfigError(
                f"{where('webhook', 'timeout')}: {timeout} must be between 0 and 300 seconds"
            )
        config = replace(config, webhook_timeout=seconds)
    if repeat is not None:
        seconds = _number(where("notify", "repeat"), repeat)
        if not (seconds == 0 or MIN_REPEAT <= seconds < 10**9):
            raise AlertConfigError(
                f"{where('notify', 'repeat')}: {repeat} must be 0 (no reminders) "
                f"or at least {MIN_REPEAT:g} seconds"
            )
        config = replace(config, repeat=seconds)
    return config


# --- [email] sender ----------------------------------------------------------------------

_SENDER_FORMS = re.compile(r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<inner>[^<>]*)>|(?P<bare>[^<>\s]+))\s*")
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def sender(where: str, value: str) -> str:
    """[email] sender as `address` or `Display Name <address>` (the forms Coal Mine 0.7
    accepts), normalised, with a non-ASCII domain in its IDNA (xn--) form. Anything
    else is an AlertConfigError naming the setting: a sender that cannot work is
    refused at start, rather than failing every send forever."""
    usage = "give an address (cm@example.com) or a name and an address (Coal Mine <cm@example.com>)"
    match = _SENDER_FORMS.fullmatch(value)
    if match is None or not value.isprintable():
        raise AlertConfigError(f'{where}: "{value}" is not a sender address: {usage}')
    name = (match["name"] or "").strip().strip('"').strip()
    address = (match["inner"] if match["bare"] is None else match["bare"]).strip()
    local, at, domain = address.rpartition("@")
    if not at and _LOCAL.fullmatch(address):  # a local user name (root), as for recipients
        return formataddr((name, address)) if name else address
    if not at or not local or not domain:
        raise AlertConfigError(f'{where}: "{value}" has no user@domain address: {usage}')
    if not _LOCAL.fullmatch(local):
        problem = (
            "non-ASCII user names need SMTPUTF8, which this server does not use"
            if not local.isascii()
            else ("the part before @ is not a plain user name")
        )
        raise AlertConfigError(f'{where}: "{value}": {problem}')
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise AlertConfigError(f'{where}: "{value}": the domain cannot be encoded (IDNA: {exc})') from None
    if not all(_LABEL.fullmatch(label) for label in ascii_domain.rstrip(".").split(".")):
        raise AlertConfigError(f'{where}: "{value}": "{domain}" is not a domain name')
    return formataddr((name, f"{local}@{ascii_domain}")) if name else f"{local}@{ascii_domain}"
