"""Server configuration: read once, from coal-mine.ini or the environment, into typed objects.

Anything malformed raises ConfigError with one line naming the setting, before
the server starts serving.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

from coal_mine import alert_config
from coal_mine.limits import MAX_REQUEST_BODY

CONFIG_FILE = "coal-mine.ini"
SEARCH_DIRS = (".", "/etc", "/usr/local/etc")
DEFAULT_SQLITE_PATH = "coal-mine.sqlite3"
SMTP_SECURITY = ("none", "starttls", "ssl")
LOG_FORMATS = ("text", "json")

Getter = Callable[[str], "str | None"]  # a setting's value by key, None when unset
Namer = Callable[[str], str]  # how to name a setting in an error message


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class LoggingConfig:
    file: str | None = None
    rotate: bool = False
    max_size: int = 1048576
    backup_count: int = 5
    format: str = "text"


@dataclass(frozen=True)
class SQLiteConfig:
    path: str = DEFAULT_SQLITE_PATH
    synchronous: str = "normal"


@dataclass(frozen=True)
class MongoConfig:
    """`options` go to MongoClient as they are; `source` names the hosts setting in errors."""

    hosts: str
    database: str | None = None
    username: str | None = None
    password: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    source: str = "[mongodb] hosts"

    def setting_name(self, key: str | None) -> str:
        """How to name a setting in an error ("hosts", "database" or an option key)."""
        if key == "hosts" or (key == "database" and self.source != "[mongodb] hosts"):
            return self.source
        return f"[mongodb] {key}" if key else "[mongodb]"


@dataclass(frozen=True)
class PostgresConfig:
    """`uri` is a libpq URI or conninfo string; `source` names where it came from, for errors.
    `synchronous_commit` "off": a commit does not wait for PostgreSQL's log flush (README)."""

    uri: str
    source: str = "[postgresql] uri"
    synchronous_commit: str = "on"


# The environment variables that name a PostgreSQL database, the first set one winning.
POSTGRESQL_VARIABLES = ("POSTGRESQL_URI", "DATABASE_URL")
STORE_SECTIONS = ("mongodb", "postgresql", "sqlite")


@dataclass(frozen=True)
class EmailConfig:
    sender: str | None = None
    host: str = "localhost"
    port: int | None = None  # None: 465 for ssl, 25 otherwise
    username: str | None = None
    password: str | None = None
    security: str = "none"
    timeout: float = 30.0


@dataclass(frozen=True)
class WsgiConfig:
    port: int = 80
    host: str = ""
    auth_key: str | None = None
    read_only_auth_key: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    workers: int = 16
    request_timeout: float = 10.0
    max_body: int = 10000  # bytes of a POST body kept as a job's output


@dataclass(frozen=True)
class WebConfig:
    """The dashboard: the address alerts link to (None: no link) and how long a sign-in lasts."""

    base_url: str | None = None
    session_lifetime: float = 43200.0


@dataclass(frozen=True)
class WatcherConfig:
    rescan_interval: float = 10.0
    delayed_after: float = 86400.0
    retry_max_delay: float = 300.0


@dataclass(frozen=True)
class HealthConfig:
    worker_timeout: float = 60.0  # a heartbeat older than this is a dead worker


