"""Drains and forced states (``core.controls``) shared by every edge through Redis.

One key per control, under the session map's prefix and one hash tag, so a
single ``MGET`` reads them all, on Redis Cluster too::

    <prefix>:c:{controls}:drain:<cluster>     JSON, until undrained
    <prefix>:c:{controls}:override:<cluster>  JSON, with the override's TTL

Every change is announced on ``<prefix>:controls``; each edge process reads
every key again when told, when its subscription (re)starts, and at least
every ``POLL_S`` (every ``CLUSTER_POLL_S`` on Redis Cluster, which gives no
subscriber), so a change made at one edge holds at all of them within a
second, and an edge started later reads the state at start. An override
also ends on each edge's own clock at its ``until``; the key's TTL only
cleans up. Without Redis (an app built without sessions) the controls are
this process's alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from georouter.config import SessionSettings
from georouter.core.controls import NO_CONTROLS, Controls, Drain, Forced, ForcedState
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


class ClusterControls:
    """The controls as this process knows them; ``follow()`` keeps them current."""

    def __init__(
        self,
        client: Any | None,
        settings: SessionSettings,
        *,
        names: Callable[[], Iterable[str]],
        subscriber: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._subscriber = subscriber
        self._names = names
        self._clock = clock
        self._base = f"{settings.key_prefix}:c:{{controls}}:"
        self.channel = f"{settings.key_prefix}:controls"
        self.controls: Controls = NO_CONTROLS
        # Grows with every change seen, so a cached view knows to rebuild.
        self.version = 0

    def _key(self, kind: str, name: str) -> str:
        return f"{self._base}{kind}:{name}"

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

    def _set(self, controls: Controls) -> None:
        if controls != self.controls:
            self.controls = controls
            self.version += 1

    async def refresh(self) -> None:
        """Read every control of the configured clusters (``StoreUnavailable``)."""
        if self._client is None:
            return
        names = list(dict.fromkeys(self._names()))
        if not names:
            self._set(NO_CONTROLS)
            return
        keys = [self._key(kind, n) for kind in ("drain", "override") for n in names]
        raws = await self._call("MGET", *keys)
        drains: dict[str, Drain] = {}
        forced: dict[str, ForcedState] = {}
        for name, raw in zip(names, raws[: len(names)], strict=True):
            drain = _decode_drain(raw)
            if drain is not None:
                drains[name] = drain
        for name, raw in zip(names, raws[len(names) :], strict=True):
            state = _decode_forced(raw)
            if state is not None:
                forced[name] = state
        self._set(Controls(drains, forced))

    async def _announce(self, what: str) -> None:
        if self._client is not None:
            await self._call("PUBLISH", self.channel, what)
            await self.refresh()

    async def drain(self, name: str, deadline_s: float, *, by: str) -> Drain:
        now = self._clock()
        drain = Drain(deadline=now + deadline_s, since=now, by=by)
        if self._client is None:
            self._set(Controls({**self.controls.drains, name: drain}, self.controls.forced))
            return drain
        body = {"deadline": drain.deadline, "since": now, "by": by}
        await self._call("SET", self._key("drain", name), orjson.dumps(body))
        await self._announce(f"drain {name}")
        return drain

    async def undrain(self, name: str) -> bool:
        """End a drain; False if there was none."""
        if self._client is None:
            was = name in self.controls.drains
            drains = {n: d for n, d in self.controls.drains.items() if n != name}
            self._set(Controls(drains, self.controls.forced))
            return was
        removed = await self._call("DEL", self._key("drain", name))
        await self._announce(f"undrain {name}")
        return bool(removed)

    async def force(
        self, name: str, state: Forced, ttl_s: float, *, reason: str, by: str
    ) -> ForcedState:
        now = self._clock()
        forced = ForcedState(state=state, until=now + ttl_s, since=now, reason=reason, by=by)
        if self._client is None:
            self._set(Controls(self.controls.drains, {**self.controls.forced, name: forced}))
            return forced
        body = {"state": state.value, "until": forced.until, "since": now, "reason": reason}
        body["by"] = by
        ttl_ms = max(1, int(ttl_s * 1000))
        await self._call("SET", self._key("override", name), orjson.dumps(body), "PX", ttl_ms)
        await self._announce(f"override {name}")
        return forced

    async def unforce(self, name: str) -> bool:
        """End an override; False if there was none (or it had expired)."""
        if self._client is None:
            was = self.controls.forced_now(name, self._clock()) is not None
            forced = {n: f for n, f in self.controls.forced.items() if n != name}
            self._set(Controls(self.controls.drains, forced))
            return was
        removed = await self._call("DEL", self._key("override", name))
        await self._announce(f"override-end {name}")
        return bool(removed)

    async def load(self) -> None:
        """The first read, at start-up; a Redis that does not answer is logged and
        left to ``follow()``."""
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            log.warning("cluster drains and overrides not read at start (%s); retrying", exc)

    async def follow(self) -> None:
        """Keep the controls current until cancelled."""
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
                log.warning("cluster drains and overrides: %s; retrying in %gs", exc, RETRY_S)
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


def _decode(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def _decode_drain(raw: Any) -> Drain | None:
    body = _decode(raw)
    if body is None:
        return None
    try:
        return Drain(float(body["deadline"]), float(body["since"]), str(body.get("by", "")))
    except (KeyError, TypeError, ValueError):
        return None


def _decode_forced(raw: Any) -> ForcedState | None:
    body = _decode(raw)
    if body is None:
        return None
    try:
        return ForcedState(
            state=Forced(body["state"]),
            until=float(body["until"]),
            since=float(body["since"]),
            reason=str(body.get("reason", "")),
            by=str(body.get("by", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None
