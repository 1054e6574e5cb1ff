"""The session store in Redis (standalone, Sentinel or Cluster).

``<prefix>:s:<session id>`` holds a pin (``core.pin``) with a sliding TTL. A
sticky read is one ``GETEX ... PX`` (read and renew in one round trip); every
change is the pin script (``scripts.PIN_SCRIPT``, the pin rule in Lua) over
that one key, and is announced on ``<prefix>:pins`` with the value written.
``<prefix>:epoch`` marks a Redis that still holds what edges wrote: when it
is missing, Redis lost its data (restarted empty, flushed), and edges put
back what they remember.

Every Redis failure leaves this module as ``StoreUnavailable``; the session
map decides what to do without Redis.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from georouter.config import SessionSettings
from georouter.core.pin import Ask, Op, Pin
from georouter.errors import StoreUnavailable
from georouter.metrics import Metrics
from georouter.sessions.deadline import cap_s, fair_timeout, patience_s
from georouter.sessions.pipelining import AutoPipeline
from georouter.sessions.scripts import EPOCH_SCRIPT, PIN_SCRIPT, READ_MANY_SCRIPT
from georouter.sessions.store import Change, wall_clock_ms

# Redis Cluster's first slot discovery has its own, longer deadline.
STARTUP_TIMEOUT_S = 2.0
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
_OPS = {op: op.value.encode() for op in Op}


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The one translation of a Redis client error into ours."""
    return StoreUnavailable(f"{type(exc).__name__}: {exc}")


class _KeepsCancellation:
    """Re-raise a cancellation that redis-py swallowed.

    redis-py (8.1 here) can swallow a ``CancelledError`` that reaches it while it
    opens a connection: the call then returns, or fails, as if never cancelled,
    and a background task cancelled at shutdown goes on forever. The task still
    counts the request (``Task.cancelling``), so it is raised again here.
    """

    def __enter__(self) -> None:
        task = asyncio.current_task()
        self._task = task
        self._before = task.cancelling() if task is not None else 0

    def __exit__(self, *exc: object) -> None:
        if self._task is not None and self._task.cancelling() > self._before:
            raise asyncio.CancelledError


# For the other Redis users of this package (``sessions.controls``).
KeepsCancellation = _KeepsCancellation


def _text(reply: Any) -> str:
    """A reply as text; bytes that are not UTF-8 are replaced, never raised."""
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return str(reply)


def _checked(reply: Any) -> Any:
    """A pipelined reply, or the error it stands for raised (as StoreUnavailable
    when it means Redis could not answer)."""
    if isinstance(reply, BaseException):
        if isinstance(reply, REDIS_ERRORS):
            raise unavailable(reply) from reply
        raise reply
    return reply


