"""``cmcli``: command-line client for a Coal Mine server.

Talks to the server's HTTP API (``/coal-mine/v1/canary/<command>``) with the
standard library only. Connection settings live in ``~/.coal-mine.ini``
(section ``[coal-mine]``); options given on the command line win over them.
"""

from __future__ import annotations

import argparse
import configparser
import http.client
import io
import json
import math
import os
import pprint
import re
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

try:
    from coal_mine import __version__
except ImportError:  # e.g. a stale editable install that sees a namespace package
    __version__ = "unknown"

CONFIG_FILE = "~/.coal-mine.ini"
SECTION = "coal-mine"
API_PATH = "/coal-mine/v1/canary/"
DEFAULT_HOST = "localhost"
DEFAULT_TIMEOUT = 10.0
FORMATS = ("python", "json", "human")

EXIT_OK = 0
EXIT_HTTP = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_TIMEOUT = 4
EXIT_CONFIG = 5
EXIT_RESPONSE = 6

EPILOG = f"""\
Settings are read from {CONFIG_FILE} (section [{SECTION}]: host, port,
auth-key, timeout, cacert, format, tz); `cmcli configure` writes it.
Options on the command line override stored settings. Without a port,
the scheme's default is used (80 for http).

output formats:
  --python  the decoded response pretty-printed as a Python literal
            (default; the same text Coal Mine's cmcli prints)
  --json    the response as JSON
  --human   a readable layout; --tz ZONE (IANA name or "local")
            converts the displayed times (default UTC)

exit status:
  0  success
  1  the server answered with an HTTP error (status and message on stderr)
  2  bad command-line arguments
  3  cannot connect to the server (refused, unknown host, TLS failure)
  4  timed out waiting for the server
  5  configuration problem ({CONFIG_FILE} unreadable or a stored
     setting invalid)
  6  the server's answer is not valid JSON
"""

IDENT_KEYS = ("id", "slug", "name")
NO_HISTORY_COMMANDS = ("create", "update", "get", "list", "pause", "unpause")


class CliError(Exception):
    """A failure reported as one line on stderr with a given exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class HttpFailure(Exception):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body


@dataclass
class Settings:
    """Resolved connection and output settings."""

    base_url: str
    auth_key: str | None
    timeout: float
    ssl_context: ssl.SSLContext | None
    fmt: str
    tz: tzinfo | None  # None means the local time zone


# --------------------------------------------------------------------------
# Argument parsing


def _port(text: str) -> int:
    """Parse a TCP port number."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"port out of range: {value}")
    return value


def _timeout(text: str) -> float:
    """Parse a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"timeout must be a positive number: {text!r}")
    return value


def _format(text: str) -> str:
    """Check an output format name."""
    if text not in FORMATS:
        raise ValueError(f"unknown format {text!r} (choose from {', '.join(FORMATS)})")
    return text


def _zone(text: str) -> tzinfo | None:
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


def _argtype(func: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """Wrap a ValueError-raising parser for argparse error messages."""

    def parse(text: str) -> Any:
        try:
            return func(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def _periodicity(text: str) -> str:
    """Accept seconds (digits and dots) or a schedule string, unchanged."""
    if re.fullmatch(r"[0-9.]+", text):
        try:
            float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    elif not text.strip():
        raise argparse.ArgumentTypeError("periodicity must not be empty")
    return text


def _common_parser() -> argparse.ArgumentParser:
    """Options accepted both before and after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    conn = common.add_argument_group("connection options")
    conn.add_argument(
        "--host",
        default=s,
        help=f"server host name or URL base, e.g. https://host/prefix (default {DEFAULT_HOST})",
    )
    conn.add_argument("--port", type=_argtype(_port, "port"), default=s, help="server port (default 80)")
    keys = conn.add_mutually_exclusive_group()
    keys.add_argument("--auth-key", metavar="KEY", default=s, help="authentication key (sent as auth_key)")
    keys.add_argument("--no-auth-key", action="store_true", default=s, help="send no authentication key")
    conn.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_argtype(_timeout, "timeout"),
        default=s,
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT:g})",
    )
    conn.add_argument(
        "--cacert", metavar="FILE", default=s, help="CA certificates for verifying https servers"
    )
    out = common.add_argument_group("output options")
    for name, text in (
        ("python", "print the response as a Python literal (default)"),
        ("json", "print the response as JSON"),
        ("human", "print a readable summary"),
    ):
        out.add_argument(f"--{name}", dest="format", action="store_const", const=name, default=s, help=text)
    out.add_argument(
        "--tz",
        metavar="ZONE",
        default=s,
        help='time zone for --human times: IANA name or "local" (default UTC)',
    )
    return common


