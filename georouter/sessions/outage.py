"""The outage memory: the newest pin this edge has seen of each session it serves.

It keeps sessions sticky on this edge while Redis is away, and puts pins back
into a Redis that lost them. It keeps, for a session, the highest version it
was told of, by a reply or by another edge's announcement, whatever order they
arrive in: an older version offered later is ignored, so the memory never
falls back to a pin that was replaced, and a tombstone (a forget) is kept like
any pin, so a forgotten session is never restored. It is an LRU with a sliding
expiry like the Redis keys: it never outgrows ``capacity`` and never keeps a
session longer than Redis would have. Entries are plain tuples, which the
garbage collector does not track (see ``nearcache``).
"""

from __future__ import annotations

from collections import OrderedDict

from georouter.core.pin import Pin


class OutageMemory:
    """The most recent ``capacity`` sessions, each forgotten ``ttl_ms`` after its last use."""

    def __init__(self, capacity: int, ttl_ms: int) -> None:
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        # session id -> (cluster, pinned at ms, version, expires at ms)
        self._entries: OrderedDict[str, tuple[str, int, int, int]] = OrderedDict()

    def get(self, session_id: str, now_ms: int) -> Pin | None:
        """The newest pin known (a tombstone if forgotten); a use, so its expiry slides."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        cluster, pinned_at_ms, version, expires_at = entry
        if expires_at <= now_ms:
            del self._entries[session_id]
            return None
        self._entries[session_id] = (cluster, pinned_at_ms, version, now_ms + self.ttl_ms)
        self._entries.move_to_end(session_id)
        return Pin(cluster, pinned_at_ms, version, self.ttl_ms)

    def knows(self, session_id: str, now_ms: int) -> bool:
        """Whether a pin (or tombstone) of the session is held and not expired; not a use."""
        entry = self._entries.get(session_id)
        return entry is not None and entry[3] > now_ms

    def offer(self, session_id: str, pin: Pin, now_ms: int) -> bool:
        """Keep ``pin`` unless a newer version is held; True if it was kept."""
        if self.capacity <= 0:
            return False
        held = self._entries.get(session_id)
        if held is not None and held[2] > pin.version and held[3] > now_ms:
            return False
        self._entries[session_id] = (
            pin.cluster,
            pin.pinned_at_ms,
            pin.version,
            now_ms + self.ttl_ms,
        )
        self._entries.move_to_end(session_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return True

    def items(self, now_ms: int) -> list[tuple[str, Pin]]:
        """Every pin still remembered at ``now_ms`` (tombstones included), least
        recently used first."""
        return [
            (sid, Pin(cluster, at, version))
            for sid, (cluster, at, version, until) in self._entries.items()
            if until > now_ms
        ]

    def __len__(self) -> int:
        return len(self._entries)
