"""Dead man's switch: after a deadline scan, request `[watchdog] url`, at most once a minute.

The URL is another monitor's trigger URL (another Coal Mine, a Healthchecks
check): if this whole server dies, the pings stop and that monitor alerts. The
request runs in a thread of its own, so a slow or dead watchdog never delays
the scans; a failure is logged and never stops anything.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta

from coal_mine.clock import Clock

log = logging.getLogger(__name__)

MIN_INTERVAL = timedelta(minutes=1)


def redact(url: str) -> str:
    """The URL without its query string (which may hold a key) for log lines."""
    return url.split("?", 1)[0] + ("?…" if "?" in url else "")


class Watchdog:
    """Call `scanned(now)` after each finished scan; it pings when a minute has passed."""

    def __init__(self, url: str, clock: Clock, *, timeout: float = 10.0) -> None:
        self.url = url
        self.clock = clock
        self.timeout = timeout
        self.last_ping: datetime | None = None
        self._busy = threading.Lock()

    def scanned(self, now: datetime) -> None:
        """Start a ping unless one ran within the last minute or is still running."""
        if self.last_ping is not None and now - self.last_ping < MIN_INTERVAL:
            return
        if not self._busy.acquire(blocking=False):
            return
        self.last_ping = now
        threading.Thread(target=self._ping_and_release, name="watchdog", daemon=True).start()

    def _ping_and_release(self) -> None:
        try:
            self.ping()
        finally:
            self._busy.release()

    def ping(self) -> bool:
        """Request the URL once; True on a 2xx answer. Failures are logged, never raised."""
        request = urllib.request.Request(self.url, headers={"User-Agent": "coal-mine-watchdog"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(65536)
                status = response.status
        except urllib.error.HTTPError as exc:
            log.warning("Watchdog %s answered HTTP %d", redact(self.url), exc.code)
            return False
        except Exception as exc:  # noqa: BLE001 - unreachable, timeout, bad TLS ...: only logged
            log.warning("Watchdog %s failed: %s: %s", redact(self.url), type(exc).__name__, exc)
            return False
        if not 200 <= status < 300:
            log.warning("Watchdog %s answered HTTP %d", redact(self.url), status)
            return False
        log.debug("Watchdog %s pinged", redact(self.url))
        return True
