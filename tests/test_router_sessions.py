"""Sticky routing: the router with a real session map (real Redis) and the test GeoIP data."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from georouter.config import Config, parse
from georouter.core.policy import Reason
from georouter.geoip.database import GeoDatabase
from georouter.metrics import Metrics
from georouter.router import Router
from georouter.runtime import Runtime
from georouter.sessions.clients import make_client
from georouter.sessions.map import SessionMap
from georouter.sessions.redisstore import RedisSessionStore
from tests.harness import SITES, TEST_CITY_DB
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.anyio

LONDON = ipaddress.ip_address("81.2.69.1")
TOKYO = ipaddress.ip_address("202.12.27.33")
SYDNEY = ipaddress.ip_address("1.130.0.1")


class Health:
    """A health view an edge's monitor would give: the clusters it sees down."""

    def __init__(self) -> None:
        self.down: set[str] = set()

    def unroutable(self) -> Mapping[str, str]:
        return dict.fromkeys(self.down, "down")


def make_config(redis_url: str, names: tuple[str, ...] = tuple(SITES)) -> Config:
    return parse(
        {
            "clusters": [
                {
                    "name": n,
                    "url": f"https://{n}.example.net",
                    "lat": SITES[n][0],
                    "lon": SITES[n][1],
                }
                for n in names
            ],
            "router": {"fallback": "us-east"},
            "sessions": {"redis_url": redis_url, "command_timeout_s": 1, "connect_timeout_s": 1},
        }
    )


Edge = tuple[Router, Health]


@pytest.fixture
async def make_edge(redis_server: RedisServer) -> AsyncIterator[Callable[..., Edge]]:
    """Routers that share the test Redis, each with its own health view (an edge each)."""
    geo = GeoDatabase(TEST_CITY_DB, cache_networks=100, max_age_days=30, now=0)
    stores: list[RedisSessionStore] = []

    def make(names: tuple[str, ...] = tuple(SITES)) -> Edge:
        config = make_config(redis_server.url, names)
        assert config.sessions.redis is not None
        store = RedisSessionStore(
            make_client(config.sessions.redis, config.sessions), config.sessions
        )
        stores.append(store)
        metrics = Metrics()
        health = Health()
        sessions = SessionMap(store, config.sessions, metrics)
        router = Router(
            Runtime.of(config), locator=geo, health=health, metrics=metrics, sessions=sessions
        )
        return router, health

    yield make
    for store in stores:
        await store.close()
    geo.close()


async def test_new_session_is_pinned_to_the_nearest_and_then_sticks(
    make_edge: Callable[..., Edge],
) -> None:
    router, _ = make_edge()
    first = await router.route(LONDON, "s1")
    assert first.cluster is not None
    assert (first.cluster.name, first.reason) == ("eu-west", Reason.NEAREST)
    assert first.session is not None
    assert first.session.pin is not None
    assert first.session.pin.cluster == "eu-west"
    again = await router.route(LONDON, "s1")
    assert again.cluster is not None
    assert (again.cluster.name, again.reason) == ("eu-west", Reason.STICKY)


async def test_a_pinned_session_follows_its_pin_wherever_the_client_goes(
    make_edge: Callable[..., Edge],
) -> None:
    router, _ = make_edge()
    await router.route(LONDON, "traveller")
    in_tokyo = await router.route(TOKYO, "traveller")
    assert in_tokyo.cluster is not None
    assert (in_tokyo.cluster.name, in_tokyo.reason) == ("eu-west", Reason.STICKY)
    # The distance shown is to the cluster actually chosen.
    assert in_tokyo.distance_km is not None
    assert in_tokyo.distance_km > 9000


async def test_session_fails_over_when_its_cluster_is_down_and_stays_after_it_returns(
    make_edge: Callable[..., Edge],
) -> None:
    router, health = make_edge()
    await router.route(LONDON, "s1")
    health.down.add("eu-west")
    moved = await router.route(LONDON, "s1")
    assert moved.cluster is not None
    assert (moved.cluster.name, moved.reason) == ("eu-central", Reason.FAILOVER)
    health.down.clear()
    back = await router.route(LONDON, "s1")
    assert back.cluster is not None
    # No flapping back onto the cluster that just recovered.
    assert (back.cluster.name, back.reason) == ("eu-central", Reason.STICKY)


