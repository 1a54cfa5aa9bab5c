"""Plain data carried between the layers: canaries, notifications, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

HistoryEntry = tuple[datetime, str]
# An open run: (run id or None, start time, whether its max_runtime overrun was reported).
Run = tuple[str | None, datetime, bool]

# The fields of a canary in the API's JSON, in Coal Mine's order (see api.canary_to_json).
CANARY_JSON_FIELDS = (
    "id",
    "name",
    "slug",
    "periodicity",
    "description",
    "emails",
    "paused",
    "history",
    "late",
    "deadline",
    "periodicity_schedule",
)

# How many of the latest history entries a late/resumed message shows.
NOTIFICATION_HISTORY_ENTRIES = 15


@dataclass
class Canary:
    """One monitored task. `history` is newest first; None when not loaded.

    The fields after `badge_key` belong to run reporting (coal_mine/runs.py); a canary
    that never uses it keeps their defaults, and stores leave them out of its record.
    `alarm` is when the run rules next need a look (a snooze ending, a run overrunning).
    """

    id: str
    name: str
    slug: str
    periodicity: float | str
    description: str = ""
    emails: list[str] = field(default_factory=list)
    paused: bool = False
    late: bool = False
    deadline: datetime | None = None
    history: list[HistoryEntry] | None = None
    badge_key: str | None = None  # public name for status badges; None on canaries made by 0.7
    webhooks: list[str] = field(default_factory=list)
    slacks: list[str] = field(default_factory=list)
    repeat: float = 0  # seconds between [STILL LATE] reminders; 0: none
    remind_at: datetime | None = None  # when the next reminder is due (late canaries only)
    max_runtime: float | None = None
    failed: bool = False
    runs: list[Run] = field(default_factory=list)
    last_duration: float | None = None
    snooze_until: datetime | None = None
    alarm: datetime | None = None


@dataclass(frozen=True)
class Output:
    """What a job sent in a POST body, kept with its history entry."""

    text: str  # decoded as UTF-8 with replacement, at most [wsgi] max_body bytes of it
    size: int  # bytes received (more than were kept when `truncated`)
    truncated: bool = False


@dataclass
class Notification:
    """One event to deliver to one channel target: the unit of the outbox.

    An event (late, resumed, reminder, ...) is recorded with the state change that
    caused it, as one of these per target; all share `event` and the snapshot
    `payload` (name, targets, deadline, recent history), so each can be delivered
    even if the canary changes or goes away. Delivery state (attempts, backoff,
    lease, last error) is per target, so one failing target never holds back
    another and a retry resends only where delivery failed.
    """

    id: Any
    canary_id: str
    kind: str  # "late", "resumed", "reminder", "test", ...
    created: datetime
    payload: dict[str, Any]
    not_before: datetime
    attempts: int = 0
    event: Any = None  # shared by the deliveries of one event
    channel: str = "email"  # a kind in coal_mine.channels
    target: str = ""  # email address, webhook URL, ...
    last_error: str | None = None
    permanent: bool = False  # the last failure was one a retry is unlikely to cure


Target = tuple[str, str]  # (channel kind, target)


@dataclass(frozen=True)
class NewNotification:
    """An event to record as part of a store update: one delivery per target.

    An event with no targets records nothing.
    """

    kind: str
    created: datetime
    payload: dict[str, Any]
    targets: tuple[Target, ...] = ()


@dataclass(frozen=True)
class TargetStatus:
    """The outcome of the latest deliveries to one target of one canary."""

    channel: str
    target: str
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


@dataclass(frozen=True)
class PrunePolicy:
    """How much history to keep after a new entry (the rule lives in business logic)."""

    max_entries: int
    min_entries: int
    older_than: datetime  # entries older than this go while more than min_entries remain


@dataclass(frozen=True)
class WorkerHeartbeat:
    """What a background worker last said about itself (see coal_mine/health.py)."""

    worker_id: str
    host: str
    pid: int
    started: datetime
    seen: datetime
    last_scan: datetime | None = None  # the end of its last complete deadline scan
    last_delivery: datetime | None = None  # its last successful notification delivery
    outbox_depth: int = 0


class CanaryStatus(NamedTuple):
    """What /metrics shows of one canary (a plain tuple: 100,000 of them per scrape)."""

    id: str
    name: str
    slug: str
    paused: bool
    late: bool
    deadline: datetime | None
    last_trigger: datetime | None  # the newest "Triggered" history entry


# What /metrics writes of one canary, as a plain tuple of the values it writes (no object
# per canary, no datetimes to convert back): id, name, slug, late and paused as 0.0 or 1.0,
# the deadline (None while paused or unset) and the last trigger (None if never) as seconds
# since the epoch.
CanaryMetricsRow = tuple[str, str, str, float, float, float | None, float | None]


@dataclass(frozen=True)
class CanaryTotals:
    """How many canaries there are, and how many of them are late or paused."""

    total: int
    late: int
    paused: int


@dataclass(frozen=True)
class OutboxSummary:
    """Pending notifications: how many, and when the oldest was recorded."""

    pending: int
    oldest: datetime | None


class CoalMineError(Exception):
    """Base class of the errors the API reports to its caller (the HTTP layer maps each to a status)."""


class BadRequestError(CoalMineError):
    """The request is malformed or asks for something impossible (400)."""


class CanaryNotFoundError(CoalMineError):
    """No canary matches the identifier (404)."""

    def __init__(self, message: str = "Canary Not Found") -> None:
        super().__init__(message)


class AlreadyExistsError(CoalMineError):
    """A unique field (id or slug) would be duplicated."""

    def __init__(self, field_name: str, value: str) -> None:
        super().__init__(f'A canary with {field_name} "{value}" already exists')
        self.field_name = field_name
        self.value = value


class StoreUnavailableError(CoalMineError):
    """The database cannot be reached right now (503)."""
