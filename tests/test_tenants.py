"""Tenant home clusters through the admin API, shared by every edge through Redis.

Real `georouter serve` processes in proxy mode, one real Redis, real application
servers (each says which cluster answered): a home set at one edge is followed
at another within a second, a deleted one gives the tenant back to geography or
to its configured home, sessions move home, a home that is down fails over,
an edge serves the homes it knows while Redis is away, and bad requests get
clear answers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.harness import Edge, wait_for
from tests.proxy_pair import API, Pair
from tests.redis_harness import RedisServer

TOKEN = "tenant-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
# Loopback clients have no location: without a home they go to the fallback, "a".
TENANTS = """
[tenants]
header = "X-Tenant"
cookie = "tenant"

[[tenants.homes]]
tenant = "configured"
cluster = "b"
"""


@pytest.fixture
def edges(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> Callable[[], Edge]:
    """Start one more edge of the same two clusters and Redis, with the admin token."""
    path = write_config(pair.config(redis_server) + TENANTS)
    return lambda: make_edge(path, api_prefix=API, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})


def admin(
    edge: Edge, method: str, path: str, body: object = None, **kwargs: object
) -> httpx.Response:
    headers = kwargs.pop("headers", AUTH)
    return httpx.request(  # type: ignore[arg-type]
        method, edge.url + API + path, json=body, headers=headers, timeout=10, **kwargs
    )


def tenant_request(
    edge: Edge, tenant: str, session: str | None = None, *, by_cookie: bool = False
) -> tuple[str, str]:
    """The cluster that answered a request of ``tenant`` (by its own word) and the
    router's reason."""
    cookies = [f"georouter_session={session}"] if session is not None else []
    headers = {}
    if by_cookie:
        cookies.append(f"tenant={tenant}")
    else:
        headers["x-tenant"] = tenant
    if cookies:
        headers["cookie"] = "; ".join(cookies)
    response = httpx.get(edge.url + "/app", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    answered = response.json()["cluster"]
    assert answered == response.headers["x-georouter-cluster"]
    return answered, response.headers["x-georouter-reason"]


def test_a_tenant_home_put_at_one_edge_is_followed_at_another_within_a_second(
    edges: Callable[[], Edge],
) -> None:
    one, other = edges(), edges()
    assert tenant_request(other, "acme") == ("a", "fallback")
    put = admin(one, "PUT", "/v1/tenants/acme", {"cluster": "b"})
    assert put.status_code == 200, put.text
    shown = put.json()
    assert (shown["home"], shown["source"], shown["applied"]) == ("b", "runtime", True)
    assert shown["runtime"]["by"] == "127.0.0.1"
    assert tenant_request(one, "acme") == ("b", "tenant")
    wait_for(
        lambda: tenant_request(other, "acme") == ("b", "tenant"),
        timeout_s=1.5,
        what="the home at the other edge",
    )
    # Other tenants, and requests naming none, keep going by geography.
    assert tenant_request(other, "initech") == ("a", "fallback")
    assert "admin: tenant acme homed at cluster b by 127.0.0.1" in one.log()


def test_deleting_a_home_at_one_edge_returns_the_tenant_to_geography_at_another(
    edges: Callable[[], Edge],
) -> None:
    one, other = edges(), edges()
    assert admin(one, "PUT", "/v1/tenants/acme", {"cluster": "b"}).status_code == 200
    wait_for(lambda: tenant_request(other, "acme")[0] == "b", timeout_s=1.5, what="the home")
    deleted = admin(other, "DELETE", "/v1/tenants/acme")
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["was_set"], deleted.json()["home"]) == (True, None)
    wait_for(
        lambda: tenant_request(one, "acme") == ("a", "fallback"),
        timeout_s=1.5,
        what="the deletion at the first edge",
    )
    assert admin(one, "GET", "/v1/tenants/acme").json()["error"] == "no_home"
    assert admin(one, "DELETE", "/v1/tenants/acme").json()["was_set"] is False


