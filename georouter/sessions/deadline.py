"""How long a call to Redis may take, and a deadline that does not count this process's busy time.

``command_timeout_s + connect_timeout_s`` is how long a healthy Redis takes to
answer. A call is given ``PATIENCE`` times that before Redis counts as slow or
gone, because on a busy machine a healthy Redis's answers take several times
their usual time: on this project's two-core machine, with two edges taking a
burst of 360 new sessions from 64 clients while another process kept a core
busy, a pin round trip took up to 220 ms (p90 110 ms) against a 100 ms budget.
Counting those as failures opened the breaker of a healthy Redis, and the edge
pinned sessions on its own while the other pinned them in Redis: a split. A
burst must be slow, not split; a hung Redis still costs at most the patience,
once, before the breaker opens and requests stop waiting.

``fair_timeout`` is that wait. When it passes it checks how late its own timer
ran: a timer that ran late means the event loop was busy (a garbage
collection, a burst), and a reply Redis sent on time may be waiting behind our
own work, so the call gets more time, up to ``cap_s`` in all.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from georouter.config import SessionSettings

# A timer that runs this much after its time says the loop was busy. A free loop
# runs timers within about a millisecond.
LATE_S = 0.005
# How many times its usual time a call is given (see above).
PATIENCE = 5
# And how much more when the event loop itself was busy.
BUSY_EXTRA = 0.5


def patience_s(settings: SessionSettings) -> float:
    """How long a call waits, in time the event loop was free, before Redis counts
    as slow or gone."""
    return (settings.command_timeout_s + settings.connect_timeout_s) * PATIENCE


def cap_s(settings: SessionSettings) -> float:
    """The longest a call waits in all, however busy the loop. redis-py's own
    timeouts (socket, connect, a pooled connection) are set to this, as backstops:
    they measure the loop's lag as well as Redis, so the fair deadline decides."""
    return patience_s(settings) * (1 + BUSY_EXTRA)


class fair_timeout:
    """``async with fair_timeout(deadline_s, cap_s=...)``: ``TimeoutError`` after
    ``deadline_s`` of a free event loop, or ``cap_s`` in all.

    A class rather than a generator, with one timer: it guards every Redis call,
    so its own cost is part of every sticky read that misses the near cache.
    """

    __slots__ = ("_cap_at", "_deadline_s", "_handle", "_loop", "_timeout")

    def __init__(self, deadline_s: float, *, cap_s: float) -> None:
        self._deadline_s = deadline_s
        self._cap_at = max(cap_s, deadline_s)

    async def __aenter__(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        start = loop.time()
        self._cap_at += start
        # No timer of its own: ``_check`` expires it when the time has come.
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        due = start + self._deadline_s
        self._handle = loop.call_at(due, self._check, due)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        await self._timeout.__aexit__(exc_type, exc, tb)

    def _check(self, due: float) -> None:
        now = self._loop.time()
        if now - due > LATE_S and now < self._cap_at:
            # Our own timer ran late: the loop was busy, and the reply may be waiting.
            again = min(now + self._deadline_s, self._cap_at)
            self._handle = self._loop.call_at(again, self._check, again)
        elif not self._timeout.expired():
            self._timeout.reschedule(now)
