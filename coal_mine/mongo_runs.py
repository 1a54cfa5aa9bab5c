"""MongoDB side of run reporting: the run fields in canary documents, and job output.

Coal Mine 0.7.1 turns a whole canary document into JSON, converting only
`deadline` and `history`, so the run fields hold only what its JSON encoder
takes: times are milliseconds since the epoch, runs are `[rid, start ms,
overdue]` arrays, and a field at its default (no failure, no runs, ...) is not
stored at all, so a canary that never uses run reporting keeps 0.7.1's document.

Output lives in its own collection, `run_outputs` ({canary, ts, text, size,
truncated}), which 0.7.1 never reads. It goes with its history entry: an output
older than the canary's oldest history entry is never shown, and is deleted the
next time the canary gets an output or its outputs are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from coal_mine.clock import utc
from coal_mine.models import Output, Run
from coal_mine.mongo_retry import Retrier

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME_FIELDS = ("snooze_until", "alarm")


def to_ms(value: datetime) -> int:
    return (utc(value) - _EPOCH) // timedelta(milliseconds=1)


def from_ms(value: Any) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(milliseconds=int(value))


def stored(name: str, value: Any) -> Any:
    """A run field as the document holds it; None: not stored (the default)."""
    if value is None:
        return None
    if name in TIME_FIELDS:
        return to_ms(value)
    if name == "runs":
        return [[rid, to_ms(start), bool(overdue)] for rid, start, overdue in value] or None
    if name == "failed":
        return True if value else None
    return float(value)  # max_runtime, last_duration


def run_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The run fields of a document, as Canary's keyword arguments."""
    runs: list[Run] = [
        (rid, from_ms(start) or _EPOCH, bool(overdue)) for rid, start, overdue in doc.get("runs") or []
    ]
    return {
        "max_runtime": doc.get("max_runtime"),
        "failed": bool(doc.get("failed")),
        "runs": runs,
        "last_duration": doc.get("last_duration"),
        "snooze_until": from_ms(doc.get("snooze_until")),
        "alarm": from_ms(doc.get("alarm")),
    }


class MongoRunData:
    """Job output and the alarm queries, beside the canaries collection."""

    def __init__(self, canaries: Collection[Any], outputs: Collection[Any], retry: Retrier) -> None:
        self.canaries = canaries
        self.outputs = outputs
        self._retry = retry

    def indexes(self) -> list[tuple[Collection[Any], list[tuple[str, int]], dict[str, Any]]]:
        return [
            (self.canaries, [("alarm", ASCENDING)], {"sparse": True}),  # only canaries with an alarm
            (self.outputs, [("canary", ASCENDING), ("ts", DESCENDING)], {}),
        ]

    def earliest_alarm(self) -> datetime | None:
        doc = self._retry.read(
            "find",
            lambda: self.canaries.find_one(
                {"alarm": {"$ne": None}}, {"_id": 0, "alarm": 1}, sort=[("alarm", ASCENDING)]
            ),
        )
        return from_ms(doc["alarm"]) if doc else None

    def due_alarms(self, now: datetime, projection: Mapping[str, int], limit: int) -> list[dict[str, Any]]:
        return self._retry.read(
            "find",
            lambda: list(
                self.canaries.find(
                    {"alarm": {"$lte": to_ms(now)}},
                    dict(projection),
                    sort=[("alarm", ASCENDING)],
                    limit=limit,
                )
            ),
        )

    def _oldest_entry(self, canary_id: str) -> datetime | None:
        doc = self._retry.read(
            "find", lambda: self.canaries.find_one({"id": canary_id}, {"_id": 0, "history": {"$slice": -1}})
        )
        entries = (doc or {}).get("history") or []
        if not entries:
            return None
        when = entries[-1][0]
        return utc(datetime.fromisoformat(when) if isinstance(when, str) else when)

    def _prune(self, canary_id: str) -> datetime | None:
        """Delete the outputs whose history entry is gone; the oldest entry's time."""
        oldest = self._oldest_entry(canary_id)
        gone: dict[str, Any] = {"canary": canary_id}
        if oldest is not None:
            gone["ts"] = {"$lt": oldest}
        self._retry.read("delete", lambda: self.outputs.delete_many(gone))
        return oldest

    def add(self, canary_id: str, when: datetime, output: Output) -> None:
        doc = {
            "_id": ObjectId(),
            "canary": canary_id,
            "ts": when,
            "text": output.text,
            "size": output.size,
            "truncated": output.truncated,
        }
        self._retry.run(
            "insert",
            lambda: self.outputs.insert_one(doc),
            applied=lambda: self.outputs.find_one({"_id": doc["_id"]}, {"_id": 1}) is not None,
        )
        self._prune(canary_id)

    def list(self, canary_id: str) -> list[tuple[datetime, Output]]:
        if self._prune(canary_id) is None:
            return []
        docs = self._retry.read(
            "find",
            lambda: list(
                self.outputs.find({"canary": canary_id}, sort=[("ts", DESCENDING), ("_id", DESCENDING)])
            ),
        )
        return [
            (utc(doc["ts"]), Output(doc["text"], int(doc["size"]), bool(doc.get("truncated"))))
            for doc in docs
        ]

    def delete(self, canary_id: str) -> None:
        self._retry.read("delete", lambda: self.outputs.delete_many({"canary": canary_id}))
