"""Run reporting: start, success, failure and log events, run time, max_runtime, snooze.

The rules beside business_logic.py for jobs that say more than "I ran". A canary
that never uses them keeps every run field at its default, and so is stored,
shown and alerted exactly as by Coal Mine 0.7.1. A failure sets the 0.7.1 `late`
flag as well as `failed`, so that 0.7.1 clients see it; the next success clears
both and notifies "resumed", exactly as after a late period.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from coal_mine import limits
from coal_mine.clock import utc
from coal_mine.models import BadRequestError, Canary, NewNotification, Output, Run

if TYPE_CHECKING:
    from coal_mine.business_logic import BusinessLogic

STATES = ("ok", "running", "late", "failed", "paused")
EVENTS = ("start", "success", "fail", "log")
MAX_OPEN_RUNS = 10
MAX_EXIT_STATUS = 255
STALE_RUN_AGE = timedelta(days=7)  # an open run this old is forgotten at the next event
OUTPUT_EXCERPT = 1000  # characters of output in a FAILED notification
# The run fields of a canary that run reporting does not use (see RunLogic.in_use).
IDLE: dict[str, Any] = {"runs": [], "failed": False, "snooze_until": None}
_NUMBER = re.compile(r"\d+(\.\d*)?\Z")
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_SPLIT_OFFSET = re.compile(r" (\d\d:?\d\d)\Z")  # a "+hh:mm" offset whose "+" a query string made a space


def failing(canary: Canary) -> bool:
    """Failed and not recovered. `failed` counts only with `late`: a process that knows no
    run reporting (Coal Mine 0.7.1 on a shared MongoDB) ends a failure by clearing `late`."""
    return canary.failed and canary.late


def state_of(canary: Canary) -> str:
    """The one-word state: paused, then failed, then late, then running, else ok."""
    if canary.paused:
        return "paused"
    if failing(canary):
        return "failed"
    if canary.late:
        return "late"
    return "running" if canary.runs else "ok"


def uses_runs(canary: Canary) -> bool:
    """Whether the canary has ever used run reporting in a way that left a trace."""
    return bool(
        canary.max_runtime is not None
        or canary.failed
        or canary.runs
        or canary.last_duration is not None
        or canary.snooze_until is not None
    )


def run_json(canary: Canary) -> dict[str, Any]:
    """The run fields of a canary's JSON form; none at all for a canary that never used them."""
    if not uses_runs(canary):
        return {}
    data: dict[str, Any] = {"state": state_of(canary)}
    if canary.max_runtime is not None:
        data["max_runtime"] = canary.max_runtime
    if canary.last_duration is not None:
        data["last_duration"] = canary.last_duration
    if canary.runs:
        data["running"] = [{"rid": rid, "started": start.isoformat()} for rid, start, _ in canary.runs]
    if canary.snooze_until is not None:
        data["paused_until"] = canary.snooze_until.isoformat()
    return data


def outputs_json(outputs: list[tuple[datetime, Output]]) -> list[dict[str, Any]]:
    """`get?output=1`: each kept output with the time of its history entry, newest first."""
    return [
        {"time": ts.isoformat(), "output": out.text, "bytes": out.size, "truncated": out.truncated}
        for ts, out in outputs
    ]


def excerpt(text: str) -> str:
    """The end of an output for a notification, without control characters (tabs and newlines stay)."""
    return _UNPRINTABLE.sub("", text)[-OUTPUT_EXCERPT:]


def alarm_of(paused: bool, snooze_until: datetime | None, runs: list[Run], max_runtime: float | None) -> Any:
    """When the run rules next need a look: a snooze ending, or the first unreported overrun."""
    if paused:
        return snooze_until
    if max_runtime is None:
        return None
    ends = [start + timedelta(seconds=max_runtime) for _, start, overdue in runs if not overdue]
    return min(ends, default=None)


# --- parsing and validation (400s) ---------------------------------------------------


def parse_exit_status(text: str) -> int:
    """0-255, written in digits; anything else is a 400."""
    if not text.isascii() or not text.isdigit() or int(text) > MAX_EXIT_STATUS:
        raise BadRequestError(f'Bad exit status "{text}": give a whole number from 0 to {MAX_EXIT_STATUS}')
    return int(text)


