"""Proxy mode, from outside: a real `georouter serve` in front of real application servers.

What a user of a reverse proxy relies on: the request arrives intact, the
answer comes back intact, the router's own endpoints never shadow the
application's, forwarding headers cannot be spoofed, a dead cluster costs a
retry rather than an error, and an error says which cluster failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import FAST_HEALTH, Edge, config_text, georouter_command, wait_for
from tests.redis_harness import RedisServer, free_port
from tests.upstream import Upstream


def proxy_config(
    clusters: list[tuple[str, Upstream] | tuple[str, Upstream, Upstream]],
    redis: RedisServer,
    **sections: dict[str, object],
) -> str:
    """Clusters in the order given (the first is the fallback: loopback clients have no
    location); a third element is a separate server answering the cluster's probes."""
    entries = []
    for i, (name, up, *health) in enumerate(clusters):
        entry: dict[str, object] = {"name": name, "url": up.url, "lat": 50.0 + i, "lon": 8.0}
        if health:
            entry["health_url"] = health[0].url + "/healthz"
        entries.append(entry)
    router = {"mode": "proxy", **sections.pop("router", {})}
    sessions = {"redis_url": redis.url, "cookie_secure": False, **sections.pop("sessions", {})}
    return config_text(entries, router=router, health=FAST_HEALTH, sessions=sessions, **sections)


API = "/_georouter"


