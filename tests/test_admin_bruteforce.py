"""Guessing the admin token: a few wrong tokens lock the address out, with little log.

In process (real app, real Redis, the address varied with the ASGI transport's
``client=`` and with a trusted proxy's X-Forwarded-For), and against a real
``georouter serve`` process.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from georouter.config import Config, parse
from georouter.demo.standin import StandIn
from georouter.http.app import create_app
from tests.harness import (
    FAST_HEALTH,
    TEST_CITY_DB,
    Edge,
    SecondsClock,
    cluster_entries,
    config_text,
    ready_now,
    until_async,
    wait_for,
)
from tests.redis_harness import RedisServer

TOKEN = "admin-token-0123456789"
RIGHT = {"authorization": f"Bearer {TOKEN}"}
WRONG = {"authorization": "Bearer wrong-token-0123456789"}
LIMIT = 5
# A probe's timeout may not exceed its interval.
HEALTH = {**FAST_HEALTH, "timeout_s": FAST_HEALTH["interval_s"]}


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins("us-east", "eu-west")


def make_config(
    standins: dict[str, StandIn], redis_url: str, *, lockout_s: float, **router: object
) -> Config:
    config = parse(
        {
            "clusters": cluster_entries(standins),
            "router": {"fallback": "us-east", **router},
            "geoip": {"database": str(TEST_CITY_DB)},
            "health": HEALTH,
            "sessions": {"redis_url": redis_url, "command_timeout_s": 1, "connect_timeout_s": 1},
        }
    )
    limits = dataclasses.replace(config.limits, admin_failures=LIMIT, admin_lockout_s=lockout_s)
    return dataclasses.replace(config, limits=limits)


@asynccontextmanager
async def serving(
    config: Config, *peers: str, clock: SecondsClock | None = None
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One app; one client per peer address."""
    app = create_app(config, admin_token=TOKEN, monotonic=clock or SecondsClock())
    async with LifespanManager(app) as manager:
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app, client=(peer, 4711)),
                base_url="http://edge",
            )
            for peer in peers
        ]
        try:
            await until_async(lambda: ready_now(clients[0]), what="readiness")
            yield clients
        finally:
            for client in clients:
                await client.aclose()


@pytest.mark.anyio
async def test_after_n_wrong_tokens_even_the_right_one_is_429_until_the_window_passes(
    standins: dict[str, StandIn], redis_server: RedisServer
) -> None:
    config = make_config(standins, redis_server.url, lockout_s=1.0)
    clock = SecondsClock()
    async with serving(config, "198.51.100.7", "198.51.100.8", clock=clock) as (attacker, other):
        guesses = [await attacker.get("/v1/sessions/s1", headers=WRONG) for _ in range(LIMIT)]
        locked = await attacker.get("/v1/sessions/s1", headers=RIGHT)
        locked_delete = await attacker.delete("/v1/sessions/s1", headers=RIGHT)
        elsewhere = await other.get("/v1/sessions/s1", headers=RIGHT)
        clock.now += 0.99
        still = await attacker.get("/v1/sessions/s1", headers=RIGHT)
        # The window runs from the first wrong token.
        clock.now += 0.01
        after = await attacker.get("/v1/sessions/s1", headers=RIGHT)
    print(
        f"\nwrong tokens: {[r.status_code for r in guesses]}; then the right one:"
        f" {locked.status_code} (Retry-After {locked.headers.get('retry-after')});"
        f" another address: {elsewhere.status_code}; after the window: {after.status_code}"
    )
    assert [r.status_code for r in guesses] == [401] * LIMIT
    assert still.status_code == 429
    for r in (locked, locked_delete):
        assert r.status_code == 429
        assert r.json()["error"] == "too_many_failures"
        assert r.headers["content-type"] == "application/json"
        assert 1 <= int(r.headers["retry-after"]) <= 1
    # Another address is unaffected: the right token works there.
    assert (elsewhere.status_code, elsewhere.json()["error"]) == (404, "unknown_session")
    assert (after.status_code, after.json()["error"]) == (404, "unknown_session")


