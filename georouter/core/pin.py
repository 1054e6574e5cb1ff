"""A session's pin, and the one rule for changing it. Pure.

A pin is stored as ``<cluster>|<pinned at, ms>|<version>``; cluster names
cannot contain ``|``. The version only grows: every write sets it to at least
one more than what the key held, and at least the store's clock in
microseconds, so a pin written after another always compares newer, even
after the key expired or Redis restarted empty (a microsecond clock stays below
2**53, where Lua's numbers stop being exact, until the year 2255). A forget is a write too: a
tombstone (cluster ``!``) with its own version, so no edge restores a
forgotten session from its memory.

``apply`` is the rule: what the key holds and what an edge asks, in; what the
key holds afterwards and whether this ask wrote it, out. The Lua script of
the Redis store is this function spelled in Lua (see ``sessions.scripts``);
one table of cases (``tests/pin_cases.py``) runs against both, and against
the outage memory that applies it while Redis is away.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NamedTuple

_DIGITS = re.compile(r"[0-9]{1,19}")
SEPARATOR = "|"
TOMBSTONE = "!"


class Pin(NamedTuple):
    cluster: str
    pinned_at_ms: int
    version: int = 0
    # What is left of the sliding TTL when this pin was read, if known.
    ttl_ms: int | None = None

    def encode(self) -> str:
        return f"{self.cluster}{SEPARATOR}{self.pinned_at_ms}{SEPARATOR}{self.version}"

    @property
    def forgotten(self) -> bool:
        return self.cluster == TOMBSTONE

    @classmethod
    def decode(cls, raw: str | bytes, *, ttl_ms: int | None = None) -> Pin | None:
        """None for a value that is not ours. A value of the two-field form that
        earlier releases wrote (no version) reads as version 0."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        parts = text.split(SEPARATOR)
        if len(parts) == 2:
            parts.append("0")
        if len(parts) != 3:
            return None
        cluster, at, version = parts
        # ASCII digits only, as the Lua script reads them: str.isdigit also takes "²".
        if not cluster or not _DIGITS.fullmatch(at) or not _DIGITS.fullmatch(version):
            return None
        return cls(cluster, int(at), int(version), ttl_ms)

    def expired(self, now_ms: int, max_age_ms: int) -> bool:
        """Past the hard cap on a session's life (``max_age_ms`` 0: no cap)."""
        return max_age_ms > 0 and now_ms - self.pinned_at_ms > max_age_ms

    def alive(self, now_ms: int, max_age_ms: int) -> bool:
        """A pin a request may follow: not a tombstone, not past its age cap."""
        return not self.forgotten and not self.expired(now_ms, max_age_ms)


class Op(StrEnum):
    # Pin to ``cluster`` if the session has no live pin; else answer (and renew) that pin.
    CLAIM = "claim"
    # As CLAIM, and also replace a live pin that names ``replacing`` (a failover).
    REPIN = "repin"
    # Put back ``restore``, a pin an edge remembers, unless the key holds it or a newer version.
    RESTORE = "restore"
    # Write a tombstone.
    FORGET = "forget"


class Ask(NamedTuple):
    op: Op
    cluster: str = ""
    replacing: str = ""
    restore: Pin | None = None
    # A claim or repin made without the store, sent later: the version of what the
    # edge knew of the session then (0: nothing). A forget newer than that happened
    # after the edge decided, so it stands.
    since: int = 0

    @classmethod
    def claim(cls, cluster: str) -> Ask:
        return cls(Op.CLAIM, cluster)

    @classmethod
    def repin(cls, cluster: str, replacing: str | None) -> Ask:
        return cls(Op.REPIN, cluster, replacing or "") if replacing else cls(Op.CLAIM, cluster)

    @classmethod
    def put_back(cls, pin: Pin) -> Ask:
        return cls(Op.RESTORE, pin.cluster, restore=pin)

    @classmethod
    def forget(cls) -> Ask:
        return cls(Op.FORGET)


class Verdict(NamedTuple):
    """What the key holds after the ask (None: nothing), and whether the ask wrote it.

    A claim or repin that did not write renews the TTL of the live pin it answers.
    """

    stored: Pin | None
    written: bool


def apply(
    stored: Pin | None, ask: Ask, *, now_ms: int, now_version: int, max_age_ms: int
) -> Verdict:
    """The pin rule. ``now_version`` is the store's clock in microseconds (0 for a
    store with no shared clock: its versions then count up from what it holds)."""
    version = max(now_version, stored.version + 1 if stored is not None else 1)
    if ask.op is Op.FORGET:
        return Verdict(Pin(TOMBSTONE, now_ms, version), written=True)
    if ask.op is Op.RESTORE:
        wanted = ask.restore
        if wanted is None or wanted.expired(now_ms, max_age_ms):
            return Verdict(stored, written=False)
        if stored is not None and stored.version >= wanted.version:
            return Verdict(stored, written=False)  # as new or newer, a forget included
        return Verdict(wanted._replace(ttl_ms=None), written=True)
    if stored is not None and stored.forgotten and 0 < ask.since < stored.version:
        return Verdict(stored, written=False)
    live = stored is not None and stored.alive(now_ms, max_age_ms)
    if live and stored is not None:
        if ask.op is Op.CLAIM or stored.cluster != ask.replacing:
            return Verdict(stored, written=False)
        # A failover keeps the session's first time: the age cap counts from its start.
        return Verdict(Pin(ask.cluster, stored.pinned_at_ms, version), written=True)
    return Verdict(Pin(ask.cluster, now_ms, version), written=True)