def check_comment(comment: str) -> None:
    if len(comment) > limits.MAX_COMMENT_LENGTH:
        raise BadRequestError(
            f"Comment is too long ({len(comment)} characters; the limit is {limits.MAX_COMMENT_LENGTH})"
        )


def check_rid(rid: str | None) -> str | None:
    if rid is not None and len(rid) > limits.MAX_RID_LENGTH:
        raise BadRequestError(
            f"rid is too long ({len(rid)} characters; the limit is {limits.MAX_RID_LENGTH})"
        )
    return rid


def parse_max_runtime(text: str) -> float:
    """Seconds (digits and dots); `-` or 0 means none. Anything else is a 400."""
    if text == "-":
        return 0.0
    value = float(text) if _NUMBER.match(text) else math.nan
    if not math.isfinite(value) or value > limits.MAX_PERIODICITY:
        raise BadRequestError(
            f'Bad max_runtime "{text}": give a number of seconds up to {limits.MAX_PERIODICITY:.0f} '
            "(0 or - for none)"
        )
    return value


def parse_until(text: str, now: datetime) -> datetime:
    """`pause?until=`: an ISO 8601 time (UTC unless it says otherwise) or a number of seconds from now."""
    if _NUMBER.match(text):
        when = now + timedelta(seconds=min(float(text), limits.MAX_PERIODICITY + 1))
    else:
        try:
            when = utc(datetime.fromisoformat(_SPLIT_OFFSET.sub(r"+\1", text.strip())))
        except ValueError:
            raise BadRequestError(
                f'Bad "until" value "{text}": give an ISO 8601 time or a number of seconds'
            ) from None
    if when <= now:
        raise BadRequestError(f'"until" must be in the future (it is {when.isoformat()})')
    if when - now > timedelta(seconds=limits.MAX_PERIODICITY):
        raise BadRequestError(f'"until" must be at most {limits.MAX_PERIODICITY:.0f} seconds from now')
    return when


def _history_text(event: str, comment: str, exit_status: int | None) -> str:
    if event == "fail":
        detail = f"exit status {exit_status}" if exit_status is not None else ""
        detail = f"{detail}: {comment}" if detail and comment else detail or comment
        return f"Failed ({detail})" if detail else "Failed"
    action = {"start": "Started", "success": "Triggered", "log": "Logged"}[event]
    return f"{action} ({comment})" if comment else action


def _close_run(runs: list[Run], rid: str | None) -> Run | None:
    """The open run an end event finishes: its rid's, else the newest without a rid, else the newest."""
    if rid is not None:
        match = [run for run in runs if run[0] == rid]
    else:
        match = [run for run in runs if run[0] is None] or runs[:1]
    if match:
        runs.remove(match[0])
        return match[0]
    return None


