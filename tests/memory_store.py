"""A session store in memory that follows ``core.pin.apply``, with outages on demand.

It stands in for Redis where a test needs what a real server cannot give in
a millisecond: hundreds of random interleavings, outages and restarts per
second (the property tests). Every behaviour it shows is also shown against a
real ``redis-server`` by the pin-rule table and the session-map tests.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from georouter.core.pin import Ask, Pin, apply
from georouter.errors import StoreUnavailable
from georouter.sessions.store import Change
from tests.harness import loop_turns


@dataclass
class MemoryStore:
    """One logical store shared by many edges; each edge gets a ``view`` of it."""

    clock_ms: Callable[[], int]
    max_age_ms: int = 0
    up: bool = True
    keys: dict[str, Pin] = field(default_factory=dict)
    epoch: int = 0
    # Every edge's announcement queue: changes wait here until a test delivers them.
    inboxes: dict[str, list[Change]] = field(default_factory=dict)
    # Random extra turns of the event loop around each call, so concurrent calls
    # reach the store, and their replies their callers, in varied orders.
    jitter: random.Random | None = None
    _clock_us: int = 0

    async def turns(self) -> None:
        await loop_turns(self.jitter.randint(0, 3) if self.jitter else 1)

    def now_version(self) -> int:
        # A shared clock that only grows, like Redis TIME in microseconds.
        self._clock_us = max(self._clock_us + 1, self.clock_ms() * 1000)
        return self._clock_us

    def restart_empty(self) -> None:
        self.keys.clear()
        self.epoch += 1

    def check(self) -> None:
        if not self.up:
            raise StoreUnavailable("memory store is down")

    def view(self, origin: str) -> MemoryStoreView:
        self.inboxes[origin] = []
        return MemoryStoreView(self, origin)


@dataclass
class MemoryStoreView:
    shared: MemoryStore
    origin: str
    seen_epoch: int | None = None

    @property
    def announces_changes(self) -> bool:
        return True

    async def read(self, session_id: str) -> Pin | None:
        self.shared.check()
        await self.shared.turns()
        self.shared.check()
        pin = self.shared.keys.get(session_id)
        await self.shared.turns()
        return pin

    async def read_many(self, session_ids: list[str]) -> list[Pin | None]:
        return [await self.read(sid) for sid in session_ids]

    async def apply(self, session_id: str, ask: Ask) -> tuple[Pin | None, bool]:
        self.shared.check()
        await self.shared.turns()
        self.shared.check()
        verdict = apply(
            self.shared.keys.get(session_id),
            ask,
            now_ms=self.shared.clock_ms(),
            now_version=self.shared.now_version(),
            max_age_ms=self.shared.max_age_ms,
        )
        if verdict.written and verdict.stored is not None:
            self.shared.keys[session_id] = verdict.stored
            for origin, inbox in self.shared.inboxes.items():
                if origin != self.origin:
                    inbox.append(Change(session_id, verdict.stored))
        await self.shared.turns()
        return verdict.stored, verdict.written

    async def peek(self, session_id: str) -> Pin | None:
        self.shared.check()
        return self.shared.keys.get(session_id)

    async def ping(self) -> None:
        self.shared.check()

    async def lost_data(self) -> bool:
        self.shared.check()
        seen, self.seen_epoch = self.seen_epoch, self.shared.epoch
        return seen is not None and seen != self.shared.epoch

    async def changes(self) -> AsyncIterator[Change | None]:
        # Tests deliver announcements themselves (``SessionMap.changed_elsewhere``),
        # in whatever order they choose.
        yield None

    async def close(self) -> None:
        return None
