"""``cmcli``: command-line client for a Coal Mine server.

Talks to the server's HTTP API (``/coal-mine/v1/canary/<command>``) with the
standard library only. Connection settings live in ``~/.coal-mine.ini``
(section ``[coal-mine]``); options given on the command line win over them.
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coal_mine import cli_alerts, cli_runs
from coal_mine.cli_http import HttpFailure, call
from coal_mine.cli_output import render, render_failure
from coal_mine.cli_settings import (
    CONFIG_FILE,
    DEFAULT_HOST,
    DEFAULT_TIMEOUT,
    EXIT_CONFIG,
    EXIT_CONNECT,
    EXIT_HTTP,
    EXIT_OK,
    EXIT_RESPONSE,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    SECTION,
    CliError,
    Settings,
    config_path,
    configure,
    load_config,
    parse_port,
    parse_timeout,
    resolve_settings,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_CONNECT",
    "EXIT_HTTP",
    "EXIT_OK",
    "EXIT_RESPONSE",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "request_params",
]

try:
    from coal_mine import __version__
except ImportError:  # e.g. a stale editable install that sees a namespace package
    __version__ = "unknown"

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


# --------------------------------------------------------------------------
# Argument parsing


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
    conn.add_argument("--port", type=_argtype(parse_port, "port"), default=s, help="server port (default 80)")
    keys = conn.add_mutually_exclusive_group()
    keys.add_argument("--auth-key", metavar="KEY", default=s, help="authentication key (sent as auth_key)")
    keys.add_argument("--no-auth-key", action="store_true", default=s, help="send no authentication key")
    conn.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_argtype(parse_timeout, "timeout"),
        default=s,
        help=f"give up after this many seconds for the whole request (default {DEFAULT_TIMEOUT:g})",
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


@dataclass(frozen=True)
class Param:
    """One command-line option of a command, sent as the query parameter of the same name.

    `group`: options in one group exclude each other. `kind`: "value" (--x V: x=V),
    "repeat" (--x A --x B: x=A&x=B), "flag" (--x: x=true), "choice" (--x: x=true,
    --no-x: x=false; `no_help` describes --no-x).
    """

    name: str
    help: str
    kind: str = "value"
    required: bool = False
    group: str | None = None
    type: Callable[[str], str] = str
    metavar: str | None = None
    no_help: str = ""


@dataclass(frozen=True)
class Command:
    """A cmcli command: its help, its parameters (in the order they are sent) and whether it
    takes --no-history. A `required_group` must be given (one of its options)."""

    help: str
    params: tuple[Param, ...] = ()
    required_group: str | None = None
    no_history: bool = True


IDENT_KEYS = ("id", "slug", "name")
_IDENT = (  # one of them: argparse names them in this order
    Param("id", "canary identifier", group="ident"),
    Param("name", "canary name", group="ident"),
    Param("slug", "canary slug", group="ident"),
)
_COMMENT = Param("comment", "comment for the history entry")
_ALERT_OPTIONS = (
    Param("webhook", 'URL to POST each event to (repeatable; on update "-" clears the list)', kind="repeat"),
    Param("slack", 'Slack incoming-webhook URL (repeatable; on update "-" clears the list)', kind="repeat"),
    Param("repeat", "remind every SECONDS while the canary stays late (0: never)", metavar="SECONDS"),
)

COMMANDS: dict[str, Command] = {
    "configure": Command(f"save the given connection and output options to {CONFIG_FILE}", no_history=False),
    "create": Command(
        "create a canary",
        (
            Param("name", "canary name", required=True),
            Param(
                "periodicity",
                "seconds between triggers, or a schedule of crontab-like directives",
                required=True,
                type=_periodicity,
            ),
            Param("description", "free-form description"),
            Param("email", "address to notify (repeatable)", kind="repeat"),
            Param("paused", "create the canary paused", kind="flag"),
            *_ALERT_OPTIONS,
        ),
    ),
    "delete": Command("delete a canary", _IDENT, required_group="ident", no_history=False),
    "update": Command(
        "update a canary",
        (
            Param("id", "canary identifier", group="which"),
            Param("slug", "canary slug", group="which"),
            Param("name", "new name; without --id/--slug, the canary is looked up by this name instead"),
            Param("periodicity", "new periodicity or schedule", type=_periodicity),
            Param("description", "new description"),
            Param("email", 'address to notify (repeatable); "-" clears the list', kind="repeat"),
            *_ALERT_OPTIONS,
        ),
    ),
    "get": Command("show a canary", _IDENT, required_group="ident"),
    "list": Command(
        "list canaries",
        (
            Param("verbose", "show every field of each canary", kind="flag"),
            Param("paused", "only paused canaries", kind="choice", no_help="only unpaused canaries"),
            Param("late", "only late canaries", kind="choice", no_help="only canaries that are not late"),
            Param(
                "search",
                "regular expression matched against name, slug, identifier and email addresses",
                metavar="REGEX",
            ),
        ),
    ),
    "trigger": Command(
        "trigger a canary (never sends the auth key)",
        (*_IDENT, _COMMENT),
        required_group="ident",
        no_history=False,
    ),
    "pause": Command("pause a canary", (*_IDENT, _COMMENT), required_group="ident"),
    "unpause": Command("unpause a canary", (*_IDENT, _COMMENT), required_group="ident"),
    "status": Command(
        "show whether the server can detect late canaries (its health), and its badge key", no_history=False
    ),
    "test": Command(
        "send a test notification through every target of a canary now and show each result",
        _IDENT,
        required_group="ident",
        no_history=False,
    ),
}
cli_runs.extend(COMMANDS, Param, Command, _IDENT, _COMMENT)


def _add_params(parser: argparse.ArgumentParser, command: Command) -> None:
    """Declare a command's options on its subparser."""
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for param in command.params:
        target: argparse._ActionsContainer = parser
        if param.group is not None:
            if param.group not in groups:
                required = param.group == command.required_group
                groups[param.group] = parser.add_mutually_exclusive_group(required=required)
            target = groups[param.group]
        option = f"--{param.name.replace('_', '-')}"
        if param.kind == "flag":
            target.add_argument(option, action="store_true", help=param.help)
        elif param.kind == "choice":
            group = parser.add_mutually_exclusive_group()
            group.add_argument(option, action="store_true", default=None, help=param.help)
            group.add_argument(
                f"--no-{param.name}", dest=param.name, action="store_false", default=None, help=param.no_help
            )
        else:
            target.add_argument(
                option,
                required=param.required,
                action="append" if param.kind == "repeat" else "store",
                type=param.type,
                metavar=param.metavar,
                help=param.help,
            )
    if command.no_history:
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
    for name, command in COMMANDS.items():
        sub = subs.add_parser(
            name,
            help=command.help,
            description=command.help + ".",
            epilog=EPILOG,
            formatter_class=fmt,
            parents=[common],
        )
        _add_params(sub, command)
    cli_alerts.add_outbox(subs, common, EPILOG)
    return parser


