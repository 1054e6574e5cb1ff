"""The session map without Redis: breaker, local memory and write-back, against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest

from georouter.breaker import BreakerState
from georouter.config import SessionSettings
from georouter.metrics import Metrics
from georouter.pins import Pin
from georouter.redisclient import make_client, make_subscriber
from georouter.sessionmap import SessionMap
from georouter.sessions import RedisSessionStore
from tests.harness import until
from tests.redis_harness import RedisServer
from tests.test_sessions_contract import session_settings

pytestmark = pytest.mark.anyio

# Short enough that fault tests run fast, long enough that a loaded CI machine
# does not time out against a healthy Redis.
TIMEOUT_S = 0.25


@pytest.fixture
async def make_map(redis_server: RedisServer) -> AsyncIterator[Callable[[], SessionMap]]:
    """Session maps (one per simulated edge) over the test Redis, closed afterwards."""
    maps: list[SessionMap] = []

    def make() -> SessionMap:
        settings = session_settings(
            redis_server.url,
            command_timeout_s=TIMEOUT_S,
            connect_timeout_s=TIMEOUT_S,
            retry_interval_s=0.05,
        )
        assert settings.redis is not None
        store = RedisSessionStore(make_client(settings.redis, settings), settings)
        maps.append(SessionMap(store, settings, Metrics()))
        return maps[-1]

    yield make
    for m in maps:
        await m.store.close()


async def test_reads_and_pins_go_through_redis_when_it_answers(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_map()
    pinned = await m.pin("s1", "eu-west", replacing=None)
    assert pinned.pin is not None
    assert (pinned.pin.cluster, pinned.degraded) == ("eu-west", False)
    read = await m.read("s1")
    assert read.pin is not None
    assert (read.pin.cluster, read.degraded) == ("eu-west", False)
    with redis_server.client() as c:
        assert c.get("georouter:s:s1").startswith("eu-west|")


async def test_dead_redis_opens_the_breaker_and_sessions_stay_on_this_edge(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_map()
    await m.pin("known", "eu-west", replacing=None)
    redis_server.kill()

    first = await m.read("known")
    assert first.pin is not None
    assert (first.pin.cluster, first.degraded) == ("eu-west", True)
    for _ in range(3):
        await m.read("known")
    assert m.breaker.state is BreakerState.OPEN

    new = await m.pin("new", "ap-sydney", replacing=None)
    assert new.pin is not None
    assert (new.pin.cluster, new.degraded) == ("ap-sydney", True)
    assert "new" in m.pending
    again = await m.read("new")
    assert again.pin is not None
    assert again.pin.cluster == "ap-sydney"


async def test_pins_made_without_redis_are_written_back_when_it_returns_empty(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_map()
    redis_server.kill()
    for i in range(20):
        outcome = await m.pin(f"s{i}", "eu-central", replacing=None)
        assert outcome.degraded
    assert len(m.pending) == 20

    redis_server.start(port=redis_server.port)  # empty: nothing survived
    recovery = asyncio.create_task(m.run())
    try:
        await until(lambda: not m.pending and m.breaker.allows)
    finally:
        recovery.cancel()
    with redis_server.client() as c:
        values = [c.get(f"georouter:s:s{i}") for i in range(20)]
    assert all(v is not None and v.startswith("eu-central|") for v in values)


async def test_a_pin_another_edge_made_meanwhile_wins_over_the_written_back_one(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    edge_a, edge_b = make_map(), make_map()
    redis_server.pause()  # edge A cannot reach Redis...
    lonely = await edge_a.pin("s1", "eu-west", replacing=None)
    assert lonely.degraded
    redis_server.resume()
    # ...while edge B, which can, pins the same session elsewhere.
    other = await edge_b.pin("s1", "us-east", replacing=None)
    assert other.pin is not None
    assert not other.degraded
    await edge_a.write_back()
    after = await edge_a.read("s1")
    assert after.pin is not None
    assert (after.pin.cluster, after.degraded) == ("us-east", False)


async def test_redis_that_lost_a_pin_gets_it_back_from_this_edges_memory(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_map()
    await m.pin("s1", "af-south", replacing=None)
    with redis_server.client() as c:
        c.flushall()  # a restart without persistence, or a failover that lost the write
    read = await m.read("s1")
    assert read.pin is not None
    assert (read.pin.cluster, read.degraded) == ("af-south", False)
    with redis_server.client() as c:
        assert c.get("georouter:s:s1").startswith("af-south|")


async def test_a_session_forgotten_at_one_edge_is_not_restored_by_another(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    edge_a, edge_b = make_map(), make_map()
    await edge_a.pin("s1", "eu-west", replacing=None)
    assert (await edge_b.read("s1")).pin is not None  # B now remembers it too
    await edge_a.forget("s1")
    gone = await edge_b.read("s1")
    assert gone.pin is None
    assert len(edge_b.local) == 0


async def test_a_hung_redis_costs_each_request_at_most_the_timeout(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_map()
    await m.pin("s1", "eu-west", replacing=None)
    redis_server.pause()
    try:
        loop = asyncio.get_running_loop()
        durations = []
        for _ in range(5):
            started = loop.time()
            outcome = await m.read("s1")
            durations.append(loop.time() - started)
            assert outcome.pin is not None
            assert outcome.pin.cluster == "eu-west"
            assert outcome.degraded
    finally:
        redis_server.resume()
    # Bounded by connect + command timeout (0.1 s); a generous margin for a busy machine.
    assert max(durations) < 2 * TIMEOUT_S + 1.0
    # Once the breaker is open, requests do not wait on Redis at all.
    assert m.breaker.state is BreakerState.OPEN


async def test_breaker_closes_once_redis_answers_again(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_map()
    redis_server.pause()
    for _ in range(3):
        await m.read("s1")
    assert m.breaker.state is BreakerState.OPEN
    recovery = asyncio.create_task(m.run())
    try:
        await asyncio.sleep(0.2)
        assert m.breaker.state is BreakerState.OPEN  # still hung: stays open
        redis_server.resume()
        await until(lambda: m.breaker.allows)
    finally:
        recovery.cancel()
    assert not (await m.read("s1")).degraded


async def test_every_remembered_pin_goes_back_to_a_redis_that_returned_empty(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_map()
    await m.pin("used", "eu-west", replacing=None)
    await m.pin("quiet", "ap-sydney", replacing=None)  # never asked during the outage
    redis_server.kill()
    for _ in range(3):
        assert (await m.read("used")).degraded
    assert m.breaker.state is BreakerState.OPEN
    assert "used" in m.pending  # served from memory: to be written back

    redis_server.start(port=redis_server.port)  # empty
    recovery = asyncio.create_task(m.run())
    try:
        await until(lambda: m.breaker.allows and not m.pending)
    finally:
        recovery.cancel()
    with redis_server.client() as c:
        assert c.get("georouter:s:used").startswith("eu-west|")
        assert c.get("georouter:s:quiet").startswith("ap-sydney|")


def getex_calls(redis_server: RedisServer) -> int:
    with redis_server.client() as c:
        return int(c.info("commandstats").get("cmdstat_getex", {}).get("calls", 0))


S = TypeVar("S", bound=RedisSessionStore)


def announcing_store(
    redis_server: RedisServer, store_class: type[S], **extra: object
) -> tuple[S, SessionSettings]:
    """A store of an edge of its own that announces its pin changes and hears others'."""
    settings = session_settings(
        redis_server.url, command_timeout_s=TIMEOUT_S, retry_interval_s=0.05, **extra
    )
    assert settings.redis is not None
    store = store_class(
        make_client(settings.redis, settings),
        settings,
        origin=secrets.token_hex(4),
        subscriber=make_subscriber(settings.redis, settings),
    )
    return store, settings


