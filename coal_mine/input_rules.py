"""Clear answers for odd input that Coal Mine 0.7.1 either took wrongly or explained badly."""

from __future__ import annotations

import re

# Something meant as a number: optional sign, digits with at most one dot, optional exponent.
_NUMBER_LIKE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def number_problem(periodicity: str) -> str | None:
    """What is wrong with a periodicity that was meant as a number of seconds but is not
    one (only digits and dots are), or None if it is not meant as a number."""
    token = periodicity.strip()
    if not _NUMBER_LIKE.fullmatch(token):
        return None
    if token.startswith("-"):
        problem = "is negative; it must be more than 0"
    elif token != periodicity:
        problem = "has spaces around it"
    elif token.startswith("+"):
        problem = "has a sign"
    else:
        problem = "has an exponent; write it out (1e3 is 1000)"
    return (
        f'Bad periodicity "{periodicity}": a number of seconds is written with digits and '
        f"dots only, and this one {problem}"
    )


def unique_addresses(emails: list[str]) -> list[str]:
    """The addresses without repeats, in the order first given."""
    return list(dict.fromkeys(emails))
