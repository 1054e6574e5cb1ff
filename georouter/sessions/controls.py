"""Drains and forced states (``core.controls``) shared by every edge through Redis.

One key per control, under the session map's prefix and one hash tag, so a
single ``MGET`` reads them all, on Redis Cluster too::

    <prefix>:c:{controls}:drain:<cluster>     JSON, until undrained
    <prefix>:c:{controls}:override:<cluster>  JSON, with the override's TTL

Every change is announced on ``<prefix>:controls`` and followed as
``shared.SharedState`` follows it, so a change made at one edge holds at all
of them within a second, and an edge started later reads it at start. An override
also ends on each edge's own clock at its ``until``; the key's TTL only
cleans up. Without Redis (an app built without sessions) the controls are
this process's alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from georouter.config import SessionSettings
from georouter.core.controls import NO_CONTROLS, Controls, Drain, Forced, ForcedState
from georouter.sessions.shared import SharedState


class ClusterControls(SharedState):
    """The controls as this process knows them; ``follow()`` keeps them current."""

    what = "cluster drains and overrides"

    def __init__(
        self,
        client: Any | None,
        settings: SessionSettings,
        *,
        names: Callable[[], Iterable[str]],
        subscriber: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, f"{settings.key_prefix}:controls", subscriber)
        self._names = names
        self._clock = clock
        self._base = f"{settings.key_prefix}:c:{{controls}}:"
        self.controls: Controls = NO_CONTROLS

    def _key(self, kind: str, name: str) -> str:
        return f"{self._base}{kind}:{name}"

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
