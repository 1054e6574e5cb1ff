"""Shared health (``[health] shared``): every edge's probe results, through Redis.

One HASH under the session map's prefix and its own hash tag (one slot, so
Redis Cluster serves it too)::

    <prefix>:h:{health}   field: edge id   value: "<Redis TIME in ms> <JSON {cluster: up|down}>"

Each process of an edge, once per ``[health] interval_s``, writes its edge's
view and reads every edge's in one script. The script stamps the view with
the Redis server's clock and returns that clock too, so freshness is judged
on one clock whatever the edges' own clocks say. Fields not refreshed for a
long while are removed by the same script, so edges that are gone leave.

The verdict itself is ``core.quorum.agree``. When Redis does not answer, the
reports are dropped and the verdict is this edge's own, as without sharing;
``status()`` says so. No request ever waits on this: it runs in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from georouter.config import HealthSettings, SessionSettings
from georouter.core.health import HealthState, Status
from georouter.core.quorum import Agreement, Report, Seen, agree
from georouter.errors import StoreUnavailable
from georouter.sessions.redisstore import REDIS_ERRORS, KeepsCancellation, unavailable

log = logging.getLogger(__name__)

# One exchange's deadline: it runs in the background, so only its next turn waits.
CALL_TIMEOUT_S = 1.0
# A field no edge refreshed for this long (at least) is removed: that edge is gone.
FORGET_MS = 600_000

# KEYS[1] the hash; ARGV: this edge's id, its view (JSON), how old a field may get.
# A field it cannot read is left alone: another version's edges, mid-upgrade.
_EXCHANGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now .. ' ' .. ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local keep = {}
for i = 1, #all, 2 do
  local at = tonumber(string.match(all[i + 1], '^(%d+) '))
  if at ~= nil and now - at > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    keep[#keep + 1] = all[i]
    keep[#keep + 1] = all[i + 1]
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {now, keep}
"""

_SEEN = {Status.UP: Seen.UP, Status.DOWN: Seen.DOWN}


class SharedHealth:
    """This process's copy of every edge's reports; ``follow()`` keeps it current."""

    def __init__(
        self,
        client: Any | None,
        sessions: SessionSettings,
        *,
        edge: str,
        settings: Callable[[], HealthSettings],
        names: Callable[[], Iterable[str]],
        states: Callable[[], Mapping[str, HealthState]],
        unroutable: Callable[[], Mapping[str, str]],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.edge = edge
        self.key = f"{sessions.key_prefix}:h:{{health}}"
        self._settings = settings
        self._names = names
        self._states = states
        self._unroutable = unroutable
        self._monotonic = monotonic
        self._reports: tuple[Report, ...] = ()
        # The Redis clock at the last exchange, and this process's clock then.
        self._now_ms = 0
        self._read_at = monotonic()
        # Why the last exchange failed (None: it worked, or none was tried yet).
        self.error: str | None = None
        self._exchanged = False
        # Grows with every exchange, so a cached verdict knows to rebuild.
        self._version = 0
        self._cached: tuple[object, int, object, Agreement] | None = None

    @property
    def on(self) -> bool:
        return self._settings().shared

    def _local(self) -> dict[str, Seen]:
        names = list(dict.fromkeys(self._names()))
        states = self._states()
        found = {n: _SEEN.get(states[n].status) if n in states else None for n in names}
        return {n: seen for n, seen in found.items() if seen is not None}

    def agreement(self) -> Agreement | None:
        """The verdict now, or None when ``[health] shared`` is off."""
        settings = self._settings()
        if not settings.shared:
            return None
        local_why = self._unroutable()
        cached = self._cached
        # Per request, so by identity: the local view is rebuilt (a new object) whenever
        # a cluster changes state, the settings whenever a reload swaps the snapshot.
        if (
            cached is not None
            and cached[0] is local_why
            and cached[1] == self._version
            and cached[2] is settings
        ):
            return cached[3]
        elapsed_ms = int((self._monotonic() - self._read_at) * 1000)
        found = agree(
            self._names(),
            self._local(),
            local_why,
            self._reports,
            edge=self.edge,
            now_ms=self._now_ms + elapsed_ms,
            window_ms=int(settings.shared_window * settings.interval_s * 1000),
            quorum=settings.quorum,
        )
        self._cached = (local_why, self._version, settings, found)
        return found

    async def exchange(self) -> None:
        """Publish this edge's view and read every edge's (``StoreUnavailable``)."""
        if self._client is None:
            return
        view = orjson.dumps({n: seen.value for n, seen in self._local().items()})
        client = self._client
        try:
            with KeepsCancellation():
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    now, flat = await client.execute_command(
                        "EVAL", _EXCHANGE, 1, self.key, self.edge, view, FORGET_MS
                    )
        except REDIS_ERRORS as exc:
            raise unavailable(exc) from exc
        pairs = zip(flat[::2], flat[1::2], strict=True)
        self._reports = tuple(r for r in (_decode(e, v) for e, v in pairs) if r is not None)
        self._now_ms, self._read_at = int(now), self._monotonic()
        self._version += 1
        if self.error is not None:
            log.warning("shared health: Redis answers again; edges' reports counted")
        self.error = None
        self._exchanged = True

    def _lost(self, exc: StoreUnavailable) -> None:
        if self.error is None:
            log.warning("shared health: %s; this edge's own view decides meanwhile", exc)
        self.error = str(exc)
        self._reports = ()
        self._version += 1

    async def follow(self) -> None:
        """Exchange once per ``interval_s`` while ``shared`` is on, until cancelled."""
        while True:
            settings = self._settings()
            if settings.shared:
                try:
                    await self.exchange()
                except StoreUnavailable as exc:
                    self._lost(exc)
            await asyncio.sleep(settings.interval_s)

    def status(self) -> dict[str, object]:
        """For ``/v1/clusters``: whether the verdict is shared, and if not why."""
        settings = self._settings()
        found = self.agreement()
        if self._client is None:
            redis = "none: this edge's own view decides"
        elif self.error is not None:
            redis = f"unavailable ({self.error}): this edge's own view decides"
        else:
            redis = "ok" if self._exchanged else "not read yet"
        return {
            "on": settings.shared,
            "edge": self.edge,
            "quorum": settings.quorum,
            "window_s": settings.shared_window * settings.interval_s,
            "redis": redis,
            "edges_reporting": 1 if found is None else found.edges,
        }


def _decode(edge: Any, raw: Any) -> Report | None:
    """One field of the hash; a malformed one (another version's) counts for nothing."""
    try:
        name = edge.decode() if isinstance(edge, bytes) else str(edge)
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        at, _, body = text.partition(" ")
        seen = orjson.loads(body)
        if not isinstance(seen, dict):
            return None
        return Report(name, int(at), {str(c): Seen(s) for c, s in seen.items()})
    except (ValueError, UnicodeDecodeError, orjson.JSONDecodeError):
        return None
