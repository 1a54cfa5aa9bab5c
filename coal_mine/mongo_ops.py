"""The MongoDB store's operations part: worker heartbeats, settings, summaries for metrics.

A mixin of MongoStore (which supplies `db`, `canaries` and `_retry`). Heartbeats
and settings live in collections of their own (`worker_heartbeats`,
`settings`), so Coal Mine 0.7.1 never meets a field it cannot encode in the
canary documents; the only field added there is the `badge_key` string.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from coal_mine.abstract_store import TRIGGER_COMMENT
from coal_mine.models import Canary, CanaryStatus, CanaryTotals, WorkerHeartbeat
from coal_mine.mongo_docs import doc_to_canary
from coal_mine.mongo_retry import Retrier

# Triggers are looked for among each canary's newest entries (history is newest
# first); a canary paused and unpaused more often than this since its last
# trigger shows no last-trigger time rather than making every scrape read its history.
STATUS_HISTORY_ENTRIES = 10
BADGE_INDEX = ([("badge_key", ASCENDING)], {"unique": True, "sparse": True})


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _beat(doc: Mapping[str, Any]) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=doc["_id"],
        host=doc.get("host", ""),
        pid=int(doc.get("pid", 0)),
        started=_utc(doc["started"]),  # type: ignore[arg-type]
        seen=_utc(doc["seen"]),  # type: ignore[arg-type]
        last_scan=_utc(doc.get("last_scan")),
        last_delivery=_utc(doc.get("last_delivery")),
        outbox_depth=int(doc.get("outbox_depth", 0)),
    )


class MongoOperations:
    """Heartbeats, settings and the scans behind /health and /metrics, for MongoStore."""

    db: Any
    canaries: Any
    _retry: Retrier

    @property
    def _heartbeats(self) -> Any:
        return self.db["worker_heartbeats"]

    @property
    def _settings(self) -> Any:
        return self.db["settings"]

    def record_heartbeat(self, beat: WorkerHeartbeat) -> None:
        doc = {
            "host": beat.host,
            "pid": beat.pid,
            "started": beat.started,
            "seen": beat.seen,
            "last_scan": beat.last_scan,
            "last_delivery": beat.last_delivery,
            "outbox_depth": beat.outbox_depth,
        }
        self._retry.read(
            "heartbeat",
            lambda: self._heartbeats.replace_one({"_id": beat.worker_id}, doc, upsert=True),
        )

    def heartbeats(self) -> list[WorkerHeartbeat]:
        docs = self._retry.read("find", lambda: list(self._heartbeats.find({}, sort=[("seen", -1)])))
        return [_beat(doc) for doc in docs]

    def prune_heartbeats(self, older_than: datetime) -> int:
        result = self._retry.read(
            "prune", lambda: self._heartbeats.delete_many({"seen": {"$lt": older_than}})
        )
        return int(getattr(result, "deleted_count", 0) or 0)

    def setting(self, name: str) -> str | None:
        doc = self._retry.read("find", lambda: self._settings.find_one({"_id": name}))
        return str(doc["value"]) if doc else None

    def setting_setdefault(self, name: str, value: str) -> str:
        # DuplicateKeyError: another process inserted it at the same moment; read theirs.
        with contextlib.suppress(DuplicateKeyError):
            self._retry.read(
                "setting",
                lambda: self._settings.update_one(
                    {"_id": name}, {"$setOnInsert": {"value": value}}, upsert=True
                ),
            )
        stored = self.setting(name)
        return stored if stored is not None else value

    def canary_for_badge(self, badge_key: str) -> Canary | None:
        doc = self._retry.read(
            "find",
            lambda: self.canaries.find_one(
                {"badge_key": badge_key}, {"_id": 0, "notifications": 0, "history": 0}
            ),
        )
        return doc_to_canary(doc, False) if doc else None

    def canary_totals(self) -> CanaryTotals:
        count = self.canaries.count_documents
        total = self._retry.read("count", lambda: count({}))
        late = self._retry.read("count", lambda: count({"late": True}))
        paused = self._retry.read("count", lambda: count({"paused": True}))
        return CanaryTotals(total, late, paused)

    def iter_canary_status(self) -> Iterator[CanaryStatus]:
        projection = {
            "_id": 0,
            **dict.fromkeys(("id", "name", "slug", "paused", "late", "deadline"), 1),
            "history": {"$slice": STATUS_HISTORY_ENTRIES},
        }
        cursor = self._retry.read(
            "find", lambda: self.canaries.find({}, projection, sort=[("_id", ASCENDING)])
        )
        for doc in cursor:
            last = next(
                (ts for ts, comment in doc.get("history") or [] if str(comment).startswith(TRIGGER_COMMENT)),
                None,
            )
            paused, late = bool(doc.get("paused")), bool(doc.get("late"))
            deadline = _utc(doc.get("deadline"))
            yield CanaryStatus(doc["id"], doc["name"], doc["slug"], paused, late, deadline, _utc(last))
