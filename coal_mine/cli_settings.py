"""``cmcli``'s settings: ~/.coal-mine.ini, command-line overrides, and the values they resolve to."""

from __future__ import annotations

import argparse
import configparser
import io
import math
import os
import re
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from coal_mine.cli_output import FORMATS

CONFIG_FILE = "~/.coal-mine.ini"
SECTION = "coal-mine"
API_PATH = "/coal-mine/v1/canary/"
DEFAULT_HOST = "localhost"
DEFAULT_TIMEOUT = 10.0

EXIT_OK = 0
EXIT_HTTP = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_TIMEOUT = 4
EXIT_CONFIG = 5
EXIT_RESPONSE = 6


class CliError(Exception):
    """A failure reported as one line on stderr with a given exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Settings:
    """Resolved connection and output settings."""

    base_url: str
    auth_key: str | None
    timeout: float
    ssl_context: ssl.SSLContext | None
    fmt: str
    tz: tzinfo | None  # None means the local time zone


def parse_port(text: str) -> int:
    """Parse a TCP port number."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"port out of range: {value}")
    return value


def parse_timeout(text: str) -> float:
    """Parse a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"timeout must be a positive number: {text!r}")
    return value


def parse_format(text: str) -> str:
    """Check an output format name."""
    if text not in FORMATS:
        raise ValueError(f"unknown format {text!r} (choose from {', '.join(FORMATS)})")
    return text


def parse_zone(text: str) -> tzinfo | None:
    """Turn an IANA zone name (or ``local``) into a tzinfo; None is local."""
    if text == "local":
        return None
    if text.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(text)
    except (ValueError, OSError):
        # ZoneInfoNotFoundError is a KeyError; malformed keys raise ValueError.
        raise ValueError(f"unknown time zone: {text!r}") from None
    except KeyError:
        raise ValueError(f"unknown time zone: {text!r}") from None


def config_path() -> str:
    """Return the path of the CLI's configuration file."""
    return os.path.expanduser(CONFIG_FILE)


def one_line(exc: BaseException | str) -> str:
    """Squeeze an exception message onto one line."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


def load_config(path: str) -> configparser.ConfigParser:
    """Read the INI file (a missing file is an empty configuration)."""
    config = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            config.read_file(handle)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {one_line(exc)}", EXIT_CONFIG) from None
    except configparser.Error as exc:
        raise CliError(f"cannot parse {path}: {one_line(exc)}", EXIT_CONFIG) from None
    if not config.has_section(SECTION):
        config.add_section(SECTION)
    return config


def write_config(path: str, config: configparser.ConfigParser) -> None:
    """Write the INI file, readable by its owner only (mode 0600)."""
    buffer = io.StringIO()
    config.write(buffer)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # A file left by an older cmcli may be world-readable; tighten it
            # before the key goes in.
            os.fchmod(handle.fileno(), 0o600)
            handle.write(buffer.getvalue())
    except OSError as exc:
        raise CliError(f"cannot write {path}: {one_line(exc)}", EXIT_CONFIG) from None


CONFIG_KEYS = {
    # attribute in the namespace -> key in the INI file
    "host": "host",
    "port": "port",
    "auth_key": "auth-key",
    "timeout": "timeout",
    "cacert": "cacert",
    "format": "format",
    "tz": "tz",
}


def configure(args: argparse.Namespace, path: str) -> None:
    """Store the options given on the command line in the INI file."""
    config = load_config(path)
    section = config[SECTION]
    section["host"] = getattr(args, "host", None) or section.get("host") or DEFAULT_HOST
    for attr, key in CONFIG_KEYS.items():
        if attr != "host" and hasattr(args, attr):
            value = getattr(args, attr)
            if attr == "cacert":
                value = os.path.abspath(os.path.expanduser(value))
            section[key] = str(value)
    if getattr(args, "no_auth_key", False):
        section.pop("auth-key", None)
    write_config(path, config)


def make_base_url(host: str, port: int | None) -> str:
    """Build ``scheme://host[:port][/prefix]/coal-mine/v1/canary/``."""
    host = host.strip()
    if not re.match(r"(?i)https?://", host):
        if "://" in host:
            raise ValueError(f"unsupported URL scheme in {host!r} (use http:// or https://)")
        host = "http://" + host
    parts = urllib.parse.urlsplit(host)
    name = parts.hostname
    try:
        own_port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {host!r}") from None
    if not name:
        raise ValueError(f"no host name in {host!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a URL base cannot have a query or fragment: {host!r}")
    if ":" in name:
        name = f"[{name}]"
    chosen = port if port is not None else own_port
    netloc = f"{name}:{chosen}" if chosen is not None else name
    prefix = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{netloc}{prefix}{API_PATH}"


def resolve_settings(args: argparse.Namespace, config: configparser.ConfigParser, path: str) -> Settings:
    """Combine command-line options, stored settings and defaults."""
    section = config[SECTION]

    def pick(attr: str, convert: Callable[[str], Any], default: Any) -> tuple[Any, bool]:
        if hasattr(args, attr):
            value = getattr(args, attr)
            try:
                return (convert(value) if isinstance(value, str) else value), True
            except ValueError as exc:
                raise CliError(f"--{attr.replace('_', '-')}: {exc}", EXIT_USAGE) from None
        key = CONFIG_KEYS[attr]
        raw = section.get(key)
        if raw is None or not raw.strip():
            return default, False
        try:
            return convert(raw.strip()), False
        except ValueError as exc:
            raise CliError(f"{path}: bad {key} setting: {exc}", EXIT_CONFIG) from None

    host, host_cli = pick("host", str, DEFAULT_HOST)
    port, port_cli = pick("port", parse_port, None)
    try:
        base_url = make_base_url(host, port)
    except ValueError as exc:
        code = EXIT_USAGE if host_cli or port_cli else EXIT_CONFIG
        where = "--host" if code == EXIT_USAGE else f"{path}: bad host setting"
        raise CliError(f"{where}: {exc}", code) from None

    if getattr(args, "no_auth_key", False):
        auth_key = None
    else:
        auth_key, _ = pick("auth_key", str, None)
        auth_key = auth_key or None
    timeout, _ = pick("timeout", parse_timeout, DEFAULT_TIMEOUT)
    fmt, _ = pick("format", parse_format, "python")
    tz, _ = pick("tz", parse_zone, UTC)
    cacert, cacert_cli = pick("cacert", os.path.expanduser, None)

    context = None
    if base_url.startswith("https:"):
        try:
            context = ssl.create_default_context(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            code = EXIT_USAGE if cacert_cli else EXIT_CONFIG
            raise CliError(f"cannot load CA certificates from {cacert}: {one_line(exc)}", code) from None
    return Settings(base_url, auth_key, timeout, context, fmt, tz)
