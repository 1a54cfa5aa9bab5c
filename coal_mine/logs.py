"""Log lines operators can parse: `[logging] format = json`, and one structured line per event.

`log_event` writes a readable message followed by `key=value` pairs; with the
JSON format the same pairs are keys of the line's JSON object.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_FIELDS = "coal_mine_fields"
_MESSAGE = "coal_mine_message"


def _text(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def log_event(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """One line for an event (late, resumed, failed, delivered ...) with its fields, e.g.
    `Canary abcdefgh is late event=late canary_id=abcdefgh event_id=42`."""
    pairs = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    line = " ".join(f"{key}={_text(value)}" for key, value in pairs.items())
    logger.log(level, "%s %s", message, line, extra={_FIELDS: pairs, _MESSAGE: message})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, _FIELDS, None)
        if fields:
            data["message"] = getattr(record, _MESSAGE, data["message"])
            data.update({key: value for key, value in fields.items() if key not in data})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    """The formatter for `[logging] format` ("text" or "json")."""
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)
