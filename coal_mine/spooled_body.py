"""A response body produced in full before the status line is sent."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

# Kept in memory up to this size, in a temporary file beyond.
SPOOL_IN_MEMORY = 4 * 1024 * 1024
CHUNK = 65536


class SpooledBody:
    """The whole body, produced before the status is sent: an error halfway through
    (a database failing during a long list) is then a JSON error, never a 200 with
    truncated JSON, and the Content-Length lets a client see a connection cut short."""

    def __init__(self, spool: IO[bytes], length: int) -> None:
        self._spool = spool
        self.length = length

    @classmethod
    def of(cls, chunks: Iterator[bytes]) -> SpooledBody:
        """Run `chunks` to the end (errors propagate, nothing is kept)."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed by close()
        try:
            for chunk in chunks:
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        length = spool.tell()
        spool.seek(0)
        return cls(spool, length)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._spool.read(CHUNK):
            yield chunk

    def close(self) -> None:
        """Called by the WSGI server when the response is done (or abandoned)."""
        self._spool.close()
