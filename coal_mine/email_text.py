"""The text of the LATE and RESUMED messages, worded as Coal Mine 0.7.1 words them.

Users of 0.7.1 filter and parse these messages, so the subject and every line
of the body keep 0.7.1's wording, and times keep its rendering: `str()` of a
UTC datetime ("2026-03-02 12:00:00.123000+00:00"), padded to 30 columns in the
list of recent events. Only the headers around the body are ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from coal_mine.models import NOTIFICATION_HISTORY_ENTRIES

# 0.7.1 lists this many of the newest history entries (the payload keeps as many).
RECENT_EVENTS = NOTIFICATION_HISTORY_ENTRIES


def render_time(value: object) -> str:
    """A stored time as 0.7.1 prints it: `str()` of the datetime, not its ISO form."""
    if isinstance(value, datetime):
        return str(value)
    if isinstance(value, str):
        try:
            return str(datetime.fromisoformat(value))
        except ValueError:
            return value
    return str(value)


def subject(kind: str, name: str) -> str:
    """The subject line of a `late`, `failed` or `resumed` message."""
    if kind == "late":
        return f"[LATE] {name} has not reported"
    if kind == "failed":
        return f"[FAILED] {name} reported a failure"
    return f"[RESUMED] {name} is reporting again"


def body(kind: str, payload: Mapping[str, Any]) -> str:
    """The plain-text body of a `late` or `resumed` message, line for line as 0.7.1; a
    `failed` message and the `late` message of an overrunning run (coal_mine/runs.py)
    in the same style."""
    name = payload.get("name", "")
    ident = payload.get("id", "")
    if kind == "failed":
        text = failure_text(name, ident, payload)
    elif kind == "late" and payload.get("run_started"):
        text = (
            f"The canary {name} ({ident}) started a run at {render_time(payload['run_started'])} "
            "that has not finished.\n"
            f"\nIts max_runtime is {payload.get('max_runtime')} seconds.\n"
        )
    elif kind == "late":
        deadline = render_time(payload.get("deadline"))
        text = f"The canary {name} ({ident}) was expected to report before {deadline}.\n"
    else:
        # 0.7.1 gives the time of the newest history entry (the trigger that resumed it).
        history_now: Sequence[Sequence[Any]] = payload.get("history") or []
        as_of = history_now[0][0] if history_now else payload.get("when")
        text = f"The canary {name} ({ident}) is reporting again as of {render_time(as_of)}.\n"
        text += f"\nThe next trigger for this canary is due before {render_time(payload.get('deadline'))}.\n"
    text += "\nRecent events for this canary:\n\n"
    history: Sequence[Sequence[Any]] = payload.get("history") or []
    for when, comment in history[:RECENT_EVENTS]:
        text += f"{render_time(when):30} {comment}\n"
    return text


def failure_text(name: object, ident: object, payload: Mapping[str, Any]) -> str:
    """What a FAILED message says before the recent events: exit status, comment, run time, output."""
    status = payload.get("exit_status")
    with_status = f" with exit status {status}" if status is not None else ""
    when = render_time(payload.get("when"))
    text = f"The canary {name} ({ident}) reported a failure{with_status} at {when}.\n"
    if payload.get("comment"):
        text += f"\nComment: {payload['comment']}\n"
    if payload.get("duration") is not None:
        text += f"\nThe run took {payload['duration']:.3f} seconds.\n"
    if payload.get("output"):
        cut = " (cut at the server's limit)" if payload.get("output_truncated") else ""
        text += f"\nThe end of its output{cut}:\n\n{payload['output'].rstrip()}\n"
    return text
