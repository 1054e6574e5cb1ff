"""Redis commands asked for in the same turn of the event loop, sent as one pipeline.

redis-py spends far more CPU on a command than Redis does: about 120 µs of
Python for a ``GETEX`` sent on its own on this project's benchmark machine,
about 20 µs per command inside a pipeline of 32. Under concurrency many
requests ask in the same turn of the event loop, so their commands go out
as one write and come back as one read; no request waits past the turn it
asked in, and a lone request pays one pipeline of one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError

# A bound on one pipeline, so one slow batch cannot hold many requests' answers.
MAX_BATCH = 256

Command = tuple[Any, ...]


class AutoPipeline:
    """Queues commands and flushes them once per event-loop turn, as pipelines.

    ``submit`` returns a future of the command's reply. A command Redis
    refused (``NOSCRIPT``, wrong type) resolves to that error instance rather
    than raising it, as does a batch that failed as a whole (connection lost,
    timed out after ``deadline_s``): each caller decides what an error means
    for its command. A caller that stops waiting (cancelled, timed out) only
    drops its own future.
    """

    def __init__(self, client: Any, *, deadline_s: float) -> None:
        self._client = client
        self._deadline_s = deadline_s
        self._queued: list[tuple[Command, asyncio.Future[Any]]] = []
        # Holds the sending tasks: the event loop keeps only weak references.
        self._sending: set[asyncio.Task[None]] = set()

    def submit(self, *command: Any) -> asyncio.Future[Any]:
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
        try:
            async with asyncio.timeout(self._deadline_s):
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
        for (_, future), reply in zip(live, replies, strict=True):
            if not future.done():
                future.set_result(reply)

    async def close(self) -> None:
        """Wait for the batches already sent (their callers are waiting for them)."""
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=self._deadline_s)