@dataclass(frozen=True)
class WatchdogConfig:
    url: str | None = None  # requested after deadline scans, at most once a minute
    timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    """Everything the server needs. `source` says where it came from."""

    source: str
    store: SQLiteConfig | MongoConfig | PostgresConfig
    email: EmailConfig = field(default_factory=EmailConfig)
    wsgi: WsgiConfig = field(default_factory=WsgiConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    web: WebConfig = field(default_factory=WebConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    alerts: alert_config.AlertConfig = field(default_factory=alert_config.AlertConfig)


# Known settings of each section; [mongodb] also passes unknown keys to MongoClient.
_KNOWN = {
    "logging": {"file", "rotate", "max_size", "backup_count", "format"},
    "sqlite": {"path", "synchronous"},
    "mongodb": {"hosts", "database", "username", "password"},
    "postgresql": {"uri", "synchronous_commit"},
    "email": {"sender", "host", "port", "username", "password", "security", "timeout"},
    "wsgi": {
        "port",
        "host",
        "auth_key",
        "read_only_auth_key",
        "certfile",
        "keyfile",
        "workers",
        "request_timeout",
        "max_body",
    },
    "watcher": {"rescan_interval", "delayed_after", "retry_max_delay"},
    "web": {"base_url", "session_lifetime"},
    "health": {"worker_timeout"},
    "watchdog": {"url", "timeout"},
    **alert_config.KNOWN,
}


def _int(where: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f'{where}: "{value}" is not a whole number') from None
    if not low <= number <= high:
        raise ConfigError(f"{where}: {number} is out of range ({low}..{high})")
    return number


def _seconds(where: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ConfigError(f'{where}: "{value}" is not a number of seconds') from None
    if not 0 < number < 10**9:
        raise ConfigError(f"{where}: {value} must be a positive number of seconds")
    return number


def _bool(where: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f'{where}: "{value}" is not a boolean (use true or false)')


def _choice(where: str, value: str, choices: tuple[str, ...]) -> str:
    lowered = value.strip().lower()
    if lowered not in choices:
        raise ConfigError(f'{where}: "{value}" must be one of {", ".join(choices)}')
    return lowered


def _pair(section: str, username: str | None, password: str | None) -> None:
    if bool(username) != bool(password):
        raise ConfigError(f"[{section}] username and password must be given together")


Parser = Callable[[str, str], Any]  # (setting name for errors, raw value) -> typed value


def _text(_where: str, value: str) -> str:
    return value


def _port(where: str, value: str) -> int:
    return _int(where, value, 1, 65535)


def _given(get: Getter, where: Namer, parsers: Mapping[str, Parser]) -> dict[str, Any]:
    """The settings that are set, parsed; the dataclasses' own defaults fill in the rest."""
    return {key: parse(where(key), value) for key, parse in parsers.items() if (value := get(key))}


def _sender(where: str, value: str) -> str:
    try:
        return alert_config.sender(where, value)
    except alert_config.AlertConfigError as exc:
        raise ConfigError(str(exc)) from None


_EMAIL_PARSERS: dict[str, Parser] = {
    "sender": _sender,
    "host": _text,
    "port": _port,
    "username": _text,
    "password": _text,
    "security": lambda where, value: _choice(where, value, SMTP_SECURITY),
    "timeout": _seconds,
}
_WSGI_PARSERS: dict[str, Parser] = {
    "port": _port,
    "host": _text,
    "auth_key": _text,
    "read_only_auth_key": _text,
    "certfile": _text,
    "keyfile": _text,
    "workers": lambda where, value: _int(where, value, 1, 1024),
    "request_timeout": _seconds,
    "max_body": lambda where, value: _int(where, value, 0, MAX_REQUEST_BODY),
}
_SQLITE_PARSERS: dict[str, Parser] = {
    "path": _text,
    "synchronous": lambda where, value: _choice(where, value, ("normal", "full")),
}
_POSTGRESQL_PARSERS: dict[str, Parser] = {
    "synchronous_commit": lambda where, value: _choice(where, value, ("on", "off")),
}
_LOGGING_PARSERS: dict[str, Parser] = {
    "file": _text,
    "rotate": _bool,
    "max_size": lambda where, value: _int(where, value, 1, 2**40),
    "backup_count": lambda where, value: _int(where, value, 0, 1000),
    "format": lambda where, value: _choice(where, value, LOG_FORMATS),
}
_WATCHER_PARSERS: dict[str, Parser] = {key: _seconds for key in _KNOWN["watcher"]}
_HEALTH_PARSERS: dict[str, Parser] = {"worker_timeout": _seconds}


def _url(where: str, value: str) -> str:
    if not value.lower().startswith(("http://", "https://")):
        raise ConfigError(f'{where}: "{value}" is not an http:// or https:// URL')
    return value


_WATCHDOG_PARSERS: dict[str, Parser] = {"url": _url, "timeout": _seconds}


def _base_url(where: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f'{where}: "{value}" is not an http:// or https:// address (like https://coal-mine.example.com)'
        )
    return value.rstrip("/")


_WEB_PARSERS: dict[str, Parser] = {"base_url": _base_url, "session_lifetime": _seconds}


def _email(get: Getter, where: Namer) -> EmailConfig:
    return EmailConfig(**_given(get, where, _EMAIL_PARSERS))


def _wsgi(get: Getter, where: Namer) -> WsgiConfig:
    certfile, keyfile = get("certfile"), get("keyfile")
    if bool(certfile) != bool(keyfile):
        raise ConfigError(f"{where('certfile')} and {where('keyfile')} must be given together")
    for name, path in (("certfile", certfile), ("keyfile", keyfile)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{where(name)}: no such file {path}")
    return WsgiConfig(**_given(get, where, _WSGI_PARSERS))


def _postgresql_uri(where: str, uri: str) -> PostgresConfig:
    uri = uri.strip()
    if "://" in uri and not uri.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{where}: not a PostgreSQL URI (postgresql://user:password@host:port/database)")
    return PostgresConfig(uri=uri, source=where)


def environment_store(environ: Mapping[str, str]) -> MongoConfig | PostgresConfig | None:
    """The store the environment names, or None: MONGODB_URI, else POSTGRESQL_URI, else
    DATABASE_URL (Heroku's). MongoDB and PostgreSQL both named is an error naming both."""
    postgres = next((name for name in POSTGRESQL_VARIABLES if (environ.get(name) or "").strip()), None)
    mongo = (environ.get("MONGODB_URI") or "").strip()
    if mongo and postgres:
        raise ConfigError(f"MONGODB_URI and {postgres} both name a store; set only one of them")
    if mongo:
        return MongoConfig(hosts=mongo, source="MONGODB_URI")
    if postgres:
        return _postgresql_uri(postgres, environ[postgres])
    return None


def _alerts(get: alert_config.Get, where: alert_config.Where) -> alert_config.AlertConfig:
    try:
        return alert_config.load(get, where)
    except alert_config.AlertConfigError as exc:
        raise ConfigError(str(exc)) from None


def from_environment(environ: Mapping[str, str]) -> Config:
    """The environment mode, used when MONGODB_URI, POSTGRESQL_URI or DATABASE_URL is set
    (as on Heroku)."""
    store = environment_store(environ)
    if store is None:
        raise ConfigError("no store in the environment (MONGODB_URI, POSTGRESQL_URI or DATABASE_URL)")

    def getter(names: dict[str, str]) -> Getter:
        return lambda key: (environ.get(names[key]) or None) if key in names else None

    def where(names: dict[str, str]) -> Namer:
        return lambda key: names.get(key, key.upper())

    email_names = {
        "sender": "EMAIL_SENDER",
        "host": "SMTP_HOST",
        "port": "SMTP_PORT",
        "username": "SMTP_USERNAME",
        "password": "SMTP_PASSWORD",
        "security": "SMTP_SECURITY",
        "timeout": "SMTP_TIMEOUT",
    }
    wsgi_names = {
        "port": "WSGI_PORT",
        "auth_key": "WSGI_AUTH_KEY",
        "read_only_auth_key": "WSGI_READ_ONLY_AUTH_KEY",
        "certfile": "WSGI_CERTFILE",
        "keyfile": "WSGI_KEYFILE",
        "host": "WSGI_HOST",
        "workers": "WSGI_WORKERS",
        "max_body": "WSGI_MAX_BODY",
    }
    web_names = {"base_url": "BASE_URL", "session_lifetime": "WEB_SESSION_LIFETIME"}
    email = _email(getter(email_names), where(email_names))
    if bool(email.username) != bool(email.password):
        raise ConfigError("SMTP_USERNAME and SMTP_PASSWORD must be given together")
    return Config(
        source="environment",
        store=store,
        email=email,
        wsgi=_wsgi(getter(wsgi_names), where(wsgi_names)),
        web=WebConfig(**_given(getter(web_names), where(web_names), _WEB_PARSERS)),
        watchdog=WatchdogConfig(
            **_given(getter({"url": "WATCHDOG_URL"}), where({"url": "WATCHDOG_URL"}), _WATCHDOG_PARSERS)
        ),
        alerts=_alerts(
            lambda s, k: environ.get(alert_config.ENVIRONMENT[s, k]) or None,
            lambda s, k: alert_config.ENVIRONMENT[s, k],
        ),
    )


def from_ini(path: str) -> Config:
    """Read one coal-mine.ini file."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {' '.join(str(exc).split())}") from None
    for section_name in parser.sections():
        known = _KNOWN.get(section_name)
        if known is None:
            raise ConfigError(f"{path}: unknown section [{section_name}]")
        if section_name != "mongodb":
            for key in parser[section_name]:
                if key not in known:
                    raise ConfigError(f"{path}: unknown setting [{section_name}] {key}")

    def getter(section_name: str) -> Getter:
        def get(key: str) -> str | None:
            value = parser.get(section_name, key, fallback=None)
            return value.strip() if value is not None and value.strip() else None

        return get

    def where(section_name: str) -> Namer:
        return lambda key: f"[{section_name}] {key}"

    def given(section_name: str, parsers: Mapping[str, Parser]) -> dict[str, Any]:
        return _given(getter(section_name), where(section_name), parsers)

    if parser.has_section("email"):
        email = _email(getter("email"), where("email"))
        if not email.sender:
            raise ConfigError(f"{path}: [email] sender is required")
        _pair("email", email.username, email.password)
    else:
        email = EmailConfig()

    store: SQLiteConfig | MongoConfig | PostgresConfig
    stores = [f"[{name}]" for name in STORE_SECTIONS if parser.has_section(name)]
    if len(stores) > 1:
        raise ConfigError(f"{path}: {' and '.join(stores)} cannot be given together (one store only)")
    if parser.has_section("postgresql"):
        uri = getter("postgresql")("uri")
        if not uri:
            raise ConfigError(f"{path}: [postgresql] uri is required")
        store = replace(_postgresql_uri("[postgresql] uri", uri), **given("postgresql", _POSTGRESQL_PARSERS))
    elif parser.has_section("mongodb"):
        settings = dict(parser["mongodb"])
        hosts = settings.pop("hosts", "").strip()
        if not hosts:
            raise ConfigError(f"{path}: [mongodb] hosts is required")
        username, password = settings.pop("username", None), settings.pop("password", None)
        _pair("mongodb", username, password)
        database = settings.pop("database", None)
        for key, value in settings.items():
            if not value.strip():
                raise ConfigError(f"{path}: [mongodb] {key} is empty")
        store = MongoConfig(
            hosts=hosts,
            database=database.strip() if database else None,
            username=username or None,
            password=password or None,
            options={key: value.strip() for key, value in settings.items()},
        )
    else:
        store = SQLiteConfig(**given("sqlite", _SQLITE_PARSERS))

    return Config(
        source=str(Path(path).resolve()),
        store=store,
        email=email,
        wsgi=_wsgi(getter("wsgi"), where("wsgi")),
        logging=LoggingConfig(**given("logging", _LOGGING_PARSERS)),
        watcher=WatcherConfig(**given("watcher", _WATCHER_PARSERS)),
        web=WebConfig(**given("web", _WEB_PARSERS)),
        health=HealthConfig(**given("health", _HEALTH_PARSERS)),
        watchdog=WatchdogConfig(**given("watchdog", _WATCHDOG_PARSERS)),
        alerts=_alerts(lambda s, k: getter(s)(k), lambda s, k: f"{path}: [{s}] {k}"),
    )


def find_config_file(search_dirs: tuple[str, ...] = SEARCH_DIRS) -> str | None:
    """The first coal-mine.ini in the search directories, or None."""
    for directory in search_dirs:
        candidate = os.path.join(directory, CONFIG_FILE)
        if os.path.isfile(candidate):
            return candidate
    return None


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    search_dirs: tuple[str, ...] = SEARCH_DIRS,
) -> Config:
    """The server's configuration: an explicit file, else the environment mode when
    MONGODB_URI, POSTGRESQL_URI or DATABASE_URL is set, else the first coal-mine.ini
    found, else the defaults (SQLite)."""
    environ = os.environ if environ is None else environ
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"--config: no such file {path}")
        return from_ini(path)
    if environment_store(environ) is not None:
        return from_environment(environ)
    found = find_config_file(search_dirs)
    if found:
        return from_ini(found)
    return Config(source="defaults", store=SQLiteConfig())
