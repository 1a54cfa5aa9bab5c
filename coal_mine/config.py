"""Server configuration: read once, from coal-mine.ini or the environment, into typed objects.

Anything malformed raises ConfigError with one line naming the setting, before
the server starts serving.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FILE = "coal-mine.ini"
SEARCH_DIRS = (".", "/etc", "/usr/local/etc")
DEFAULT_SQLITE_PATH = "coal-mine.sqlite3"
SMTP_SECURITY = ("none", "starttls", "ssl")

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


@dataclass(frozen=True)
class WatcherConfig:
    rescan_interval: float = 10.0
    delayed_after: float = 86400.0
    retry_max_delay: float = 300.0


@dataclass(frozen=True)
class Config:
    """Everything the server needs. `source` says where it came from."""

    source: str
    store: SQLiteConfig | MongoConfig
    email: EmailConfig = field(default_factory=EmailConfig)
    wsgi: WsgiConfig = field(default_factory=WsgiConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)


# Known settings of each section; [mongodb] also passes unknown keys to MongoClient.
_KNOWN = {
    "logging": {"file", "rotate", "max_size", "backup_count"},
    "sqlite": {"path", "synchronous"},
    "mongodb": {"hosts", "database", "username", "password"},
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
    },
    "watcher": {"rescan_interval", "delayed_after", "retry_max_delay"},
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


def _email(get: Getter, where: Namer) -> EmailConfig:
    username, password = get("username"), get("password")
    port = get("port")
    security = get("security")
    timeout = get("timeout")
    return EmailConfig(
        sender=get("sender"),
        host=get("host") or "localhost",
        port=_int(where("port"), port, 1, 65535) if port else None,
        username=username,
        password=password,
        security=_choice(where("security"), security, SMTP_SECURITY) if security else "none",
        timeout=_seconds(where("timeout"), timeout) if timeout else 30.0,
    )


def _wsgi(get: Getter, where: Namer) -> WsgiConfig:
    port, workers, timeout = get("port"), get("workers"), get("request_timeout")
    certfile, keyfile = get("certfile"), get("keyfile")
    if bool(certfile) != bool(keyfile):
        raise ConfigError(f"{where('certfile')} and {where('keyfile')} must be given together")
    for name, path in (("certfile", certfile), ("keyfile", keyfile)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{where(name)}: no such file {path}")
    return WsgiConfig(
        port=_int(where("port"), port, 1, 65535) if port else 80,
        host=get("host") or "",
        auth_key=get("auth_key") or None,
        read_only_auth_key=get("read_only_auth_key") or None,
        certfile=certfile,
        keyfile=keyfile,
        workers=_int(where("workers"), workers, 1, 1024) if workers else 16,
        request_timeout=_seconds(where("request_timeout"), timeout) if timeout else 10.0,
    )


def from_environment(environ: Mapping[str, str]) -> Config:
    """The environment mode, used when MONGODB_URI is set (as on Heroku)."""

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
    }
    email = _email(getter(email_names), where(email_names))
    if bool(email.username) != bool(email.password):
        raise ConfigError("SMTP_USERNAME and SMTP_PASSWORD must be given together")
    return Config(
        source="environment",
        store=MongoConfig(hosts=environ["MONGODB_URI"].strip(), source="MONGODB_URI"),
        email=email,
        wsgi=_wsgi(getter(wsgi_names), where(wsgi_names)),
    )


def from_ini(path: str) -> Config:
    """Read one coal-mine.ini file."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {' '.join(str(exc).split())}") from None
    for section in parser.sections():
        known = _KNOWN.get(section)
        if known is None:
            raise ConfigError(f"{path}: unknown section [{section}]")
        if section != "mongodb":
            for key in parser[section]:
                if key not in known:
                    raise ConfigError(f"{path}: unknown setting [{section}] {key}")

    def section_getter(section: str) -> Getter:
        def get(key: str) -> str | None:
            value = parser.get(section, key, fallback=None)
            return value.strip() if value is not None and value.strip() else None

        return get

    def section_where(section: str) -> Namer:
        return lambda key: f"[{section}] {key}"

    if parser.has_section("email"):
        email = _email(section_getter("email"), section_where("email"))
        if not email.sender:
            raise ConfigError(f"{path}: [email] sender is required")
        _pair("email", email.username, email.password)
    else:
        email = EmailConfig()

    store: SQLiteConfig | MongoConfig
    if parser.has_section("mongodb") and parser.has_section("sqlite"):
        raise ConfigError(f"{path}: [mongodb] and [sqlite] cannot both be given")
    if parser.has_section("mongodb"):
        section = dict(parser["mongodb"])
        hosts = section.pop("hosts", "").strip()
        if not hosts:
            raise ConfigError(f"{path}: [mongodb] hosts is required")
        username, password = section.pop("username", None), section.pop("password", None)
        _pair("mongodb", username, password)
        database = section.pop("database", None)
        for key, value in section.items():
            if not value.strip():
                raise ConfigError(f"{path}: [mongodb] {key} is empty")
        store = MongoConfig(
            hosts=hosts,
            database=database.strip() if database else None,
            username=username or None,
            password=password or None,
            options={key: value.strip() for key, value in section.items()},
        )
    else:
        get = section_getter("sqlite")
        synchronous = get("synchronous")
        store = SQLiteConfig(
            path=get("path") or DEFAULT_SQLITE_PATH,
            synchronous=_choice("[sqlite] synchronous", synchronous, ("normal", "full"))
            if synchronous
            else "normal",
        )

    log_get = section_getter("logging")
    rotate, max_size, backup_count = log_get("rotate"), log_get("max_size"), log_get("backup_count")
    logging_config = LoggingConfig(
        file=log_get("file"),
        rotate=_bool("[logging] rotate", rotate) if rotate else False,
        max_size=_int("[logging] max_size", max_size, 1, 2**40) if max_size else 1048576,
        backup_count=_int("[logging] backup_count", backup_count, 0, 1000) if backup_count else 5,
    )

    watch_get = section_getter("watcher")
    watcher = WatcherConfig(
        **{key: _seconds(f"[watcher] {key}", value) for key in _KNOWN["watcher"] if (value := watch_get(key))}
    )
    return Config(
        source=str(Path(path).resolve()),
        store=store,
        email=email,
        wsgi=_wsgi(section_getter("wsgi"), section_where("wsgi")),
        logging=logging_config,
        watcher=watcher,
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
    MONGODB_URI is set, else the first coal-mine.ini found, else the defaults (SQLite)."""
    environ = os.environ if environ is None else environ
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"--config: no such file {path}")
        return from_ini(path)
    if environ.get("MONGODB_URI"):
        return from_environment(environ)
    found = find_config_file(search_dirs)
    if found:
        return from_ini(found)
    return Config(source="defaults", store=SQLiteConfig())