def request_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Query-string parameters for the command in ``args`` (auth key excluded)."""
    if args.command == "outbox":
        return cli_alerts.params(args)
    params: list[tuple[str, str]] = []
    for param in COMMANDS[args.command].params:
        value = getattr(args, param.name, None)
        if value is None or value is False and param.kind == "flag":
            continue
        if isinstance(value, bool):
            params.append((param.name, "true" if value else "false"))
        elif param.kind == "repeat":
            params += [(param.name, str(item)) for item in value]
        else:
            params.append((param.name, str(value)))
    return params


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
        status = f"{failure.status} {failure.reason}".strip()
        _write(sys.stderr, render_failure(settings.fmt, status, failure.body))
        return EXIT_HTTP
    return EXIT_OK


def _execute(args: argparse.Namespace, settings: Settings) -> None:
    """Send the request(s) for one command and print the answer."""
    command = args.command
    if command == "status":
        from coal_mine.cli_status import status

        text, healthy = status(settings)
        _write(sys.stdout, text)
        if not healthy:
            raise CliError("the server is not healthy", EXIT_HTTP)
        return
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
    path = cli_alerts.endpoint(args) if command == "outbox" else command
    data = call(settings, path, request_params(args), send_key=command not in cli_runs.OPEN_COMMANDS)
    text = render(
        data,
        settings.fmt,
        settings.tz,
        command=command,
        subject=_describe_ident(args),
        history=not getattr(args, "no_history", False),
    )
    _write(sys.stdout, text)


def _describe_ident(args: argparse.Namespace) -> str:
    """``id abcdefgh``, ``slug my-canary`` or ``name 'My canary'``."""
    for key in IDENT_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            return f"{key} {value!r}" if key == "name" else f"{key} {value}"
    return "canary"


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