async def test_session_pinned_to_a_removed_cluster_fails_over(
    make_edge: Callable[..., Edge],
) -> None:
    before, _ = make_edge()
    await before.route(LONDON, "s1")
    after, _ = make_edge(tuple(n for n in SITES if n != "eu-west"))  # reconfigured
    moved = await after.route(LONDON, "s1")
    assert moved.cluster is not None
    assert (moved.cluster.name, moved.reason) == ("eu-central", Reason.FAILOVER)


async def test_edges_racing_on_a_new_session_all_answer_one_cluster(
    make_edge: Callable[..., Edge],
) -> None:
    edges = [make_edge() for _ in range(3)]
    clients = [LONDON, TOKYO, SYDNEY]
    for n in range(20):
        decisions = await asyncio.gather(
            *(
                router.route(client, f"race-{n}")
                for (router, _), client in zip(edges, clients, strict=True)
            )
        )
        names = {d.cluster.name for d in decisions if d.cluster is not None}
        assert len(names) == 1, names
        reasons = sorted(d.reason.value for d in decisions)
        assert reasons.count("sticky") == 2
        assert reasons[0] == "nearest"


async def test_edges_racing_on_a_failover_all_move_the_session_to_one_cluster(
    make_edge: Callable[..., Edge],
) -> None:
    edges = [make_edge() for _ in range(3)]
    await edges[0][0].route(LONDON, "s1")
    for _, health in edges:
        health.down.add("eu-west")
    clients = [LONDON, TOKYO, SYDNEY]
    decisions = await asyncio.gather(
        *(router.route(c, "s1") for (router, _), c in zip(edges, clients, strict=True))
    )
    names = {d.cluster.name for d in decisions if d.cluster is not None}
    assert len(names) == 1
    assert sorted(d.reason.value for d in decisions).count("failover") == 1


async def test_edges_that_disagree_about_health_still_answer_a_routable_cluster(
    make_edge: Callable[..., Edge],
) -> None:
    (router_a, health_a), (router_b, _) = make_edge(), make_edge()
    await router_b.route(LONDON, "s1")  # B pins eu-west, which A believes is down
    health_a.down.add("eu-west")
    at_a = await router_a.route(LONDON, "s1")
    assert at_a.cluster is not None
    assert at_a.cluster.name == "eu-central"
    assert at_a.reason is Reason.FAILOVER


async def test_no_session_means_no_redis(
    make_edge: Callable[..., Edge], redis_server: RedisServer
) -> None:
    router, _ = make_edge()
    decision = await router.route(LONDON, None)
    assert decision.session is None
    assert decision.reason is Reason.NEAREST
    with redis_server.client() as c:
        assert c.keys("georouter:s:*") == []


async def test_every_cluster_down_leaves_the_pin_alone(
    make_edge: Callable[..., Edge], redis_server: RedisServer
) -> None:
    router, health = make_edge()
    await router.route(LONDON, "s1")
    health.down.update(SITES)
    decision = await router.route(LONDON, "s1")
    assert decision.cluster is None
    assert decision.session is not None
    assert decision.session.pin is not None
    assert decision.session.pin.cluster == "eu-west"
    with redis_server.client() as c:
        assert c.get("georouter:s:s1").startswith("eu-west|")


def redis_calls(redis_server: RedisServer) -> dict[str, int]:
    with redis_server.client() as c:
        stats = c.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_new_session_costs_one_redis_command_and_a_known_one_at_most_one(
    make_edge: Callable[..., Edge], redis_server: RedisServer
) -> None:
    edge_a, _ = make_edge()
    edge_b, _ = make_edge()
    await edge_a.route(LONDON, "warm-up")  # Redis learns the script (NOSCRIPT, SCRIPT LOAD)
    await edge_b.route(LONDON, "warm-up")
    before = redis_calls(redis_server)
    first = await edge_a.route(LONDON, "newcomer")
    assert (first.reason, first.cluster and first.cluster.name) == (Reason.NEAREST, "eu-west")
    after = redis_calls(redis_server)
    # The pin script alone: no read before it (the script renews a pin it finds).
    assert after.get("evalsha", 0) - before.get("evalsha", 0) == 1
    assert after.get("getex", 0) == before.get("getex", 0)

    # Another edge that never saw the session: the same one command finds the pin.
    second = await edge_b.route(TOKYO, "newcomer")
    assert (second.reason, second.cluster and second.cluster.name) == (Reason.STICKY, "eu-west")
    assert redis_calls(redis_server).get("evalsha", 0) - after.get("evalsha", 0) == 1