def test_a_configured_home_routes_its_tenant_and_applies_again_once_a_runtime_one_goes(
    edges: Callable[[], Edge],
) -> None:
    one, other = edges(), edges()
    assert tenant_request(one, "configured") == ("b", "tenant")
    # Named by the cookie just as well as by the header.
    assert tenant_request(one, "configured", by_cookie=True) == ("b", "tenant")
    got = admin(one, "GET", "/v1/tenants/configured").json()
    assert (got["home"], got["source"], got["config"], got["runtime"]) == (
        "b",
        "config",
        "b",
        None,
    )
    assert admin(one, "PUT", "/v1/tenants/configured", {"cluster": "a"}).status_code == 200
    wait_for(lambda: tenant_request(other, "configured")[0] == "a", timeout_s=1.5, what="home")
    shown = admin(other, "GET", "/v1/tenants/configured").json()
    assert (shown["home"], shown["source"], shown["config"]) == ("a", "runtime", "b")
    listed = admin(other, "GET", "/v1/tenants").json()["tenants"]
    assert [(t["id"], t["home"]) for t in listed] == [("configured", "a")]
    deleted = admin(other, "DELETE", "/v1/tenants/configured").json()
    assert (deleted["home"], deleted["source"], deleted["was_set"]) == ("b", "config", True)
    wait_for(lambda: tenant_request(one, "configured")[0] == "b", timeout_s=1.5, what="config")


def test_a_session_of_the_tenant_pinned_elsewhere_moves_home_and_stays(
    edges: Callable[[], Edge],
) -> None:
    one, other = edges(), edges()
    assert tenant_request(one, "acme", "acme-session-1") == ("a", "fallback")
    assert tenant_request(other, "acme", "acme-session-1") == ("a", "sticky")
    assert admin(one, "PUT", "/v1/tenants/acme", {"cluster": "b"}).status_code == 200
    wait_for(lambda: tenant_request(other, "acme")[0] == "b", timeout_s=1.5, what="the home")
    assert tenant_request(other, "acme", "acme-session-1") == ("b", "tenant")
    # Moved once, in Redis: sticky at home from every edge.
    assert tenant_request(one, "acme", "acme-session-1") == ("b", "sticky")
    assert tenant_request(other, "acme", "acme-session-1") == ("b", "sticky")


def test_while_its_home_is_down_a_tenants_session_fails_over_then_returns_home(
    edges: Callable[[], Edge],
) -> None:
    edge = edges()
    assert tenant_request(edge, "configured", "configured-session") == ("b", "tenant")
    down = admin(edge, "POST", "/v1/clusters/b/override", {"state": "down", "ttl_s": 60})
    assert down.status_code == 200, down.text
    assert tenant_request(edge, "configured", "configured-session") == ("a", "failover")
    assert tenant_request(edge, "configured", "configured-session") == ("a", "sticky")
    assert admin(edge, "DELETE", "/v1/clusters/b/override").status_code == 200
    assert tenant_request(edge, "configured", "configured-session") == ("b", "tenant")


