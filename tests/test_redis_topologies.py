"""The shared session map on the Redis deployments operators run: Sentinel and Cluster.

Every Redis here is real and local (see ``redis_harness``): one master, one
replica and one Sentinel; or three Cluster masters. The settings are built the
way an operator writes them, from a ``[sessions] redis_url`` through ``parse()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster as SyncRedisCluster

from georouter.config import SessionSettings, parse
from georouter.config.redisurl import RedisMode
from georouter.core.pin import Ask, Pin
from georouter.demo.standin import StandIn
from georouter.metrics import Metrics
from georouter.sessions.clients import make_client
from georouter.sessions.map import SessionMap
from georouter.sessions.redisstore import RedisSessionStore
from tests.harness import FAST_HEALTH, SITES, Edge, cluster_entries, config_text, wait_for
from tests.redis_harness import RedisClusterSet, SentinelSet

pytestmark = pytest.mark.anyio

CLUSTER_NAMES = tuple(SITES)
# The product's promise: sessions are shared again this soon after a master dies.
FAILOVER_BOUND_S = 5.0
# Short enough that a dead master costs little, long enough for loopback round trips.
QUICK = {"connect_timeout_s": 0.2, "command_timeout_s": 0.2, "retry_interval_s": 0.2}
TTL_S = 600


def every_cluster_usable(_: str) -> bool:
    return True


async def pin(
    store: RedisSessionStore, sid: str, cluster: str, replacing: str | None = None
) -> Pin:
    """Pin (compare-and-set, as an edge does): the pin that holds afterwards."""
    held, _ = await store.apply(sid, Ask.repin(cluster, replacing))
    assert held is not None
    return held


@pytest.fixture(autouse=True)
def no_client_left_open() -> Iterator[None]:
    """Collect the test's garbage in its own teardown: a client dropped unclosed fails it."""
    yield
    gc.collect()


def session_settings(redis_url: str, **sessions: object) -> SessionSettings:
    """``[sessions]`` as an operator writes it, validated by ``parse()``."""
    document = {
        "clusters": [{"name": n, "url": f"http://{n}.test", "lat": lat, "lon": lon}
                     for n, (lat, lon) in SITES.items()],
        "sessions": {"redis_url": redis_url, "ttl_s": TTL_S, **QUICK, **sessions},
    }  # fmt: skip
    return parse(document).sessions


@contextlib.asynccontextmanager
async def opened_store(settings: SessionSettings) -> AsyncIterator[RedisSessionStore]:
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        yield store
    finally:
        await store.close()


def sync_cluster_client(group: RedisClusterSet) -> SyncRedisCluster:
    """A plain client for checking what the cluster holds (not the code under test)."""
    first = group.nodes[0]
    return SyncRedisCluster(host="127.0.0.1", port=first.port, decode_responses=True)


def assert_store_left_no_connection_on_the_sentinel(group: SentinelSet) -> None:
    """A closed store keeps no connection to the Sentinel: the checker's is the only one.

    Checked on the server because an open asyncio transport is referenced by the event
    loop, so a leaked one is not garbage (nor warned about) until the loop closes.
    """
    assert group.sentinel is not None
    with group.sentinel.client() as sentinel:
        wait_for(
            lambda: sentinel.info("clients")["connected_clients"] == 1,
            timeout_s=2,
            what="the closed store's connections to the Sentinel to go",
        )


async def test_sentinel_url_pins_first_wins_and_compare_and_set_replaces(
    sentinel_set: SentinelSet,
) -> None:
    settings = session_settings(sentinel_set.url)
    assert settings.redis is not None
    assert settings.redis.mode is RedisMode.SENTINEL
    assert settings.redis.service == SentinelSet.SERVICE
    async with opened_store(settings) as store:
        first = await pin(store, "s-1", "eu-west", replacing=None)
        assert first.cluster == "eu-west"

        # A second edge's pin for another cluster gets the first one back.
        second = await pin(store, "s-1", "us-east", replacing=None)
        assert second == first

        # Replacing with the wrong expectation changes nothing ...
        stale = await pin(store, "s-1", "us-west", replacing="ap-sydney")
        assert stale.cluster == "eu-west"
        # ... replacing what is really there moves the session, keeping its age.
        moved = await pin(store, "s-1", "eu-central", replacing="eu-west")
        assert moved.cluster == "eu-central"
        assert moved.pinned_at_ms == first.pinned_at_ms

        read = await store.read("s-1")
        assert read is not None
        assert read.cluster == "eu-central"
        assert await store.read("s-never") is None

    # The write went to the master Sentinel named, under the documented key.
    with sentinel_set.master.client() as master:
        assert master.get("georouter:s:s-1").startswith("eu-central|")

    assert_store_left_no_connection_on_the_sentinel(sentinel_set)


