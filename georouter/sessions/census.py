"""A census of the session map: how many sessions are pinned to each cluster, counted in Redis.

Read-only and bounded, so that an operator may run it against a production
Redis before a reload: ``SCAN MATCH <prefix>:s:* COUNT n`` (never ``KEYS``,
which blocks Redis for the whole keyspace), every primary in turn on Redis
Cluster, the values read in one ``MGET`` per page, at most ``max_keys``
distinct keys and ``budget_s`` seconds in all. A census that stopped at either
bound says so and is a sample: the keys it read, not all of them.

Only live pins count: a tombstone (a forgotten session), a pin past its age
cap, a value that is not a pin and a key that expired between ``SCAN`` and
``MGET`` are seen but ignored. ``Census.fates`` says what a new cluster list
does to the pins counted: a pin whose cluster the new file removes fails over
on the session's next request (the router pins it again to the client's
nearest routable cluster); every other pin stays, on a cluster that moved too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, NamedTuple, TypeVar

from redis.asyncio.cluster import RedisCluster

from georouter.config import SessionSettings
from georouter.config.redisurl import RedisTarget
from georouter.core.pin import Pin
from georouter.errors import StoreUnavailable
from georouter.sessions.clients import make_client
from georouter.sessions.redisstore import REDIS_ERRORS, unavailable
from georouter.sessions.store import wall_clock_ms

T = TypeVar("T")

# Keys per SCAN page (a hint to Redis) and per MGET: a page costs Redis well
# under a millisecond, so other clients are never held up behind it.
PAGE_KEYS = 1000
DEFAULT_MAX_KEYS = 100_000
DEFAULT_BUDGET_S = 2.0


class _Page(NamedTuple):
    keys: list[Any]
    # The scan is done after this page: no round trip is needed to learn it.
    last: bool


class Bound(StrEnum):
    """Why a census stopped before it had seen every key."""

    KEY_LIMIT = "key_limit"
    TIME_BUDGET = "time_budget"


@dataclass(frozen=True, slots=True)
class Fates:
    """What a new cluster list does to the pins a census counted."""

    # Pinned to a cluster the new file removes: they fail over on their next request.
    moving: int
    # Pinned to a cluster the new file keeps (moved or not): they stay.
    staying: int
    # Pinned to a cluster neither file has: they fail over on their next request
    # whichever file runs (another edge's cluster, or one removed before).
    orphaned: int


@dataclass(frozen=True, slots=True)
class Census:
    # Live pins by cluster, of the keys read.
    pins: Mapping[str, int]
    # Distinct session keys read.
    keys_seen: int
    # Of those, not live pins: tombstones, pins past the age cap, values that are
    # not pins, keys gone before they were read.
    ignored: int
    # None: every key was seen, the counts are exact. Else a sample, and why.
    stopped_by: Bound | None = None

    @property
    def complete(self) -> bool:
        return self.stopped_by is None

    @property
    def pinned(self) -> int:
        return sum(self.pins.values())

    def fates(self, kept: Collection[str], removed: Collection[str]) -> Fates:
        """``kept``: the new file's clusters; ``removed``: those the change removes."""
        moving = sum(n for c, n in self.pins.items() if c in removed)
        staying = sum(n for c, n in self.pins.items() if c in kept)
        return Fates(moving, staying, self.pinned - moving - staying)

    def as_json(self, kept: Collection[str], removed: Collection[str]) -> dict[str, object]:
        fates = self.fates(kept, removed)
        return {
            "census": "complete" if self.complete else "sample",
            "stopped_by": None if self.stopped_by is None else self.stopped_by.value,
            "keys_seen": self.keys_seen,
            "ignored": self.ignored,
            "pinned": dict(sorted(self.pins.items())),
            "moving": fates.moving,
            "staying": fates.staying,
            "orphaned": fates.orphaned,
        }


