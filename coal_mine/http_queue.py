"""The requests waiting for a worker, in two lines: triggers first."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class WorkQueue:
    """Requests waiting for a worker, in two lines: triggers (served first, also by
    the workers reserved for them) and everything else. `put` refuses when the
    request's line is full."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._for_any = threading.Condition(self._lock)
        self._for_reserved = threading.Condition(self._lock)
        self._quick: deque[Any] = deque()
        self._other: deque[Any] = deque()
        self._closed = False

    def put(self, item: Any, quick: bool) -> bool:
        with self._lock:
            line = self._quick if quick else self._other
            if len(line) >= self._maxsize or self._closed:
                return False
            line.append(item)
            if quick:
                self._for_reserved.notify()
            self._for_any.notify()
        return True

    def get(self, reserved: bool) -> Any:
        """The next request for a worker (reserved ones take only triggers); None once closed."""
        with self._lock:
            while True:
                if self._quick:
                    return self._quick.popleft()
                if self._other and not reserved:
                    return self._other.popleft()
                if self._closed:
                    return None
                (self._for_reserved if reserved else self._for_any).wait()

    def close(self) -> None:
        """Take no more requests; workers finish those waiting, then get None."""
        with self._lock:
            self._closed = True
            self._for_any.notify_all()
            self._for_reserved.notify_all()

    def drain(self) -> list[Any]:
        """Take away every request still waiting."""
        with self._lock:
            left = [*self._quick, *self._other]
            self._quick.clear()
            self._other.clear()
        return left
