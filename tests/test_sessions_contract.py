"""One contract, every session store: Redis (a real redis-server) and the local memory.

The router relies on exactly these behaviours; a store that passes this suite
can stand in for another.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from georouter.config import SessionSettings, parse
from georouter.pins import Pin
from georouter.redisclient import make_client
from georouter.sessions import LocalSessionStore, RedisSessionStore, SessionStore
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.anyio


def session_settings(redis_url: str | None = None, **extra: object) -> SessionSettings:
    # Generous timeouts: these tests are about what the store does, not how fast, and
    # a loaded CI machine can take more than the production default to connect.
    sessions: dict[str, object] = {
        "ttl_s": 60,
        "command_timeout_s": 1,
        "connect_timeout_s": 1,
        **extra,
    }
    if redis_url:
        sessions["redis_url"] = redis_url
    document = {
        "clusters": [{"name": "c", "url": "http://c.example", "lat": 0, "lon": 0}],
        "sessions": sessions,
    }
    return parse(document).sessions


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture(params=["redis", "local"])
async def store(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[SessionStore]:
    if request.param == "redis":
        settings = session_settings(redis_server.url)
        assert settings.redis is not None
        redis_store = RedisSessionStore(make_client(settings.redis, settings), settings)
        yield redis_store
        await redis_store.close()
    else:
        yield LocalSessionStore(session_settings())


async def test_unknown_session_has_no_pin(store: SessionStore) -> None:
    assert await store.read("nobody") is None
    assert await store.peek("nobody") is None


async def test_first_pin_is_stored_and_read_back(store: SessionStore) -> None:
    pin = await store.pin("s1", "eu-west", replacing=None)
    assert pin.cluster == "eu-west"
    read = await store.read("s1")
    assert read is not None
    assert (read.cluster, read.pinned_at_ms) == ("eu-west", pin.pinned_at_ms)


async def test_first_pin_wins(store: SessionStore) -> None:
    await store.pin("s1", "eu-west", replacing=None)
    second = await store.pin("s1", "ap-sydney", replacing=None)
    assert second.cluster == "eu-west"
    read = await store.read("s1")
    assert read is not None
    assert read.cluster == "eu-west"


async def test_claim_pins_an_unknown_session_and_otherwise_answers_its_pin(
    store: SessionStore,
) -> None:
    first, made = await store.claim("s1", "eu-west")
    assert (first.cluster, made) == ("eu-west", True)
    again, made = await store.claim("s1", "ap-sydney")
    assert (again.cluster, again.pinned_at_ms, made) == ("eu-west", first.pinned_at_ms, False)
    await store.forget("s1")
    renewed, made = await store.claim("s1", "ap-sydney")  # forgotten: a new session
    assert (renewed.cluster, made) == ("ap-sydney", True)


async def test_concurrent_claims_all_get_one_cluster_and_one_maker(store: SessionStore) -> None:
    results = await asyncio.gather(*(store.claim("s1", f"c{i}") for i in range(20)))
    assert len({pin.cluster for pin, _ in results}) == 1
    assert sum(made for _, made in results) == 1


async def test_replace_only_what_was_expected(store: SessionStore) -> None:
    first = await store.pin("s1", "eu-west", replacing=None)
    stale = await store.pin("s1", "us-east", replacing="ap-sydney")
    assert stale.cluster == "eu-west"  # the caller expected another cluster: nothing changes
    moved = await store.pin("s1", "eu-central", replacing="eu-west")
    assert moved.cluster == "eu-central"
    # A failover keeps the session's age: the hard cap counts from the first pin.
    assert moved.pinned_at_ms == first.pinned_at_ms
    raced = await store.pin("s1", "us-east", replacing="eu-west")
    assert raced.cluster == "eu-central"  # someone replaced it first: theirs holds


async def test_concurrent_first_pins_all_get_one_cluster(store: SessionStore) -> None:
    clusters = ["eu-west", "us-east", "ap-sydney", "sa-east", "af-south"] * 10
    pins = await asyncio.gather(*(store.pin("race", c, replacing=None) for c in clusters))
    assert len({p.cluster for p in pins}) == 1


async def test_concurrent_repins_all_get_one_cluster(store: SessionStore) -> None:
    await store.pin("race", "eu-west", replacing=None)
    targets = ["us-east", "ap-sydney", "sa-east"] * 10
    pins = await asyncio.gather(*(store.pin("race", c, replacing="eu-west") for c in targets))
    assert len({p.cluster for p in pins}) == 1
    assert pins[0].cluster in targets


async def test_forgotten_session_reads_as_a_tombstone_and_can_be_pinned_again(
    store: SessionStore,
) -> None:
    await store.pin("s1", "eu-west", replacing=None)
    await store.forget("s1")
    read = await store.read("s1")
    assert read is None or read.forgotten
    fresh = await store.pin("s1", "ap-sydney", replacing=None)
    assert fresh.cluster == "ap-sydney"


async def test_sessions_are_independent(store: SessionStore) -> None:
    await store.pin("a", "eu-west", replacing=None)
    await store.pin("b", "ap-sydney", replacing=None)
    a, b = await store.read("a"), await store.read("b")
    assert a is not None
    assert b is not None
    assert (a.cluster, b.cluster) == ("eu-west", "ap-sydney")


# What only one implementation can show.


async def test_redis_read_slides_the_ttl(redis_server: RedisServer) -> None:
    settings = session_settings(redis_server.url)
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        await store.pin("s1", "eu-west", replacing=None)
        with redis_server.client() as c:
            c.pexpire("georouter:s:s1", 5_000)
            assert await store.read("s1") is not None
            assert c.pttl("georouter:s:s1") > 59_000
            assert c.get("georouter:s:s1").startswith("eu-west|")
    finally:
        await store.close()


async def test_redis_session_past_its_hard_cap_is_over(redis_server: RedisServer) -> None:
    settings = session_settings(redis_server.url, max_ttl_s=120)
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        with redis_server.client() as c:
            # Pinned 10 minutes ago by Redis's clock: past the 2-minute cap.
            seconds, _ = c.time()
            c.set("georouter:s:old", f"eu-west|{(seconds - 600) * 1000}", px=60_000)
        assert await store.read("old") is None
        fresh = await store.pin("old", "ap-sydney", replacing=None)
        assert fresh.cluster == "ap-sydney"
        assert fresh.pinned_at_ms > (seconds - 5) * 1000
    finally:
        await store.close()


async def test_redis_keys_always_carry_a_ttl(redis_server: RedisServer) -> None:
    settings = session_settings(redis_server.url)
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        await store.pin("a", "eu-west", replacing=None)
        await store.pin("a", "us-east", replacing="eu-west")
        await store.forget("b")
        with redis_server.client() as c:
            for key in c.keys("georouter:s:*"):
                assert 0 < c.pttl(key) <= 60_000
    finally:
        await store.close()


async def test_local_store_expires_idle_sessions_and_caps_their_age() -> None:
    clock = Clock()
    store = LocalSessionStore(session_settings(ttl_s=60, max_ttl_s=100), clock_ms=clock)
    await store.pin("s1", "eu-west", replacing=None)
    clock.ms += 59_000
    assert await store.read("s1") is not None  # slides the TTL
    clock.ms += 59_000
    assert await store.read("s1") is None  # 118 s old: past the 100 s cap
    await store.pin("s2", "eu-west", replacing=None)
    clock.ms += 61_000
    assert await store.read("s2") is None  # idle past the TTL


def test_peek_shows_the_ttl_left(redis_server: RedisServer) -> None:
    settings = session_settings(redis_server.url)
    assert settings.redis is not None

    async def scenario() -> Pin | None:
        store = RedisSessionStore(make_client(settings.redis, settings), settings)  # type: ignore[arg-type]
        try:
            await store.pin("s1", "eu-west", replacing=None)
            return await store.peek("s1")
        finally:
            await store.close()

    pin = asyncio.run(scenario())
    assert pin is not None
    assert pin.cluster == "eu-west"
    assert pin.ttl_ms is not None
    assert 59_000 < pin.ttl_ms <= 60_000
