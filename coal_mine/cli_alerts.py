"""cmcli's alert commands: `cmcli outbox list|drop` (pending deliveries; `cmcli test` and
the --webhook/--slack/--repeat options are declared in cli.COMMANDS), and the --human
text of the answers of test and outbox."""

from __future__ import annotations

import argparse
from typing import Any

OUTBOX_PATH = "/coal-mine/v1/outbox"


def add_outbox(subs: Any, common: argparse.ArgumentParser, epilog: str) -> None:
    """The `outbox` command with its `list` and `drop` actions."""
    fmt = argparse.RawDescriptionHelpFormatter
    text = "list pending deliveries, or drop one for good"
    outbox = subs.add_parser(
        "outbox", help=text, description=text + ".", epilog=epilog, formatter_class=fmt, parents=[common]
    )
    actions = outbox.add_subparsers(dest="outbox_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="pending deliveries, oldest first", parents=[common])
    listing.add_argument("--id", help="only this canary's")
    drop = actions.add_parser("drop", help="drop one pending delivery (it is never sent)", parents=[common])
    drop.add_argument("--id", required=True, help="the delivery's id, as `outbox list` shows it")


def endpoint(args: argparse.Namespace) -> str:
    """The API path of an `outbox` action."""
    return OUTBOX_PATH if args.outbox_action == "list" else f"{OUTBOX_PATH}/drop"


def params(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The parameters of an `outbox` action."""
    return [("id", args.id)] if args.id else []


def human(data: Any) -> str | None:
    """The --human text of a test or outbox answer (None: not one of them)."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("results"), list):
        lines = [
            f"{'ok    ' if r.get('ok') else 'FAILED'} {r.get('channel')} {r.get('target')}"
            + (f": {r.get('error')}" if r.get("error") else "")
            for r in data["results"]
            if isinstance(r, dict)
        ]
        return "\n".join(lines) or "No targets."
    if isinstance(data.get("outbox"), list):
        lines = [
            f"{e.get('id')}  {e.get('canary')} {e.get('event')} -> {e.get('channel')} {e.get('target')}"
            f"  attempts {e.get('attempts')}, age {e.get('age')} s"
            + (f", last error: {e.get('last_error')}" if e.get("last_error") else "")
            for e in data["outbox"]
            if isinstance(e, dict)
        ]
        return "\n".join(lines) or "Nothing pending."
    if isinstance(data.get("dropped"), dict):
        entry = data["dropped"]
        what = f"{entry.get('event')} to {entry.get('channel')} {entry.get('target')}"
        return f"Dropped {entry.get('id')} ({what})."
    return None
