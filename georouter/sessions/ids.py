"""Session ids: which strings may name a session, and the router's own signed cookies.

Pure: no randomness and no clock here; callers pass random bytes in. An id
is checked before it touches Redis, so a hostile client cannot grow the map
with megabyte keys or odd bytes. A cookie the router issues is
``<id>.<signature>``, the signature an HMAC-SHA256 of the id under the first
of the configured keys; every configured key verifies, so keys can be rotated
by putting the new one first and dropping the old one a session lifetime later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

# Letters, digits and the URL-safe and base64 punctuation apps use in their ids.
_ID_RE = re.compile(r"^[A-Za-z0-9._~+/=:-]{1,128}$")
MIN_RANDOM_BYTES = 16  # 128 bits
_SIG_CHARS = 43  # base64url of a 32-byte HMAC-SHA256, unpadded


def valid_id(session_id: str) -> bool:
    """1-128 characters of ``A-Z a-z 0-9 . _ ~ + / = : -``."""
    return _ID_RE.fullmatch(session_id) is not None


def new_id(random_bytes: bytes) -> str:
    """A session id from at least 16 random bytes (``secrets.token_bytes``)."""
    if len(random_bytes) < MIN_RANDOM_BYTES:
        raise ValueError(f"a session id needs at least {MIN_RANDOM_BYTES} random bytes")
    return base64.urlsafe_b64encode(random_bytes).rstrip(b"=").decode("ascii")


def _digest(key: bytes, session_id: str) -> str:
    mac = hmac.new(key, session_id.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class CookieSigner:
    """Signs session ids with ``keys[0]``; accepts a signature by any of ``keys``."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys or any(len(k) < 16 for k in self.keys):
            raise ValueError("session signing keys must be at least 16 bytes each")

    @classmethod
    def from_env_value(cls, value: str) -> CookieSigner:
        """``GEOROUTER_SESSION_KEYS``: comma-separated keys, the signing key first."""
        keys = tuple(k.strip().encode("utf-8") for k in value.split(",") if k.strip())
        return cls(keys)

    def sign(self, session_id: str) -> str:
        return f"{session_id}.{_digest(self.keys[0], session_id)}"

    def verify(self, cookie_value: str) -> str | None:
        """The session id a cookie carries, or None if it was not signed by one of our keys."""
        session_id, dot, signature = cookie_value.rpartition(".")
        if not dot or len(signature) != _SIG_CHARS or not valid_id(session_id):
            return None
        if not signature.isascii():
            return None
        presented = signature.encode("ascii")
        ok = False
        for key in self.keys:
            # Every key is tried, so timing says nothing about which one matched.
            ok |= hmac.compare_digest(presented, _digest(key, session_id).encode("ascii"))
        return session_id if ok else None


def set_cookie_header(name: str, value: str, *, max_age_s: int | None, secure: bool = True) -> str:
    """The ``Set-Cookie`` value for a session cookie the router issues."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    if max_age_s:
        parts.append(f"Max-Age={max_age_s}")
    return "; ".join(parts)


def learned_id(source: str, name: str, value: str) -> str:
    """The session id for an id the application issued (``[sessions] learn``).

    A digest, not the value: the application's id may be any length and any
    bytes, and Redis never holds it; every edge derives the same id from it.
    """
    digest = hashlib.blake2b(f"{source}:{name}={value}".encode(), digest_size=16).digest()
    return "learned." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