async def test_pins_survive_a_sentinel_failover_within_5s(sentinel_set: SentinelSet) -> None:
    settings = session_settings(sentinel_set.url)
    old_master = sentinel_set.master.port
    async with opened_store(settings) as store:
        smap = SessionMap(store, settings, Metrics())
        recovery = asyncio.create_task(smap.run(), name="redis-recovery")
        try:
            before: dict[str, Pin] = {}
            for i in range(20):
                outcome = await smap.resolve(f"old-{i}", CLUSTER_NAMES[i % 8], every_cluster_usable)
                assert not outcome.degraded
                assert outcome.pin is not None
                before[f"old-{i}"] = outcome.pin
            # Only pins the replica has received can survive the master's death.
            with sentinel_set.master.client() as master:
                assert master.wait(1, 5000) >= 1

            killed_at = time.monotonic()
            sentinel_set.master.kill()

            # Keep routing through the failover: a brand-new session and an old one per
            # round, until both are answered by Redis again. Nothing may raise meanwhile.
            saw_degraded = False
            rounds = 0
            async with asyncio.timeout(FAILOVER_BOUND_S + 5):
                while True:
                    new = await smap.resolve(f"new-{rounds}", "ap-sydney", every_cluster_usable)
                    old_id = f"old-{rounds % len(before)}"
                    old = await smap.resolve(old_id, None, every_cluster_usable)
                    if old.degraded:
                        # Without Redis the edge still knows its own sessions.
                        assert old.pin is not None
                        assert old.pin.cluster == before[old_id].cluster
                    saw_degraded = saw_degraded or new.degraded or old.degraded
                    if not new.degraded and not old.degraded:
                        break
                    rounds += 1
                    await asyncio.sleep(0.05)
            resumed_after = time.monotonic() - killed_at

            assert saw_degraded, "the master's death was never noticed: the test proves nothing"
            assert resumed_after <= FAILOVER_BOUND_S, (
                f"pins resumed {resumed_after:.2f}s after the master died"
            )
            assert new.pin is not None
            assert new.pin.cluster == "ap-sydney"
            assert sentinel_set.current_master_port() != old_master
            assert sentinel_set.current_master_port() == sentinel_set.replica.port

            # Every earlier pin comes back from Redis as it was made: same cluster and
            # same age, so it is the replica's copy, not this edge's memory written back.
            for session_id, pin in before.items():
                outcome = await smap.resolve(session_id, None, every_cluster_usable)
                assert not outcome.degraded
                assert outcome.pin is not None
                assert (outcome.pin.cluster, outcome.pin.pinned_at_ms) == (
                    pin.cluster,
                    pin.pinned_at_ms,
                ), session_id
            assert not recovery.done(), "the recovery task died"
        finally:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery
    assert_store_left_no_connection_on_the_sentinel(sentinel_set)


async def test_cluster_url_pins_on_all_three_masters_refresh_ttl_and_forget(
    redis_cluster: RedisClusterSet,
) -> None:
    settings = session_settings(redis_cluster.url)
    assert settings.redis is not None
    assert settings.redis.mode is RedisMode.CLUSTER
    assert len(settings.redis.nodes) == 3
    ids = [f"user-{i}" for i in range(200)]
    async with opened_store(settings) as store:
        pins = [
            await pin(store, sid, CLUSTER_NAMES[i % 8], replacing=None) for i, sid in enumerate(ids)
        ]
        assert [p.cluster for p in pins] == [CLUSTER_NAMES[i % 8] for i in range(len(ids))]

        # The keys landed on every master, not on one node that happened to answer.
        per_master = []
        for node in redis_cluster.nodes:
            with node.client() as c:
                per_master.append(c.dbsize())
        assert all(n > 0 for n in per_master), per_master
        assert sum(per_master) == len(ids)

        # First pin wins, on whichever master holds the key.
        for i, sid in enumerate(ids):
            again = await pin(store, sid, "af-south", replacing=None)
            assert again == pins[i], sid

        with sync_cluster_client(redis_cluster) as check:
            key = store.key("user-7")
            assert check.pexpire(key, 5_000)
            read = await store.read("user-7")
            assert read is not None
            assert read.cluster == CLUSTER_NAMES[7]
            assert check.pttl(key) > TTL_S * 1000 - 5_000, "a read must refresh the TTL"

            await store.apply("user-7", Ask.forget())
            forgotten = await store.read("user-7")
            assert forgotten is not None
            assert forgotten.forgotten
            assert check.get(key).startswith("!|")
            assert 0 < check.pttl(key) <= TTL_S * 1000

        # A forgotten session may be pinned afresh.
        fresh = await pin(store, "user-7", "eu-west", replacing=None)
        assert fresh.cluster == "eu-west"


