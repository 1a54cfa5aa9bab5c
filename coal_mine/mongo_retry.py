"""How the MongoDB store retries: which errors mean "try again", and how often.

A call that fails because no primary is reachable, or the primary is stepping
down, is retried after each of the store's delays; then it raises
StoreUnavailableError (a 503). A write whose outcome is unknown (the connection
dropped after sending) is checked with `applied` before it is sent again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pymongo.errors import AutoReconnect, ConnectionFailure, OperationFailure, ServerSelectionTimeoutError

from coal_mine.models import StoreUnavailableError

log = logging.getLogger("coal_mine.mongo_store")

T = TypeVar("T")

# Pauses between attempts when the server is unreachable or stepping down: about
# 3 s in all, longer than a typical replica-set election's unavailability window
# as seen by a client that already waits serverSelectionTimeoutMS per attempt.
DEFAULT_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
# Server-side errors that mean "not primary right now"; pymongo raises most of
# them as NotPrimaryError (an AutoReconnect), but not every path does.
_STEP_DOWN_CODES = frozenset({91, 189, 10107, 11600, 11602, 13435, 13436})


class Applied:
    """The type of APPLIED: a write found to have landed before it was re-sent."""


APPLIED = Applied()


def retryable(exc: BaseException) -> bool:
    """True for errors after which the same call may succeed at once (not after a long wait)."""
    if isinstance(exc, ServerSelectionTimeoutError):
        return False  # already waited serverSelectionTimeoutMS for a server
    if isinstance(exc, AutoReconnect):
        return True  # includes NotPrimaryError and NetworkTimeout
    return isinstance(exc, OperationFailure) and exc.code in _STEP_DOWN_CODES


def unavailable(exc: BaseException) -> bool:
    """True for errors that mean the database cannot be reached right now."""
    return isinstance(exc, ConnectionFailure) or retryable(exc)


class Retrier:
    """Runs database calls under the retry policy."""

    def __init__(
        self, delays: Sequence[float] = DEFAULT_RETRY_DELAYS, sleep: Callable[[float], None] = time.sleep
    ):
        self.delays = tuple(delays)
        self.sleep = sleep

    def run(self, what: str, call: Callable[[], T], applied: Callable[[], bool] | None = None) -> T | Applied:
        """Run one call; with `applied` (for writes that are not idempotent), a retry
        first asks whether the write landed anyway and then returns APPLIED."""
        uncertain = False
        for attempt in range(len(self.delays) + 1):
            try:
                if uncertain and applied is not None and applied():
                    return APPLIED
                return call()
            except Exception as exc:  # noqa: BLE001 - classified (and re-raised) below
                self.give_up_unless_retryable(what, exc, attempt)
                log.info("MongoDB %s: %s; retrying", what, exc)
                uncertain = True
                self.sleep(self.delays[attempt])
        raise AssertionError("unreachable")

    def read(self, what: str, call: Callable[[], T]) -> T:
        """Run an idempotent call (a read, or a write that may safely repeat)."""
        result = self.run(what, call)
        assert not isinstance(result, Applied)
        return result

    def give_up_unless_retryable(self, what: str, exc: Exception, attempt: int) -> None:
        """Re-raise `exc` (as StoreUnavailableError if the database is unreachable)
        unless attempt number `attempt` may be followed by another."""
        if not unavailable(exc):
            raise exc
        if not retryable(exc) or attempt >= len(self.delays):
            log.warning("MongoDB %s failed: %s", what, exc)
            raise StoreUnavailableError(f"MongoDB is unavailable ({what}): {exc}") from exc


def result_count(result: Any, field: str) -> int:
    """`matched_count`/`modified_count`/`deleted_count` of a write result; 1 for APPLIED."""
    return 1 if isinstance(result, Applied) else int(getattr(result, field))
