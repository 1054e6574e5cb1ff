"""What a pinned session gets when its cluster is down (`[router] on_pinned_down`),
how `temporary` sessions go home through failback's ramp, and how a cluster down
from this edge only is detoured around without moving anyone's pin. Through the
router with a real session map on a real redis-server, two edges sharing it."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import redis.asyncio

from georouter.config import Config, parse
from georouter.core.admission import Admission, Held
from georouter.core.policy import Reason
from georouter.geoip.database import GeoDatabase
from georouter.metrics import Metrics
from georouter.router import Admissions, Router
from georouter.runtime import Runtime
from georouter.sessions.clients import make_client
from georouter.sessions.map import SessionMap
from georouter.sessions.redisstore import RedisSessionStore
from tests.harness import SITES, TEST_CITY_DB
from tests.redis_harness import RedisServer

# Köln, DE, in the test database: nearest eu-central, then eu-west.
KOELN = ipaddress.ip_address("2.125.160.1")
SESSIONS = 400

pytestmark = pytest.mark.anyio


class Conditions:
    """What the edges' health views say: the test sets it, every edge reads it."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.from_here: set[str] = set()
        self.admit: dict[str, Admission] = {}
        self.drained: set[str] = set()

    def unroutable(self) -> Mapping[str, str]:
        return {
            **dict.fromkeys(self.down | self.from_here, "down"),
            **dict.fromkeys(self.drained, "draining"),
        }

    def operator(self) -> Mapping[str, str]:
        return dict.fromkeys(self.drained, "draining")

    def pinned(self) -> Mapping[str, str]:
        return dict.fromkeys(self.down, "down")

    def detours(self) -> Mapping[str, str]:
        return dict.fromkeys(self.from_here - self.down, "down from here only")

    def admissions(self) -> Admissions:
        return self.admit, {}


def make_config(redis_url: str, **router: Any) -> Config:
    return parse(
        {
            "tenants": {"header": "x-tenant", "homes": [{"tenant": "acme", "cluster": "us-east"}]},
            "clusters": [
                {"name": n, "url": f"https://{n}.example.net", "lat": lat, "lon": lon}
                for n, (lat, lon) in SITES.items()
            ],
            "router": {"fallback": "us-east", **router},
            "sessions": {"redis_url": redis_url, "command_timeout_s": 2, "connect_timeout_s": 2},
        }
    )


Edges = Callable[..., tuple[list[Router], Conditions]]


@pytest.fixture
async def edges(redis_server: RedisServer) -> AsyncIterator[Edges]:
    """``edges(n, **router)``: n routers, each its own session map on the one Redis."""
    geo = GeoDatabase(TEST_CITY_DB, cache_networks=100, max_age_days=30, now=0)
    stores: list[RedisSessionStore] = []

    def build(n: int = 1, **router: Any) -> tuple[list[Router], Conditions]:
        config = make_config(redis_server.url, **router)
        assert config.sessions.redis is not None
        conditions = Conditions()
        routers = []
        for _ in range(n):
            store = RedisSessionStore(
                make_client(config.sessions.redis, config.sessions), config.sessions
            )
            stores.append(store)
            metrics = Metrics()
            routers.append(
                Router(
                    Runtime.of(config),
                    locator=geo,
                    health=conditions,
                    metrics=metrics,
                    sessions=SessionMap(store, config.sessions, metrics),
                    pinned=conditions.pinned,
                    detours=conditions.detours,
                    admissions=conditions.admissions,
                    operator=conditions.operator,
                )
            )
        return routers, conditions

    yield build
    for store in stores:
        await store.close()
    geo.close()