async def test_concurrent_pins_of_one_new_session_on_a_cluster_agree_on_one_cluster(
    redis_cluster: RedisClusterSet,
) -> None:
    settings = session_settings(redis_cluster.url)
    # Two edges, each with its own client, racing on one brand-new session.
    async with opened_store(settings) as edge_a, opened_store(settings) as edge_b:
        edges = (edge_a, edge_b)
        # Both edges have spoken to Redis before (a cold client's first burst is tested
        # on its own below), so this is only the compare-and-set race.
        await edge_a.ping()
        await edge_b.ping()
        pins = await asyncio.gather(*(pin(edges[i % 2], "race", f"cluster-{i}") for i in range(50)))
        assert len({(p.cluster, p.pinned_at_ms) for p in pins}) == 1, pins
        winner = pins[0].cluster
        assert winner in {f"cluster-{i}" for i in range(50)}
        read = await edge_b.read("race")
        assert read is not None
        assert read.cluster == winner


def test_an_edge_on_a_redis_cluster_pins_a_session_then_keeps_it_sticky(
    redis_cluster: RedisClusterSet,
    make_standins: Callable[..., dict[str, StandIn]],
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    standins = make_standins("us-east", "eu-west", "eu-central", "ap-northeast")
    text = config_text(
        cluster_entries(standins),
        router={"fallback": "us-east"},
        health=FAST_HEALTH,
        sessions={"redis_url": redis_cluster.url},
    )
    edge = make_edge(write_config(text))

    def route() -> dict[str, Any]:
        response = edge.get("/v1/route", params={"ip": "81.2.69.142", "session": "abc123"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = route()
    assert (first["cluster"], first["reason"]) == ("eu-west", "nearest")
    assert first["session"]["pinned"] == "eu-west"
    assert first["session"]["degraded"] is False
    second = route()
    assert (second["cluster"], second["reason"]) == ("eu-west", "sticky")
    assert second["session"]["degraded"] is False

    # The pin was made in Redis (not degraded), so every edge sharing it sees it.
    with sync_cluster_client(redis_cluster) as check:
        assert check.get("georouter:s:abc123").startswith("eu-west|")
        assert check.pttl("georouter:s:abc123") > 0


async def test_a_new_cluster_client_answers_a_burst_of_concurrent_requests(
    redis_cluster: RedisClusterSet,
) -> None:
    """An edge that just started takes traffic at once: its first requests arrive together."""
    settings = session_settings(redis_cluster.url)
    ids = [f"burst-{i}" for i in range(40)]
    async with opened_store(settings) as store:
        results = await asyncio.gather(
            *(pin(store, sid, "eu-west") for sid in ids), return_exceptions=True
        )
        failed = [repr(r) for r in results if isinstance(r, BaseException)]
        assert not failed, f"{len(failed)} of {len(ids)} first requests failed: {failed[:3]}"
        assert all(isinstance(r, Pin) and r.cluster == "eu-west" for r in results)
    with sync_cluster_client(redis_cluster) as check:
        assert all(check.exists(f"georouter:s:{sid}") for sid in ids)


@pytest.mark.anyio
async def test_an_unreachable_redis_cluster_is_store_unavailable_not_a_crash() -> None:
    from georouter.sessions.redisstore import StoreUnavailable
    from tests.redis_harness import free_port

    settings = session_settings(f"redis+cluster://127.0.0.1:{free_port()}")
    assert settings.redis is not None
    store = RedisSessionStore(make_client(settings.redis, settings), settings)
    try:
        with pytest.raises(StoreUnavailable):
            await store.read("s1")
        with pytest.raises(StoreUnavailable):
            await pin(store, "s1", "eu-west", replacing=None)
    finally:
        await store.close()
