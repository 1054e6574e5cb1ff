"""The fair deadline of a Redis call: time the event loop spent busy does not count,
and ``cap_s`` bounds the whole wait (real event loop, real clock).

The bounds asserted are what ``fair_timeout`` promises; the margins are generous
so that a loaded machine does not fail them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from georouter.sessions.deadline import fair_timeout

pytestmark = pytest.mark.anyio

# asyncio runs a timer up to one clock tick before its time.
TICK_S = 0.001


async def test_a_call_that_never_finishes_on_a_free_loop_times_out_at_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    deadline_s, cap_s = 0.2, 5.0
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with fair_timeout(deadline_s, cap_s=cap_s):
            await asyncio.Event().wait()  # Redis never answers
    took = loop.time() - started
    assert took >= deadline_s - TICK_S
    assert took < deadline_s + 1.0  # the deadline, not the cap
    assert took < cap_s / 2


async def test_a_call_that_finishes_in_time_is_answered() -> None:
    async with fair_timeout(0.2, cap_s=5.0):
        await asyncio.sleep(0.01)
    # Leaving the block cancels its timer: nothing fires into the task afterwards.
    await asyncio.sleep(0.4)


async def test_a_reply_held_up_by_a_busy_loop_past_the_deadline_is_still_taken() -> None:
    loop = asyncio.get_running_loop()
    deadline_s, cap_s, busy_s = 0.2, 5.0, 0.5
    started = loop.time()
    reply: asyncio.Future[str] = loop.create_future()
    # Our own work (a burst, a collection) holds the loop from 0.05 s to past the
    # deadline; Redis's answer is there just after, as soon as the loop reads it.
    loop.call_at(started + 0.05, time.sleep, busy_s)
    loop.call_at(started + 0.05 + busy_s + 0.02, reply.set_result, "pong")
    async with fair_timeout(deadline_s, cap_s=cap_s):
        answer = await reply
    took = loop.time() - started
    assert answer == "pong"
    assert took >= 0.05 + busy_s  # the busy stretch did pass the deadline
    assert took < cap_s


async def test_a_loop_kept_busy_still_gives_up_by_the_cap() -> None:
    loop = asyncio.get_running_loop()
    deadline_s, cap_s = 0.1, 0.6
    started = loop.time()
    # Long enough past the cap that a cap not enforced shows, not so long that it hangs.
    hog_until = started + cap_s + 3.0

    stop = False

    def hog() -> None:
        # Blocks the loop at every turn. A timer that falls due meanwhile runs after
        # the next block, so every timer of fair_timeout runs late.
        if not stop and loop.time() < hog_until:
            time.sleep(0.03)
            loop.call_soon(hog)

    loop.call_soon(hog)
    try:
        with pytest.raises(TimeoutError):
            async with fair_timeout(deadline_s, cap_s=cap_s):
                await asyncio.Event().wait()  # Redis is gone for good
        took = loop.time() - started
    finally:
        stop = True
    assert took < cap_s + 1.0
