"""The new-session budget per client address, and signed ids from every source
(real app, real Redis; the clock that refills budgets is the test's)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager

from georouter.config import Config, LimitsSettings, SessionSource, parse
from georouter.demo.standin import StandIn
from georouter.http.app import create_app
from georouter.sessions.ids import CookieSigner
from tests.harness import (
    FAST_HEALTH,
    TEST_CITY_DB,
    SecondsClock,
    cluster_entries,
    ready_now,
    until_async,
)
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.anyio

SIGNER = CookieSigner((b"session-key-0123456789",))
LONDON = "81.2.69.1"


@pytest.fixture
def config(make_standins: Callable[..., dict[str, StandIn]], redis_server: RedisServer) -> Config:
    standins = make_standins("us-east", "eu-west")
    base = parse(
        {
            "clusters": cluster_entries(standins),
            "router": {"fallback": "us-east", "trusted_proxies": ["10.0.0.1"]},
            "geoip": {"database": str(TEST_CITY_DB)},
            "health": FAST_HEALTH,
            "sessions": {"redis_url": redis_server.url, "command_timeout_s": 1},
        }
    )
    limits = LimitsSettings(new_sessions_per_s=1, new_sessions_burst=3)
    return dataclasses.replace(base, limits=limits)


@asynccontextmanager
async def serving(
    config: Config, peer: str = "203.0.113.9", **options: object
) -> AsyncIterator[httpx.AsyncClient]:
    # A clock that stands still unless the test moves it: no token refills by itself.
    options.setdefault("monotonic", SecondsClock())
    app = create_app(config, **options)  # type: ignore[arg-type]
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(peer, 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            await until_async(lambda: ready_now(client), what="readiness")
            yield client


def keys(redis_server: RedisServer) -> set[str]:
    with redis_server.client() as c:
        return {k.removeprefix("georouter:s:") for k in c.scan_iter(match="georouter:s:*")}


async def route(api: httpx.AsyncClient, session: str, **headers: str) -> httpx.Response:
    return await api.get("/v1/route", params={"ip": LONDON, "session": session}, headers=headers)


async def test_beyond_its_burst_an_address_gets_429_and_creates_no_key(
    config: Config, redis_server: RedisServer
) -> None:
    clock = SecondsClock()
    async with serving(config, monotonic=clock) as api:
        made = [(await route(api, f"s{i}")).status_code for i in range(3)]
        refused = await route(api, "s3")
        returning = await route(api, "s0")
        clock.now += 1.0
        refilled = await route(api, "s4")
    assert made == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_new_sessions"
    assert refused.headers["retry-after"] == "1"
    assert (returning.status_code, returning.json()["reason"]) == (200, "sticky")
    assert refilled.status_code == 200
    assert keys(redis_server) == {"s0", "s1", "s2", "s4"}


async def test_the_budget_is_the_asking_peers_not_the_address_it_asks_about(
    config: Config,
) -> None:
    async with serving(config) as api:
        statuses = [
            (
                await api.get("/v1/route", params={"ip": f"81.2.69.{i}", "session": f"s{i}"})
            ).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 200, 429]


async def test_each_client_behind_a_trusted_proxy_has_its_own_budget(config: Config) -> None:
    async with serving(config, peer="10.0.0.1") as api:
        statuses = {
            client: [
                (await route(api, f"{client}-{i}", **{"x-forwarded-for": client})).status_code
                for i in range(4)
            ]
            for client in ("198.51.100.1", "198.51.100.2")
        }
    assert statuses == {c: [200, 200, 200, 429] for c in ("198.51.100.1", "198.51.100.2")}


async def test_a_batch_spends_the_same_budget(config: Config, redis_server: RedisServer) -> None:
    async with serving(config) as api:
        response = await api.post(
            "/v1/route", json={"requests": [{"ip": LONDON, "session": f"b{i}"} for i in range(5)]}
        )
    assert response.status_code == 429
    assert len(keys(redis_server)) == 3


async def test_with_signing_every_source_must_be_signed(
    config: Config, redis_server: RedisServer
) -> None:
    signed = SIGNER.sign("good")
    async with serving(config, signer=SIGNER) as api:
        answers = {
            "query": (await route(api, "plain")).status_code,
            "header": (
                await api.get("/v1/route", params={"ip": LONDON}, headers={"x-session-id": "p2"})
            ).status_code,
            "batch": (
                await api.post("/v1/route", json={"requests": [{"session": "p3"}]})
            ).status_code,
            "signed query": (await route(api, signed)).status_code,
            "signed header": (
                await api.get("/v1/route", params={"ip": LONDON}, headers={"x-session-id": signed})
            ).status_code,
        }
        forged = await route(api, "good." + "A" * 43)
    assert answers == {
        "query": 400,
        "header": 400,
        "batch": 400,
        "signed query": 200,
        "signed header": 200,
    }
    assert "signed" in forged.json()["message"]
    assert keys(redis_server) == {"good"}


async def test_sources_listed_as_unsigned_take_plain_ids(
    config: Config, redis_server: RedisServer
) -> None:
    sessions = dataclasses.replace(config.sessions, unsigned_sources=(SessionSource.QUERY,))
    async with serving(dataclasses.replace(config, sessions=sessions), signer=SIGNER) as api:
        plain_query = await route(api, "plain")
        plain_header = await api.get("/v1/route", headers={"x-session-id": "plain2"})
    assert plain_query.status_code == 200
    assert plain_header.status_code == 400
    assert keys(redis_server) == {"plain"}
