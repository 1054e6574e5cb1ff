"""The shared session map in Redis: one key per session, read and pinned atomically.

``<prefix>:s:<session id>`` holds ``<cluster>|<pinned at ms>`` with a sliding
TTL. A sticky read is one ``GETEX ... PX`` (read and refresh in one round
trip). Pinning is one Lua script over that single key: set it if absent,
replace it only if it still names the cluster the caller expects to replace,
otherwise return what is there. Two edges racing on a new session, or on a
re-pin, therefore always end with one cluster. Touching one key per command
keeps it valid on Redis Cluster (one hash slot) and behind Sentinel.

Every Redis failure leaves this module as ``StoreUnavailable``; the caller
decides what to do without Redis (see ``sessionmap``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from georouter.config import SessionSettings
from georouter.errors import GeorouterError
from georouter.pins import TOMBSTONE, LocalPins, Pin
from georouter.pipelining import AutoPipeline

# KEYS[1]: the session key. ARGV: cluster to pin, cluster expected to be replaced
# ("" for none), TTL in ms, hard cap on a session's age in ms (0: none), the
# invalidation channel and message, and for a restore the pin's original time
# ("" otherwise). Returns the value stored after the call, and 1 if this call
# stored it (0: it was there already, and only its TTL was renewed).
#
# Redis's own clock dates a new pin, so edges with skewed clocks still agree on a
# session's age; a replaced or restored pin keeps its first time, so the hard cap
# counts from the start of the session. A restore (an edge putting back a pin it
# remembers, after Redis lost it) never overrides a tombstone: a forgotten
# session stays forgotten. A changed pin is announced on the channel, so edges
# drop the copy in their near cache.
PIN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local restore = ARGV[7] ~= ''
local since = now
if restore then
  since = tonumber(ARGV[7])
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  local cluster = sep and string.sub(cur, 1, sep - 1) or ''
  local at = sep and tonumber(string.sub(cur, sep + 1)) or nil
  if restore and cluster == '!' and at ~= nil then
    return {cur, 0}
  end
  local over_age = at ~= nil and tonumber(ARGV[4]) > 0 and now - at > tonumber(ARGV[4])
  local alive = at ~= nil and cluster ~= '!' and not over_age
  if alive and cluster ~= ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {cur, 0}
  end
  if alive then
    since = at
  end
end
local value = ARGV[1] .. '|' .. since
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {value, 1}
"""

