"""Status badges: a canary's state (or the whole server's) as SVG, JSON or a shields.io endpoint.

A badge is named by a random badge key, never by the canary id (which is the
trigger URL), so a badge can go on a public page. The server-wide key is made
on first start and kept in the store (setting `badge_key`).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from coal_mine.abstract_store import AbstractStore
from coal_mine.models import Canary, CanaryTotals

SERVER_BADGE_SETTING = "badge_key"
BADGE_KEY = re.compile(r"[0-9a-f]{32}\Z")
FORMATS = ("svg", "json", "shields")
COLORS = {"ok": "#4c1", "late": "#e05d44", "paused": "#9f9f9f"}
SHIELDS_COLORS = {"ok": "brightgreen", "late": "red", "paused": "lightgrey"}
# Fixed size: the label is cut to fit its box rather than the badge growing with it.
WIDTH, HEIGHT, LABEL_WIDTH = 200, 20, 130
MAX_LABEL = 20


def new_badge_key() -> str:
    """A random badge key: 128 bits as 32 hex digits."""
    return secrets.token_hex(16)


def server_badge_key(store: AbstractStore) -> str:
    """The server-wide badge key, made now if this store has none yet."""
    return store.setting(SERVER_BADGE_SETTING) or store.setting_setdefault(
        SERVER_BADGE_SETTING, new_badge_key()
    )


def ensure_badge_key(store: AbstractStore, canary: Canary) -> str:
    """The canary's badge key; one is given to a canary that has none (made by Coal Mine 0.7)."""
    if canary.badge_key:
        return canary.badge_key
    key = new_badge_key()
    if not store.update(canary.id, {"badge_key": key}, expect={"badge_key": None}):
        stored = store.get(canary.id, history=False)
        key = stored.badge_key if stored and stored.badge_key else key
    canary.badge_key = key
    return key


@dataclass(frozen=True)
class Badge:
    """What a badge says: `state` is ok, late or paused."""

    label: str
    message: str
    state: str
    details: dict[str, Any]


def canary_badge(canary: Canary) -> Badge:
    state = "paused" if canary.paused else "late" if canary.late else "ok"
    return Badge(canary.name, state, state, {"name": canary.name, "status": state})


def server_badge(totals: CanaryTotals) -> Badge:
    watched = totals.total - totals.paused
    if totals.late:
        message, state = f"{totals.late} late", "late"
    elif watched:
        message, state = f"{watched} ok", "ok"
    else:
        message, state = ("paused" if totals.total else "no canaries"), "paused"
    details = {"status": state, "canaries": totals.total, "late": totals.late, "paused": totals.paused}
    return Badge("coal mine", message, state, details)


def _fit(text: str, limit: int) -> str:
    text = " ".join(text.split())  # no newlines or tabs in a one-line badge
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render_svg(badge: Badge) -> bytes:
    """A flat badge of fixed size; every text is XML-escaped (attributes and content)."""
    label = escape(_fit(badge.label, MAX_LABEL), {'"': "&quot;", "'": "&apos;"})
    message = escape(_fit(badge.message, 14), {'"': "&quot;", "'": "&apos;"})
    color = COLORS[badge.state]
    right = WIDTH - LABEL_WIDTH
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{label}: {message}">'
        f"<title>{label}: {message}</title>"
        f'<rect width="{LABEL_WIDTH}" height="{HEIGHT}" fill="#555"/>'
        f'<rect x="{LABEL_WIDTH}" width="{right}" height="{HEIGHT}" fill="{color}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{LABEL_WIDTH // 2}" y="14">{label}</text>'
        f'<text x="{LABEL_WIDTH + right // 2}" y="14">{message}</text>'
        "</g></svg>\n"
    )
    return svg.encode("utf-8")


def render(badge: Badge, fmt: str) -> tuple[str, bytes]:
    """(Content-Type, body) of the badge in one of FORMATS."""
    if fmt == "svg":
        return "image/svg+xml; charset=utf-8", render_svg(badge)
    if fmt == "shields":
        data: dict[str, Any] = {
            "schemaVersion": 1,
            "label": badge.label,
            "message": badge.message,
            "color": SHIELDS_COLORS[badge.state],
        }
    else:
        data = {"label": badge.label, "message": badge.message, **badge.details}
    return "application/json; charset=utf-8", (json.dumps(data, indent=4) + "\n").encode("utf-8")