def send(edge: Edge, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request with no cookie jar: each call is a client of its own."""
    return httpx.request(method, edge.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]


def echo(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def router_cookie(response: httpx.Response) -> str | None:
    """The router's Set-Cookie among the response's (the application sets its own too)."""
    found = [
        c for c in response.headers.get_list("set-cookie") if c.startswith("georouter_session=")
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def header(seen: dict[str, object], name: str) -> list[str]:
    pairs = seen["headers"]
    assert isinstance(pairs, list)
    return [v for k, v in pairs if k == name]


def test_a_request_reaches_its_cluster_intact_and_the_answer_comes_back_intact(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    edge = make_edge(write_config(proxy_config([("eu-west", app)], redis_server)), api_prefix=API)
    body = bytes(range(256)) * 40
    target = "/app/a%2Fb/caf%C3%A9;x=1?q=1&q=2&empty=&sp=a+b%20c"
    response = send(
        edge,
        "POST",
        target,
        content=body,
        headers={"x-custom": "one", "content-type": "application/x-test"},
    )
    seen = echo(response)
    assert seen["method"] == "POST"
    # The target exactly as the client wrote it: no decoding, no re-encoding.
    assert seen["target"] == target
    assert seen["body_bytes"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header(seen, "x-custom") == ["one"]
    assert header(seen, "content-type") == ["application/x-test"]
    assert response.headers["x-app"] == "kept"
    assert response.headers["set-cookie"].startswith("app=eu-west")  # the app's own, untouched
    assert response.headers["x-georouter-cluster"] == "eu-west"
    assert response.headers["x-georouter-reason"] in ("fallback", "nearest")


def test_the_routers_endpoints_live_under_the_api_prefix_and_never_shadow_the_app(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    edge = make_edge(write_config(proxy_config([("eu-west", app)], redis_server)), api_prefix=API)
    for path in ("/healthz", "/metrics", "/v1/route", "/v1/clusters", "/openapi.json"):
        assert echo(send(edge, "GET", path))["target"] == path, f"{path} must be the application's"
    assert send(edge, "GET", "/_georouter/healthz").json() == {"status": "ok"}
    assert send(edge, "GET", "/_georouter/readyz").json() == {"ready": True}
    routed = send(edge, "GET", "/_georouter/v1/route", params={"ip": "81.2.69.160"}).json()
    assert routed["cluster"] == "eu-west"
    assert "georouter_decisions_total" in send(edge, "GET", "/_georouter/metrics").text
    missing = send(edge, "GET", "/_georouter/no-such-endpoint")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_forwarding_headers_are_the_edges_and_cannot_be_spoofed_or_stripped(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    edge = make_edge(write_config(proxy_config([("eu-west", app)], redis_server)), api_prefix=API)
    seen = echo(
        send(
            edge,
            "GET",
            "/whoami",
            headers={
                # An untrusted client's claims, and the Connection trick: naming the
                # edge's own headers as hop-by-hop must not remove them.
                "x-forwarded-for": "6.6.6.6",
                "forwarded": "for=6.6.6.6",
                "x-forwarded-proto": "https",
                "connection": "x-forwarded-for, forwarded, x-private",
                "x-private": "hop-only",
                "keep-alive": "timeout=5",
                "proxy-authorization": "Basic Zm9vOmJhcg==",
                "via": "1.0 earlier-proxy",
            },
        )
    )
    port = edge.url.rsplit(":", 1)[1]
    assert header(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert header(seen, "x-forwarded-proto") == ["http"]
    assert header(seen, "x-forwarded-host") == [f"127.0.0.1:{port}"]
    assert header(seen, "forwarded") == [f'for=127.0.0.1;proto=http;host="127.0.0.1:{port}"']
    # Via is end to end: the earlier proxy's entry stays, the edge's follows it.
    assert ", ".join(header(seen, "via")) == "1.0 earlier-proxy, 1.1 georouter"
    for hop_only in ("x-private", "keep-alive", "proxy-authorization", "connection"):
        assert header(seen, hop_only) == [], hop_only
    # The client's Host is passed through unless the operator asks otherwise.
    assert header(seen, "host") == [f"127.0.0.1:{port}"]


def test_a_trusted_proxys_chain_is_kept_and_the_cluster_host_sent_when_asked(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    text = proxy_config(
        [("eu-west", app)],
        redis_server,
        router={"trusted_proxies": ["127.0.0.1/32"]},
        proxy={"preserve_host": False},
    )
    edge = make_edge(write_config(text), api_prefix=API)
    seen = echo(
        send(
            edge,
            "GET",
            "/",
            headers={
                "x-forwarded-for": "6.6.6.6, 81.2.69.160",
                "x-forwarded-proto": "https",
                "x-forwarded-host": "shop.example",
            },
        )
    )
    # 81.2.69.160 reached the trusted proxy 127.0.0.1; what it was told is not vouched for.
    assert header(seen, "x-forwarded-for") == ["81.2.69.160, 127.0.0.1"]
    assert header(seen, "x-forwarded-proto") == ["https"]
    assert header(seen, "x-forwarded-host") == ["shop.example"]
    assert header(seen, "forwarded") == [
        "for=81.2.69.160, for=127.0.0.1;proto=https;host=shop.example"
    ]
    assert header(seen, "host") == [app.url.removeprefix("http://")]


def test_a_new_client_gets_a_signed_cookie_and_its_session_stays_on_its_cluster(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    west, central = upstreams("eu-west"), upstreams("eu-central")
    edge = make_edge(
        write_config(proxy_config([("eu-west", west), ("eu-central", central)], redis_server)),
        env={"GEOROUTER_SESSION_KEYS": "k" * 32},
        api_prefix=API,
    )
    first = send(edge, "GET", "/cart")
    cookie = router_cookie(first)
    name_value, *attributes = (part.strip() for part in cookie.split(";"))
    assert name_value.startswith("georouter_session=")
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes  # cookie_secure = false in this config
    value = name_value.split("=", 1)[1]
    session_id, signature = value.rsplit(".", 1)
    # 128 random bits, and an HMAC-SHA256.
    assert len(session_id) == 22
    assert len(signature) == 43
    home = first.headers["x-georouter-cluster"]
    client = redis_server.client()
    keys_before = set(client.keys("*"))
    for _ in range(5):
        again = httpx.get(f"{edge.url}/cart", headers={"cookie": f"georouter_session={value}"})
        assert again.headers["x-georouter-cluster"] == home
        assert again.headers["x-georouter-reason"] == "sticky"
        assert "set-cookie" not in {k for k, _ in again.headers.multi_items() if k != "set-cookie"}
        assert all(
            not c.startswith("georouter_session") for c in again.headers.get_list("set-cookie")
        )
    assert set(client.keys("*")) == keys_before

    # A stolen id with a made-up signature is not that session, and an invented id
    # with one creates no Redis key: both are given a new cookie instead.
    for forged_id in (session_id, "invented-session-id"):
        replaced = send(
            edge, "GET", "/cart", headers={"cookie": f"georouter_session={forged_id}.{'A' * 43}"}
        )
        assert replaced.headers["x-georouter-reason"] != "sticky"
        new_cookie = router_cookie(replaced)
        assert new_cookie is not None
        assert not new_cookie.startswith(f"georouter_session={forged_id}.")
    assert all("invented-session-id" not in key for key in client.keys("*"))


def test_three_hundred_sessions_started_at_once_each_stay_where_they_began(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    """Hundreds of new sessions at once at one edge, each followed at a second edge."""
    west, central = upstreams("eu-west"), upstreams("eu-central")
    text = proxy_config(
        [("eu-west", west), ("eu-central", central)],
        redis_server,
        # One test client is one address: its new-session budget is not what is tested.
        limits={"new_sessions_per_s": 0},
    )
    keys = {"GEOROUTER_SESSION_KEYS": "s" * 32}
    first, second = (make_edge(write_config(text), env=keys, api_prefix=API) for _ in range(2))

    async def start_and_follow(n: int) -> list[tuple[str, str, str]]:
        # Idle connections expire on the client first (the edge closes them after
        # [limits] header_timeout_s), as a browser's do.
        limits = httpx.Limits(max_connections=100, keepalive_expiry=1)
        async with (
            httpx.AsyncClient(limits=limits, timeout=30) as a,
            httpx.AsyncClient(limits=limits, timeout=30) as b,
        ):

            async def one(i: int) -> tuple[str, str, str]:
                r = await a.get(f"{first.url}/start/{i}")
                assert r.status_code == 200, r.text
                value = r.cookies["georouter_session"]
                again = await b.get(
                    f"{second.url}/next/{i}", headers={"cookie": f"georouter_session={value}"}
                )
                return value, r.headers["x-georouter-cluster"], again.headers["x-georouter-cluster"]

            return await asyncio.gather(*(one(i) for i in range(n)))

    results = asyncio.run(start_and_follow(300))
    assert len({value for value, _, _ in results}) == 300
    moved = [(s, a, b) for s, a, b in results if a != b]
    assert moved == []


def test_an_unreachable_cluster_is_retried_on_the_next_and_the_session_moves_there(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    dead, health, alive = upstreams("dead"), upstreams("health"), upstreams("eu-central")
    dead_url = dead.url
    dead.stop()  # its port now refuses connections; its probes still pass elsewhere
    text = proxy_config([("eu-west", dead, health), ("eu-central", alive)], redis_server)
    edge = make_edge(write_config(text.replace(dead.url, dead_url)), api_prefix=API)
    for method in ("GET", "POST"):
        response = send(edge, method, "/pay", content=b"x" * 100)
        # Nothing reached the dead cluster, so even a POST may go elsewhere.
        assert echo(response)["cluster"] == "eu-central"
        assert response.headers["x-georouter-reason"] == "failover"
        value = response.cookies["georouter_session"]
        again = httpx.get(f"{edge.url}/pay", headers={"cookie": f"georouter_session={value}"})
        assert again.headers["x-georouter-cluster"] == "eu-central"
        assert again.headers["x-georouter-reason"] == "sticky"
    metrics = send(edge, "GET", "/_georouter/metrics").text
    assert 'georouter_upstream_failures_total{cluster="eu-west",failure="connect"}' in metrics


def test_a_post_whose_body_was_sent_is_not_retried_and_the_error_names_the_cluster(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    broken, health, other = upstreams("broken"), upstreams("health"), upstreams("eu-central")
    broken.mode = "reset"
    text = proxy_config([("eu-west", broken, health), ("eu-central", other)], redis_server)
    edge = make_edge(write_config(text), api_prefix=API)
    posted = send(edge, "POST", "/order", content=b"one order")
    assert posted.status_code == 502
    assert posted.json()["error"] == "upstream_failed"
    assert posted.json()["cluster"] == "eu-west"
    assert other.requests_to("/order") == 0 if hasattr(other, "requests_to") else True
    assert not [s for s in other.seen if s["target"] == "/order"]
    # A GET may be repeated: it goes on to the next cluster.
    got = send(edge, "GET", "/order")
    assert echo(got)["cluster"] == "eu-central"
    assert got.headers["x-georouter-reason"] == "failover"


def test_a_cluster_that_never_answers_is_a_504_within_the_read_timeout(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    silent, health = upstreams("silent"), upstreams("health")
    silent.mode = "hang"
    text = proxy_config(
        [("eu-west", silent, health)], redis_server, proxy={"read_timeout_s": 0.5, "retries": 0}
    )
    edge = make_edge(write_config(text), api_prefix=API)
    started = time.monotonic()
    response = send(edge, "POST", "/slow-report", content=b"{}")
    took = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"
    assert response.json()["cluster"] == "eu-west"
    assert took < 5, f"the 0.5 s read timeout took {took:.1f} s"


def test_bodies_over_the_limit_are_413_declared_or_chunked(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    text = proxy_config([("eu-west", app)], redis_server, proxy={"max_body_bytes": 1000})
    edge = make_edge(write_config(text), api_prefix=API)
    declared = send(edge, "POST", "/upload", content=b"x" * 2000)
    assert declared.status_code == 413
    assert declared.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 100

    streamed = httpx.post(f"{edge.url}/upload", content=chunks())
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "body_too_large"
    assert echo(send(edge, "POST", "/upload", content=b"z" * 1000))["body_bytes"] == 1000
    # An API request still has the API's own limit, not the proxy's.
    assert (
        send(edge, "POST", "/_georouter/v1/route", content=b"{}" + b" " * 2000).status_code == 400
    )


def test_a_client_that_hangs_up_mid_response_closes_the_upstream_at_once(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    edge = make_edge(write_config(proxy_config([("eu-west", app)], redis_server)), api_prefix=API)
    with httpx.Client(timeout=5) as client, client.stream("GET", f"{edge.url}/slow") as response:
        assert response.status_code == 200
        next(response.iter_raw())
    # The stream is closed: the edge must stop reading from the cluster, and the
    # cluster sees its writes fail, long before its 30 s stream would end.
    assert app.abort_seen.wait(10), "the cluster kept streaming to an edge whose client left"


def test_a_client_that_hangs_up_before_the_answer_closes_the_upstream_at_once(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    silent, health = upstreams("silent"), upstreams("health")
    silent.mode = "hang"
    edge = make_edge(
        write_config(proxy_config([("eu-west", silent, health)], redis_server)), api_prefix=API
    )
    # The read timeout is 60 s: only the client leaving can end the exchange this soon.
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{edge.url}/report", timeout=0.5)
    assert silent.abort_seen.wait(10), "the edge kept waiting on a cluster for a client that left"


def test_a_cluster_breaking_off_its_body_ends_the_clients_response_short(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    edge = make_edge(write_config(proxy_config([("eu-west", app)], redis_server)), api_prefix=API)
    with pytest.raises(httpx.RemoteProtocolError):
        send(edge, "GET", "/break")
    # The edge itself is fine, and says what happened in its log.
    assert echo(send(edge, "GET", "/after"))["cluster"] == "eu-west"
    wait_for(
        lambda: "broke off its response" in edge.log() or None, timeout_s=5, what="the log line"
    )


def test_redirect_mode_sends_the_client_to_its_cluster_with_a_cookie(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    text = proxy_config([("eu-west", app)], redis_server, router={"mode": "redirect"})
    edge = make_edge(write_config(text), api_prefix=API)
    response = send(edge, "GET", "/docs/a%20b?x=1&y=2")
    assert response.status_code == 307
    assert response.headers["location"] == f"{app.url}/docs/a%20b?x=1&y=2"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-georouter-cluster"] == "eu-west"
    assert response.cookies["georouter_session"]
    assert json.loads(response.text)["cluster"] == "eu-west"
    assert app.requests == len([s for s in app.seen if s["target"] == "/healthz"])


def test_an_admin_listener_of_its_own_leaves_every_path_of_the_main_one_to_the_app(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    app = upstreams("eu-west")
    port = free_port()
    edge = make_edge(
        write_config(proxy_config([("eu-west", app)], redis_server)),
        args=("--admin-listen", f"127.0.0.1:{port}"),
        ready=False,
    )
    admin = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: f"admin endpoints on {admin}" in edge.log() or None,
        timeout_s=10,
        what="the admin listener",
    )
    wait_for(
        lambda: httpx.get(f"{admin}/readyz").status_code == 200 or None,
        timeout_s=10,
        what="readiness on the admin listener",
    )
    assert httpx.get(f"{admin}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{admin}/v1/clusters").json()["clusters"][0]["name"] == "eu-west"
    for path in ("/healthz", "/_georouter/healthz", "/v1/clusters"):
        assert echo(send(edge, "GET", path))["target"] == path


def test_an_admin_listener_is_refused_in_api_mode_naming_the_option(
    write_config: Callable[[str], Path], redis_server: RedisServer
) -> None:
    text = config_text(
        [{"name": "a", "url": "http://127.0.0.1:9", "lat": 1.0, "lon": 2.0}],
        sessions={"redis_url": redis_server.url},
    )
    done = subprocess.run(
        georouter_command(
            "serve", "--config", str(write_config(text)), "--admin-listen", "127.0.0.1:0"
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--admin-listen: only in proxy and redirect modes" in done.stderr
    assert "Traceback" not in done.stderr
