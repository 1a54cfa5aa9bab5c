"""The PostgreSQL store's usual trigger (AbstractStore.postpone): one statement.

Two forms, both one round trip and one commit. The lean one is the conditional
update that computes the new deadline from the stored periodicity, with the
history entry; it returns the canary's history count so the caller can see
whether pruning is due. The pruning one does that and the pruning the new entry
calls for, for a canary whose history is at its limit (as a long-lived one's is
at every trigger): it costs some 0.1 ms more to execute, so it is not the
default. Pruning takes the oldest entries, the new one counted, as
sql_shared.prune_rows does in steps: those older than the cutoff while more than
`min` remain, then the oldest beyond `max`; both take from the oldest end, so it
is the first K in (ts, hid) order. K is worked out from the statement's
snapshot; the update applies it only if the canary's row is still the one that
snapshot saw (else another write came in between, and it applies only what
needs no pruning, or nothing: the caller then takes the general path).
"""

from __future__ import annotations

import re
from functools import lru_cache

from coal_mine.postgres_raw import Prepared

# `when` plus the periodicity, to the millisecond, as BusinessLogic.deadline_after:
# whole seconds, then the fraction rounded half-even to microseconds (Python's
# timedelta), then truncated to milliseconds (to_millis).
NEXT_DEADLINE = (
    "date_trunc('milliseconds', %(when)s::timestamptz + trunc(periodicity_seconds) * interval '1 second' "
    "+ round((periodicity_seconds - trunc(periodicity_seconds)) * 1000000) * interval '1 microsecond')"
)


# The types of the statements' own parameters (their text values go untyped, see
# postgres_raw.py); the expectations' parameters take their columns' types.
_TYPES = {
    "id": "text",
    "when": "timestamptz",
    "ts": "timestamptz",
    "comment": "text",
    "p_max": "int",
    "p_min": "int",
    "p_cutoff": "timestamptz",
}


def _typed(sql: str) -> Prepared:
    return Prepared(
        re.sub(
            r"%\((\w+)\)s(?!::)",
            lambda m: m.group(0) + (f"::{_TYPES[m.group(1)]}" if m.group(1) in _TYPES else ""),
            sql,
        )
    )


def _needs_pruning(count: str, oldest: str) -> str:
    """Whether a canary with `count` entries (the new one counted) and `oldest` must prune."""
    return f"({count} > %(p_max)s OR ({count} > %(p_min)s AND LEAST({oldest}, %(ts)s) < %(p_cutoff)s))"


@lru_cache(maxsize=64)
def pruning_sql(where: tuple[str, ...], canary_columns: str) -> Prepared:
    """The statement with pruning; `where` are the update's conditions on canary `%(id)s`.
    Parameters: id, when, ts, comment, p_max, p_min, p_cutoff and those of `where`. One row:
    seq and the number of entries pruned if postponed, else NULLs and the canary as it is
    (all NULL if there is none)."""
    old_entries = (
        "(SELECT count(*) FROM history h WHERE h.canary_seq = c.seq AND h.ts < %(p_cutoff)s) "
        "+ CASE WHEN %(ts)s < %(p_cutoff)s THEN 1 ELSE 0 END"
    )
    cut = (
        f"CASE WHEN {_needs_pruning('c.history_count + 1', 'c.history_oldest')} "
        "THEN GREATEST(c.history_count + 1 - %(p_max)s, "
        "CASE WHEN c.history_count + 1 > %(p_min)s AND LEAST(c.history_oldest, %(ts)s) < %(p_cutoff)s "
        f"THEN LEAST(c.history_count + 1 - %(p_min)s, {old_entries}) ELSE 0 END, 0) ELSE 0 END"
    )
    # The row version the snapshot saw: a write since then made a new one (and the one seen
    # cannot be reused while this statement's snapshot holds it). Counts alone would not
    # do: at the limit a trigger leaves the count as it found it.
    unchanged = "canaries.ctid = k.s_ctid"
    return _typed(
        # k: the canary as the snapshot has it, and how many entries go (s_k).
        "WITH k AS (SELECT c.ctid AS s_ctid, c.seq AS s_seq, c.history_count AS s_n, "
        f"{cut} AS s_k FROM canaries c WHERE c.id = %(id)s), "
        # e: its first s_k + 1 entries, the new one (hid NULL) counted, numbered in order:
        # the first s_k go, the next is the oldest that stays. Read only if s_k > 0.
        "e AS (SELECT x.hid, x.ts, row_number() OVER (ORDER BY x.ts, x.hid NULLS LAST) AS n FROM ("
        "(SELECT h.hid, h.ts FROM history h, k WHERE h.canary_seq = k.s_seq AND k.s_k > 0 "
        "ORDER BY h.ts, h.hid LIMIT (SELECT s_k + 1 FROM k)) "
        "UNION ALL SELECT NULL::bigint, %(ts)s::timestamptz FROM k WHERE k.s_k > 0) x), "
        f"u AS (UPDATE canaries SET deadline = {NEXT_DEADLINE}, "
        "history_count = CASE WHEN k.s_k = 0 THEN history_count + 1 ELSE k.s_n + 1 - k.s_k END, "
        "history_oldest = CASE WHEN k.s_k = 0 THEN LEAST(COALESCE(history_oldest, %(ts)s), %(ts)s) "
        "ELSE (SELECT e.ts FROM e WHERE e.n = k.s_k + 1) END "
        f"FROM k WHERE canaries.seq = k.s_seq AND {' AND '.join(where)} "
        f"AND periodicity_seconds IS NOT NULL AND deadline <= {NEXT_DEADLINE} AND ({unchanged} OR "
        f"(k.s_k = 0 AND NOT {_needs_pruning('history_count + 1', 'history_oldest')})) "
        "RETURNING canaries.seq, k.s_k), "
        "d AS (DELETE FROM history WHERE hid IN (SELECT e.hid FROM e, u WHERE e.n <= u.s_k)), "
        "h AS (INSERT INTO history (canary_seq, ts, comment) SELECT seq, %(ts)s, %(comment)s FROM u "
        "WHERE NOT EXISTS (SELECT FROM e WHERE e.hid IS NULL AND e.n <= u.s_k)) "
        f"SELECT u.seq, u.s_k, {canary_columns} FROM (SELECT) one LEFT JOIN u ON true "
        "LEFT JOIN canaries c ON u.seq IS NULL AND c.id = %(id)s"
    )


@lru_cache(maxsize=64)
def lean_sql(where: tuple[str, ...], canary_columns: str) -> Prepared:
    """The statement without pruning; parameters as pruning_sql's. One row: seq and
    whether pruning is now due if postponed, else NULLs and the canary as it is (all
    NULL if there is none)."""
    return _typed(
        f"WITH u AS (UPDATE canaries SET deadline = {NEXT_DEADLINE}, history_count = history_count + 1, "
        "history_oldest = LEAST(COALESCE(history_oldest, %(ts)s), %(ts)s) "
        f"WHERE {' AND '.join(where)} AND periodicity_seconds IS NOT NULL "
        f"AND deadline <= {NEXT_DEADLINE} RETURNING seq, history_count, history_oldest), "
        "h AS (INSERT INTO history (canary_seq, ts, comment) SELECT seq, %(ts)s, %(comment)s FROM u) "
        f"SELECT u.seq, {_needs_pruning('u.history_count', 'u.history_oldest')}, {canary_columns} "
        "FROM (SELECT) one LEFT JOIN u ON true LEFT JOIN canaries c ON u.seq IS NULL AND c.id = %(id)s"
    )
