"""How errors look over HTTP: one JSON error body, and one table from exceptions to statuses.

The domain exceptions (coal_mine.models) know nothing about HTTP; this is the
only place that decides which status each one gets.
"""

from __future__ import annotations

import json

from coal_mine.models import (
    AlreadyExistsError,
    BadRequestError,
    CanaryNotFoundError,
    CoalMineError,
    StoreUnavailableError,
)

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# The status of each error class; a subclass not listed gets its nearest listed base's.
STATUS_BY_ERROR: dict[type[CoalMineError], str] = {
    CoalMineError: "400 Bad Request",
    BadRequestError: "400 Bad Request",
    AlreadyExistsError: "400 Bad Request",
    CanaryNotFoundError: "404 Not Found",
    StoreUnavailableError: "503 Service Unavailable",
}


class HttpError(CoalMineError):
    """An error that is about HTTP itself (path, authentication), with its own status."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def http_status(exc: CoalMineError) -> str:
    """The HTTP status line (e.g. "404 Not Found") that answers `exc`."""
    if isinstance(exc, HttpError):
        return exc.status
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    raise AssertionError("unreachable: CoalMineError is in the table")  # pragma: no cover


def error_body(message: str) -> bytes:
    """`{"status": "error", "error": message}` as every error answer carries it (json.dumps(indent=4))."""
    return (json.dumps({"status": "error", "error": message}, indent=4) + "\n").encode("utf-8")
