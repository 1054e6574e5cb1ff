"""The HTTP API, in process: a real app, real stand-in clusters, the test GeoIP database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jsonschema_rs
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from georouter.config import parse
from georouter.demo.standin import StandIn
from georouter.http.app import create_app
from georouter.sessions.ids import valid_id
from tests.harness import FAST_HEALTH, TEST_CITY_DB, cluster_entries, ready_now, until_async

pytestmark = pytest.mark.anyio

Api = Callable[..., AsyncIterator[httpx.AsyncClient]]


def config_for(standins: dict[str, StandIn], **router: object):  # type: ignore[no-untyped-def]
    return parse(
        {
            "clusters": cluster_entries(standins),
            "router": {"fallback": "us-east", **router},
            "geoip": {"database": str(TEST_CITY_DB)},
            "health": FAST_HEALTH,
        }
    )


@asynccontextmanager
async def serving(config, *, ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    app = create_app(config)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            if ready:
                await until_async(lambda: ready_now(client), what="readiness")
            yield client


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins("us-east", "eu-west", "eu-central", "ap-northeast", "ap-sydney")


async def test_route_answers_the_nearest_cluster_with_the_documented_fields(
    standins: dict[str, StandIn],
) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.get("/v1/route", params={"ip": "81.2.69.1"})
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "cluster": "eu-west",
        "url": standins["eu-west"].url,
        "reason": "nearest",
        "client_ip": "81.2.69.1",
        "location": {
            "lat": 51.5074,
            "lon": -0.1278,
            "country": "GB",
            "continent": "EU",
            "accuracy_km": 10.0,
            "precision": "point",
            "source": "geoip",
        },
        "distance_km": 463.3,
    }


@pytest.mark.parametrize(
    ("ip", "cluster", "reason"),
    [
        pytest.param("202.12.27.33", "ap-northeast", "nearest", id="tokyo"),
        pytest.param("1.130.0.1", "ap-sydney", "nearest", id="sydney"),
        pytest.param("89.160.20.9", "eu-central", "nearest", id="stockholm"),
        pytest.param("2001:480::1", "us-east", "nearest", id="ipv6-washington"),
        pytest.param("::ffff:202.12.27.33", "ap-northeast", "nearest", id="ipv4-mapped"),
        pytest.param("10.0.0.1", "us-east", "fallback", id="private"),
        pytest.param("8.8.8.8", "us-east", "fallback", id="not-in-database"),
        pytest.param("185.1.0.1", "us-east", "fallback", id="country-only"),
    ],
)
async def test_route_by_ip(
    standins: dict[str, StandIn], ip: str, cluster: str, reason: str
) -> None:
    async with serving(config_for(standins)) as api:
        body = (await api.get("/v1/route", params={"ip": ip})).json()
    assert (body["cluster"], body["reason"]) == (cluster, reason)


async def test_fallback_decision_has_no_distance_and_keeps_what_is_known(
    standins: dict[str, StandIn],
) -> None:
    async with serving(config_for(standins)) as api:
        private = (await api.get("/v1/route", params={"ip": "10.0.0.1"})).json()
        country_only = (await api.get("/v1/route", params={"ip": "185.1.0.1"})).json()
    assert (private["location"], private["distance_km"]) == (None, None)
    assert country_only["location"]["country"] == "DE"
    assert country_only["distance_km"] is None


async def test_without_ip_the_client_is_the_request_peer(standins: dict[str, StandIn]) -> None:
    async with serving(config_for(standins)) as api:
        body = (await api.get("/v1/route", headers={"x-forwarded-for": "81.2.69.1"})).json()
    # The peer 203.0.113.9 is not a trusted proxy: its X-Forwarded-For is ignored.
    assert body["client_ip"] == "203.0.113.9"
    assert body["reason"] == "fallback"


async def test_trusted_proxy_forwarded_for_is_honoured(standins: dict[str, StandIn]) -> None:
    config = config_for(standins, trusted_proxies=["203.0.113.0/24"])
    async with serving(config) as api:
        body = (
            await api.get("/v1/route", headers={"x-forwarded-for": "6.6.6.6, 202.12.27.33"})
        ).json()
    assert body["client_ip"] == "202.12.27.33"
    assert body["cluster"] == "ap-northeast"


async def test_explain_lists_every_cluster_with_distance_and_why(
    standins: dict[str, StandIn],
) -> None:
    async with serving(config_for(standins)) as api:
        body = (await api.get("/v1/route", params={"ip": "81.2.69.1", "explain": "1"})).json()
    explain = body["explain"]
    assert [e["cluster"] for e in explain] == [
        "eu-west",
        "eu-central",
        "us-east",
        "ap-northeast",
        "ap-sydney",
    ]
    assert explain[0] == {
        "cluster": "eu-west",
        "distance_km": 463.3,
        "chosen": True,
        "why": "nearest routable cluster",
    }
    assert all(e["why"] == "farther than eu-west" for e in explain[1:])


async def test_down_cluster_is_skipped_and_explained(standins: dict[str, StandIn]) -> None:
    standins["eu-west"].stop()
    async with serving(config_for(standins)) as api:
        body = (await api.get("/v1/route", params={"ip": "81.2.69.1", "explain": "1"})).json()
    assert body["cluster"] == "eu-central"
    assert body["explain"][0]["cluster"] == "eu-west"
    assert body["explain"][0]["why"] == "down"


async def test_no_routable_cluster_is_a_503_with_a_json_reason(
    standins: dict[str, StandIn],
) -> None:
    for s in standins.values():
        s.health_status = 503
    async with serving(config_for(standins)) as api:
        r = await api.get("/v1/route", params={"ip": "81.2.69.1"})
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "no_routable_cluster"
    assert body["cluster"] is None
    # Not "nearest": the answer, the metric and the API description agree.
    assert body["reason"] == "none"
    assert "5 down" in body["message"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        pytest.param({"ip": "1.2.3"}, "ip", id="short-ipv4"),
        pytest.param({"ip": "<script>"}, "ip", id="markup"),
        pytest.param({"ip": "fe80::1%eth0"}, "ip", id="zone-id"),
        pytest.param({"ip": "1.2.3.4:80"}, "ip", id="with-port"),
        pytest.param({"ip": ""}, "ip", id="empty"),
        pytest.param({"ip": "x" * 5000}, "ip", id="huge"),
        pytest.param({"ip": "1.2.3.4", "explain": "maybe"}, "explain", id="explain"),
    ],
)
async def test_malformed_parameters_are_a_400_naming_the_parameter(
    standins: dict[str, StandIn], query: dict[str, str], parameter: str
) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.get("/v1/route", params=query)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "invalid_parameter"
    assert body["parameter"] == parameter
    assert len(body["message"]) < 200


async def test_batch_answers_in_order(standins: dict[str, StandIn]) -> None:
    ips = ["202.12.27.33", "10.0.0.1", "81.2.69.1", "1.130.0.1"]
    async with serving(config_for(standins)) as api:
        r = await api.post("/v1/route", json={"requests": [{"ip": i} for i in ips]})
    assert r.status_code == 200
    decisions = r.json()["decisions"]
    assert [d["client_ip"] for d in decisions] == ips
    assert [d["cluster"] for d in decisions] == ["ap-northeast", "us-east", "eu-west", "ap-sydney"]
    assert "explain" not in decisions[0]


async def test_batch_item_without_ip_is_the_caller(standins: dict[str, StandIn]) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.post("/v1/route?explain=1", json={"requests": [{}]})
    decision = r.json()["decisions"][0]
    assert decision["client_ip"] == "203.0.113.9"
    assert len(decision["explain"]) == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(
            {"requests": [{"ip": "81.2.69.1"}, {"ip": "nope"}]}, "requests[1].ip", id="bad-ip"
        ),
        pytest.param({"requests": [{"ip": 7}]}, "requests[0].ip", id="ip-not-string"),
        pytest.param({"requests": [{"ip": "1.2.3.4", "x": 1}]}, "requests[0]", id="unknown-key"),
        pytest.param({"requests": ["1.2.3.4"]}, "requests[0]", id="item-not-object"),
        pytest.param({"requests": {"ip": "1.2.3.4"}}, "requests", id="not-a-list"),
        pytest.param({"requests": [{"ip": "1.2.3.4"}] * 1001}, "requests", id="over-1000"),
    ],
)
async def test_malformed_batch_is_a_400_naming_the_field(
    standins: dict[str, StandIn], body: object, field: str
) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.post("/v1/route", json=body)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_body"
    assert r.json()["field"] == field


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'{"requests": [], "extra": 1}', id="extra-key"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[" * 100_000, id="deeply-nested"),
        pytest.param(b'{"requests": [{"ip": ' + b"9" * 5000 + b"}]}", id="huge-integer"),
    ],
)
async def test_unparseable_batch_body_is_a_400(
    standins: dict[str, StandIn], content: bytes
) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.post("/v1/route", content=content)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_body"


async def test_batch_at_exactly_1000_is_accepted(standins: dict[str, StandIn]) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.post("/v1/route", json={"requests": [{"ip": "81.2.69.1"}] * 1000})
    assert r.status_code == 200
    assert len(r.json()["decisions"]) == 1000


async def test_oversized_body_is_a_413(standins: dict[str, StandIn]) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.post("/v1/route", content=b"[" + b" " * (2 << 20) + b"]")
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"


async def test_unknown_paths_and_methods_answer_json(standins: dict[str, StandIn]) -> None:
    async with serving(config_for(standins)) as api:
        missing = await api.get("/nope")
        wrong = await api.delete("/v1/route")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")


async def test_nothing_is_routed_before_the_first_health_round(
    standins: dict[str, StandIn],
) -> None:
    standins["ap-sydney"].health_gate.clear()  # its first probe hangs
    try:
        async with serving(config_for(standins), ready=False) as api:
            ready = await api.get("/readyz")
            route = await api.get("/v1/route", params={"ip": "81.2.69.1"})
            assert (ready.status_code, ready.json()["ready"]) == (503, False)
            assert (route.status_code, route.json()["error"]) == (503, "not_ready")
            standins["ap-sydney"].health_gate.set()
            await until_async(lambda: ready_now(api), what="readiness")
            route = await api.get("/v1/route", params={"ip": "81.2.69.1"})
            assert route.status_code == 200
    finally:
        standins["ap-sydney"].health_gate.set()


async def test_clusters_lists_health_and_the_geoip_database(standins: dict[str, StandIn]) -> None:
    standins["eu-central"].stop()
    async with serving(config_for(standins)) as api:
        body = (await api.get("/v1/clusters")).json()
    by_name = {c["name"]: c for c in body["clusters"]}
    assert list(by_name) == list(standins)
    assert by_name["eu-central"]["health"]["status"] == "down"
    assert by_name["eu-west"]["health"]["status"] == "up"
    assert by_name["us-east"]["fallback"] is True
    assert body["geoip"]["type"] == "GeoIP2-City"
    assert body["geoip"]["bundled"] is False


async def test_stale_database_is_warned_about_in_cluster_metadata(
    standins: dict[str, StandIn],
) -> None:
    config = config_for(standins)
    app_clock_now = 4_000_000_000.0  # year 2096: every database is stale by then
    app = create_app(config, clock=lambda: app_clock_now)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as api:
            body = (await api.get("/v1/clusters")).json()
    assert body["geoip"]["stale"] is True
    assert len(body["warnings"]) == 1
    assert "days old" in body["warnings"][0]


async def test_liveness_metrics_and_openapi(standins: dict[str, StandIn]) -> None:
    async with serving(config_for(standins)) as api:
        await api.get("/v1/route", params={"ip": "81.2.69.1"})
        await api.get("/v1/route", params={"ip": "10.0.0.1"})
        healthz = await api.get("/healthz")
        metrics = await api.get("/metrics")
        spec = await api.get("/openapi.json")
    assert healthz.json() == {"status": "ok"}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text)
        for s in family.samples
    }
    nearest = (("cluster", "eu-west"), ("reason", "nearest"))
    fallback = (("cluster", "us-east"), ("reason", "fallback"))
    assert samples["georouter_decisions_total", nearest] == 1
    assert samples["georouter_decisions_total", fallback] == 1
    assert samples["georouter_clusters_up", ()] == 5
    paths = spec.json()["paths"]
    assert {"/v1/route", "/v1/clusters", "/healthz", "/readyz"} <= set(paths)
    assert set(paths["/v1/route"]) == {"get", "post"}


def _parameter(spec: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    operation = spec["paths"][path]
    declared = operation.get("parameters", []) + operation[method].get("parameters", [])
    found = [p for p in declared if p["name"] == name]
    assert len(found) == 1, f"{method} {path} does not describe {name}"
    return found[0]


@pytest.mark.parametrize("query", ["ip=81.2.69.1&explain=", "ip=81.2.69.1&explain"])
async def test_a_bare_explain_flag_is_true_and_described_so(
    standins: dict[str, StandIn], query: str
) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.get(f"/v1/route?{query}")
        spec = (await api.get("/openapi.json")).json()
    assert r.status_code == 200
    assert len(r.json()["explain"]) == 5
    for method in ("get", "post"):
        explain = _parameter(spec, "/v1/route", method, "explain")["schema"]
        assert jsonschema_rs.validator_for(explain).is_valid("")
        assert not jsonschema_rs.validator_for(explain).is_valid("maybe")


async def test_an_empty_or_invalid_ip_is_a_400_and_described_so(
    standins: dict[str, StandIn],
) -> None:
    async with serving(config_for(standins)) as api:
        empty = await api.get("/v1/route", params={"ip": ""})
        spec = (await api.get("/openapi.json")).json()
    assert (empty.status_code, empty.json()["parameter"]) == (400, "ip")
    ip = _parameter(spec, "/v1/route", "get", "ip")["schema"]
    valid = jsonschema_rs.validator_for(ip, validate_formats=True).is_valid
    assert valid("81.2.69.1")
    assert valid("2001:480::1")
    for bad in ("", "1.2.3", "fe80::1%eth0", "1.2.3.4:80", "x" * 50):
        assert not valid(bad), bad
    assert "400" in spec["paths"]["/v1/route"]["get"]["responses"]


async def test_session_ids_are_described_with_the_rule_the_server_applies(
    standins: dict[str, StandIn],
) -> None:
    async with serving(config_for(standins)) as api:
        spec = (await api.get("/openapi.json")).json()
    post_items = spec["paths"]["/v1/route"]["post"]["requestBody"]["content"]["application/json"]
    schemas = {
        "query": _parameter(spec, "/v1/route", "get", "session")["schema"],
        "path": _parameter(spec, "/v1/sessions/{session_id}", "get", "session_id")["schema"],
        "body": post_items["schema"]["properties"]["requests"]["items"]["properties"]["session"],
    }
    for where, schema in schemas.items():
        valid = jsonschema_rs.validator_for(schema).is_valid
        for good in ("s1", "ab/cd+==", "x" * 128, "a.b_c~d:e=f-g"):
            assert (valid(good), valid_id(good)) == (True, True), (where, good)
        for bad in ("", "x" * 129, "a b", "a\nb", "tökén"):
            assert (valid(bad), valid_id(bad)) == (False, False), (where, bad)


async def test_every_answer_of_the_admin_operations_is_described(
    standins: dict[str, StandIn],
) -> None:
    async with serving(config_for(standins)) as api:
        spec = (await api.get("/openapi.json")).json()
    operations = spec["paths"]["/v1/sessions/{session_id}"]
    for method in ("get", "delete"):
        responses = operations[method]["responses"]
        assert {"200", "400", "401", "403", "404", "429", "503"} <= set(responses), method
        assert "Retry-After" in responses["429"]["headers"]
    assert spec["components"]["securitySchemes"]["admin"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("DELETE", "/v1/route", {"GET", "HEAD", "POST"}, id="route"),
        pytest.param("PUT", "/v1/sessions/s1", {"GET", "HEAD", "DELETE"}, id="sessions"),
    ],
)
async def test_405_allow_lists_every_method_of_the_path(
    standins: dict[str, StandIn], method: str, path: str, allowed: set[str]
) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.request(method, path)
        spec = (await api.get("/openapi.json")).json()
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed
    described = "/v1/route" if path == "/v1/route" else "/v1/sessions/{session_id}"
    methods = {m.upper() for m in spec["paths"][described] if m != "parameters"}
    assert methods | {"HEAD"} == allowed


@pytest.mark.parametrize("path", ["/v1/route/", "/v1/sessions", "/healthz/", "/v1/clusters/"])
async def test_an_unknown_path_with_a_slash_is_a_json_404_not_a_redirect(
    standins: dict[str, StandIn], path: str
) -> None:
    async with serving(config_for(standins)) as api:
        r = await api.get(path)
        posted = await api.post(path)
        spec = (await api.get("/openapi.json")).json()
    for answer in (r, posted):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"] == "not_found"
    assert path not in spec["paths"]