async def _pages(client: Any, pattern: str, count: int) -> AsyncGenerator[_Page, None]:
    """The keys matching ``pattern``, one SCAN page at a time; on Redis Cluster,
    every primary's keyspace in turn (each holds only its own slots)."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        primaries = client.get_primaries()
        for i, node in enumerate(primaries):
            cursor = 0
            while True:
                # The cluster client answers {node name: cursor} and the keys.
                reply: Any = await client.scan(
                    cursor=cursor, match=pattern, count=count, target_nodes=node
                )
                cursors, keys = reply
                cursor = int(cursors[node.name])
                yield _Page(list(keys), last=not cursor and i == len(primaries) - 1)
                if not cursor:
                    break
        return
    cursor = 0
    while True:
        cursor, keys = await client.scan(cursor=cursor, match=pattern, count=count)
        yield _Page(keys, last=not cursor)
        if not cursor:
            return


async def _values(client: Any, keys: list[bytes]) -> list[Any]:
    # MGET answers nil for a key that is gone or holds another type, never an error;
    # on Cluster the keys of one page live in many slots, so one MGET per slot.
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(keys))
    return list(await client.mget(keys))


async def take_census(
    client: Any,
    key_prefix: str,
    *,
    max_keys: int = DEFAULT_MAX_KEYS,
    budget_s: float = DEFAULT_BUDGET_S,
    max_age_ms: int = 0,
    page_keys: int = PAGE_KEYS,
    clock_ms: Callable[[], int] = wall_clock_ms,
    monotonic: Callable[[], float] = time.monotonic,
) -> Census:
    """Count the live pins under ``key_prefix`` through ``client`` (redis-py asyncio).

    Raises ``StoreUnavailable`` when Redis fails; running out of keys or time is
    not a failure but a sample (``stopped_by``).
    """
    # The prefix is validated to letters, digits and . _ : - (config.values), so it
    # holds no glob characters to escape.
    pattern = f"{key_prefix}:s:*"
    deadline = monotonic() + budget_s
    seen: set[bytes] = set()
    pins: Counter[str] = Counter()
    read = ignored = 0
    stopped: Bound | None = None
    now_ms = clock_ms()

    async def within_budget(step: Callable[[], Awaitable[T]]) -> T:
        left = deadline - monotonic()
        if left <= 0:
            raise TimeoutError
        async with asyncio.timeout(left):
            return await step()

    try:
        async with aclosing(_pages(client, pattern, page_keys)) as pages:
            while True:
                page = await within_budget(lambda: anext(pages))
                # SCAN may return a key twice (the keyspace was rehashed meanwhile).
                fresh = [k for k in dict.fromkeys(page.keys) if k not in seen]
                if len(seen) + len(fresh) > max_keys:
                    fresh = fresh[: max_keys - len(seen)]
                    stopped = Bound.KEY_LIMIT
                if fresh:
                    values = await within_budget(partial(_values, client, fresh))
                    seen.update(fresh)
                    read += len(fresh)
                    for raw in values:
                        pin = None if raw is None else Pin.decode(raw)
                        if pin is None or not pin.alive(now_ms, max_age_ms):
                            ignored += 1
                        else:
                            pins[pin.cluster] += 1
                if stopped is not None or page.last:
                    break
    except TimeoutError:
        stopped = Bound.TIME_BUDGET
    except REDIS_ERRORS as exc:
        raise unavailable(exc) from exc
    return Census(dict(pins), read, ignored, stopped)


def _census_settings(settings: SessionSettings, timeout_s: float) -> SessionSettings:
    # A one-off client for an operator's command: a connection may take this long
    # (the edge's own client is tuned for requests that cannot wait).
    return dataclasses.replace(
        settings, connect_timeout_s=timeout_s, command_timeout_s=timeout_s, pool_size=2
    )


async def census_at(
    target: RedisTarget,
    settings: SessionSettings,
    *,
    connect_timeout_s: float = 1.0,
    max_keys: int = DEFAULT_MAX_KEYS,
    budget_s: float = DEFAULT_BUDGET_S,
) -> Census:
    """``take_census`` through a client of its own, opened for it and closed after.

    Raises ``StoreUnavailable`` when Redis does not answer a PING within
    ``connect_timeout_s``.
    """
    client = make_client(target, _census_settings(settings, connect_timeout_s))
    try:
        try:
            async with asyncio.timeout(connect_timeout_s):
                if isinstance(client, RedisCluster):
                    await client.initialize()
                await client.ping()
        except TimeoutError:
            raise StoreUnavailable(f"no answer within {connect_timeout_s:g}s") from None
        except REDIS_ERRORS as exc:
            raise unavailable(exc) from exc
        return await take_census(
            client,
            settings.key_prefix,
            max_keys=max_keys,
            budget_s=budget_s,
            max_age_ms=int(settings.max_ttl_s * 1000),
        )
    finally:
        await _close(client)


async def _close(client: Any) -> None:
    try:
        await client.aclose()
        # A Sentinel-backed client's pool holds its own clients to the Sentinels.
        sentinel = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
        if sentinel is not None:
            await sentinel.aclose()
    except REDIS_ERRORS:
        # Closing a connection Redis already dropped: nothing is left to release.
        pass
