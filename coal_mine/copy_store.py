"""`coal-mine copy-store --from URI --to URI`: copy every canary, with its history and
pending notifications, from one store to another.

URIs: `sqlite:///absolute/path` (or `sqlite://relative/path`), `mongodb://…` or
`mongodb+srv://…` (the database is the URI's path), `postgresql://…` or `postgres://…`.

Idempotent: a canary already in the destination exactly as in the source is left
alone, and a pending notification already there is not added again. A canary
that exists in the destination but differs (or another canary holding its slug)
is a conflict: nothing is written unless --force, which replaces it. Canaries keep
their badge keys, and the server-wide badge key is copied unless the destination
has one. Only the public store interface is used, so any two stores work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from coal_mine.abstract_store import AbstractStore
from coal_mine.badges import SERVER_BADGE_SETTING
from coal_mine.models import Canary, CoalMineError, NewNotification, Notification

PROGRESS_SECONDS = 1.0  # at most one progress line per second


class CopyError(Exception):
    """The copy cannot be done (bad URI, unreachable store, conflicts without --force)."""


@dataclass
class Summary:
    """What a copy did (or, when refused, would have had to overwrite)."""

    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    history_entries: int = 0
    notifications: int = 0
    notifications_present: int = 0
    conflicts: list[str] = field(default_factory=list)

    def line(self) -> str:
        copied = self.created + self.replaced
        return (
            f"copy-store: {copied} canaries copied ({self.created} new, {self.replaced} replaced), "
            f"{self.unchanged} already there unchanged; {self.history_entries} history entries; "
            f"{self.notifications} pending notifications copied, {self.notifications_present} already there"
        )


def open_store(uri: str, option: str, *, must_exist: bool) -> AbstractStore:
    """The store a copy-store URI names; CopyError (one line, naming `option`) if it cannot be used."""
    try:
        if uri.startswith("sqlite://"):
            from coal_mine.sqlite_store import SQLiteStore

            path = uri[len("sqlite://") :]
            if not path:
                raise CopyError(f"{option}: sqlite:// needs a path (sqlite:///var/lib/coal-mine.sqlite3)")
            if must_exist and not os.path.isfile(path):
                raise CopyError(f"{option}: no such SQLite database {path}")
            return SQLiteStore(path)
        if uri.startswith(("mongodb://", "mongodb+srv://")):
            from coal_mine.mongo_store import MongoSettingsError, MongoStore

            try:
                mongo = MongoStore.from_settings(uri)
            except MongoSettingsError as exc:
                raise CopyError(f"{option}: {exc}") from None
            if not must_exist:
                mongo.ensure_indexes()
            return mongo
        if uri.startswith(("postgresql://", "postgres://")):
            from coal_mine.postgres_store import PostgresStore

            return PostgresStore(uri, max_connections=2)
    except CoalMineError as exc:
        raise CopyError(f"{option}: {exc}") from None
    raise CopyError(f"{option}: not a store URI (sqlite:///path, mongodb://… or postgresql://…)")


def _note_key(note: Notification) -> tuple[str, str, Any, str, str, str]:
    payload = json.dumps(note.payload, sort_keys=True, default=str)
    return (note.canary_id, note.kind, note.created, payload, note.channel, note.target)


def _conflicts(source: AbstractStore, dest: AbstractStore) -> tuple[int, list[str]]:
    """How many canaries the source has, and each one the destination has differently."""
    total, conflicts = 0, []
    for canary in source.iter_canaries(history=True):
        total += 1
        there = dest.get(canary.id, history=True)
        if there is not None and there != canary:
            conflicts.append(f"canary {canary.id} ({canary.name}) differs in the destination")
        slug_owner = dest.id_for_slug(canary.slug)
        if slug_owner not in (None, canary.id):
            conflicts.append(
                f"canary {canary.id}: slug {canary.slug!r} belongs to {slug_owner} in the destination"
            )
    return total, conflicts


def _add_notifications(dest: AbstractStore, canary_id: str, notes: list[Notification]) -> None:
    """Record pending notifications (one per event and target) in `dest` as the source has them,
    in order.

    A canary that is gone from the source (its messages still pending) is created
    for a moment to carry them: the store contract keeps pending notifications
    when a canary is deleted.
    """
    # One event per run of entries that share their event in the source, each entry a target.
    new: list[NewNotification] = []
    events: list[Any] = []
    for note in notes:
        if new and events[-1] == note.event:
            new[-1] = replace(new[-1], targets=(*new[-1].targets, (note.channel, note.target)))
        else:
            new.append(NewNotification(note.kind, note.created, note.payload, ((note.channel, note.target),)))
            events.append(note.event)
    if dest.get(canary_id, history=False) is not None:
        if not dest.update(canary_id, {}, notifications=new):
            raise CopyError(f"canary {canary_id} changed in the destination during the copy")
        return
    carrier = Canary(
        id=canary_id,
        name=f"copy-store {canary_id}",
        slug=f"copy-store-carrier-{canary_id}",
        periodicity=3600.0,
        paused=True,
        history=[],
    )
    dest.create(carrier)
    try:
        dest.update(canary_id, {}, notifications=new)
    finally:
        dest.delete(canary_id)


def copy(
    source: AbstractStore, dest: AbstractStore, *, force: bool = False, out: TextIO | None = None
) -> Summary:
    """Copy every canary and pending notification from `source` to `dest` (see the module doc)."""
    out = out or sys.stderr
    summary = Summary()
    total, summary.conflicts = _conflicts(source, dest)
    if summary.conflicts and not force:
        return summary
    last = time.monotonic()
    for done, canary in enumerate(source.iter_canaries(history=True), 1):
        there = dest.get(canary.id, history=True)
        if there == canary:
            summary.unchanged += 1
        else:
            if there is not None:
                dest.delete(canary.id)
            slug_owner = dest.id_for_slug(canary.slug)
            if slug_owner is not None:
                dest.delete(slug_owner)
            dest.create(canary)
            if there is None and slug_owner is None:
                summary.created += 1
            else:
                summary.replaced += 1
            summary.history_entries += len(canary.history or [])
        if time.monotonic() - last >= PROGRESS_SECONDS:
            print(f"copy-store: {done} of {total} canaries", file=out, flush=True)
            last = time.monotonic()
    present = Counter(_note_key(n) for n in dest.pending_notifications())
    missing: dict[str, list[Notification]] = {}
    for note in source.pending_notifications():
        key = _note_key(note)
        if present[key]:
            present[key] -= 1
            summary.notifications_present += 1
        else:
            missing.setdefault(note.canary_id, []).append(note)
    for canary_id, notes in missing.items():
        _add_notifications(dest, canary_id, notes)
        summary.notifications += len(notes)
    # The server-wide badge key goes along, so public badge URLs keep working; a key the
    # destination made already (a server ran on it) is kept.
    server_key = source.setting(SERVER_BADGE_SETTING)
    if server_key:
        dest.setting_setdefault(SERVER_BADGE_SETTING, server_key)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The copy-store command; 0 done, 1 refused or failed, 2 bad usage."""
    parser = argparse.ArgumentParser(
        prog="coal-mine copy-store",
        description="Copy every canary, its history and pending notifications from one store to another.",
    )
    parser.add_argument("--from", dest="source", required=True, metavar="URI", help="the store to copy from")
    parser.add_argument("--to", dest="dest", required=True, metavar="URI", help="the store to copy to")
    parser.add_argument(
        "--force", action="store_true", help="replace canaries that differ in the destination"
    )
    args = parser.parse_args(argv)
    if args.source == args.dest:
        print("coal-mine copy-store: --from and --to name the same store", file=sys.stderr)
        return 2
    try:
        source = open_store(args.source, "--from", must_exist=True)
        try:
            dest = open_store(args.dest, "--to", must_exist=False)
            try:
                summary = copy(source, dest, force=args.force)
            finally:
                dest.close()
        finally:
            source.close()
    except (CopyError, CoalMineError) as exc:
        print(f"coal-mine copy-store: {exc}", file=sys.stderr)
        return 1
    if summary.conflicts and not args.force:
        for conflict in summary.conflicts[:20]:
            print(f"coal-mine copy-store: {conflict}", file=sys.stderr)
        more = len(summary.conflicts) - 20
        print(
            f"coal-mine copy-store: refused: {len(summary.conflicts)} conflict(s)"
            + (f" ({more} more not shown)" if more > 0 else "")
            + "; nothing was written (--force replaces them)",
            file=sys.stderr,
        )
        return 1
    print(summary.line())
    return 0
