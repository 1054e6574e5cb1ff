"""The session map as the router sees it: Redis when it answers, this edge's memory when not.

Redis is never allowed to stall routing. Each call is bounded by the store's
timeouts; after a few consecutive failures a breaker opens and requests stop
asking Redis at all, while ``run()`` pings it about once a second. Meanwhile
pins come from, and go to, a bounded local memory, and the pins made without
Redis are queued; when Redis answers again they are written back with the
same compare-and-set script (set if absent), so a Redis that restarted empty
gets them back and a pin another edge made meanwhile wins over ours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from georouter.breaker import Breaker
from georouter.config import SessionSettings
from georouter.metrics import Metrics
from georouter.pins import LocalPins, NearCache, Pin
from georouter.sessions import RedisSessionStore, StoreUnavailable

log = logging.getLogger(__name__)

FAILURES_TO_OPEN = 3
WRITE_BACK_BATCH = 256
# How often pins due in the near cache are read again, and how many per command.
REFRESH_TICK_S = 0.05
REFRESH_BATCH = 256


class WriteBack(StrEnum):
    """What a pin made or used without Redis asks of Redis once it is back."""

    # Made here (new, or a failover): set it if absent, or replace what it replaced.
    PIN = "pin"
    # Only remembered here: put it back if Redis lost it; a forget or any pin wins.
    RESTORE = "restore"


@dataclass(frozen=True, slots=True)
class Pending:
    cluster: str
    replacing: str | None
    kind: WriteBack
    pinned_at_ms: int


class Outcome(NamedTuple):
    """A pin (or none) and whether it was decided without Redis."""

    pin: Pin | None
    degraded: bool


class SessionMap:
    def __init__(
        self,
        store: RedisSessionStore,
        settings: SessionSettings,
        metrics: Metrics,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.store = store
        self.settings = settings
        self.breaker = Breaker(FAILURES_TO_OPEN)
        self.local = LocalPins(settings.local_cache_size, int(settings.ttl_s * 1000))
        self.near = NearCache(settings.local_cache_size, int(settings.near_cache_s * 1000))
        # Pins Redis has not seen yet, by session id.
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self._clock_ms = clock_ms
        self._max_age_ms = int(settings.max_ttl_s * 1000)
        self._degraded_count = metrics.family(
            "georouter_session_degraded_total", "Session lookups and pins answered without Redis."
        ).values
        self._errors = metrics.family(
            "georouter_redis_errors_total", "Redis calls that failed or timed out."
        ).values
        self._near_hits = metrics.family(
            "georouter_session_near_cache_hits_total",
            "Sticky reads answered from the near cache, without a Redis round trip.",
        ).values
        self._refreshed = metrics.family(
            "georouter_session_near_cache_refreshed_total",
            "Near-cache pins in use read again from Redis before they expired (TTL renewed).",
        ).values
        self._written_back = metrics.family(
            "georouter_session_written_back_total",
            "Pins made without Redis, written back once it returned.",
        ).values

    def _failed(self, exc: StoreUnavailable) -> None:
        self._errors[()] += 1
        if self.breaker.failure():
            log.warning("Redis unavailable (%s): routing sessions from local memory", exc)

    def _degraded(self) -> None:
        self._degraded_count[()] += 1

    def _remember(self, session_id: str, pin: Pin, mark: int | None = None) -> None:
        """Keep what Redis said, in the outage memory and the near cache, unless the
        session changed (or was forgotten) since ``mark``, while Redis answered."""
        if pin.forgotten:
            self.local.drop(session_id)
            self.near.invalidate(session_id)
            return
        if mark is not None and self.near.changed_since(session_id, mark):
            return
        now = self._clock_ms()
        self.local.put(session_id, pin, now)
        if mark is not None:
            self.near.put(session_id, pin, now, mark)

    def _local(self, session_id: str) -> Pin | None:
        now = self._clock_ms()
        pin = self.local.get(session_id, now)
        if pin is not None and pin.expired(now, self._max_age_ms):
            self.local.drop(session_id)
            return None
        return pin

    def cached(self, session_id: str) -> Pin | None:
        """The pin from the near cache, if it holds one: no I/O, no await."""
        pin = self.near.get(session_id, self._clock_ms())
        if pin is not None:
            self._near_hits[()] += 1
        return pin

    async def read(self, session_id: str) -> Outcome:
        """The session's pin. On a Redis miss this edge's memory of it is written back
        (Redis restarted empty, or failed over to a replica that missed the write)."""
        near = self.cached(session_id)
        if near is not None:
            return Outcome(near, degraded=False)
        if self.breaker.allows:
            mark = self.near.mark()
            try:
                pin = await self.store.read(session_id)
            except StoreUnavailable as exc:
                self._failed(exc)
            else:
                self.breaker.success()
                if pin is not None:
                    self._remember(session_id, pin, mark)
                    return Outcome(None if pin.forgotten else pin, degraded=False)
                remembered = self._local(session_id)
                if remembered is None:
                    return Outcome(None, degraded=False)
                return await self._restore(session_id, remembered)
        self._degraded()
        remembered = self._local(session_id)
        if remembered is not None:
            # Served from memory: Redis may come back without it (restarted empty,
            # or failed over to a replica that missed it), so it is put back then.
            self._queue(session_id, remembered, None, WriteBack.RESTORE)
        return Outcome(remembered, degraded=True)

    async def _restore(self, session_id: str, remembered: Pin) -> Outcome:
        """Put back a pin Redis lost; a forget another edge made wins over it."""
        mark = self.near.mark()
        try:
            pin = await self.store.pin(
                session_id,
                remembered.cluster,
                replacing=None,
                restore_at_ms=remembered.pinned_at_ms,
            )
        except StoreUnavailable as exc:
            self._failed(exc)
            self._degraded()
            self._queue(session_id, remembered, None, WriteBack.RESTORE)
            return Outcome(remembered, degraded=True)
        self._remember(session_id, pin, mark)
        return Outcome(None if pin.forgotten else pin, degraded=False)

    async def pin(self, session_id: str, cluster: str, *, replacing: str | None) -> Outcome:
        """Pin (compare-and-set); the pin that holds afterwards, which may be another edge's."""
        outcome, _ = await self._pin(session_id, cluster, replacing)
        return outcome

    async def claim(self, session_id: str, cluster: str) -> tuple[Outcome, bool]:
        """The session's pin, pinning it to ``cluster`` if it has none: one round trip
        for a session this edge does not know. True if this call made the pin."""
        return await self._pin(session_id, cluster, None)

    async def _pin(
        self, session_id: str, cluster: str, replacing: str | None
    ) -> tuple[Outcome, bool]:
        if self.breaker.allows:
            mark = self._changing(session_id)
            try:
                if replacing is None:
                    pin, made = await self.store.claim(session_id, cluster)
                else:
                    pin = await self.store.pin(session_id, cluster, replacing=replacing)
                    made = pin.cluster == cluster  # (pin() has no use for it)
            except StoreUnavailable as exc:
                self._failed(exc)
            else:
                self.breaker.success()
                self._remember(session_id, pin, mark)
                return Outcome(pin, degraded=False), made
        self._degraded()
        current = self._local(session_id)
        if current is not None and current.cluster != (replacing or ""):
            return Outcome(current, degraded=True), False
        pin = Pin(
            cluster,
            current.pinned_at_ms if current else self._clock_ms(),
            int(self.settings.ttl_s * 1000),
        )
        self._remember(session_id, pin)
        # The near cache may still hold the pin this one replaces.
        self.near.invalidate(session_id)
        self._queue(session_id, pin, replacing, WriteBack.PIN)
        return Outcome(pin, degraded=True), True

    def _changing(self, session_id: str) -> int:
        """Before this edge changes a pin: drop its copy and record the change (the
        edge ignores its own announcements), so a read of the session begun before,
        such as a background refresh still in flight, cannot put the older pin back.
        The mark to remember the outcome with: a change another edge announces
        meanwhile still keeps it out of the near cache."""
        self.near.invalidate(session_id)
        return self.near.mark()

    def remembers(self, session_id: str) -> bool:
        """Whether this edge's memory holds a pin for the session (Redis may have lost it)."""
        return self._local(session_id) is not None

    def _queue(self, session_id: str, pin: Pin, replacing: str | None, kind: WriteBack) -> None:
        earlier = self.pending.get(session_id)
        if earlier is not None:
            # Keep the oldest "replacing": Redis still holds what was there before.
            replacing = earlier.replacing or replacing
            if earlier.kind is WriteBack.PIN:
                kind = WriteBack.PIN  # a pin made here stays one, even if later only read
        self.pending[session_id] = Pending(pin.cluster, replacing, kind, pin.pinned_at_ms)
        self.pending.move_to_end(session_id)
        while len(self.pending) > max(self.settings.local_cache_size, 1):
            self.pending.popitem(last=False)

    async def forget(self, session_id: str) -> None:
        """Forget a session everywhere (raises StoreUnavailable: an admin must know)."""
        self.local.drop(session_id)
        self.near.invalidate(session_id)
        self.pending.pop(session_id, None)
        await self.store.forget(session_id)

    async def peek(self, session_id: str) -> Pin | None:
        pin = await self.store.peek(session_id)
        return None if pin is None or pin.forgotten else pin

    async def write_back(self) -> int:
        """Write queued pins to Redis (set if absent, or replace what they replaced)."""
        written = 0
        while self.pending and self.breaker.allows:
            batch = list(self.pending.items())[:WRITE_BACK_BATCH]
            for sid, _ in batch:
                self.near.invalidate(sid)  # as _changing does, for the whole batch
            mark = self.near.mark()
            results = await asyncio.gather(
                *(
                    self.store.pin(
                        sid,
                        p.cluster,
                        replacing=p.replacing,
                        restore_at_ms=p.pinned_at_ms if p.kind is WriteBack.RESTORE else None,
                    )
                    for sid, p in batch
                ),
                return_exceptions=True,
            )
            failed = False
            for (sid, queued), result in zip(batch, results, strict=True):
                if isinstance(result, StoreUnavailable):
                    self._failed(result)
                    failed = True
                    continue
                if isinstance(result, BaseException):
                    log.error("writing back the pin of a session failed", exc_info=result)
                    failed = True
                    continue
                written += 1
                if self.pending.get(sid) != queued:
                    continue  # changed here meanwhile: the newer pin goes next round
                del self.pending[sid]
                # Another edge's pin (or a forget) may have won: this edge adopts it.
                self._remember(sid, result, mark)
            if failed:
                break
        if written:
            self._written_back[()] += written
            log.info("wrote %d pins made without Redis back to Redis", written)
        return written

    async def follow_changes(self) -> None:
        """Until cancelled: keep the near cache in step with pin changes made elsewhere.

        The cache serves only while subscribed; a lost subscription empties it.
        """
        if not self.store.announces_changes or self.settings.near_cache_s <= 0:
            return
        while True:
            try:
                async for session_id in self.store.changes():
                    if session_id is None:
                        self.near.activate()
                    else:
                        self.near.invalidate(session_id)
            except StoreUnavailable as exc:
                if self.near.active:
                    log.warning("lost the pin-change channel (%s): near cache off", exc)
            self.near.deactivate()
            await asyncio.sleep(self.settings.retry_interval_s)

    async def refresh_near(self) -> None:
        """Until cancelled: read again, in the background, the near-cache pins in use
        past half their life, so a busy session's TTL keeps sliding in Redis and its
        requests never wait for a round trip."""
        if not self.store.announces_changes or self.settings.near_cache_s <= 0:
            return
        while True:
            await asyncio.sleep(REFRESH_TICK_S)
            while self.breaker.allows and (due := self.near.take_due(REFRESH_BATCH)):
                await self._refresh(due)

    async def _refresh(self, due: list[str]) -> None:
        mark = self.near.mark()
        try:
            pins = await self.store.read_many(due)
        except StoreUnavailable as exc:
            self._failed(exc)
            return
        self.breaker.success()
        for sid, pin in zip(due, pins, strict=True):
            if pin is None:
                # Gone from Redis (evicted, flushed, past its age cap): the session's
                # next request reads it and, if this edge remembers it, restores it.
                self.near.invalidate(sid)
            else:
                self._remember(sid, pin, mark)
        self._refreshed[()] += len(due)

    async def run(self) -> None:
        """Until cancelled: reopen a tripped breaker once Redis answers, and write back."""
        while True:
            await asyncio.sleep(self.settings.retry_interval_s)
            if not self.breaker.allows:
                try:
                    await self.store.ping()
                except StoreUnavailable:
                    continue
                self.breaker.close()
                log.warning("Redis is back: sessions are shared again")
                # Redis may have come back empty: every pin this edge remembers is
                # offered back (if absent; a pin another edge made, or a forget, wins).
                now = self._clock_ms()
                for session_id, pin in self.local.items(now):
                    if session_id not in self.pending and not pin.expired(now, self._max_age_ms):
                        self._queue(session_id, pin, None, WriteBack.RESTORE)
            if self.pending:
                await self.write_back()
