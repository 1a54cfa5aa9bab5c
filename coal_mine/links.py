"""Links into the web dashboard from messages sent elsewhere (alert emails).

Only with a configured public address (`[web] base_url`, `BASE_URL`): a link
with a guessed host would send people to the wrong place.
"""

from __future__ import annotations

from urllib.parse import quote

UI_PREFIX = "/coal-mine/ui/"


def canary_page(base_url: str | None, canary_id: str) -> str | None:
    """The canary's dashboard page under `base_url`, or None without one."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}{UI_PREFIX}canary/{quote(canary_id, safe='')}"


def with_link(text: str, link: str | None) -> str:
    """A message body followed by the link on a line of its own; the body itself is unchanged."""
    if link is None:
        return text
    return f"{text}{'' if text.endswith(chr(10)) else chr(10)}\n{link}\n"