# KEYS: session keys; ARGV[1]: TTL in ms. Every key's value (false: none), its TTL
# renewed: the near cache's background refresh of many sessions as one command.
# Only where the keys may live on one node (not on Redis Cluster).
READ_MANY_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('GETEX', key, 'PX', ARGV[1])
end
return out
"""

# KEYS[1]: the session key. ARGV: the tombstone, TTL in ms, channel, message.
FORGET_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


class StoreUnavailable(GeorouterError):
    """The session store could not answer in time (down, hung, failing over)."""


class SessionStore(Protocol):
    """What the router needs of a session store; Redis and the local memory both offer it."""

    async def read(self, session_id: str) -> Pin | None:
        """The pin (a tombstone if forgotten), refreshing its TTL; None if there is none."""

    async def pin(
        self,
        session_id: str,
        cluster: str,
        *,
        replacing: str | None,
        restore_at_ms: int | None = None,
    ) -> Pin:
        """Pin to ``cluster`` if unpinned or pinned to ``replacing``; the pin that holds after.

        ``restore_at_ms``: put back a remembered pin made at that time; a
        forgotten session stays forgotten.
        """

    async def claim(self, session_id: str, cluster: str) -> tuple[Pin, bool]:
        """Pin to ``cluster`` unless pinned already (then renew that pin), in one step;
        True if this call made the pin."""

    async def forget(self, session_id: str) -> None: ...

    async def peek(self, session_id: str) -> Pin | None:
        """The pin and its TTL left, without refreshing it."""


def _checked(reply: Any) -> Any:
    """A pipelined reply, or the error it stands for raised (as StoreUnavailable
    when it means Redis could not answer)."""
    if isinstance(reply, BaseException):
        if isinstance(reply, RedisError | OSError | TimeoutError):
            raise StoreUnavailable(f"{type(reply).__name__}: {reply}") from reply
        raise reply
    return reply


class RedisSessionStore:
    """The session map in Redis (standalone, Sentinel or Cluster)."""

    def __init__(
        self,
        client: Any,
        settings: SessionSettings,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        origin: str = "",
        subscriber: Any | None = None,
    ) -> None:
        self._client = client
        self._subscriber = subscriber
        self._prefix = f"{settings.key_prefix}:s:"
        self._ttl_ms = int(settings.ttl_s * 1000)
        self._max_age_ms = int(settings.max_ttl_s * 1000)
        # A hard bound on each call, whatever the client library does inside it
        # (connecting, Sentinel discovery, Cluster slot refresh).
        self._deadline_s = settings.command_timeout_s + settings.connect_timeout_s
        self._clock_ms = clock_ms
        self._pin_script = client.register_script(PIN_SCRIPT)
        self._forget_script = client.register_script(FORGET_SCRIPT)
        self._read_many_script = client.register_script(READ_MANY_SCRIPT)
        # Pin changes are announced on this channel as "<origin> <session id>"; an
        # edge process ignores its own announcements (it already knows).
        self.channel = f"{settings.key_prefix}:pins"
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
            else AutoPipeline(client, deadline_s=self._deadline_s)
        )

    def key(self, session_id: str) -> str:
        return self._prefix + session_id

    async def _call(self, op: Callable[[], Any]) -> Any:
        try:
            async with asyncio.timeout(self._deadline_s):
                if self._needs_init:
                    await self._initialize()
                return await op()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _initialize(self) -> None:
        async with self._init_lock:
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

    def _alive(self, raw: str | None) -> Pin | None:
        if raw is None:
            return None
        pin = Pin.decode(raw, ttl_ms=self._ttl_ms)
        if pin is None or pin.expired(self._clock_ms(), self._max_age_ms):
            return None
        return pin

    async def read(self, session_id: str) -> Pin | None:
        return self._alive(await self._command("GETEX", self.key(session_id), "PX", self._ttl_ms))

    async def read_many(self, session_ids: list[str]) -> list[Pin | None]:
        """``read`` of many sessions at once: one command, or on Redis Cluster (where
        they live on many nodes) one command each, concurrently."""
        if self._pipeline is None:
            return list(await asyncio.gather(*(self.read(sid) for sid in session_ids)))
        raws = await self._script(
            self._read_many_script, [self.key(sid) for sid in session_ids], [self._ttl_ms]
        )
        if not isinstance(raws, list) or len(raws) != len(session_ids):
            raise StoreUnavailable(f"unexpected answer from the read script: {raws!r:.100}")
        return [self._alive(raw) for raw in raws]

    async def pin(
        self,
        session_id: str,
        cluster: str,
        *,
        replacing: str | None,
        restore_at_ms: int | None = None,
    ) -> Pin:
        pin, _ = await self._pin(session_id, cluster, replacing, restore_at_ms)
        return pin

    async def claim(self, session_id: str, cluster: str) -> tuple[Pin, bool]:
        return await self._pin(session_id, cluster, None, None)

    async def _pin(
        self, session_id: str, cluster: str, replacing: str | None, restore_at_ms: int | None
    ) -> tuple[Pin, bool]:
        reply = await self._script(
            self._pin_script,
            [self.key(session_id)],
            [
                cluster,
                replacing or "",
                self._ttl_ms,
                self._max_age_ms,
                self.channel,
                f"{self.origin} {session_id}",
                "" if restore_at_ms is None else restore_at_ms,
            ],
        )
        pin = None
        if isinstance(reply, list) and len(reply) == 2:
            pin = Pin.decode(reply[0], ttl_ms=self._ttl_ms)
        if pin is None:
            raise StoreUnavailable(f"unexpected answer from the pin script: {reply!r:.100}")
        return pin, reply[1] == 1

    async def forget(self, session_id: str) -> None:
        tombstone = Pin(TOMBSTONE, self._clock_ms()).encode()
        await self._script(
            self._forget_script,
            [self.key(session_id)],
            [tombstone, self._ttl_ms, self.channel, f"{self.origin} {session_id}"],
        )

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

    @property
    def announces_changes(self) -> bool:
        return self._subscriber is not None

    async def changes(self) -> AsyncIterator[str | None]:
        """Session ids whose pin another process changed; None once subscribed.

        Ends (raising StoreUnavailable) when the subscription is lost: whatever
        was announced meanwhile was missed.
        """
        if self._subscriber is None:
            return
        pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(self._deadline_s * 4):
                await pubsub.subscribe(self.channel)
            yield None
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None or message.get("type") != "message":
                    continue
                origin, _, session_id = str(message["data"]).partition(" ")
                if origin != self.origin:
                    yield session_id
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
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


class LocalSessionStore:
    """The session store of one process, in memory: the same contract without Redis."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._ttl_ms = int(settings.ttl_s * 1000)
        self._max_age_ms = int(settings.max_ttl_s * 1000)
        self._pins = LocalPins(settings.local_cache_size, self._ttl_ms)
        self._clock_ms = clock_ms

    def _alive(self, session_id: str) -> Pin | None:
        now = self._clock_ms()
        pin = self._pins.get(session_id, now)
        if pin is None or pin.forgotten or pin.expired(now, self._max_age_ms):
            return None
        return pin

    async def read(self, session_id: str) -> Pin | None:
        now = self._clock_ms()
        pin = self._pins.get(session_id, now)
        if pin is not None and pin.expired(now, self._max_age_ms):
            return None
        return pin

    async def pin(
        self,
        session_id: str,
        cluster: str,
        *,
        replacing: str | None,
        restore_at_ms: int | None = None,
    ) -> Pin:
        stored = self._pins.get(session_id, self._clock_ms())
        if restore_at_ms is not None and stored is not None and stored.forgotten:
            return stored
        current = self._alive(session_id)
        if current is not None and current.cluster != (replacing or ""):
            return current
        if current is not None:
            since = current.pinned_at_ms
        else:
            since = self._clock_ms() if restore_at_ms is None else restore_at_ms
        pin = Pin(cluster, since, self._ttl_ms)
        self._pins.put(session_id, pin, self._clock_ms())
        return pin

    async def claim(self, session_id: str, cluster: str) -> tuple[Pin, bool]:
        current = self._alive(session_id)
        if current is not None:
            return current, False
        return await self.pin(session_id, cluster, replacing=None), True

    async def forget(self, session_id: str) -> None:
        self._pins.put(session_id, Pin(TOMBSTONE, self._clock_ms()), self._clock_ms())

    async def peek(self, session_id: str) -> Pin | None:
        return self._pins.get(session_id, self._clock_ms())