def _add_ident(parser: argparse.ArgumentParser) -> None:
    """Add the required --id/--name/--slug choice."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", help="canary identifier")
    group.add_argument("--name", help="canary name")
    group.add_argument("--slug", help="canary slug")


def _add_no_history(parser: argparse.ArgumentParser) -> None:
    """Add --no-history/--terse."""
    parser.add_argument(
        "--no-history", "--terse", action="store_true", help="leave the history out of the output"
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for all cmcli commands."""
    common = _common_parser()
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="cmcli",
        description="Command-line client for Coal Mine's HTTP API.",
        epilog=EPILOG,
        formatter_class=fmt,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(name: str, help_text: str) -> argparse.ArgumentParser:
        return subs.add_parser(
            name,
            help=help_text,
            description=help_text + ".",
            epilog=EPILOG,
            formatter_class=fmt,
            parents=[common],
        )

    sub("configure", f"save the given connection and output options to {CONFIG_FILE}")

    p = sub("create", "create a canary")
    p.add_argument("--name", required=True, help="canary name")
    p.add_argument(
        "--periodicity",
        required=True,
        type=_periodicity,
        help="seconds between triggers, or a schedule of crontab-like directives",
    )
    p.add_argument("--description", help="free-form description")
    p.add_argument("--email", action="append", help="address to notify (repeatable)")
    p.add_argument("--paused", action="store_true", help="create the canary paused")
    _add_no_history(p)

    p = sub("delete", "delete a canary")
    _add_ident(p)

    p = sub("update", "update a canary")
    p.add_argument(
        "--name",
        help="new name; without --id/--slug, the canary is looked up by this name instead",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--id", help="canary identifier")
    group.add_argument("--slug", help="canary slug")
    p.add_argument("--periodicity", type=_periodicity, help="new periodicity or schedule")
    p.add_argument("--description", help="new description")
    p.add_argument("--email", action="append", help='address to notify (repeatable); "-" clears the list')
    _add_no_history(p)

    p = sub("get", "show a canary")
    _add_ident(p)
    _add_no_history(p)

    p = sub("list", "list canaries")
    p.add_argument("--verbose", action="store_true", help="show every field of each canary")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--paused", dest="paused", action="store_true", default=None, help="only paused canaries"
    )
    group.add_argument(
        "--no-paused",
        dest="paused",
        action="store_false",
        default=None,
        help="only unpaused canaries",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--late", dest="late", action="store_true", default=None, help="only late canaries")
    group.add_argument(
        "--no-late",
        dest="late",
        action="store_false",
        default=None,
        help="only canaries that are not late",
    )
    p.add_argument(
        "--search",
        metavar="REGEX",
        help="regular expression matched against name, slug, identifier and email addresses",
    )
    _add_no_history(p)

    for name, text in (
        ("trigger", "trigger a canary (never sends the auth key)"),
        ("pause", "pause a canary"),
        ("unpause", "unpause a canary"),
    ):
        p = sub(name, text)
        _add_ident(p)
        p.add_argument("--comment", help="comment for the history entry")
        if name != "trigger":
            _add_no_history(p)
    return parser


# --------------------------------------------------------------------------
# Configuration


def config_path() -> str:
    """Return the path of the CLI's configuration file."""
    return os.path.expanduser(CONFIG_FILE)


def _one_line(exc: BaseException | str) -> str:
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
        raise CliError(f"cannot read {path}: {_one_line(exc)}", EXIT_CONFIG) from None
    except configparser.Error as exc:
        raise CliError(f"cannot parse {path}: {_one_line(exc)}", EXIT_CONFIG) from None
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
        raise CliError(f"cannot write {path}: {_one_line(exc)}", EXIT_CONFIG) from None


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
    port, port_cli = pick("port", _port, None)
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
    timeout, _ = pick("timeout", _timeout, DEFAULT_TIMEOUT)
    fmt, _ = pick("format", _format, "python")
    tz, _ = pick("tz", _zone, UTC)
    cacert, cacert_cli = pick("cacert", os.path.expanduser, None)

    context = None
    if base_url.startswith("https:"):
        try:
            context = ssl.create_default_context(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            code = EXIT_USAGE if cacert_cli else EXIT_CONFIG
            raise CliError(f"cannot load CA certificates from {cacert}: {_one_line(exc)}", code) from None
    return Settings(base_url, auth_key, timeout, context, fmt, tz)


# --------------------------------------------------------------------------
# Talking to the server


def request_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Query-string parameters for the command in ``args`` (auth key excluded)."""
    params: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool):
            value = "true" if value else "false"
        params.append((key, str(value)))

    command = args.command
    if command == "create":
        add("name", args.name)
        add("periodicity", args.periodicity)
        add("description", args.description)
        for email in args.email or ():
            add("email", email)
        if args.paused:
            add("paused", True)
    elif command == "update":
        add("id", args.id)
        add("slug", args.slug)
        add("name", args.name)
        add("periodicity", args.periodicity)
        add("description", args.description)
        for email in args.email or ():
            add("email", email)
    elif command == "list":
        if args.verbose:
            add("verbose", True)
        add("paused", args.paused)
        add("late", args.late)
        add("search", args.search)
    else:
        for key in IDENT_KEYS:
            add(key, getattr(args, key))
        if command in ("trigger", "pause", "unpause"):
            add("comment", args.comment)
    return params


def call(settings: Settings, command: str, params: list[tuple[str, str]], send_key: bool = True) -> Any:
    """Send one API request and return the decoded JSON answer."""
    params = list(params)
    if send_key and settings.auth_key:
        params.append(("auth_key", settings.auth_key))
    url = settings.base_url + command
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"cmcli/{__version__}"}
    )
    server = settings.base_url[: -len(API_PATH)] or settings.base_url
    try:
        with urllib.request.urlopen(
            request, timeout=settings.timeout, context=settings.ssl_context
        ) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        try:
            error_body = exc.read()
        except (OSError, http.client.HTTPException):
            error_body = b""
        raise HttpFailure(exc.code, str(exc.reason or ""), error_body) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _timed_out(server, settings.timeout) from None
        raise CliError(f"cannot connect to {server}: {_one_line(reason)}", EXIT_CONNECT) from None
    except TimeoutError:
        raise _timed_out(server, settings.timeout) from None
    except (OSError, http.client.HTTPException) as exc:
        detail = _one_line(exc) or type(exc).__name__
        raise CliError(f"connection to {server} failed: {detail}", EXIT_CONNECT) from None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CliError(f"invalid response from {server}: not JSON", EXIT_RESPONSE) from None


def _timed_out(server: str, timeout: float) -> CliError:
    """The error for a server that did not answer in time."""
    return CliError(f"timed out after {timeout:g} s waiting for {server}", EXIT_TIMEOUT)


# --------------------------------------------------------------------------
# Output


def strip_history(data: Any) -> Any:
    """Return ``data`` without the history of any canary it contains."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if isinstance(data.get("canary"), dict):
        data["canary"] = {k: v for k, v in data["canary"].items() if k != "history"}
    if isinstance(data.get("canaries"), list):
        data["canaries"] = [
            {k: v for k, v in c.items() if k != "history"} if isinstance(c, dict) else c
            for c in data["canaries"]
        ]
    return data


def format_time(value: Any, tz: tzinfo | None) -> str:
    """Show an ISO-8601 timestamp in ``tz`` (None: local time), to the second."""
    if not isinstance(value, str):
        return str(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(tz) if tz is not None else when.astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S ") + (when.tzname() or when.strftime("%z"))


def format_duration(seconds: float) -> str:
    """Describe a number of seconds briefly, e.g. ``1d 2h`` or ``1m 30s``."""
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    fraction = seconds - int(seconds)
    if rest or fraction or not parts:
        parts.append(f"{rest + fraction:g}s")
    return " ".join(parts)


def format_periodicity(value: Any, brief: bool = False) -> str:
    """Show a periodicity: seconds with a readable duration, or the schedule."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "schedule" if brief else str(value)
    text = f"{value:g} s"
    if value >= 60 and not brief:
        text += f" ({format_duration(value)})"
    return text


def _state(canary: dict[str, Any]) -> str:
    """One word for a canary's state."""
    if canary.get("paused"):
        return "paused, late" if canary.get("late") else "paused"
    return "LATE" if canary.get("late") else "ok"


def _table(rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns separated by two spaces."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def human_canary(canary: dict[str, Any], tz: tzinfo | None) -> str:
    """Aligned fields, then the schedule and history tables."""
    c = canary
    fields: list[tuple[str, str]] = [
        ("Name", str(c.get("name", ""))),
        ("ID", str(c.get("id", ""))),
        ("Slug", str(c.get("slug", ""))),
        ("Description", str(c.get("description") or "-")),
        ("Periodicity", format_periodicity(c.get("periodicity"))),
        ("Emails", ", ".join(map(str, c.get("emails") or [])) or "-"),
        ("State", _state(c)),
        ("Deadline", format_time(c["deadline"], tz) if c.get("deadline") else "-"),
    ]
    known = {
        "name",
        "id",
        "slug",
        "description",
        "periodicity",
        "emails",
        "paused",
        "late",
        "deadline",
        "history",
        "periodicity_schedule",
    }
    fields += [(key, str(value)) for key, value in c.items() if key not in known]
    width = max(len(label) for label, _ in fields) + 3
    lines = [f"{label + ':':<{width}}{value}".rstrip() for label, value in fields]
    schedule = c.get("periodicity_schedule")
    if isinstance(schedule, list) and schedule:
        lines.append("Schedule:")
        rows = [["from", "until", "periodicity"]]
        for entry in schedule:
            if isinstance(entry, (list, tuple)) and len(entry) == 3:
                value = entry[2]
                rows.append(
                    [
                        format_time(entry[0], tz),
                        format_time(entry[1], tz),
                        value if isinstance(value, str) else format_periodicity(value),
                    ]
                )
        lines += _table(rows, "  ")
    if "history" in c:
        history = c.get("history") or []
        lines.append(f"History ({len(history)}, newest first):")
        rows = []
        for entry in history:
            if isinstance(entry, (list, tuple)) and len(entry) == 2:
                rows.append([format_time(entry[0], tz), str(entry[1])])
            else:
                rows.append([str(entry), ""])
        lines += _table(rows, "  ")
    return "\n".join(lines)


def human_list(canaries: list[Any], tz: tzinfo | None) -> str:
    """One canary per line, under a header."""
    if not canaries:
        return "No canaries."
    entries = [c if isinstance(c, dict) else {"name": str(c)} for c in canaries]
    verbose = any(set(c) - {"name", "id"} for c in entries)
    if verbose:
        rows = [["ID", "STATE", "DEADLINE", "PERIODICITY", "NAME"]]
        for c in entries:
            rows.append(
                [
                    str(c.get("id", "")),
                    _state(c),
                    format_time(c["deadline"], tz) if c.get("deadline") else "-",
                    format_periodicity(c.get("periodicity"), brief=True),
                    str(c.get("name", "")),
                ]
            )
    else:
        rows = [["ID", "NAME"]]
        rows += [[str(c.get("id", "")), str(c.get("name", ""))] for c in entries]
    return "\n".join(_table(rows))


def _describe_ident(args: argparse.Namespace) -> str:
    """``id abcdefgh``, ``slug my-canary`` or ``name 'My canary'``."""
    for key in IDENT_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            return f"{key} {value!r}" if key == "name" else f"{key} {value}"
    return "canary"


def render_human(args: argparse.Namespace, data: Any, tz: tzinfo | None) -> str:
    """The --human text for a successful response."""
    if isinstance(data, dict):
        if isinstance(data.get("canaries"), list):
            return human_list(data["canaries"], tz)
        if isinstance(data.get("canary"), dict):
            return human_canary(data["canary"], tz)
        if args.command == "trigger":
            text = f"Triggered canary ({_describe_ident(args)})."
            if data.get("recovered"):
                text += " It was late and has recovered."
            if data.get("unpaused"):
                text += " It was paused and is now unpaused."
            return text
        if args.command == "delete":
            return f"Deleted canary ({_describe_ident(args)})."
    return pprint.pformat(data)


def render(args: argparse.Namespace, settings: Settings, data: Any) -> str:
    """Text to print for a successful response, in the chosen format."""
    if getattr(args, "no_history", False):
        data = strip_history(data)
    if settings.fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if settings.fmt == "human":
        return render_human(args, data, settings.tz)
    return pprint.pformat(data)


def render_failure(settings: Settings, failure: HttpFailure) -> str:
    """Text for stderr when the server answered with an HTTP error."""
    status = f"{failure.status} {failure.reason}".strip()
    text = failure.body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if settings.fmt == "human":
        message = data.get("error") if isinstance(data, dict) else None
        return f"cmcli: {status}: {message or ' '.join(text.split()) or 'no details'}"
    if settings.fmt == "json" or data is None:
        return f"{status}\n{text}" if text else status
    return f"{status}\n{pprint.pformat(data).strip()}"


# --------------------------------------------------------------------------
# Entry point


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed command; raise CliError/HttpFailure on failure."""
    path = config_path()
    config = load_config(path)
    if args.command == "configure":
        # Refuse to store invalid values (checked against defaults only, so
        # that a bad stored setting can still be repaired with configure).
        empty = configparser.ConfigParser()
        empty.add_section(SECTION)
        resolve_settings(args, empty, path)
        configure(args, path)
        return EXIT_OK
    settings = resolve_settings(args, config, path)
    try:
        _execute(args, settings)
    except HttpFailure as failure:
        _write(sys.stderr, render_failure(settings, failure))
        return EXIT_HTTP
    return EXIT_OK


def _execute(args: argparse.Namespace, settings: Settings) -> None:
    """Send the request(s) for one command and print the answer."""
    command = args.command
    if command == "update" and not (args.id or args.slug):
        # As in Coal Mine's cmcli: --name alone names the canary to update.
        if not args.name:
            raise CliError("update: one of --id, --slug or --name is required", EXIT_USAGE)
        found = call(settings, "get", [("name", args.name)])
        try:
            args.id = found["canary"]["id"]
        except (KeyError, TypeError):
            raise CliError("invalid response to get: no canary id", EXIT_RESPONSE) from None
        args.name = None
    data = call(settings, command, request_params(args), send_key=command != "trigger")
    _write(sys.stdout, render(args, settings, data))


def _write(stream: Any, text: str) -> None:
    """Print a block of text followed by a newline."""
    stream.write(text + "\n")
    stream.flush()


def main(argv: list[str] | None = None) -> int:
    """Run cmcli with ``argv`` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CliError as exc:
        sys.stderr.write(f"cmcli: {exc}\n")
        return exc.code
    except BrokenPipeError:
        # The reader went away (e.g. `cmcli list | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
