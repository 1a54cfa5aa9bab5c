"""A response body produced before the status line is sent, as far as is cheap."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

# Up to this much of a body (one piece of a streamed list) is produced before the
# status is sent. A list that fits (some 500 canaries without history) is then
# complete: an error while producing it is a JSON error, and it is sent with a
# Content-Length. A longer one is streamed on from there, paced by its reader and by
# the server's gate for long answers, so that many large lists do not take the CPU
# from triggers all at once; an error after its status is sent resets the connection
# (see http_server), which a client cannot take for the end of a good answer.
PREFETCH_LIMIT = 64 * 1024


class PrefetchedBody:
    """A body whose first PREFETCH_LIMIT bytes (or all of it) are already produced."""

    def __init__(self, head: list[bytes], rest: Iterator[bytes] | None) -> None:
        self._head = head
        self._rest = rest
        # Known only when the whole body is here.
        self.length = sum(len(piece) for piece in head) if rest is None else None

    @classmethod
    def of(cls, chunks: Iterator[bytes], limit: int = PREFETCH_LIMIT) -> PrefetchedBody:
        """Produce `chunks` up to `limit` bytes (errors propagate: nothing is sent yet)."""
        head: list[bytes] = []
        size = 0
        for chunk in chunks:
            head.append(chunk)
            size += len(chunk)
            if size >= limit:
                return cls(head, chunks)
        return cls(head, None)

    def __iter__(self) -> Iterator[bytes]:
        return itertools.chain(self._head, self._rest or ())

    @property
    def complete(self) -> bool:
        """Whether the whole body is already produced."""
        return self._rest is None