def test_the_routing_api_answers_with_the_tenants_home_and_explains_it(
    edges: Callable[[], Edge],
) -> None:
    edge = edges()
    answer = edge.get(API + "/v1/route?explain=1", headers={"x-tenant": "configured"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["cluster"], body["reason"]) == ("b", "tenant")
    assert body["tenant"] == {"id": "configured", "home": "b", "source": "config", "applied": True}
    assert body["explain"][0]["why"] == "the home cluster of the request's tenant"
    bad = edge.get(API + "/v1/route", headers={"x-tenant": "no spaces allowed"})
    assert bad.status_code == 400
    assert (bad.json()["error"], bad.json()["header"]) == ("invalid_header", "x-tenant")
    # A malformed tenant cookie is anyone's old cookie: ignored, not an error.
    ignored = edge.get(API + "/v1/route", headers={"cookie": "tenant=no spaces"})
    assert (ignored.status_code, ignored.json()["reason"]) == (200, "fallback")


def test_a_routing_api_caller_may_name_the_tenant_it_asks_for(edges: Callable[[], Edge]) -> None:
    edge = edges()
    asked = edge.get(API + "/v1/route?tenant=configured", headers={"x-tenant": "initech"})
    assert (asked.json()["cluster"], asked.json()["reason"]) == ("b", "tenant")
    bad = edge.get(API + "/v1/route?tenant=-x")
    assert (bad.status_code, bad.json()["parameter"]) == (400, "tenant")
    batch = httpx.post(
        edge.url + API + "/v1/route",
        json={"requests": [{"tenant": "configured"}, {"tenant": None}, {"ip": "127.0.0.1"}]},
        timeout=10,
    )
    assert batch.status_code == 200, batch.text
    assert [d["cluster"] for d in batch.json()["decisions"]] == ["b", "a", "a"]
    refused = httpx.post(
        edge.url + API + "/v1/route", json={"requests": [{"tenant": 7}]}, timeout=10
    )
    assert (refused.status_code, refused.json()["field"]) == (400, "requests[0].tenant")


CALLS = [
    ("PUT", "/v1/tenants/acme", {"cluster": "b"}),
    ("GET", "/v1/tenants/acme", None),
    ("DELETE", "/v1/tenants/acme", None),
    ("GET", "/v1/tenants", None),
]


def test_every_tenant_admin_call_refuses_a_missing_or_wrong_token_with_401(
    edges: Callable[[], Edge],
) -> None:
    edge = edges()
    for method, path, body in CALLS:
        for headers in ({}, {"authorization": "Bearer wrong-token"}):
            answer = admin(edge, method, path, body, headers=headers)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["error"] == "unauthorized"
    assert tenant_request(edge, "acme") == ("a", "fallback")


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "error"),
    [
        ("PUT", "/v1/tenants/acme", b'{"cluster": "nowhere"}', 404, "unknown_cluster"),
        ("PUT", "/v1/tenants/acme", b"{not json", 400, "invalid_body"),
        ("PUT", "/v1/tenants/acme", b'["b"]', 400, "invalid_body"),
        ("PUT", "/v1/tenants/acme", b"{}", 400, "invalid_body"),
        ("PUT", "/v1/tenants/acme", b'{"cluster": 7}', 400, "invalid_body"),
        ("PUT", "/v1/tenants/acme", b'{"cluster": "b", "ttl_s": 5}', 400, "invalid_body"),
        ("PUT", "/v1/tenants/-acme", b'{"cluster": "b"}', 400, "invalid_parameter"),
        ("PUT", "/v1/tenants/" + "a" * 65, b'{"cluster": "b"}', 400, "invalid_parameter"),
        ("GET", "/v1/tenants/acme%20corp", b"", 400, "invalid_parameter"),
        ("DELETE", "/v1/tenants/acme%0A", b"", 400, "invalid_parameter"),
        ("GET", "/v1/tenants/acme", b"", 404, "no_home"),
    ],
    ids=[
        "unknown-cluster",
        "bad-json",
        "not-an-object",
        "no-cluster",
        "cluster-not-a-string",
        "unknown-field",
        "id-starting-with-a-dash",
        "id-too-long",
        "id-with-a-space",
        "id-with-a-newline",
        "no-home",
    ],
)
def test_bad_tenant_admin_requests_get_a_clear_json_error(
    edges: Callable[[], Edge], method: str, path: str, content: bytes, status: int, error: str
) -> None:
    edge = edges()
    answer = httpx.request(method, edge.url + API + path, content=content, headers=AUTH, timeout=10)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert tenant_request(edge, "acme") == ("a", "fallback")


