"""The near cache: pins read from Redis, used for a while without asking again.

It holds each entry as a plain tuple of strings and numbers, never as
objects: CPython's collector stops tracking such tuples, so hundreds of
thousands of cached sessions add nothing to a full collection. Kept as
objects, 100k sessions made each full collection stall the event loop for
50-90 ms, long enough for every Redis call in flight to time out.
"""

from __future__ import annotations

import itertools

from georouter.core.pin import Pin


class NearCache:
    """Pins read from Redis, trusted for ``ttl_ms`` without asking again.

    Kept correct by invalidation: every pin change is announced on a Redis
    channel, and ``invalidate`` drops the session at once. The cache is only
    ``active`` while this edge is subscribed to that channel; losing the
    subscription clears it, since announcements may have been missed. A read
    from Redis that raced with an announcement for the same session is not
    cached (``mark`` before the read, ``put`` with that mark after it).

    A pin still in use past half its life is listed as due (``take_due``): the
    session map reads those again from Redis in the background, which renews
    their TTL there and their life here, so busy sessions never wait on Redis.
    """

    _HISTORY_LIMIT = 100_000

    def __init__(self, capacity: int, ttl_ms: int) -> None:
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        self.active = False
        # session id -> (cluster, pinned at ms, version, TTL left when read, expires here at ms)
        self._entries: dict[str, tuple[str, int, int, int | None, int]] = {}
        # Read again from Redis once past half their life, if still in use, so a
        # busy session never expires here and its Redis TTL keeps sliding.
        self._refresh_within_ms = ttl_ms // 2
        self._due: dict[str, None] = {}  # an ordered set
        # Read since the last eviction: spared by the next one (a second chance), so
        # a burst of new sessions does not push out the sessions in use.
        self._used: set[str] = set()
        self._seq = 0
        self._floor = 0
        self._invalidated_at: dict[str, int] = {}

    def activate(self) -> None:
        # A read that began while unsubscribed may have missed an announcement.
        self._seq += 1
        self._floor = self._seq
        self.active = True

    def deactivate(self) -> None:
        self.active = False
        self._entries.clear()
        self._due.clear()
        self._used.clear()
        self._seq += 1
        self._floor = self._seq

    def mark(self) -> int:
        return self._seq

    def get(self, session_id: str, now_ms: int) -> Pin | None:
        """The cached pin; one in use past half its life is also marked ``due``."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        cluster, pinned_at_ms, version, ttl_ms, expires_at = entry
        if expires_at <= now_ms:
            self._drop(session_id)
            return None
        if expires_at - now_ms < self._refresh_within_ms:
            self._due[session_id] = None
        self._used.add(session_id)
        return Pin(cluster, pinned_at_ms, version, ttl_ms)

    def take_due(self, limit: int) -> list[str]:
        """Up to ``limit`` sessions in use whose pin should be read again (and so
        renewed in Redis) before it expires here, oldest first."""
        taken = list(itertools.islice(self._due, limit))
        for session_id in taken:
            del self._due[session_id]
        return taken

    def changed_since(self, session_id: str, mark: int) -> bool:
        """True if the session may have changed since ``mark`` (or nobody can tell)."""
        return mark < self._floor or self._invalidated_at.get(session_id, -1) > mark

    def put(self, session_id: str, pin: Pin, now_ms: int, mark: int) -> None:
        if not self.active or self.ttl_ms <= 0 or self.changed_since(session_id, mark):
            return  # changed while we were reading it
        # Re-inserted, so the order of entries is the order of their last read.
        self._entries.pop(session_id, None)
        self._due.pop(session_id, None)  # read just now: not due any more
        if len(self._entries) >= self.capacity:
            self._evict_oldest()
        self._entries[session_id] = (
            pin.cluster,
            pin.pinned_at_ms,
            pin.version,
            pin.ttl_ms,
            now_ms + self.ttl_ms,
        )

    def _evict_oldest(self) -> None:
        """Drop an eighth of the entries: the oldest not read since the last eviction.

        One read since then earns an entry a second chance (it moves to the newest
        end), as in the CLOCK page-replacement policy. In one go, since dropping
        the oldest entry of a dict one at a time costs a scan over the holes it leaves.
        """
        count = max(1, self.capacity // 8)
        for session_id in list(self._entries):
            if not count:
                break
            if session_id in self._used:
                self._entries[session_id] = self._entries.pop(session_id)
            else:
                self._drop(session_id)
                count -= 1
        self._used.clear()
        for session_id in list(itertools.islice(self._entries, count)):
            self._drop(session_id)  # every entry was in use: the oldest go all the same

    def _drop(self, session_id: str) -> None:
        del self._entries[session_id]
        self._due.pop(session_id, None)
        self._used.discard(session_id)

    def invalidate(self, session_id: str) -> None:
        self._seq += 1
        self._entries.pop(session_id, None)
        self._due.pop(session_id, None)
        self._used.discard(session_id)
        if len(self._invalidated_at) >= self._HISTORY_LIMIT:
            self._invalidated_at.clear()
            self._floor = self._seq
        self._invalidated_at[session_id] = self._seq

    def __len__(self) -> int:
        return len(self._entries)
