"""Redis commands asked for while others are in flight, sent together as one pipeline.

redis-py spends far more CPU on a command than Redis does: about 120 µs of
Python for a ``GETEX`` sent on its own on this project's benchmark machine,
about 20 µs per command inside a pipeline of 32. A command asked for while
Redis is idle goes at once, alone, so a lone request waits no longer than it
would without this; commands asked for while others are in flight are sent
together at the next turn of the event loop, as one write and one read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError, ResponseError

from georouter.sessions.deadline import fair_timeout

# A bound on one pipeline, so one slow batch cannot hold many requests' answers.
MAX_BATCH = 256

Command = tuple[Any, ...]


class AutoPipeline:
    """Sends a command at once when Redis is idle; otherwise queues it and sends the
    commands queued in one event-loop turn as pipelines.

    So a lone request pays one plain command (no batching delay), and under
    concurrency the commands that arrive while others are in flight go out
    together. ``execute`` answers the command's reply; a command Redis refused
    (``NOSCRIPT``, wrong type) answers that error instance rather than raising
    it, as does a send that failed as a whole (connection lost, timed out after
    ``deadline_s``): each caller decides what an error means for its command.
    A caller that stops waiting (cancelled, timed out) only drops its own reply.
    """

    def __init__(self, client: Any, *, deadline_s: float, cap_s: float | None = None) -> None:
        self._client = client
        self._deadline_s = deadline_s
        self._cap_s = deadline_s if cap_s is None else cap_s
        self._queued: list[tuple[Command, asyncio.Future[Any]]] = []
        self._in_flight = 0
        # Holds the sending tasks: the event loop keeps only weak references.
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, *command: Any) -> Any:
        """The command's reply (or error). The caller bounds how long it waits."""
        if self._in_flight or self._queued:
            return await self.submit(*command)
        self._in_flight += 1
        try:
            return await self._client.execute_command(*command)
        except Exception as exc:  # noqa: BLE001 - answered, as a queued command's would be
            return exc
        finally:
            self._in_flight -= 1

    def submit(self, *command: Any) -> asyncio.Future[Any]:
        """Queue ``command`` for the next turn's pipeline; the future of its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((command, future))
        return future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), MAX_BATCH):
            task = asyncio.get_running_loop().create_task(
                self._send(queued[start : start + MAX_BATCH])
            )
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        live = [(command, future) for command, future in batch if not future.done()]
        if not live:
            return
        self._in_flight += 1
        try:
            async with fair_timeout(self._deadline_s, cap_s=self._cap_s):
                if len(live) == 1:
                    # Alone in its turn: a plain command costs less than a pipeline of one.
                    try:
                        replies = [await self._client.execute_command(*live[0][0])]
                    except ResponseError as exc:
                        replies = [exc]
                else:
                    pipe = self._client.pipeline(transaction=False)
                    for command, _ in live:
                        pipe.execute_command(*command)
                    replies = list(await pipe.execute(raise_on_error=False))
            if len(replies) != len(live):
                raise RedisError(f"{len(replies)} replies to {len(live)} pipelined commands")
        except Exception as exc:  # noqa: BLE001 - every caller gets the error as its reply
            replies = [exc] * len(live)
        except BaseException:
            for _, future in live:
                future.cancel()
            raise
        finally:
            self._in_flight -= 1
        for (_, future), reply in zip(live, replies, strict=True):
            if not future.done():
                future.set_result(reply)

    async def close(self) -> None:
        """Wait for the batches already sent (their callers are waiting for them)."""
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=self._cap_s)