class RedisSessionStore:
    """The ``SessionStore`` in Redis."""

    def __init__(
        self,
        client: Any,
        settings: SessionSettings,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        origin: str = "",
        subscriber: Any | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        # Every call, counted where it is made (its failures: SessionMap's errors).
        self._operations = (
            None
            if metrics is None
            else metrics.family(
                "georouter_redis_operations_total",
                "Redis calls this edge made for sessions (pipelined or not; reads, pins, pings).",
            ).values
        )
        self._subscriber = subscriber
        self._prefix = f"{settings.key_prefix}:s:"
        self._epoch_key = f"{settings.key_prefix}:epoch"
        self._ttl_ms = int(settings.ttl_s * 1000)
        self._max_age_ms = int(settings.max_ttl_s * 1000)
        # A bound on each call, whatever the client library does inside it
        # (connecting, Sentinel discovery), counting only time the loop was free.
        self._deadline_s = patience_s(settings)
        self._cap_s = cap_s(settings)
        self._clock_ms = clock_ms
        self._pin_script = client.register_script(PIN_SCRIPT)
        self._read_many_script = client.register_script(READ_MANY_SCRIPT)
        self._epoch_script = client.register_script(EPOCH_SCRIPT)
        self._epoch: str | None = None
        # An edge process ignores its own announcements (it already knows).
        self.channel = f"{settings.key_prefix}:pins"
        # The pin script's arguments that never change, encoded once: redis-py encodes
        # every argument of every command, and a new session's cost is mostly that.
        self._pin_constants = (
            str(self._ttl_ms).encode(),
            str(self._max_age_ms).encode(),
            self.channel.encode(),
        )
        self.origin = origin
        # redis-py's asyncio RedisCluster sends keyed commands issued before its first
        # initialize() to a random master, and the MOVED that follows tears down the
        # connections of concurrent calls (redis-py#3032): initialize it first, once.
        self._needs_init = isinstance(client, RedisCluster)
        self._init_lock = asyncio.Lock()
        # Reads and pins of concurrent requests share one pipeline. Not on Redis
        # Cluster, whose client sends each key to its own node (one command each).
        self._pipeline = (
            None
            if isinstance(client, RedisCluster)
            else AutoPipeline(client, deadline_s=self._deadline_s, cap_s=self._cap_s)
        )

    def key(self, session_id: str) -> str:
        return self._prefix + session_id

    @property
    def client(self) -> Any:
        """The Redis client, for reads over the whole map (``sessions.census``)."""
        return self._client

    async def _call(self, op: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        if self._operations is not None:
            self._operations[()] += 1
        try:
            with _KeepsCancellation():
                if self._needs_init:
                    await self._initialize()
                async with fair_timeout(self._deadline_s, cap_s=self._cap_s):
                    return await op()
        except REDIS_ERRORS as exc:
            raise unavailable(exc) from exc

    async def _initialize(self) -> None:
        async with self._init_lock, asyncio.timeout(STARTUP_TIMEOUT_S):
            if self._needs_init:
                await self._client.initialize()
                self._needs_init = False

    async def _command(self, *command: Any) -> Any:
        """One command, in the shared pipeline when there is one."""
        if self._pipeline is None:
            return await self._call(lambda: self._client.execute_command(*command))
        pipeline = self._pipeline
        return _checked(await self._call(lambda: pipeline.execute(*command)))

    async def _script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA``, loading the script once if Redis does not know it (it
        restarted, or failed over to a replica that never saw it), all within
        one call's deadline."""
        if self._pipeline is None:
            return await self._call(lambda: script(keys=keys, args=args))
        pipeline = self._pipeline
        evalsha = ("EVALSHA", script.sha, len(keys), *keys, *args)

        async def run() -> Any:
            reply = await pipeline.execute(*evalsha)
            if isinstance(reply, NoScriptError):
                # Through the pipeline too: every request that met NOSCRIPT together
                # loads it in one pipeline, instead of each on a connection of its own.
                _checked(await pipeline.execute("SCRIPT LOAD", script.script))
                reply = await pipeline.execute(*evalsha)
            return reply

        return _checked(await self._call(run))

    def _decode(self, raw: Any) -> Pin | None:
        if raw is None or raw is False:
            return None
        pin = Pin.decode(raw, ttl_ms=self._ttl_ms)
        if pin is None or pin.expired(self._clock_ms(), self._max_age_ms):
            return None
        return pin

    async def read(self, session_id: str) -> Pin | None:
        return self._decode(await self._command("GETEX", self.key(session_id), "PX", self._ttl_ms))

    async def read_many(self, session_ids: list[str]) -> list[Pin | None]:
        """One command, or on Redis Cluster (where the keys live on many nodes) one
        command each, concurrently."""
        if self._pipeline is None:
            return list(await asyncio.gather(*(self.read(sid) for sid in session_ids)))
        raws = await self._script(
            self._read_many_script, [self.key(sid) for sid in session_ids], [self._ttl_ms]
        )
        if not isinstance(raws, list) or len(raws) != len(session_ids):
            raise StoreUnavailable(f"unexpected answer from the read script: {raws!r:.100}")
        return [self._decode(raw) for raw in raws]

    async def apply(self, session_id: str, ask: Ask) -> tuple[Pin | None, bool]:
        restore = ask.restore
        reply = await self._script(
            self._pin_script,
            [self.key(session_id)],
            [
                _OPS[ask.op],
                ask.cluster,
                ask.replacing,
                *self._pin_constants,
                f"{self.origin} {session_id}",
                b"" if restore is None else str(restore.pinned_at_ms),
                b"" if restore is None else str(restore.version),
                b"0" if not ask.since else str(ask.since),
            ],
        )
        if not (isinstance(reply, list) and len(reply) == 2):
            raise StoreUnavailable(f"unexpected answer from the pin script: {reply!r:.100}")
        raw, written = reply
        if raw is None:
            return None, False
        pin = Pin.decode(raw, ttl_ms=self._ttl_ms)
        if pin is None and (written or ask.op is not Op.RESTORE):
            raise StoreUnavailable(f"unexpected answer from the pin script: {reply!r:.100}")
        return pin, written == 1

    async def peek(self, session_id: str) -> Pin | None:
        key = self.key(session_id)

        async def get_with_ttl() -> tuple[Any, Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, ttl = await pipe.execute()
            return raw, ttl

        raw, ttl = await self._call(get_with_ttl)
        if raw is None:
            return None
        return Pin.decode(raw, ttl_ms=int(ttl) if isinstance(ttl, int) and ttl >= 0 else None)

    async def ping(self) -> None:
        await self._call(self._client.ping)

    async def lost_data(self) -> bool:
        """Whether Redis lost its data since the last call: its epoch marker changed
        (whichever edge noticed first wrote a new one). False on the first call."""
        epoch = _text(
            await self._script(self._epoch_script, [self._epoch_key], [secrets.token_hex(8)])
        )
        seen, self._epoch = self._epoch, epoch
        return seen is not None and seen != epoch

    @property
    def announces_changes(self) -> bool:
        return self._subscriber is not None

    async def changes(self) -> AsyncIterator[Change | None]:
        if self._subscriber is None:
            return
        pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
        try:
            with _KeepsCancellation():
                async with fair_timeout(self._deadline_s, cap_s=self._cap_s):
                    await pubsub.subscribe(self.channel)
            yield None
            while True:
                with _KeepsCancellation():
                    message = await pubsub.get_message(timeout=None)
                if message is None or message.get("type") != "message":
                    continue
                origin, _, rest = _text(message["data"]).partition(" ")
                if origin == self.origin or not rest:
                    continue
                session_id, _, raw = rest.partition(" ")
                # An announcement without the value (from an earlier release) still says
                # that the session changed.
                yield Change(session_id, Pin.decode(raw) if raw else None)
        except REDIS_ERRORS as exc:
            raise unavailable(exc) from exc
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        if self._pipeline is not None:
            await self._pipeline.close()
        for client in (self._client, self._subscriber):
            if client is None:
                continue
            await client.aclose()
            # A Sentinel-backed client's pool holds its own clients to the Sentinels.
            pool = getattr(client, "connection_pool", None)
            sentinel = getattr(pool, "sentinel_manager", None)
            if sentinel is not None:
                await sentinel.aclose()
