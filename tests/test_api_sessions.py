"""Sessions over the HTTP API, and the admin operations on them (real app, real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import jsonschema_rs
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from georouter.config import Config, parse
from georouter.demo.standin import StandIn
from georouter.http.app import create_app
from georouter.sessions.ids import CookieSigner
from tests.harness import FAST_HEALTH, TEST_CITY_DB, cluster_entries, ready_now, until_async
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.anyio

TOKEN = "admin-token-0123456789"
SIGNER = CookieSigner((b"session-key-0123456789",))


@pytest.fixture
def config(make_standins: Callable[..., dict[str, StandIn]], redis_server: RedisServer) -> Config:
    standins = make_standins("us-east", "eu-west", "eu-central", "ap-northeast")
    return parse(
        {
            "clusters": cluster_entries(standins),
            "router": {"fallback": "us-east"},
            "geoip": {"database": str(TEST_CITY_DB)},
            "health": FAST_HEALTH,
            "sessions": {
                "redis_url": redis_server.url,
                "command_timeout_s": 1,
                "connect_timeout_s": 1,
            },
        }
    )


async def near_cache_off(api: httpx.AsyncClient) -> bool:
    return (await api.get("/v1/clusters")).json()["sessions"]["near_cache"] != "on"


@asynccontextmanager
async def serving(config: Config, **app_options: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config, **app_options)  # type: ignore[arg-type]
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            await until_async(lambda: ready_now(client), what="readiness")
            yield client


async def test_session_query_parameter_pins_and_sticks(config: Config) -> None:
    async with serving(config) as api:
        first = (await api.get("/v1/route", params={"ip": "81.2.69.1", "session": "s1"})).json()
        again = (await api.get("/v1/route", params={"ip": "202.12.27.33", "session": "s1"})).json()
    assert (first["cluster"], first["reason"]) == ("eu-west", "nearest")
    assert first["session"]["id"] == "s1"
    assert first["session"]["pinned"] == "eu-west"
    assert first["session"]["degraded"] is False
    assert 0 < first["session"]["ttl_s"] <= 1800
    assert (again["cluster"], again["reason"]) == ("eu-west", "sticky")


async def test_session_header_and_cookie_are_sources_too(config: Config) -> None:
    async with serving(config) as api:
        by_header = await api.get(
            "/v1/route", params={"ip": "81.2.69.1"}, headers={"x-session-id": "h1"}
        )
        by_cookie = await api.get(
            "/v1/route", params={"ip": "81.2.69.1"}, headers={"cookie": "georouter_session=c1"}
        )
    assert by_header.json()["session"]["id"] == "h1"
    assert by_cookie.json()["session"]["id"] == "c1"


async def test_query_parameter_wins_over_header_and_cookie(config: Config) -> None:
    async with serving(config) as api:
        body = (
            await api.get(
                "/v1/route",
                params={"ip": "81.2.69.1", "session": "q1"},
                headers={"x-session-id": "h1", "cookie": "georouter_session=c1"},
            )
        ).json()
    assert body["session"]["id"] == "q1"


@pytest.mark.parametrize(
    ("where", "value", "error", "named"),
    [
        pytest.param("query", "x" * 129, "invalid_parameter", ("parameter", "session"), id="long"),
        pytest.param("query", "a b", "invalid_parameter", ("parameter", "session"), id="space"),
        pytest.param("query", "", "invalid_parameter", ("parameter", "session"), id="empty"),
        pytest.param("header", "a\tb", "invalid_header", ("header", "x-session-id"), id="header"),
    ],
)
async def test_malformed_session_ids_are_a_400_and_touch_no_redis(
    config: Config,
    redis_server: RedisServer,
    where: str,
    value: str,
    error: str,
    named: tuple[str, str],
) -> None:
    async with serving(config) as api:
        if where == "query":
            r = await api.get("/v1/route", params={"ip": "81.2.69.1", "session": value})
        else:
            r = await api.get(
                "/v1/route", params={"ip": "81.2.69.1"}, headers={"x-session-id": value}
            )
    assert r.status_code == 400
    assert r.json()["error"] == error
    assert r.json()[named[0]] == named[1]
    with redis_server.client() as c:
        assert c.keys("georouter:s:*") == []  # (the epoch marker is not a session)


async def test_signed_cookie_carries_its_session_and_a_forged_one_creates_nothing(
    config: Config, redis_server: RedisServer
) -> None:
    async with serving(config, signer=SIGNER) as api:
        good = await api.get(
            "/v1/route",
            params={"ip": "81.2.69.1"},
            headers={"cookie": "georouter_session=" + SIGNER.sign("real-session")},
        )
        forged = await api.get(
            "/v1/route",
            params={"ip": "81.2.69.1"},
            headers={"cookie": "georouter_session=forged-session.AAAA"},
        )
        unsigned = await api.get(
            "/v1/route",
            params={"ip": "81.2.69.1"},
            headers={"cookie": "georouter_session=plain-id"},
        )
    assert good.json()["session"]["id"] == "real-session"
    assert "session" not in forged.json()
    assert "session" not in unsigned.json()
    with redis_server.client() as c:
        assert c.keys("georouter:s:*") == ["georouter:s:real-session"]


async def test_batch_items_carry_sessions(config: Config) -> None:
    async with serving(config) as api:
        r = await api.post(
            "/v1/route",
            json={
                "requests": [
                    {"ip": "81.2.69.1", "session": "b1"},
                    {"ip": "202.12.27.33", "session": "b1"},
                    {"ip": "202.12.27.33"},
                ]
            },
        )
        bad = await api.post("/v1/route", json={"requests": [{"session": "no good"}]})
    decisions = r.json()["decisions"]
    assert [(d["cluster"], d["reason"]) for d in decisions] == [
        ("eu-west", "nearest"),
        ("eu-west", "sticky"),
        ("ap-northeast", "nearest"),
    ]
    assert (bad.status_code, bad.json()["field"]) == (400, "requests[0].session")


async def test_admin_reads_and_forgets_a_session(config: Config) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with serving(config, admin_token=TOKEN) as api:
        await api.get("/v1/route", params={"ip": "81.2.69.1", "session": "s1"})
        shown = await api.get("/v1/sessions/s1", headers=auth)
        deleted = await api.delete("/v1/sessions/s1", headers=auth)
        gone = await api.get("/v1/sessions/s1", headers=auth)
        fresh = (await api.get("/v1/route", params={"ip": "202.12.27.33", "session": "s1"})).json()
    assert shown.status_code == 200
    assert shown.json()["pinned"] == "eu-west"
    assert 0 < shown.json()["ttl_s"] <= 1800
    assert deleted.json() == {"id": "s1", "forgotten": True}
    assert (gone.status_code, gone.json()["error"]) == (404, "unknown_session")
    # Forgotten: the next request is a new session, pinned near its client.
    assert (fresh["cluster"], fresh["reason"]) == ("ap-northeast", "nearest")


async def test_session_ids_with_slashes_reach_the_admin_api(config: Config) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with serving(config, admin_token=TOKEN) as api:
        await api.get("/v1/route", params={"ip": "81.2.69.1", "session": "ab/cd+=="})
        shown = await api.get("/v1/sessions/ab/cd+==", headers=auth)
    assert shown.json()["id"] == "ab/cd+=="


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Bearer wrong-token-0123456789", id="wrong"),
        pytest.param(f"Basic {TOKEN}", id="wrong-scheme"),
        pytest.param("Bearer ", id="empty"),
        pytest.param("Bearer tökén-ünïcode-0123456789", id="non-ascii"),
        pytest.param(f"Bearer {TOKEN}x", id="longer"),
    ],
)
async def test_admin_without_the_right_token_is_401(
    config: Config, authorization: str | None
) -> None:
    headers = {"authorization": authorization.encode()} if authorization else {}
    async with serving(config, admin_token=TOKEN) as api:
        get = await api.get("/v1/sessions/s1", headers=headers)  # type: ignore[arg-type]
        delete = await api.delete("/v1/sessions/s1", headers=headers)  # type: ignore[arg-type]
    for r in (get, delete):
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_admin_is_off_without_a_configured_token(config: Config) -> None:
    async with serving(config) as api:
        r = await api.get("/v1/sessions/s1", headers={"authorization": "Bearer anything"})
    assert (r.status_code, r.json()["error"]) == (403, "admin_disabled")


async def test_admin_with_a_malformed_id_is_400(config: Config) -> None:
    async with serving(config, admin_token=TOKEN) as api:
        r = await api.get("/v1/sessions/" + "x" * 200, headers={"authorization": f"Bearer {TOKEN}"})
    assert (r.status_code, r.json()["parameter"]) == (400, "session_id")


async def test_admin_with_redis_down_is_a_503_not_a_500(
    config: Config, redis_server: RedisServer
) -> None:
    async with serving(config, admin_token=TOKEN) as api:
        redis_server.kill()
        r = await api.delete("/v1/sessions/s1", headers={"authorization": f"Bearer {TOKEN}"})
        routed = await api.get("/v1/route", params={"ip": "81.2.69.1", "session": "s1"})
    assert (r.status_code, r.json()["error"]) == (503, "session_store_unavailable")
    assert routed.status_code == 200
    assert routed.json()["session"]["degraded"] is True


async def test_session_metrics_and_status(config: Config, redis_server: RedisServer) -> None:
    async with serving(config) as api:
        await api.get("/v1/route", params={"ip": "81.2.69.1", "session": "s1"})
        redis_server.kill()
        # The near cache goes off once the edge sees its change channel drop.
        await until_async(lambda: near_cache_off(api), what="the near cache to go off")
        for _ in range(4):
            await api.get("/v1/route", params={"ip": "81.2.69.1", "session": "s1"})
        metrics = (await api.get("/metrics")).text
        status = (await api.get("/v1/clusters")).json()["sessions"]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples["georouter_session_degraded_total", ()] == 4
    assert samples["georouter_redis_breaker_open", ()] == 1
    sticky = (("cluster", "eu-west"), ("reason", "sticky"))
    assert samples["georouter_decisions_total", sticky] == 4
    # The first request's read and pin reached Redis before it went away.
    assert samples["georouter_redis_operations_total", ()] >= 2
    assert status["breaker"] == "open"
    assert status["mode"] == "standalone"


@pytest.mark.parametrize(
    "raw_id",
    [
        pytest.param("a%0Ab", id="newline"),
        pytest.param("%0A", id="only-a-newline"),
        pytest.param("a%0D%0Ab", id="crlf"),
        pytest.param("a%00b", id="nul"),
        pytest.param("x" * 129, id="too-long"),
    ],
)
async def test_a_session_id_with_a_newline_is_a_400_not_a_404(config: Config, raw_id: str) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with serving(config, admin_token=TOKEN) as api:
        got = await api.get(f"/v1/sessions/{raw_id}", headers=auth)
        deleted = await api.delete(f"/v1/sessions/{raw_id}", headers=auth)
    for r in (got, deleted):
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_parameter"
        assert r.json()["parameter"] == "session_id"


async def test_admin_answers_are_the_described_ones(config: Config) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with serving(config, admin_token=TOKEN) as api:
        await api.get("/v1/route", params={"ip": "81.2.69.1", "session": "s1"})
        shown = await api.get("/v1/sessions/s1", headers=auth)
        unknown = await api.get("/v1/sessions/nobody", headers=auth)
        spec = (await api.get("/openapi.json")).json()
    responses = spec["paths"]["/v1/sessions/{session_id}"]["get"]["responses"]
    shown_schema = responses["200"]["content"]["application/json"]["schema"]
    assert set(shown_schema["required"]) == set(shown.json())
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_session")
    assert "404" in responses


async def test_with_session_keys_the_query_id_is_described_as_signed(config: Config) -> None:
    async with serving(config, signer=SIGNER) as api:
        spec = (await api.get("/openapi.json")).json()
        unsigned = await api.get("/v1/route", params={"ip": "81.2.69.1", "session": "plain"})
        signed = await api.get(
            "/v1/route", params={"ip": "81.2.69.1", "session": SIGNER.sign("plain")}
        )
    route = spec["paths"]["/v1/route"]
    query = next(p for p in route["get"]["parameters"] if p["name"] == "session")["schema"]
    valid = jsonschema_rs.validator_for(query).is_valid
    assert (unsigned.status_code, valid("plain")) == (400, False)
    assert (signed.status_code, valid(SIGNER.sign("plain"))) == (200, True)
    assert signed.json()["session"]["id"] == "plain"