def test_homes_outlive_a_redis_restart_and_an_edge_serves_them_while_redis_is_away(
    pair: Pair,
    tmp_path: Path,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    # The suite's usual Redis keeps nothing on disk; this one keeps an append-only
    # file, as a production Redis (and georouter's embedded one) does.
    redis = RedisServer(tmp_path / "persistent-redis", args=("--appendonly", "yes")).start()
    try:
        path = write_config(pair.config(redis) + TENANTS)
        edge = make_edge(path, api_prefix=API, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
        assert admin(edge, "PUT", "/v1/tenants/acme", {"cluster": "b"}).status_code == 200
        redis.stop()
        # Redis is away: the edge keeps routing the tenant by the home it knows...
        assert [tenant_request(edge, "acme")[0] for _ in range(3)] == ["b"] * 3
        # ...and says it cannot change homes now, rather than pretending to.
        refused = admin(edge, "PUT", "/v1/tenants/acme", {"cluster": "a"})
        assert (refused.status_code, refused.json()["error"]) == (503, "session_store_unavailable")
        redis.start(port=redis.port)
        later = make_edge(path, api_prefix=API, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
        assert tenant_request(later, "acme") == ("b", "tenant")
        shown = admin(later, "GET", "/v1/tenants/acme").json()
        assert (shown["home"], shown["source"]) == ("b", "runtime")
        assert tenant_request(edge, "acme")[0] == "b"
    finally:
        redis.stop()


def test_a_runtime_home_whose_cluster_a_reload_removed_is_ignored_and_shown_so(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    path = write_config(pair.config(redis_server) + TENANTS)
    edge = make_edge(path, api_prefix=API, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
    assert admin(edge, "PUT", "/v1/tenants/acme", {"cluster": "b"}).status_code == 200
    # The same file without cluster "b" (nor the configured home that names it).
    text = pair.config(redis_server)
    without_b = text[: text.index("[[clusters]]", text.index('name = "a"'))]
    path.write_text(without_b, encoding="utf-8")
    reloaded = admin(edge, "POST", "/v1/config/reload")
    assert reloaded.status_code == 200, reloaded.text
    assert tenant_request(edge, "acme") == ("a", "fallback")
    shown = admin(edge, "GET", "/v1/tenants/acme").json()
    assert shown["applied"] is False
    assert shown["runtime"]["ignored"] == "not a configured cluster"
    assert "'b' is not a configured cluster" in shown["ignored"]


def test_in_redirect_mode_a_tenant_is_sent_to_its_home_clusters_url(
    pair: Pair,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    text = pair.config(redis_server).replace('mode = "proxy"', 'mode = "redirect"')
    assert 'mode = "redirect"' in text
    edge = make_edge(write_config(text + TENANTS), api_prefix=API)
    answer = httpx.get(edge.url + "/docs?page=2", headers={"x-tenant": "configured"}, timeout=10)
    assert answer.status_code == 307, answer.text
    assert answer.headers["location"] == pair.b.url + "/docs?page=2"
    assert answer.headers["x-georouter-reason"] == "tenant"
    other = httpx.get(edge.url + "/docs", headers={"x-tenant": "initech"}, timeout=10)
    assert other.headers["location"] == pair.a.url + "/docs"


def test_a_replay_hint_sends_one_request_of_a_homed_tenant_on_but_keeps_its_session_home(
    pair: Pair, edges: Callable[[], Edge]
) -> None:
    edge = edges()
    assert tenant_request(edge, "configured", "cfg-session") == ("b", "tenant")
    # The home asks for this one request to be served at "a".
    pair.b.extra_headers = [("georouter-replay", "a")]
    assert tenant_request(edge, "configured", "cfg-session") == ("a", "replay")
    pair.b.extra_headers = []
    # The session's pin stayed home: no move to "a" and back.
    assert tenant_request(edge, "configured", "cfg-session") == ("b", "sticky")
