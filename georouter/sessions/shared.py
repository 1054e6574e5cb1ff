"""Operator state every edge holds a copy of, kept current through Redis.

The base of ``controls.ClusterControls`` (drains, overrides) and
``tenants.TenantHomes``: each keeps its state under the session map's prefix,
announces every change on its own channel, and reads everything again when
told, when its subscription (re)starts, and at least every ``POLL_S`` (every
``CLUSTER_POLL_S`` on Redis Cluster, which gives no subscriber). So a change
made at one edge holds at all of them within a second, an edge started later
reads it at start, and while Redis is away each edge serves the copy it has.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from georouter.errors import StoreUnavailable
from georouter.sessions.redisstore import REDIS_ERRORS, KeepsCancellation, unavailable

log = logging.getLogger(__name__)

# Redis calls of the admin API and of the refresh are rare: a generous deadline.
CALL_TIMEOUT_S = 2.0
# A full read this often even when no announcement came (one lost while reconnecting).
POLL_S = 5.0
CLUSTER_POLL_S = 0.5
# After a failed subscription or read, before trying again.
RETRY_S = 1.0


class SharedState:
    """Follows ``channel``; subclasses say what ``refresh`` reads. ``what`` names the
    state in log lines."""

    what = "shared state"

    def __init__(self, client: Any | None, channel: str, subscriber: Any | None) -> None:
        self._client = client
        self._subscriber = subscriber
        self.channel = channel
        # Grows with every change seen, so a cached view knows to rebuild.
        self.version = 0

    @property
    def client(self) -> Any | None:
        """The Redis client it reads and writes through (None: this process's alone)."""
        return self._client

    async def _call(self, command: str, *args: Any) -> Any:
        assert self._client is not None
        client = self._client
        try:
            # redis-py may swallow a cancellation (see redisstore): shutdown must not wait.
            with KeepsCancellation():
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    return await client.execute_command(command, *args)
        except REDIS_ERRORS as exc:
            raise unavailable(exc) from exc

    async def refresh(self) -> None:
        """Read the whole state again (``StoreUnavailable``)."""
        raise NotImplementedError

    async def _announce(self, what: str) -> None:
        if self._client is not None:
            await self._call("PUBLISH", self.channel, what)
            await self.refresh()

    async def load(self) -> None:
        """The first read, at start-up; a Redis that does not answer is logged and
        left to ``follow()``."""
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            log.warning("%s not read at start (%s); retrying", self.what, exc)

    async def follow(self) -> None:
        """Keep the state current until cancelled."""
        if self._client is None:
            return
        while True:
            try:
                if self._subscriber is None:
                    await self.refresh()
                    await asyncio.sleep(CLUSTER_POLL_S)
                else:
                    await self._listen(self._subscriber)
            except StoreUnavailable as exc:
                log.warning("%s: %s; retrying in %gs", self.what, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _listen(self, subscriber: Any) -> None:
        pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
        try:
            with KeepsCancellation():
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await pubsub.subscribe(self.channel)
            # Whatever changed while not subscribed.
            await self.refresh()
            while True:
                # A message, or a poll's worth of silence: read everything either way.
                with KeepsCancellation():
                    await pubsub.get_message(timeout=POLL_S)
                await self.refresh()
        except REDIS_ERRORS as exc:
            raise unavailable(exc) from exc
        finally:
            with KeepsCancellation():
                await pubsub.aclose()

    async def close(self) -> None:
        subscriber = self._subscriber
        if subscriber is None:
            return
        await subscriber.aclose()
        # A Sentinel-backed client's pool holds its own clients to the Sentinels.
        sentinel = getattr(getattr(subscriber, "connection_pool", None), "sentinel_manager", None)
        if sentinel is not None:
            await sentinel.aclose()
