"""Decision cost in process, against its baselines measured in the same run.

1. A full decision without sessions (parse the address, locate, rank, choose)
   against a raw ``maxminddb`` lookup of the same addresses: with the clusters
   alone, and with a traffic policy configured (residency rules by country,
   continent and network, a hundred location overrides, bias, weights split
   within ``tie_km``).
2. A sticky decision against one bare Redis round trip (redis-py ``GETEX``, the
   command a sticky read costs), with the near cache off and on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import maxminddb

from georouter.config import Config, load, parse
from georouter.core.admission import Admission, Held
from georouter.core.clientip import parse_address
from georouter.geoip.database import GeoDatabase, bundled_database
from georouter.metrics import Metrics
from georouter.router import AssumeAllUp, Router
from georouter.runtime import Runtime
from georouter.sessions.clients import make_client, make_subscriber
from georouter.sessions.map import SessionMap
from georouter.sessions.redisstore import RedisSessionStore
from tests.harness import REPO


def _best_per_op(fn: Callable[[str], object], items: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best * 1e6


async def _best_per_op_async(
    fn: Callable[[int], Awaitable[object]], count: int, rounds: int
) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(count):
            await fn(i)
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def policy_config(config: Config, **router: object) -> Config:
    """``config`` with a traffic policy an operator might run: six residency rules
    (countries, continents, networks; strict and not), 100 overrides of mixed prefix
    lengths, a bias and weights on every cluster, and new sessions split within 300 km."""
    names = [c.name for c in config.clusters]
    document: dict[str, Any] = {
        "clusters": [
            {"name": c.name, "url": c.url, "lat": c.lat, "lon": c.lon}
            | {"bias_km": 50 * (i % 3), "weight": 1 + i % 4}
            for i, c in enumerate(config.clusters)
        ],
        "router": {"fallback": config.router.fallback, "tie_km": 300, **router},
        "rules": [
            {"name": "eu", "continents": ["EU"], "clusters": ["eu-west", "eu-central"],
             "strict": True},
            {"name": "jp-kr", "countries": ["JP", "KR"], "clusters": ["ap-northeast"]},
            {"name": "au-nz", "countries": ["AU", "NZ"], "clusters": ["ap-sydney"],
             "strict": True},
            {"name": "lab", "cidrs": ["203.0.113.0/24", "2001:db8::/32"],
             "clusters": ["us-east"]},
            {"name": "in", "countries": ["IN", "LK", "BD"], "clusters": ["ap-south"]},
            {"name": "latam", "continents": ["SA"], "clusters": ["sa-east"]},
        ],
        "overrides": [
            {"cidr": f"{10 + i // 2}.{(i * 37) % 256}.0.0/{16 if i % 2 else 20}",
             "cluster": names[i % len(names)]}
            for i in range(100)
        ],
    }  # fmt: skip
    return parse(document)


def plain_config(config: Config) -> Config:
    """``config`` with its clusters and fallback only: no rules, overrides, bias or weights."""
    clusters = tuple(replace(c, bias_km=0.0, weight=1.0) for c in config.clusters)
    return replace(
        config, clusters=clusters, rules=(), overrides=(), router=replace(config.router, tie_km=0.0)
    )


class _Stressed:
    """A health view with the failure policy at work: one cluster down, two loaded
    (taking part of their new sessions) and one ramping back after a recovery."""

    def __init__(self) -> None:
        self.down: Mapping[str, str] = {"eu-west": "down"}
        spill = Admission(0.5, Held.SPILL, "load 0.88")
        self.held: Mapping[str, Admission] = {
            "us-east": spill,
            "eu-central": spill,
            "ap-south": Admission(0.3, Held.RAMP, "ramping"),
        }
        self.loads: Mapping[str, float] = {"us-east": 0.875, "eu-central": 0.875}

    def unroutable(self) -> Mapping[str, str]:
        return self.down

    def admissions(self) -> tuple[Mapping[str, Admission], Mapping[str, float]]:
        return self.held, self.loads


def decision_cost(ips: list[str], *, rounds: int = 5) -> dict[str, float]:
    config = plain_config(load(REPO / "clusters.toml"))
    raw = maxminddb.open_database(str(bundled_database()), maxminddb.MODE_MMAP_EXT)
    geo = GeoDatabase(None, cache_networks=65536, max_age_days=30, now=time.time())
    router = Router(Runtime.of(config), locator=geo, health=AssumeAllUp(), metrics=Metrics())
    policy = Router(
        Runtime.of(policy_config(config)), locator=geo, health=AssumeAllUp(), metrics=Metrics()
    )
    stressed = _Stressed()
    failing = Router(
        Runtime.of(policy_config(config, failover_spread_km=2000, panic_below=0.2)),
        locator=geo,
        health=stressed,
        metrics=Metrics(),
        admissions=stressed.admissions,
    )
    try:
        cold_started = time.perf_counter()
        for ip in ips:
            router.decide(parse_address(ip))
        cold = (time.perf_counter() - cold_started) / len(ips) * 1e6
        raw_us = _best_per_op(raw.get, ips, rounds)
        decision_us = _best_per_op(lambda ip: router.decide(parse_address(ip)), ips, rounds)
        json_us = _best_per_op(lambda ip: router.decide(parse_address(ip)).as_json(), ips, rounds)
        policy_us = _best_per_op(lambda ip: policy.decide(parse_address(ip)), ips, rounds)
        failing_us = _best_per_op(lambda ip: failing.decide(parse_address(ip)), ips, rounds)
    finally:
        raw.close()
        geo.close()
    return {
        "raw_maxminddb_us": round(raw_us, 3),
        "decision_us": round(decision_us, 3),
        "decision_first_pass_us": round(cold, 3),
        "decision_with_json_us": round(json_us, 3),
        "decision_over_raw": round(decision_us / raw_us, 3),
        "policy_decision_us": round(policy_us, 3),
        "policy_over_raw": round(policy_us / raw_us, 3),
        "failure_policy_decision_us": round(failing_us, 3),
        "failure_policy_over_raw": round(failing_us / raw_us, 3),
    }


def sticky_cost(
    ips: list[str], redis_url: str, *, count: int = 5000, rounds: int = 3
) -> dict[str, float]:
    return asyncio.run(_sticky_cost(ips, redis_url, count=count, rounds=rounds))


async def _sticky_cost(
    ips: list[str], redis_url: str, *, count: int, rounds: int
) -> dict[str, float]:
    document = {
        "clusters": [
            {"name": c.name, "url": c.url, "lat": c.lat, "lon": c.lon}
            for c in load(REPO / "clusters.toml").clusters
        ],
        "sessions": {"redis_url": redis_url, "command_timeout_s": 1, "near_cache_s": 30},
    }
    config = parse(document)
    settings = config.sessions
    assert settings.redis is not None
    geo = GeoDatabase(None, cache_networks=65536, max_age_days=30, now=time.time())
    addresses = [ipaddress.ip_address(ip) for ip in ips]
    store = RedisSessionStore(
        make_client(settings.redis, settings),
        settings,
        origin=secrets.token_hex(4),
        subscriber=make_subscriber(settings.redis, settings),
    )
    client = make_client(settings.redis, settings)
    runtime = Runtime.of(config)

    def router_over(sessions: SessionMap) -> Router:
        return Router(
            runtime, locator=geo, health=AssumeAllUp(), metrics=Metrics(), sessions=sessions
        )

    # Near cache off: every sticky decision reads Redis (and its outage memory knows
    # every session, so it is a GETEX, not a claim).
    far = router_over(SessionMap(store, replace(settings, near_cache_s=0), Metrics()))
    near_map = SessionMap(store, settings, Metrics())
    near = router_over(near_map)
    try:
        for i in range(count):  # pin every session once
            await far.route(addresses[i % len(addresses)], f"bench-{i}")
        bare_us = await _best_per_op_async(
            lambda i: client.getex(f"georouter:s:bench-{i}", px=1_800_000), count, rounds
        )
        far_us = await _best_per_op_async(
            lambda i: far.route(addresses[i % len(addresses)], f"bench-{i}"), count, rounds
        )
        async with asyncio.TaskGroup() as tg:
            follow = tg.create_task(near_map.follow_changes())
            async with asyncio.timeout(10):
                while not near_map.status().near_cache_on:  # noqa: ASYNC110 - with a deadline
                    await asyncio.sleep(0.01)
            near_us = await _best_per_op_async(
                lambda i: near.route(addresses[i % len(addresses)], f"bench-{i}"), count, rounds
            )
            follow.cancel()
    finally:
        await client.aclose()
        await store.close()
        geo.close()
    return {
        "bare_redis_getex_us": round(bare_us, 3),
        "sticky_decision_us": round(far_us, 3),
        "sticky_decision_near_cache_us": round(near_us, 3),
        "sticky_over_round_trip": round(far_us / bare_us, 3),
        "sticky_near_cache_over_round_trip": round(near_us / bare_us, 3),
    }
