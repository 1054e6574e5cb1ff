"""A deadline for a call to Redis that does not count this process's own busy time.

A plain ``asyncio.timeout`` measures the event loop as much as Redis: when the
loop is busy (a burst of new requests, a garbage collection, start-up), a
reply that Redis sent on time waits in the socket behind our own work, the
timer fires first, and a healthy Redis is declared dead. On a loaded two-core
machine that split sessions between edges: one edge's breaker opened and it
pinned on its own while the other pinned in Redis.

``fair_timeout`` checks, when the deadline passes, how late its own timer ran.
A timer that ran late means the loop was busy, so the call gets another
deadline from now; a timer that ran on time means the loop was free and
Redis did not answer, so the call is cancelled. ``cap_s`` bounds the whole
wait, so a loop that stays busy while Redis is really gone still gives up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# A timer that runs this much after its time says the loop was busy. A free loop
# runs timers within about a millisecond.
LATE_S = 0.005


@asynccontextmanager
async def fair_timeout(deadline_s: float, *, cap_s: float) -> AsyncIterator[None]:
    """Raise ``TimeoutError`` after ``deadline_s`` of a free event loop, or ``cap_s`` in all."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(start + max(cap_s, deadline_s)) as whole:
        handle: asyncio.TimerHandle | None = None

        def check(due: float) -> None:
            nonlocal handle
            now = loop.time()
            if now - due > LATE_S:
                handle = loop.call_at(now + deadline_s, check, now + deadline_s)
            else:
                whole.reschedule(now)

        handle = loop.call_at(start + deadline_s, check, start + deadline_s)
        try:
            yield
        finally:
            handle.cancel()
