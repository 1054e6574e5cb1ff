"""Tenant homes set at run time (``core.tenants``), shared by every edge through Redis.

One hash under the session map's prefix, one hash tag, so one ``HGETALL``
reads them all, on Redis Cluster too::

    <prefix>:t:{tenants}   field: tenant id, value: JSON {cluster, since, by}

Every change is announced on ``<prefix>:tenants`` and followed as
``shared.SharedState`` follows it. Homes never expire: a tenant's home is
an operator's decision that stands until it is deleted. Without Redis (an
app built without sessions) the homes are this process's alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import orjson

from georouter.config import SessionSettings
from georouter.core.tenants import StoredHome
from georouter.sessions.shared import SharedState

# The most homes the admin API keeps: each edge holds every one in memory and
# reads them all on every announcement.
MAX_HOMES = 100_000


class TenantHomes(SharedState):
    """The run-time homes as this process knows them; ``follow()`` keeps them current."""

    what = "tenant homes"

    def __init__(
        self,
        client: Any | None,
        settings: SessionSettings,
        *,
        subscriber: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, f"{settings.key_prefix}:tenants", subscriber)
        self._clock = clock
        self._key = f"{settings.key_prefix}:t:{{tenants}}"
        self.homes: Mapping[str, StoredHome] = MappingProxyType({})

    def _set(self, homes: dict[str, StoredHome]) -> None:
        if homes != self.homes:
            # A new mapping each time, never changed after: a request may hold the old one.
            self.homes = MappingProxyType(homes)
            self.version += 1

    def current(self) -> Mapping[str, StoredHome]:
        return self.homes

    async def refresh(self) -> None:
        """Read every home (``StoreUnavailable``); until it answers, the copy held stays."""
        if self._client is None:
            return
        raw = await self._call("HGETALL", self._key)
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        homes: dict[str, StoredHome] = {}
        for field, value in pairs:
            tenant = field.decode("utf-8", "replace") if isinstance(field, bytes) else str(field)
            home = _decode(value)
            if home is not None:
                homes[tenant] = home
        self._set(homes)

    async def put(self, tenant: str, cluster: str, *, by: str) -> StoredHome:
        home = StoredHome(cluster=cluster, since=self._clock(), by=by)
        if self._client is None:
            self._set({**self.homes, tenant: home})
            return home
        body = {"cluster": cluster, "since": home.since, "by": by}
        await self._call("HSET", self._key, tenant, orjson.dumps(body))
        await self._announce(f"home {tenant}")
        return home

    async def delete(self, tenant: str) -> bool:
        """Remove a run-time home; False if there was none."""
        if self._client is None:
            was = tenant in self.homes
            self._set({t: h for t, h in self.homes.items() if t != tenant})
            return was
        removed = await self._call("HDEL", self._key, tenant)
        await self._announce(f"home-end {tenant}")
        return bool(removed)


def _decode(raw: Any) -> StoredHome | None:
    try:
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            return None
        return StoredHome(str(body["cluster"]), float(body["since"]), str(body.get("by", "")))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        # Written by hand, or by another version: not a home this edge can follow.
        return None