@pytest.mark.anyio
async def test_the_address_is_the_client_behind_a_trusted_proxy(
    standins: dict[str, StandIn], redis_server: RedisServer
) -> None:
    config = make_config(
        standins, redis_server.url, lockout_s=60.0, trusted_proxies=["203.0.113.0/24"]
    )
    async with serving(config, "203.0.113.9") as (proxy,):
        attacker = {"x-forwarded-for": "192.0.2.66"}
        for _ in range(LIMIT):
            assert (await proxy.get("/v1/sessions/s1", headers=WRONG | attacker)).status_code == 401
        locked = await proxy.get("/v1/sessions/s1", headers=RIGHT | attacker)
        honest = await proxy.get(
            "/v1/sessions/s1", headers=RIGHT | {"x-forwarded-for": "192.0.2.67"}
        )
        # One IPv6 client holds a whole /64: its addresses share one budget.
        v6 = [f"2001:db8:1:2::{i:x}" for i in range(1, LIMIT + 2)]
        for address in v6[:LIMIT]:
            wrong = WRONG | {"x-forwarded-for": address}
            assert (await proxy.get("/v1/sessions/s1", headers=wrong)).status_code == 401
        same_64 = await proxy.get("/v1/sessions/s1", headers=RIGHT | {"x-forwarded-for": v6[-1]})
        other_64 = await proxy.get(
            "/v1/sessions/s1", headers=RIGHT | {"x-forwarded-for": "2001:db8:1:3::1"}
        )
    assert locked.status_code == 429
    assert 59 <= int(locked.headers["retry-after"]) <= 60
    assert honest.status_code == 404
    assert same_64.status_code == 429
    assert other_64.status_code == 404


@pytest.mark.anyio
async def test_a_thousand_wrong_tokens_log_a_bounded_number_of_lines(
    standins: dict[str, StandIn], redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(standins, redis_server.url, lockout_s=60.0)
    caplog.set_level(logging.WARNING, logger="georouter.http.admin")
    statuses: Counter[int] = Counter()
    async with serving(config, "198.51.100.9") as (attacker,):
        started = time.monotonic()
        for i in range(1000):
            token = {"authorization": f"Bearer guess-{i:06d}-0123456789"}
            statuses[(await attacker.delete("/v1/sessions/s1", headers=token)).status_code] += 1
        elapsed = time.monotonic() - started
    lines = [r for r in caplog.records if r.name == "georouter.http.admin"]
    print(
        f"\n1000 wrong tokens in {elapsed:.2f}s: {statuses[401]} x 401, {statuses[429]} x 429,"
        f" {len(lines)} log lines"
    )
    assert statuses == Counter({401: LIMIT, 429: 1000 - LIMIT})
    assert len(lines) <= LIMIT + 1
    assert all(r.levelno == logging.WARNING for r in lines)
    assert all("198.51.100.9" in r.getMessage() for r in lines)


def test_a_real_edge_locks_a_guessing_address_out(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEOROUTER_ADMIN_TOKEN", TOKEN)
    text = config_text(
        cluster_entries(standins),
        router={"fallback": "us-east"},
        health=HEALTH,
        sessions={"redis_url": redis_server.url},
        limits={"admin_failures": LIMIT, "admin_lockout_s": 3},
    )
    edge = make_edge(write_config(text))
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    for i in range(200):
        token = {"authorization": f"Bearer guess-{i:06d}-0123456789"}
        statuses[edge.get("/v1/sessions/s1", headers=token).status_code] += 1
    locked = edge.get("/v1/sessions/s1", headers=RIGHT)
    elapsed = time.monotonic() - started
    # Locked out until 3 s after the first wrong token; then the right token works.
    after = wait_for(
        lambda: (r := edge.get("/v1/sessions/s1", headers=RIGHT)).status_code != 429 and r,
        timeout_s=10,
        what="the lockout to end",
    )
    lines = [line for line in edge.log().splitlines() if "wrong or missing token" in line]
    print(
        f"\nreal edge: 200 wrong tokens in {elapsed:.2f}s: {statuses[401]} x 401,"
        f" {statuses[429]} x 429; right token while locked out: {locked.status_code};"
        f" after the window: {after.status_code}; {len(lines)} log lines"
    )
    assert elapsed < 3, "the guesses outlasted the window: the counts below would not hold"
    assert statuses[401] == LIMIT
    assert statuses[401] + statuses[429] == 200
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert (after.status_code, after.json()["error"]) == (404, "unknown_session")
    assert 1 <= len(lines) <= 2 * (LIMIT + 1)
