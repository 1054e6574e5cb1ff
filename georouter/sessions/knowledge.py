"""What one edge knows of the sessions it serves, and the rules for keeping it. No I/O.

Three tiers, kept consistent with each other here so that the session map only
has to ask Redis and hand over what it heard:

- the near cache: pins read from Redis, served without asking again while no
  change is announced (``nearcache``);
- the outage memory: the newest version of every session this edge serves, from
  Redis's replies and other edges' announcements alike (``outage``);
- the write-back queue: what Redis has not seen of what this edge served while
  it was away, one ask per session.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable

from georouter.config import SessionSettings
from georouter.core.pin import Ask, Op, Pin, apply
from georouter.sessions.nearcache import NearCache
from georouter.sessions.outage import OutageMemory


class EdgeKnowledge:
    def __init__(self, settings: SessionSettings, clock_ms: Callable[[], int]) -> None:
        self.memory = OutageMemory(settings.local_cache_size, int(settings.ttl_s * 1000))
        self.near = NearCache(settings.local_cache_size, int(settings.near_cache_s * 1000))
        # Sessions Redis has not seen as this edge served them, oldest first.
        self.pending: OrderedDict[str, Ask] = OrderedDict()
        # Sessions with a call to Redis in flight: another edge's announcement for
        # one of them is kept even though this edge does not remember it yet.
        self.asking: Counter[str] = Counter()
        self._queue_limit = max(settings.local_cache_size, 1)
        self._max_age_ms = int(settings.max_ttl_s * 1000)
        self._clock_ms = clock_ms

    def knows(self, session_id: str) -> bool:
        return self.memory.knows(session_id, self._clock_ms())

    def live(self, pin: Pin) -> bool:
        """Not a tombstone, not past the age cap by this edge's clock."""
        return pin.alive(self._clock_ms(), self._max_age_ms)

    def remembered(self, session_id: str) -> Pin | None:
        """The live pin this edge remembers, if any."""
        pin = self.memory.get(session_id, self._clock_ms())
        return pin if pin is not None and self.live(pin) else None

    def heard(self, session_id: str, pin: Pin, mark: int) -> None:
        """What Redis said: always offered to the outage memory (the newest version
        wins there); kept in the near cache only if no change was announced since
        ``mark``, while Redis answered, and nothing newer is known."""
        now = self._clock_ms()
        newest = self.memory.offer(session_id, pin, now) or not self.memory.knows(session_id, now)
        if pin.forgotten or not newest:
            self.near.invalidate(session_id)
        else:
            self.near.put(session_id, pin, now, mark)

    def changing(self, session_id: str) -> int:
        """Before this edge changes a pin: drop its copy and record the change (the
        edge ignores its own announcements), so a read of the session begun before,
        such as a background refresh still in flight, cannot put the older pin back
        into the near cache. The mark to remember the outcome with."""
        self.near.invalidate(session_id)
        return self.near.mark()

    def ahead_of(self, session_id: str, stored: Pin | None) -> Ask | None:
        """What to send Redis first when it lacks the newest version this edge knows
        (it lost the key, came back from an older copy, or was away when the edge
        made a pin): the queued ask, or the remembered pin put back. None if Redis
        is up to date."""
        now = self._clock_ms()
        known = self.memory.get(session_id, now)
        if known is None or not known.alive(now, self._max_age_ms):
            return None
        if stored is not None and known.version <= stored.version:
            return None
        return self.pending.get(session_id) or Ask.put_back(known)

    def sent(self, session_id: str, ask: Ask) -> None:
        """``ask`` reached Redis: it leaves the queue, unless replaced meanwhile."""
        if self.pending.get(session_id) == ask:
            del self.pending[session_id]

    def made_here(self, session_id: str, preferred: str, replacing: str | None) -> Pin:
        """A pin made without Redis, by the pin rule against this edge's memory, and
        queued for Redis. Versions count up from the newest this edge has seen (there
        is no shared clock), so Redis's version of it, and any other edge's, is newer."""
        now = self._clock_ms()
        stored = self.memory.get(session_id, now)
        since = stored.version if stored is not None else 0
        ask = Ask.repin(preferred, replacing)._replace(since=since)
        verdict = apply(stored, ask, now_ms=now, now_version=0, max_age_ms=self._max_age_ms)
        pin = verdict.stored
        assert pin is not None  # a claim or repin always leaves a pin
        self.memory.offer(session_id, pin, now)
        self.near.invalidate(session_id)  # it may still hold the pin this one replaces
        self.queue(session_id, ask)
        return pin

    def queue(self, session_id: str, ask: Ask) -> None:
        earlier = self.pending.get(session_id)
        if earlier is not None and earlier.restore is None and ask.restore is not None:
            ask = earlier  # a pin made here stays one to make, even if later only served
        elif earlier is not None and earlier.restore is None and ask.restore is None:
            # Keep the oldest "replacing" and knowledge: Redis still holds what was
            # there before the first of them.
            replacing = earlier.replacing or ask.replacing
            op = Op.REPIN if replacing else Op.CLAIM
            ask = Ask(op, ask.cluster, replacing, since=earlier.since or ask.since)
        self.pending[session_id] = ask
        self.pending.move_to_end(session_id)
        while len(self.pending) > self._queue_limit:
            self.pending.popitem(last=False)

    def changed_elsewhere(self, session_id: str, pin: Pin | None) -> None:
        """Another edge announced a change: the near cache drops its copy; the outage
        memory keeps the new pin if it serves the session (or is asking about it)."""
        self.near.invalidate(session_id)
        if pin is None:
            return
        if self.knows(session_id) or session_id in self.asking:
            self.memory.offer(session_id, pin, self._clock_ms())
            if pin.forgotten:
                self.pending.pop(session_id, None)

    def offer_everything_back(self) -> None:
        """Queue every pin this edge remembers, to be put back (newest version wins).
        Tombstones too: an edge that missed a forget must not bring the session back
        where another edge remembers the forget."""
        now = self._clock_ms()
        for session_id, pin in self.memory.items(now):
            if session_id not in self.pending and not pin.expired(now, self._max_age_ms):
                self.queue(session_id, Ask.put_back(pin))
