"""The session map: one question from the router, answered from the best tier at hand.

``resolve(session, preferred cluster, usable)`` answers which cluster a
session goes to and why. Behind it, in order:

- the near cache (``nearcache``): pins read from Redis within ``near_cache_s``,
  kept correct by the pin announcements of other edges; no round trip;
- Redis (``redisstore``): one ``GETEX`` for a session this edge knows, one pin
  script for a new one (set if absent, or answer the pin another edge made),
  compare-and-set for a failover, so two edges never pin one session to two
  clusters;
- the outage memory (``outage``): the newest pin this edge has seen of every
  session it serves, from replies and announcements alike. While Redis is
  away (the breaker is open) it answers, and new pins follow the same pin
  rule against it; they, and every pin served from it, are written back when
  Redis answers again (set if absent, newest version wins).

``knowledge`` keeps those tiers consistent with each other; this module asks
Redis and hands over what it heard.

A Redis that lost its data (restarted empty, flushed) is noticed within
``retry_interval_s`` by its missing epoch marker, or at once when the
announcement channel reconnects, and every pin this edge remembers is put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from functools import partial
from typing import NamedTuple

from georouter.config import SessionSettings
from georouter.core.breaker import Breaker, BreakerState
from georouter.core.pin import Ask, Pin
from georouter.errors import StoreUnavailable
from georouter.metrics import Metrics
from georouter.sessions.knowledge import EdgeKnowledge
from georouter.sessions.store import SessionStore, wall_clock_ms

log = logging.getLogger(__name__)

FAILURES_TO_OPEN = 3
WRITE_BACK_BATCH = 256
# Bounds the compare-and-set rounds when edges disagree about health.
MAX_PIN_ROUNDS = 3
# How often pins due in the near cache are read again, and how many per command.
REFRESH_TICK_S = 0.05
REFRESH_BATCH = 256


class Why(StrEnum):
    """How ``resolve`` arrived at its pin."""

    NEW = "new"  # pinned now to the preferred cluster
    STICKY = "sticky"  # the pin it had, usable
    FAILOVER = "failover"  # its cluster was not usable: pinned now to the preferred one
    NONE = "none"  # no usable pin, and no cluster to pin to
    REFUSED = "refused"  # no pin, and the caller allowed no new one


class Resolution(NamedTuple):
    pin: Pin | None
    why: Why
    # Decided without Redis (the breaker was open, or Redis failed during the call).
    degraded: bool


class SessionStatus(NamedTuple):
    breaker: BreakerState
    near_cache_on: bool
    near_cache_pins: int
    remembered_pins: int
    pending_write_back: int


class SessionMap:
    def __init__(
        self,
        store: SessionStore,
        settings: SessionSettings,
        metrics: Metrics,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        refresh_tick_s: float = REFRESH_TICK_S,
    ) -> None:
        self.store = store
        self.settings = settings
        self._breaker = Breaker(FAILURES_TO_OPEN)
        self._known = EdgeKnowledge(settings, clock_ms)
        self._recheck = asyncio.Event()
        self._refresh_tick_s = refresh_tick_s
        self._clock_ms = clock_ms
        counter = partial(_counter, metrics)
        self._degraded_count = counter(
            "georouter_session_degraded_total", "Session lookups and pins answered without Redis."
        )
        self._errors = counter(
            "georouter_redis_errors_total", "Redis calls that failed or timed out."
        )
        self._near_hits = counter(
            "georouter_session_near_cache_hits_total",
            "Sticky reads answered from the near cache, without a Redis round trip.",
        )
        self._refreshed = counter(
            "georouter_session_near_cache_refreshed_total",
            "Near-cache pins in use read again from Redis before they expired (TTL renewed).",
        )
        self._written_back = counter(
            "georouter_session_written_back_total",
            "Pins made or served without Redis, written back once it returned.",
        )
        self._data_lost = counter(
            "georouter_redis_data_lost_total",
            "Times this edge found that Redis had lost its data and put its pins back.",
        )

    # -- the one question ---------------------------------------------------------

    async def resolve(
        self,
        session_id: str,
        preferred: str | None,
        usable: Callable[[str], bool],
        *,
        may_create: bool | Callable[[], bool] = True,
    ) -> Resolution:
        """The cluster for ``session_id``: its pin while ``usable``, else a new pin to
        ``preferred`` (None: no cluster can take it, so nothing is pinned).

        ``may_create=False`` (a client over its new-session budget): a session
        with no pin is ``REFUSED`` and nothing is written; a pinned one is served
        and may still fail over, which writes no new key. A callable is asked
        only when the near cache cannot answer, so a busy session never pays for it.
        """
        known = self._known
        near = known.near.get(session_id, self._clock_ms())
        if near is not None and usable(near.cluster):
            self._near_hits[()] += 1
            return Resolution(near, Why.STICKY, degraded=False)
        if not isinstance(may_create, bool):
            may_create = may_create()
        known.asking[session_id] += 1
        try:
            if self._breaker.allows:
                try:
                    return await self._resolve_in_store(
                        session_id, preferred, usable, may_create=may_create
                    )
                except StoreUnavailable as exc:
                    self._failed(exc)
            return self._resolve_in_memory(session_id, preferred, usable, may_create=may_create)
        finally:
            known.asking[session_id] -= 1
            if not known.asking[session_id]:
                del known.asking[session_id]

    async def _resolve_in_store(
        self,
        session_id: str,
        preferred: str | None,
        usable: Callable[[str], bool],
        *,
        may_create: bool,
    ) -> Resolution:
        if preferred is not None and may_create and not self._known.knows(session_id):
            # New to this edge: pin it, unless another edge has pinned it already, in
            # one round trip either way.
            held, made = await self._ask(session_id, Ask.claim(preferred))
            if made:
                return Resolution(held, Why.NEW, degraded=False)
        else:
            held = await self._read(session_id)
        was_pinned = held is not None
        if not was_pinned and not may_create and preferred is not None:
            return Resolution(None, Why.REFUSED, degraded=False)
        for _ in range(MAX_PIN_ROUNDS):
            if held is not None and usable(held.cluster):
                return Resolution(held, Why.STICKY, degraded=False)
            if preferred is None:
                return Resolution(held, Why.NONE, degraded=False)
            replacing = held.cluster if held is not None else None
            held, made = await self._ask(session_id, Ask.repin(preferred, replacing))
            if made:
                return Resolution(held, Why.FAILOVER if was_pinned else Why.NEW, degraded=False)
            # Another edge changed it first: follow it if usable, else replace that.
        if held is not None and usable(held.cluster):
            return Resolution(held, Why.STICKY, degraded=False)
        return Resolution(held, Why.FAILOVER, degraded=False)

    async def _read(self, session_id: str) -> Pin | None:
        """The live pin in Redis, once Redis holds what this edge last saw of it
        (``EdgeKnowledge.ahead_of``): that is sent first, and what holds after it is
        the answer."""
        mark = self._known.near.mark()
        pin = await self.store.read(session_id)
        self._breaker.success()
        if pin is not None:
            self._known.heard(session_id, pin, mark)
        first = self._known.ahead_of(session_id, pin)
        if first is not None:
            held, _ = await self._ask(session_id, first)
            self._known.sent(session_id, first)
            return held
        return pin if pin is not None and self._known.live(pin) else None

    async def _ask(self, session_id: str, ask: Ask) -> tuple[Pin | None, bool]:
        """``ask`` of Redis; the pin that holds after it (None: none, or a tombstone),
        and whether it wrote it. The script judged the age cap by Redis's clock, so
        its answer is not judged again by this edge's (clocks drift)."""
        mark = self._known.changing(session_id)
        pin, written = await self.store.apply(session_id, ask)
        self._breaker.success()
        if pin is None:
            return None, written
        self._known.heard(session_id, pin, mark)
        return (None if pin.forgotten else pin), written

    def _resolve_in_memory(
        self,
        session_id: str,
        preferred: str | None,
        usable: Callable[[str], bool],
        *,
        may_create: bool = True,
    ) -> Resolution:
        """Without Redis: the same rule against this edge's memory; queued for Redis."""
        self._degraded_count[()] += 1
        held = self._known.remembered(session_id)
        if held is not None and usable(held.cluster):
            # Served from memory: Redis may come back without it, so it is put back then.
            self._known.queue(session_id, Ask.put_back(held))
            return Resolution(held, Why.STICKY, degraded=True)
        if preferred is None:
            return Resolution(held, Why.NONE, degraded=True)
        if held is None and not may_create:
            return Resolution(None, Why.REFUSED, degraded=True)
        replacing = held.cluster if held is not None else None
        pin = self._known.made_here(session_id, preferred, replacing)
        return Resolution(pin, Why.FAILOVER if held is not None else Why.NEW, degraded=True)

    def _failed(self, exc: StoreUnavailable) -> None:
        self._errors[()] += 1
        if self._breaker.failure():
            log.warning("Redis unavailable (%s): routing sessions from local memory", exc)

    def changed_elsewhere(self, session_id: str, pin: Pin | None) -> None:
        """What another edge's announcement does (see ``EdgeKnowledge``)."""
        self._known.changed_elsewhere(session_id, pin)

    async def move(self, session_id: str, cluster: str) -> Resolution:
        """Pin ``session_id`` to ``cluster`` wherever it was (a cluster said so: a replay
        hint, an id the application issued there). The caller knows it is routable."""
        return await self.resolve(session_id, cluster, cluster.__eq__)

    # -- operator calls -----------------------------------------------------------

    async def forget(self, session_id: str) -> None:
        """Forget a session everywhere (raises StoreUnavailable: an admin must know)."""
        await self._ask(session_id, Ask.forget())
        # Only now: a forget that failed leaves a pin made here still to be written back.
        self._known.pending.pop(session_id, None)

    async def peek(self, session_id: str) -> Pin | None:
        pin = await self.store.peek(session_id)
        return None if pin is None or pin.forgotten else pin

    def status(self) -> SessionStatus:
        known = self._known
        return SessionStatus(
            breaker=self._breaker.state,
            near_cache_on=known.near.active,
            near_cache_pins=len(known.near),
            remembered_pins=len(known.memory),
            pending_write_back=len(known.pending),
        )

    # -- background work ----------------------------------------------------------

    async def write_back(self) -> int:
        """Send queued pins to Redis; the outcome (maybe another edge's pin) is adopted."""
        known = self._known
        written = 0
        while known.pending and self._breaker.allows:
            batch = list(known.pending.items())[:WRITE_BACK_BATCH]
            marks = {sid: known.changing(sid) for sid, _ in batch}
            results = await asyncio.gather(
                *(self.store.apply(sid, ask) for sid, ask in batch), return_exceptions=True
            )
            failed = False
            for (sid, ask), result in zip(batch, results, strict=True):
                if isinstance(result, StoreUnavailable):
                    self._failed(result)
                    failed = True
                    continue
                if isinstance(result, BaseException):
                    log.error("writing back the pin of a session failed", exc_info=result)
                    failed = True
                    continue
                pin, made = result
                written += made
                known.sent(sid, ask)  # (changed here meanwhile: the newer goes next round)
                if pin is not None:
                    known.heard(sid, pin, marks[sid])
            if failed:
                break
            self._breaker.success()
        if written:
            self._written_back[()] += written
            log.info("wrote %d pins back to Redis", written)
        return written

    async def run(self) -> None:
        """Until cancelled: reopen a tripped breaker once Redis answers, notice a Redis
        that lost its data, and write back."""
        # Learn Redis's epoch now, so a loss before the first round is noticed too.
        with contextlib.suppress(StoreUnavailable):
            await self.store.lost_data()
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the task's
            # cancellation when the event is set at that moment, and the task never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.retry_interval_s):
                    await self._recheck.wait()
            self._recheck.clear()
            try:
                if not self._breaker.allows:
                    await self.store.ping()
                    self._breaker.close()
                    log.warning("Redis is back: sessions are shared again")
                    # It may have come back without them (restarted empty, or failed over
                    # to a replica that missed them).
                    self._known.offer_everything_back()
                if await self.store.lost_data():
                    self._data_lost[()] += 1
                    count = len(self._known.memory)
                    if count:
                        log.warning("Redis lost its data: putting back %d pins", count)
                    self._known.offer_everything_back()
            except StoreUnavailable as exc:
                if self._breaker.allows:
                    self._failed(exc)
                continue
            if self._known.pending:
                await self.write_back()

    async def follow_changes(self) -> None:
        """Until cancelled: follow the pins other edges write. The near cache serves
        only while subscribed; a lost subscription empties it, and a new one makes
        ``run`` check at once whether Redis lost its data meanwhile."""
        if not self.store.announces_changes:
            return
        near = self._known.near
        while True:
            try:
                async for change in self.store.changes():
                    if change is None:
                        if self.settings.near_cache_s > 0:
                            near.activate()
                        self._recheck.set()
                    else:
                        self._known.changed_elsewhere(change.session_id, change.pin)
            except StoreUnavailable as exc:
                if near.active:
                    log.warning("lost the pin-change channel (%s): near cache off", exc)
            except Exception:
                # Whatever went wrong, announcements may have been missed: the near
                # cache goes off and the loop subscribes again; the edge stays up.
                log.exception("following pin changes failed: near cache off")
            near.deactivate()
            await asyncio.sleep(self.settings.retry_interval_s)

    async def refresh_near(self) -> None:
        """Until cancelled: read again, in the background, the near-cache pins in use
        past half their life, so a busy session's TTL keeps sliding in Redis and its
        requests never wait for a round trip."""
        if not self.store.announces_changes or self.settings.near_cache_s <= 0:
            return
        near = self._known.near
        while True:
            await asyncio.sleep(self._refresh_tick_s)
            while self._breaker.allows and (due := near.take_due(REFRESH_BATCH)):
                await self._refresh(due)

    async def _refresh(self, due: list[str]) -> None:
        mark = self._known.near.mark()
        try:
            pins = await self.store.read_many(due)
        except StoreUnavailable as exc:
            self._failed(exc)
            return
        self._breaker.success()
        for sid, pin in zip(due, pins, strict=True):
            if pin is None:
                # Gone from Redis (evicted, flushed, past its age cap): the session's
                # next request reads it and, if this edge remembers it, restores it.
                self._known.near.invalidate(sid)
            else:
                self._known.heard(sid, pin, mark)
        self._refreshed[()] += len(due)


def _counter(metrics: Metrics, name: str, help_text: str) -> Counter[tuple[str, ...]]:
    return metrics.family(name, help_text).values