class RunLogic:
    """The run rules on top of BusinessLogic (its store, clock, retries and notifications)."""

    def __init__(self, logic: BusinessLogic) -> None:
        self.logic = logic

    def report(
        self,
        canary_id: str,
        event: str,
        comment: str = "",
        *,
        rid: str | None = None,
        exit_status: int | None = None,
        output: Output | None = None,
    ) -> tuple[bool, bool, str, float | None]:
        """Record a start, success, fail or log event. Returns (recovered, unpaused, state,
        duration of the run it ended or None)."""
        if event not in EVENTS:
            raise ValueError(f"unknown run event {event}")
        logic = self.logic
        check_comment(comment)
        check_rid(rid)

        def attempt() -> tuple[bool, bool, str, float | None] | None:
            canary = logic._require(canary_id)
            return self.event_attempt(canary, event, comment, rid, exit_status, output)

        return logic._retry(attempt, wake=False)

    def event_attempt(
        self,
        canary: Canary,
        event: str,
        comment: str,
        rid: str | None,
        exit_status: int | None,
        output: Output | None,
    ) -> tuple[bool, bool, str, float | None] | None:
        """One optimistic try at recording an event on `canary` as read; None if it changed meanwhile."""
        logic, store = self.logic, self.logic.store
        now = logic.clock.now()
        runs = [run for run in canary.runs if now - run[1] <= STALE_RUN_AGE]
        changes: dict[str, Any] = {}
        notifications: list[NewNotification] = []
        kind: str | None = None  # the state change to notify, if any
        duration: float | None = None
        text = _history_text(event, comment, exit_status)
        if event == "start":
            runs = [(rid, now, False)] + [run for run in runs if run[0] != rid][: MAX_OPEN_RUNS - 1]
        elif event in ("success", "fail"):
            run = _close_run(runs, rid)
            if run is not None:
                duration = round((now - run[1]).total_seconds(), 3)
                changes["last_duration"] = duration
                text += f", ran {duration:.3f} s"
            deadline = logic.deadline_after(canary.periodicity, now)
            changes.update(paused=False, deadline=deadline, snooze_until=None)
            failed = event == "fail"
            changes.update(late=failed, failed=failed)
            if canary.late and not failed or failed and not failing(canary):
                kind = "failed" if failed else "resumed"
                recent = [(now, text)] + (logic._require(canary.id, history=True).history or [])
                notifications = logic._notifications_for(kind, canary, now, deadline, recent)
                for note in notifications:
                    note.payload.update(self._event_payload(event, comment, exit_status, output, duration))
        changes["runs"] = runs
        paused = changes.get("paused", canary.paused)
        snooze = changes.get("snooze_until", canary.snooze_until)
        changes["alarm"] = alarm_of(paused, snooze, runs, canary.max_runtime)
        updated = Canary(**{**canary.__dict__, **changes})
        # Run fields that keep their value are left out of the write: `runs` and `failed`
        # are expected as read, and any other writer of the rest changes one of them too.
        for name in ("runs", "alarm", "snooze_until", "last_duration"):
            if name in changes and changes[name] == getattr(canary, name):
                del changes[name]
        expect = {**logic._expect(canary), "runs": canary.runs, "failed": canary.failed}
        ok = store.update(
            canary.id,
            changes,
            expect=expect,
            history=(now, text),
            prune=logic._prune_policy(now),
            notifications=notifications,
            output=output,
        )
        if not ok:
            return None
        if kind is not None:
            logic._log_change(kind, updated)
        new_deadline, alarm = updated.deadline, updated.alarm
        wake = (
            notifications
            or canary.paused != paused
            or canary.late != updated.late
            or (new_deadline is not None and (canary.deadline is None or new_deadline < canary.deadline))
            or (alarm is not None and (canary.alarm is None or alarm < canary.alarm))
        )
        if wake:
            logic.on_change()
        recovered = event == "success" and canary.late
        unpaused = event in ("success", "fail") and canary.paused
        return recovered, unpaused, state_of(updated), duration

    @staticmethod
    def _event_payload(
        event: str, comment: str, exit_status: int | None, output: Output | None, duration: float | None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"event": event, "comment": comment, "exit_status": exit_status}
        if duration is not None:
            payload["duration"] = duration
        if output is not None:
            payload["output"] = excerpt(output.text)
            payload["output_truncated"] = output.truncated
        return payload

    # --- snooze and max_runtime ---------------------------------------------------------

    def snooze(self, canary_id: str, comment: str, until: datetime) -> Canary:
        """Pause until `until`; the alarm watcher unpauses it then (a trigger does so sooner)."""
        logic = self.logic
        check_comment(comment)

        def attempt() -> Canary | None:
            canary = logic._require(canary_id)
            if canary.paused:
                raise BadRequestError("Canary is already paused")
            now = logic.clock.now()
            text = f"Paused until {until.isoformat()}" + (f" ({comment})" if comment else "")
            ok = logic.store.update(
                canary_id,
                {"paused": True, "deadline": None, "snooze_until": until, "alarm": until},
                expect=logic._expect(canary),
                history=(now, text),
                prune=logic._prune_policy(now),
            )
            return logic._require(canary_id, history=True) if ok else None

        return logic._retry(attempt)

    def with_pause(
        self, canary: Canary, *, paused: bool, now: datetime
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The changes and expectations of a plain pause or an unpause (deadline from `now`):
        the snooze ends, and overruns count again or no longer."""
        deadline = None if paused else self.logic.deadline_after(canary.periodicity, now)
        changes: dict[str, Any] = {"paused": paused, "deadline": deadline}
        expect = self.logic._expect(canary)
        if uses_runs(canary):
            changes["snooze_until"] = None
            changes["alarm"] = alarm_of(changes["paused"], None, canary.runs, canary.max_runtime)
            expect["runs"] = canary.runs
        return changes, expect

    @staticmethod
    def in_use(canary: Canary) -> bool:
        """Whether a trigger of this canary must go through the run rules."""
        return bool(canary.runs or canary.failed or canary.snooze_until is not None)

    def trigger_attempt(self, canary: Canary, comment: str) -> tuple[bool, bool] | None:
        """A trigger of a canary in use by run reporting (see BusinessLogic.trigger)."""
        result = self.event_attempt(canary, "success", comment, None, None, None)
        return None if result is None else result[:2]

    def max_runtime_changes(
        self, canary: Canary, max_runtime: float | None, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """An update's change of max_runtime (None: unchanged, 0: none) with the alarm it
        implies, added to `changes`; the update's expectations."""
        expect = self.logic._expect(canary)
        value = max_runtime or None
        if max_runtime is None or value == canary.max_runtime:
            return expect
        changes["max_runtime"] = value
        changes["alarm"] = alarm_of(canary.paused, canary.snooze_until, canary.runs, value)
        expect["runs"] = canary.runs
        return expect

    def check_alarm(self, canary_id: str) -> bool:
        """End a due snooze and report due overruns of one canary; True if it wrote anything."""
        logic = self.logic

        def attempt() -> bool | None:
            canary = logic.store.get(canary_id, history=False)
            now = logic.clock.now()
            if canary is None or canary.alarm is None or canary.alarm > now:
                return False
            changes: dict[str, Any] = {}
            history = None
            notifications: list[NewNotification] = []
            kind: str | None = None
            runs = list(canary.runs)
            if canary.paused and canary.snooze_until is not None and canary.snooze_until <= now:
                history = (now, "Unpaused (snooze ended)")
                changes.update(
                    paused=False,
                    snooze_until=None,
                    deadline=logic.deadline_after(canary.periodicity, now),
                )
            elif canary.snooze_until is not None and not canary.paused:
                changes["snooze_until"] = None  # unpaused meanwhile by a process that knows no snoozes
            if not canary.paused and canary.max_runtime is not None:
                limit = timedelta(seconds=canary.max_runtime)
                over = [run for run in runs if not run[2] and run[1] + limit <= now]
                runs = [(rid, start, overdue or start + limit <= now) for rid, start, overdue in runs]
                changes["runs"] = runs
                if over and not canary.late:
                    changes["late"] = True
                    started = min(run[1] for run in over)
                    full = logic._require(canary_id, history=True)
                    notifications = logic._notifications_for(
                        "late", full, now, canary.deadline, full.history or []
                    )
                    for note in notifications:
                        note.payload.update(run_started=started.isoformat(), max_runtime=canary.max_runtime)
                    kind = "late"
            paused = changes.get("paused", canary.paused)
            changes["alarm"] = alarm_of(
                paused, changes.get("snooze_until", canary.snooze_until), runs, canary.max_runtime
            )
            expect = {**logic._expect(canary), "runs": canary.runs, "alarm": canary.alarm}
            ok = logic.store.update(
                canary_id,
                changes,
                expect=expect,
                history=history,
                prune=logic._prune_policy(now) if history else None,
                notifications=notifications,
            )
            if ok:
                if kind is not None:
                    logic._log_change(kind, canary)
                logic.on_change()
            return True if ok else None

        return bool(logic._retry(attempt, wake=False))

    @staticmethod
    def filter_state(canaries: Iterator[Canary], state: str | None) -> Iterator[Canary]:
        """`list?state=`: only the canaries in that state (checked before anything is listed)."""
        if state is None:
            return canaries
        if state not in STATES:
            raise BadRequestError(f'Bad state "{state}": give one of {", ".join(STATES)}')
        return (canary for canary in canaries if state_of(canary) == state)

    def kept_outputs(self, canary_id: str) -> list[tuple[datetime, Output]]:
        """The canary's kept outputs with the times of their history entries, newest first."""
        return self.logic.store.outputs(canary_id)

    def outputs(self, canary_id: str) -> list[dict[str, Any]]:
        """The canary's kept outputs, for `get?output=1`."""
        return outputs_json(self.kept_outputs(canary_id))
