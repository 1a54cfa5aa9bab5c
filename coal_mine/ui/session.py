"""Dashboard sessions: a signed cookie naming the role, its expiry and a nonce for CSRF tokens.

The signing key is derived from the configured auth keys, so every process of
one installation agrees on it without shared state, and changing a key ends
every session made with the old one. Without an auth key the dashboard is
open and the session only carries the CSRF nonce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

COOKIE = "coal_mine_session"
ROLES = ("", "read-only", "full")  # "": not signed in (only with an auth key)


@dataclass(frozen=True)
class Session:
    role: str
    expires: int  # Unix seconds
    nonce: str

    @property
    def can_write(self) -> bool:
        return self.role == "full"

    @property
    def signed_in(self) -> bool:
        return self.role != ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens."""

    def __init__(self, auth_key: str | None, read_only_auth_key: str | None, lifetime: float) -> None:
        material = "\0".join(("coal-mine dashboard session", auth_key or "", read_only_auth_key or ""))
        self._key = hashlib.sha256(material.encode("utf-8", errors="surrogateescape")).digest()
        self.lifetime = lifetime

    def new(self, role: str, now: datetime) -> Session:
        return Session(role, int(now.timestamp() + self.lifetime), secrets.token_urlsafe(16))

    def _mac(self, purpose: str, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest())

    def dump(self, session: Session) -> str:
        payload = _b64(json.dumps([session.role, session.expires, session.nonce]).encode())
        return f"{payload}.{self._mac('session', payload)}"

    def load(self, cookie: str | None, now: datetime) -> Session | None:
        """The session in a cookie value, or None if it is missing, forged, malformed or expired."""
        if not cookie or "." not in cookie:
            return None
        payload, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac.encode(), self._mac("session", payload).encode()):
            return None
        try:
            role, expires, nonce = json.loads(_unb64(payload))
        except (ValueError, TypeError, binascii.Error):
            return None
        if role not in ROLES or not isinstance(expires, int) or not isinstance(nonce, str):
            return None
        if expires <= now.timestamp():
            return None
        return Session(role, expires, nonce)

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.nonce)

    def check_csrf(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def role_for_key(self, given: str, auth_key: str | None, read_only_auth_key: str | None) -> str:
        """The role a sign-in key grants ("" for a wrong key); both keys are always compared."""
        supplied = given.encode("utf-8", errors="surrogateescape")
        full = hmac.compare_digest(supplied, (auth_key or "").encode()) and bool(auth_key)
        read_only = hmac.compare_digest(supplied, (read_only_auth_key or "").encode())
        if full:
            return "full"
        return "read-only" if read_only and bool(read_only_auth_key) else ""
