"""The LATE and RESUMED bodies, pinned line by line to Coal Mine 0.7.1's wording.

0.7.1 (coal_mine/business_logic.py, `BusinessLogic.notify`) builds the body as:

    late:    "The canary NAME (ID) was expected to report before DEADLINE.\\n"
    resumed: "The canary NAME (ID) is reporting again as of HISTORY[0].TIME.\\n"
             "\\nThe next trigger for this canary is due before DEADLINE.\\n"
    both:    "\\nRecent events for this canary:\\n\\n"
             then for each of the 15 newest events: "{:30} {}\\n" of (str(time), comment)

`reference_body` below is our own re-statement of that rule, used as the oracle.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from coal_mine import email_text
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.config import EmailConfig
from coal_mine.memory_store import MemoryStore
from coal_mine.channels.email import EmailChannel, SMTPNotifier
from coal_mine.notify import OutboxSender
from coal_mine.watcher import Watcher
from tests.smtp_sink import SMTPSink

T0 = datetime(2026, 3, 2, 12, 0, 0, 123000, tzinfo=UTC)

LATE = """\
The canary Nightly backup (abcdefgh) was expected to report before 2026-03-02 11:59:59.123000+00:00.

Recent events for this canary:

2026-03-02 11:00:00+00:00      Triggered (run 2)
2026-03-02 10:00:00.500000+00:00 Triggered
2026-03-02 09:00:00+00:00      Canary created
"""

RESUMED = """\
The canary Nightly backup (abcdefgh) is reporting again as of 2026-03-02 12:00:00.123000+00:00.

The next trigger for this canary is due before 2026-03-02 13:00:00.123000+00:00.

Recent events for this canary:

2026-03-02 12:00:00.123000+00:00 Triggered (back)
2026-03-02 11:00:00+00:00      Triggered (run 2)
"""


def reference_body(kind: str, name: str, ident: str, deadline: Any, history: list[tuple[Any, str]]) -> str:
    """0.7.1's body rule, re-stated (times are datetimes, as 0.7.1 holds them)."""
    if kind == "late":
        text = f"The canary {name} ({ident}) was expected to report before {deadline}.\n"
    else:
        text = f"The canary {name} ({ident}) is reporting again as of {history[0][0]}.\n"
        text += f"\nThe next trigger for this canary is due before {deadline}.\n"
    text += "\nRecent events for this canary:\n\n"
    for when, comment in history[:15]:
        text += f"{str(when):30} {comment}\n"
    return text


def payload(deadline: datetime, history: list[tuple[datetime, str]]) -> dict[str, Any]:
    return {
        "id": "abcdefgh",
        "name": "Nightly backup",
        "emails": ["ops@example.com"],
        "when": history[0][0].isoformat(),
        "deadline": deadline.isoformat(),
        "history": [[when.isoformat(), comment] for when, comment in history],
    }


def test_late_body_is_pinned() -> None:
    history = [
        (datetime(2026, 3, 2, 11, tzinfo=UTC), "Triggered (run 2)"),
        (datetime(2026, 3, 2, 10, 0, 0, 500000, tzinfo=UTC), "Triggered"),
        (datetime(2026, 3, 2, 9, tzinfo=UTC), "Canary created"),
    ]
    deadline = T0 - timedelta(seconds=1)
    assert email_text.body("late", payload(deadline, history)) == LATE
    assert reference_body("late", "Nightly backup", "abcdefgh", deadline, history) == LATE
    assert email_text.subject("late", "Nightly backup") == "[LATE] Nightly backup has not reported"


def test_resumed_body_is_pinned() -> None:
    history = [(T0, "Triggered (back)"), (datetime(2026, 3, 2, 11, tzinfo=UTC), "Triggered (run 2)")]
    deadline = T0 + timedelta(hours=1)
    assert email_text.body("resumed", payload(deadline, history)) == RESUMED
    assert reference_body("resumed", "Nightly backup", "abcdefgh", deadline, history) == RESUMED
    assert email_text.subject("resumed", "Nightly backup") == "[RESUMED] Nightly backup is reporting again"


def test_only_the_fifteen_newest_events() -> None:
    history = [(T0 - timedelta(minutes=i), f"Triggered ({i})") for i in range(20)]
    text = email_text.body("late", payload(T0, history))
    assert text == reference_body("late", "Nightly backup", "abcdefgh", T0, history)
    assert len(text.splitlines()) == 4 + 15


def test_bodies_sent_over_smtp_match_the_rule_for_the_canarys_real_state() -> None:
    """A canary goes late and resumes on the fake clock; both messages reach a real SMTP
    server with 0.7.1's body for the canary's state as the store then held it."""
    clock = FakeClock(datetime(2026, 3, 2, 12, 0, 0, 250000, tzinfo=UTC))
    store = MemoryStore()
    logic = BusinessLogic(store, clock)
    canary = logic.create("Nightly backup", 60, emails=["ops@example.com"])
    clock.advance(61)
    Watcher(logic).step()
    late_state = logic.get(canary.id)
    clock.advance(5)
    logic.trigger(canary.id, "back")
    resumed_state = logic.get(canary.id)
    with SMTPSink() as sink:
        config = EmailConfig(sender="coal@example.net", host="127.0.0.1", port=sink.port, timeout=5.0)
        OutboxSender(store, EmailChannel("coal@example.net", SMTPNotifier(config)), clock=clock).step()
        late, resumed = sink.wait_for(2)
    assert late.subject == "[LATE] Nightly backup has not reported"
    # On the wire both 0.7.1 and this server end lines with CRLF.
    assert late.body().replace("\r\n", "\n") == reference_body(
        "late", "Nightly backup", canary.id, late_state.deadline, late_state.history or []
    )
    assert resumed.subject == "[RESUMED] Nightly backup is reporting again"
    assert resumed.body().replace("\r\n", "\n") == reference_body(
        "resumed", "Nightly backup", canary.id, resumed_state.deadline, resumed_state.history or []
    )
    assert resumed.message["Date"] and resumed.message["Message-ID"] and resumed.message["X-Coal-Mine-Event"]
