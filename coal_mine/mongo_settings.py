"""MongoDB settings: validate them, and build the client with our defaults.

Every setting is checked before anything connects, so a bad one stops the
server at start with one line naming it. The client itself connects lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any
from urllib.parse import parse_qsl

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ConfigurationError, InvalidName
from pymongo.uri_parser import split_options

# Unless configured otherwise:
# - fail a request after 5 s without a primary instead of pymongo's 30 s, so an
#   outage is a prompt 503 rather than a hang;
# - acknowledge a write only once a majority of the replica set has it, so an
#   acknowledged trigger, claim or completion survives a failover (MongoDB 4.4's
#   default is w:1, which a failover can roll back). `w=` in the URI or the ini
#   overrides it.
DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "w": "majority",
}
# Chosen by us, never by the user: times come back as aware UTC datetimes.
_FIXED_OPTIONS: dict[str, Any] = {"tz_aware": True, "tzinfo": UTC, "connect": False}


class MongoSettingsError(ValueError):
    """A malformed MongoDB setting; `setting` is "hosts", "database", an option key, or None."""

    def __init__(self, setting: str | None, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def _first_line(exc: BaseException) -> str:
    return str(exc).split(" Refer to docstring")[0].splitlines()[0] if str(exc) else type(exc).__name__


def _uri_options(hosts: str) -> list[tuple[str, str]]:
    """The options of a mongodb:// URI, each checked as pymongo checks it (which would
    otherwise only warn about an unknown or invalid one, and drop it)."""
    if "://" not in hosts or "?" not in hosts:
        return []
    pairs = parse_qsl(hosts.split("?", 1)[1], keep_blank_values=True)
    for key, value in pairs:
        try:
            split_options(f"{key}={value}", validate=True, warn=False)
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise MongoSettingsError("hosts", f"option {key}: {_first_line(exc)}") from None
    return pairs


def connect(
    hosts: str,
    database: str | None = None,
    username: str | None = None,
    password: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[MongoClient[Any], Database[Any]]:
    """The client (not yet connected) and the database, or MongoSettingsError naming
    the bad setting: "hosts" (the URI, its options included), "database" or an option's key."""
    options = dict(options or {})
    target: str | list[str] = hosts if "://" in hosts else [h.strip() for h in hosts.split(",")]
    uri_options = _uri_options(hosts)
    try:
        MongoClient(target, **_FIXED_OPTIONS).close()
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise MongoSettingsError("hosts", str(exc)) from None
    for key, value in options.items():
        try:
            MongoClient(target, **{key: value}, **_FIXED_OPTIONS).close()
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise MongoSettingsError(key, _first_line(exc)) from None
    given = {key.lower() for key in options} | {key.lower() for key, _ in uri_options}
    client_options = {k: v for k, v in DEFAULT_CLIENT_OPTIONS.items() if k.lower() not in given}
    client_options.update(options)
    if username:
        client_options.update(username=username, password=password)
    try:
        client: MongoClient[Any] = MongoClient(target, **client_options, **_FIXED_OPTIONS)
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise MongoSettingsError(None, str(exc)) from None
    try:
        db = client[database] if database else client.get_default_database()
    except (ConfigurationError, InvalidName, ValueError) as exc:
        client.close()
        message = "no database given (name it in the URI, or set [mongodb] database)"
        raise MongoSettingsError("database", message if not database else str(exc)) from None
    return client, db
