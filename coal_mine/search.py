"""list?search=: a regular expression over names, slugs, ids and emails, within a time budget."""

from __future__ import annotations

import re
import time

import regex

from coal_mine import limits
from coal_mine.abstract_store import AbstractStore
from coal_mine.models import BadRequestError, Canary

# A counted repetition in a search pattern: {m}, {m,}, {,n} or {m,n}. Escaped braces
# count too: telling them apart needs a parser, and nobody searches for "\{9999}".
_COUNTED_REPEAT = re.compile(r"\{(\d*),?(\d*)\}")


def search_canaries(
    store: AbstractStore, search: str, paused: bool | None, late: bool | None
) -> list[Canary]:
    """The canaries (without history) that `search` matches, within the time budget.

    The `regex` module takes Python's `re` syntax, stops a match at a timeout,
    and releases the GIL while matching (concurrent=True), so even a
    catastrophically backtracking pattern neither runs long nor stalls the
    threads serving other requests.
    """
    if len(search) > limits.MAX_SEARCH_LENGTH:
        raise BadRequestError(
            f"Search is too long ({len(search)} characters; the limit is {limits.MAX_SEARCH_LENGTH})"
        )
    # The regex module unrolls counted repetitions when compiling: (x{1000}){1000}
    # costs a quarter of a second, one more level exhausts memory.
    repeats = 1
    for low, high in _COUNTED_REPEAT.findall(search):
        repeats *= max(int(low or 0), int(high or 0), 1)
        if repeats > limits.MAX_SEARCH_REPEAT:
            raise BadRequestError(
                f"Search repeats too much (counted repetitions multiply to more than "
                f"{limits.MAX_SEARCH_REPEAT})"
            )
    try:
        matcher = regex.compile(search)
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        raise BadRequestError(f"Invalid search regular expression: {exc}") from exc
    give_up = time.monotonic() + limits.SEARCH_TIME_LIMIT
    found: list[Canary] = []
    for canary in store.iter_canaries(paused=paused, late=late, history=False):
        for text in (canary.name, canary.slug, canary.id, *canary.emails):
            left = give_up - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                if matcher.search(text, timeout=left, concurrent=True):
                    found.append(canary)
                    break
            except TimeoutError:
                raise BadRequestError(
                    f"Search took longer than {limits.SEARCH_TIME_LIMIT:g} s; "
                    "use a simpler regular expression"
                ) from None
    return found