async def stored_cluster(redis_server: RedisServer, session: str) -> str | None:
    """The cluster the session's key in Redis names (what every edge follows)."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in client.scan_iter(match=f"*:s:{session}")]
        assert len(keys) == 1, keys
        raw = await client.get(keys[0])
    finally:
        await client.aclose()
    return None if raw is None else raw.decode().split("|")[0]


async def route_all(
    routers: list[Router], count: int = SESSIONS
) -> list[tuple[str | None, Reason]]:
    """Every session once, at the edges in turn, all at once."""
    decisions = await asyncio.gather(
        *(routers[n % len(routers)].route(KOELN, f"s-{n}") for n in range(count))
    )
    return [(d.cluster.name if d.cluster else None, d.reason) for d in decisions]


async def test_repin_moves_sessions_off_a_down_cluster_for_good(
    edges: Edges, redis_server: RedisServer
) -> None:
    routers, world = edges(2)
    assert set(await route_all(routers)) == {("eu-central", Reason.NEAREST)}
    world.down.add("eu-central")
    moved = await route_all(routers)
    assert set(moved) == {("eu-west", Reason.FAILOVER)}
    assert await stored_cluster(redis_server, "s-7") == "eu-west"
    world.down.clear()
    assert set(await route_all(routers)) == {("eu-west", Reason.STICKY)}


async def test_temporary_serves_elsewhere_keeps_the_pin_and_sends_sessions_home(
    edges: Edges, redis_server: RedisServer
) -> None:
    routers, world = edges(2, on_pinned_down="temporary")
    assert set(await route_all(routers)) == {("eu-central", Reason.NEAREST)}
    world.down.add("eu-central")
    away = await route_all(routers)
    assert set(away) == {("eu-west", Reason.DETOUR)}
    decision = await routers[0].route(KOELN, "s-3")
    assert decision.session is not None
    assert decision.session.pin is not None
    assert decision.session.pin.cluster == "eu-central"
    assert await stored_cluster(redis_server, "s-3") == "eu-central"
    world.down.clear()
    assert set(await route_all(routers)) == {("eu-central", Reason.STICKY)}


async def test_strict_answers_503_naming_the_pinned_cluster_and_keeps_the_pin(
    edges: Edges, redis_server: RedisServer
) -> None:
    routers, world = edges(1, on_pinned_down="strict")
    await routers[0].route(KOELN, "s-strict")
    world.down.add("eu-central")
    refused = await routers[0].route(KOELN, "s-strict")
    assert (refused.cluster, refused.reason) == (None, Reason.PINNED_DOWN)
    body = refused.as_json()
    assert body["error"] == "pinned_cluster_down"
    assert "eu-central" in str(body["message"])
    assert "strict" in str(body["message"])
    # A new session is not pinned anywhere: it goes to the nearest routable one.
    fresh = await routers[0].route(KOELN, "s-new")
    assert (fresh.cluster and fresh.cluster.name, fresh.reason) == ("eu-west", Reason.NEAREST)
    world.down.clear()
    back = await routers[0].route(KOELN, "s-strict")
    assert (back.cluster and back.cluster.name, back.reason) == ("eu-central", Reason.STICKY)
    assert await stored_cluster(redis_server, "s-strict") == "eu-central"


async def test_temporary_sessions_go_home_at_the_rate_the_ramp_allows(edges: Edges) -> None:
    routers, world = edges(2, on_pinned_down="temporary")
    await route_all(routers)
    world.down.add("eu-central")
    await route_all(routers)
    world.down.clear()
    home: list[int] = []
    for share in (0.0, 0.05, 0.3, 0.6, 1.0):
        world.admit = {"eu-central": Admission(share, Held.RAMP, f"ramping, share {share:.0%}")}
        answers = await route_all(routers)
        at_home = sum(cluster == "eu-central" for cluster, _ in answers)
        assert {reason for cluster, reason in answers if cluster != "eu-central"} <= {Reason.DETOUR}
        home.append(at_home)
        # Within a few percent of the share, never far above it.
        assert at_home <= share * SESSIONS + 0.06 * SESSIONS, (share, at_home)
        assert at_home >= share * SESSIONS - 0.06 * SESSIONS, (share, at_home)
    # Once home, a session stays home as the ramp grows.
    assert home == sorted(home)
    assert home[0] == 0
    assert home[-1] == SESSIONS


async def test_repin_sessions_on_a_ramping_cluster_stay_and_new_ones_join_at_its_share(
    edges: Edges,
) -> None:
    routers, world = edges(2)
    world.admit = {"eu-central": Admission(0.25, Held.RAMP, "ramping, share 25%")}
    first = await route_all(routers)
    central = [n for n, (cluster, _) in enumerate(first) if cluster == "eu-central"]
    assert 0.19 * SESSIONS <= len(central) <= 0.31 * SESSIONS
    assert {r for c, r in first if c == "eu-west"} == {Reason.RAMP}
    world.admit = {}
    again = await route_all(routers)
    # Pins hold: the ramp decided where new sessions went, not where they stay.
    assert [c for c, _ in again] == [c for c, _ in first]


async def test_a_cluster_down_from_this_edge_only_is_detoured_without_moving_pins(
    edges: Edges, redis_server: RedisServer
) -> None:
    routers, world = edges(2)
    await route_all(routers)
    world.from_here.add("eu-central")
    answers = await route_all(routers)
    assert set(answers) == {("eu-west", Reason.DETOUR)}
    assert await stored_cluster(redis_server, "s-11") == "eu-central"
    world.from_here.clear()
    assert set(await route_all(routers)) == {("eu-central", Reason.STICKY)}


async def test_in_panic_a_pinned_session_stays_on_its_cluster(edges: Edges) -> None:
    routers, world = edges(1, panic_below=0.5)
    await routers[0].route(KOELN, "s-panic")
    world.down.update(n for n in SITES if n != "ap-sydney")
    decision = await routers[0].route(KOELN, "s-panic")
    assert (decision.cluster and decision.cluster.name, decision.reason) == (
        "eu-central",
        Reason.STICKY,
    )
    fresh = await routers[0].route(KOELN, "s-panic-new")
    assert (fresh.cluster and fresh.cluster.name, fresh.reason) == ("eu-central", Reason.PANIC)


async def test_a_tenant_session_whose_home_is_down_detours_and_goes_home_with_temporary(
    edges: Edges, redis_server: RedisServer
) -> None:
    routers, world = edges(2, on_pinned_down="temporary")
    first = await routers[0].route(KOELN, "s-acme", tenant="acme")
    assert (first.cluster and first.cluster.name, first.reason) == ("us-east", Reason.TENANT)
    world.down.add("us-east")
    for router in routers:
        away = await router.route(KOELN, "s-acme", tenant="acme")
        assert away.reason is Reason.DETOUR
        assert away.cluster is not None
        assert away.cluster.name != "us-east"
    assert await stored_cluster(redis_server, "s-acme") == "us-east"
    world.down.clear()
    home = await routers[1].route(KOELN, "s-acme", tenant="acme")
    assert (home.cluster and home.cluster.name, home.reason) == ("us-east", Reason.STICKY)


async def test_a_tenant_session_whose_home_is_down_gets_503_with_strict(edges: Edges) -> None:
    routers, world = edges(1, on_pinned_down="strict")
    await routers[0].route(KOELN, "s-acme", tenant="acme")
    world.down.add("us-east")
    refused = await routers[0].route(KOELN, "s-acme", tenant="acme")
    assert (refused.cluster, refused.reason) == (None, Reason.PINNED_DOWN)


async def test_in_panic_health_is_ignored_but_a_drained_cluster_stays_out(edges: Edges) -> None:
    routers, world = edges(1, panic_below=0.5)
    world.down.update(n for n in SITES if n not in ("ap-sydney", "eu-central"))
    world.drained.add("eu-central")
    decision = await routers[0].route(KOELN, "s-drained")
    assert (decision.cluster and decision.cluster.name, decision.reason) == (
        "eu-west",
        Reason.PANIC,
    )
    candidates = {c.cluster.name: c for c in decision.ranking.candidates}
    assert candidates["eu-central"].why == "draining"
    assert candidates["eu-west"].ignored == "down"


async def test_all_down_fallback_never_picks_a_drained_fallback(edges: Edges) -> None:
    routers, world = edges(1, all_down="fallback")
    world.down.update(SITES)
    world.drained.add("us-east")
    decision = await routers[0].route(KOELN, "s-fallback")
    assert decision.reason is Reason.ALL_DOWN
    assert decision.cluster is not None
    assert decision.cluster.name != "us-east"
    # The fallback order, not geography: the cluster nearest the fallback.
    assert decision.cluster.name == decision.ranking.order[1][0].name