@pytest.fixture
async def make_near_map(redis_server: RedisServer) -> AsyncIterator[Callable[[], SessionMap]]:
    """Session maps with a near cache kept by the pin-change channel (one per edge)."""
    maps: list[tuple[SessionMap, asyncio.Task[None]]] = []

    def make() -> SessionMap:
        store, settings = announcing_store(redis_server, RedisSessionStore, near_cache_s=30)
        m = SessionMap(store, settings, Metrics())
        maps.append((m, asyncio.create_task(m.follow_changes())))
        return m

    yield make
    for m, task in maps:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await m.store.close()


async def test_sticky_reads_come_from_the_near_cache_without_a_round_trip(
    make_near_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_near_map()
    await until(lambda: m.near.active)
    await m.pin("s1", "eu-west", replacing=None)
    before = getex_calls(redis_server)
    for _ in range(50):
        outcome = await m.read("s1")
        assert outcome.pin is not None
        assert (outcome.pin.cluster, outcome.degraded) == ("eu-west", False)
    assert getex_calls(redis_server) == before


async def test_a_pin_changed_at_another_edge_reaches_the_near_cache_at_once(
    make_near_map: Callable[[], SessionMap],
) -> None:
    edge_a, edge_b = make_near_map(), make_near_map()
    await until(lambda: edge_a.near.active and edge_b.near.active)
    await edge_a.pin("s1", "eu-west", replacing=None)
    async with asyncio.timeout(10):
        # A read that raced with A's own announcement is not cached; the next one is.
        while len(edge_b.near) == 0:
            read = await edge_b.read("s1")
            assert read.pin is not None
            assert read.pin.cluster == "eu-west"
            await asyncio.sleep(0.01)

    await edge_a.pin("s1", "us-east", replacing="eu-west")  # a failover at A
    await until(lambda: len(edge_b.near) == 0)
    moved = await edge_b.read("s1")
    assert moved.pin is not None
    assert moved.pin.cluster == "us-east"

    await edge_a.forget("s1")
    await until(lambda: len(edge_b.near) == 0)
    assert (await edge_b.read("s1")).pin is None


async def test_losing_redis_turns_the_near_cache_off(
    make_near_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_near_map()
    await until(lambda: m.near.active)
    await m.pin("s1", "eu-west", replacing=None)
    assert len(m.near) == 1
    redis_server.kill()
    await until(lambda: not m.near.active)
    assert len(m.near) == 0
    redis_server.start(port=redis_server.port)
    await until(lambda: m.near.active)


async def test_a_session_forgotten_during_an_outage_is_not_restored(
    make_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    edge_a, edge_b = make_map(), make_map()
    await edge_a.pin("alice", "eu-west", replacing=None)
    redis_server.pause()  # edge A loses Redis...
    for _ in range(3):
        await edge_a.read("alice")
    assert not edge_a.breaker.allows
    redis_server.resume()
    await edge_b.forget("alice")  # ...while an admin forgets alice through edge B
    recovery = asyncio.create_task(edge_a.run())
    try:
        await until(lambda: edge_a.breaker.allows and not edge_a.pending)
    finally:
        recovery.cancel()
    with redis_server.client() as c:
        assert c.get("georouter:s:alice").startswith("!|")  # still a tombstone
    assert (await edge_b.read("alice")).pin is None
    assert (await edge_a.read("alice")).pin is None


async def test_a_restored_pin_keeps_its_age_and_expired_pins_are_not_restored(
    redis_server: RedisServer,
) -> None:
    settings = session_settings(redis_server.url, ttl_s=60, max_ttl_s=120, retry_interval_s=0.05)
    assert settings.redis is not None
    now = [1_000_000]
    store = RedisSessionStore(
        make_client(settings.redis, settings), settings, clock_ms=lambda: now[0]
    )
    m = SessionMap(store, settings, Metrics(), clock_ms=lambda: now[0])
    try:
        with redis_server.client() as c:
            redis_now_ms = c.time()[0] * 1000
        now[0] = redis_now_ms
        old = await m.pin("old", "eu-west", replacing=None)
        assert old.pin is not None
        with redis_server.client() as c:
            c.flushall()  # Redis loses everything
        restored = await m.read("old")
        assert restored.pin is not None
        # Put back with its first pin time: the 120 s cap still counts from then.
        assert restored.pin.pinned_at_ms == old.pin.pinned_at_ms

        now[0] += 130_000  # past the hard cap
        with redis_server.client() as c:
            c.flushall()
        assert (await m.read("old")).pin is None
        with redis_server.client() as c:
            assert c.get("georouter:s:old") is None
    finally:
        await store.close()


async def test_a_failover_made_without_redis_clears_the_near_cache_copy(
    make_near_map: Callable[[], SessionMap], redis_server: RedisServer
) -> None:
    m = make_near_map()
    await until(lambda: m.near.active)
    await m.pin("s1", "eu-west", replacing=None)
    assert m.cached("s1") is not None
    redis_server.pause()  # hung: commands time out, the change channel stays up
    try:
        moved = await m.pin("s1", "us-east", replacing="eu-west")
        assert moved.degraded
        assert m.near.active
        assert m.cached("s1") is None
        read = await m.read("s1")
        assert read.pin is not None
        assert read.pin.cluster == "us-east"
    finally:
        redis_server.resume()


@contextlib.asynccontextmanager
async def refreshing_map(
    redis_server: RedisServer,
    *,
    ttl_s: float,
    near_cache_s: float,
    metrics: Metrics | None = None,
    store_class: type[RedisSessionStore] = RedisSessionStore,
) -> AsyncIterator[SessionMap]:
    """A session map with its near cache followed and refreshed, as an edge runs it."""
    metrics = metrics or Metrics()
    store, settings = announcing_store(
        redis_server, store_class, ttl_s=ttl_s, near_cache_s=near_cache_s
    )
    m = SessionMap(store, settings, metrics)
    tasks = [asyncio.create_task(m.follow_changes()), asyncio.create_task(m.refresh_near())]
    try:
        await until(lambda: m.near.active)
        yield m
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await store.close()


async def test_a_busy_session_is_refreshed_ahead_and_never_waits_on_redis(
    redis_server: RedisServer,
) -> None:
    metrics = Metrics()
    async with refreshing_map(redis_server, ttl_s=2.5, near_cache_s=1, metrics=metrics) as m:
        await m.pin("busy", "eu-west", replacing=None)
        requests_reaching_redis = 0
        deadline = asyncio.get_running_loop().time() + 3  # past the 2.5 s TTL itself
        while asyncio.get_running_loop().time() < deadline:
            if m.cached("busy") is None:
                requests_reaching_redis += 1
                outcome = await m.read("busy")
                assert outcome.pin is not None
                assert outcome.pin.cluster == "eu-west"
            await asyncio.sleep(0.02)
        # Every request was answered from the near cache, refreshed in the background,
        # which also kept sliding the TTL in Redis (2.5 s) past the session's first 2.5 s.
        assert requests_reaching_redis == 0
        with redis_server.client() as c:
            assert c.get("georouter:s:busy").startswith("eu-west|")
            assert c.pttl("georouter:s:busy") > 1000
        assert refreshed(metrics) >= 2  # about every 0.5 s (half the near cache's 1 s)


def refreshed(metrics: Metrics) -> int:
    for line in metrics.render().splitlines():
        if line.startswith("georouter_session_near_cache_refreshed_total "):
            return int(float(line.split()[-1]))
    raise AssertionError("no georouter_session_near_cache_refreshed_total in the metrics")


async def test_an_idle_session_leaves_the_near_cache_and_expires_in_redis(
    redis_server: RedisServer,
) -> None:
    async with refreshing_map(redis_server, ttl_s=1, near_cache_s=0.3) as m:
        await m.pin("idle", "eu-west", replacing=None)
        assert m.cached("idle") is not None

        def expired_in_redis() -> bool:
            with redis_server.client() as c:
                return c.get("georouter:s:idle") is None

        # No request meanwhile: never refreshed, so its 1 s TTL runs out in Redis...
        await until(expired_in_redis, timeout_s=5)
        assert m.cached("idle") is None  # ...and its 0.3 s in the near cache before that


async def test_a_session_gone_from_redis_is_restored_after_its_refresh(
    redis_server: RedisServer,
) -> None:
    async with refreshing_map(redis_server, ttl_s=5, near_cache_s=0.4) as m:
        await m.pin("kept", "ap-sydney", replacing=None)
        with redis_server.client() as c:
            c.delete("georouter:s:kept")  # evicted under memory pressure, say
        # In use past half its life, the refresh finds it gone and drops the copy...
        await until(lambda: m.cached("kept") is None, timeout_s=5)
        # ...so the next request reads Redis and puts back what this edge remembers.
        outcome = await m.read("kept")
        assert outcome.pin is not None
        assert outcome.pin.cluster == "ap-sydney"
        with redis_server.client() as c:
            assert c.get("georouter:s:kept").startswith("ap-sydney|")


class LateRefreshStore(RedisSessionStore):
    """A real store whose refresh replies arrive only when ``arrive`` is set (the
    refresh has read Redis; its answer is still on the wire)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.arrive = asyncio.Event()
        self.refreshing = asyncio.Event()
        self.answered = asyncio.Event()

    async def read_many(self, session_ids: list[str]) -> list[Pin | None]:
        pins = await super().read_many(session_ids)
        self.refreshing.set()
        await self.arrive.wait()
        # The caller handles the answer in this same step, before anyone else runs.
        self.answered.set()
        return pins


async def test_a_refresh_answered_after_a_failover_does_not_bring_the_old_pin_back(
    redis_server: RedisServer,
) -> None:
    async with refreshing_map(
        redis_server, ttl_s=10, near_cache_s=0.4, store_class=LateRefreshStore
    ) as m:
        store = m.store
        assert isinstance(store, LateRefreshStore)
        await m.pin("s1", "eu-west", replacing=None)
        # In use past half its life: the background refresh reads it (eu-west)...
        await until(lambda: m.cached("s1") is not None and store.refreshing.is_set())
        # ...and before its answer arrives, eu-west goes down and this edge moves s1.
        moved = await m.pin("s1", "us-east", replacing="eu-west")
        assert moved.pin is not None
        assert moved.pin.cluster == "us-east"
        store.arrive.set()
        async with asyncio.timeout(5):
            await store.answered.wait()
        cached = m.cached("s1")
        assert cached is None or cached.cluster == "us-east"
        read = await m.read("s1")
        assert read.pin is not None
        assert read.pin.cluster == "us-east"
