"""cmcli's run-reporting commands and options: `start`, `fail --exit-status`, `log`,
`get --output`, `pause --until`, `create/update --max-runtime` and `list --state`.

cli.py declares commands as data (Command and Param); `extend` adds these to them.
"""

from __future__ import annotations

import argparse
from typing import Any

# Commands that, like trigger, never send the auth key.
OPEN_COMMANDS = frozenset({"trigger", "start", "fail", "log"})
STATES = ("ok", "running", "late", "failed", "paused")


def _exit_status(text: str) -> str:
    if not text.isascii() or not text.isdigit() or int(text) > 255:
        raise argparse.ArgumentTypeError(f"{text!r} is not an exit status (0-255)")
    return text


def _seconds(text: str) -> str:
    if text != "-":
        try:
            if not float(text) >= 0:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    return text


def _state(text: str) -> str:
    if text not in STATES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a state ({', '.join(STATES)})")
    return text


def extend(commands: dict[str, Any], param: Any, command: Any, ident: tuple, comment: Any) -> None:
    """Add the run commands to `commands` and the run options to the existing ones
    (`param` and `command` are cli.Param and cli.Command)."""
    rid = param("rid", "run id pairing a start with its end when runs overlap")
    commands["start"] = command(
        "report that a run of the canary's job has started (never sends the auth key)",
        (*ident, comment, rid),
        required_group="ident",
        no_history=False,
    )
    commands["fail"] = command(
        "report that a run failed (never sends the auth key)",
        (*ident, comment, rid, param("exit_status", "the job's exit status (1-255)", type=_exit_status)),
        required_group="ident",
        no_history=False,
    )
    commands["log"] = command(
        "record an event without changing the canary's state (never sends the auth key)",
        (*ident, comment),
        required_group="ident",
        no_history=False,
    )
    extra = {
        "create": param("max_runtime", "a run still open after this many seconds is late", type=_seconds),
        "update": param("max_runtime", 'new max_runtime in seconds; "-" removes it', type=_seconds),
        "get": param("output", "show the kept output of each event", kind="flag"),
        "pause": param("until", "unpause by itself then: an ISO 8601 time or a number of seconds"),
        "list": param("state", f"only canaries in this state ({', '.join(STATES)})", type=_state),
    }
    for name, option in extra.items():
        old = commands[name]
        commands[name] = command(old.help, (*old.params, option), old.required_group, old.no_history)
