"""Sessions on the data path beyond the router's cookie: ids the application issues
(learned), ids carried in the URL, and clusters that send a request on (replay hints)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.harness import Edge
from tests.redis_harness import RedisServer
from tests.test_proxy import API, echo, proxy_config, router_cookie, send
from tests.upstream import Upstream

LEARN = {"learn": ["cookie:JSESSIONID", "header:Mcp-Session-Id"]}


def test_an_id_the_application_issues_keeps_its_session_on_that_cluster_at_every_edge(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    west, central = upstreams("eu-west"), upstreams("eu-central")
    central.extra_headers = [
        ("set-cookie", "JSESSIONID=j-1234; Path=/; HttpOnly"),
        ("mcp-session-id", "mcp-abcd"),
    ]
    # Edge one prefers eu-central, edge two eu-west (loopback clients go to the fallback).
    one = make_edge(
        write_config(
            proxy_config([("eu-central", central), ("eu-west", west)], redis_server, sessions=LEARN)
        ),
        api_prefix=API,
    )
    two = make_edge(
        write_config(
            proxy_config([("eu-west", west), ("eu-central", central)], redis_server, sessions=LEARN)
        ),
        api_prefix=API,
    )
    first = send(one, "GET", "/login")
    assert echo(first)["cluster"] == "eu-central"
    # The application has its own id: the router adds no cookie.
    assert router_cookie(first) is None
    assert echo(send(two, "GET", "/anonymous"))["cluster"] == "eu-west"
    by_cookie = send(two, "GET", "/cart", headers={"cookie": "JSESSIONID=j-1234"})
    assert echo(by_cookie)["cluster"] == "eu-central"
    assert by_cookie.headers["x-georouter-reason"] == "sticky"
    by_header = send(two, "POST", "/mcp", headers={"mcp-session-id": "mcp-abcd"})
    assert echo(by_header)["cluster"] == "eu-central"
    assert by_header.headers["x-georouter-reason"] == "sticky"
    # Redis holds digests of the application's ids, never the ids themselves.
    keys = redis_server.client().keys("*")
    assert keys
    assert not [k for k in keys if "j-1234" in k or "mcp-abcd" in k]


def test_a_session_id_in_the_url_keeps_the_session_on_its_cluster(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    west, central = upstreams("eu-west"), upstreams("eu-central")
    sessions = {"query": "_s", "unsigned_sources": ["query"]}
    one = make_edge(
        write_config(
            proxy_config(
                [("eu-central", central), ("eu-west", west)], redis_server, sessions=sessions
            )
        ),
        api_prefix=API,
    )
    two = make_edge(
        write_config(
            proxy_config(
                [("eu-west", west), ("eu-central", central)], redis_server, sessions=sessions
            )
        ),
        api_prefix=API,
    )
    started = send(one, "GET", "/seaside?_s=Qx7fK2&_k=1")
    assert echo(started)["cluster"] == "eu-central"
    assert router_cookie(started) is None
    followed = send(two, "GET", "/seaside?_k=2&_s=Qx7fK2")
    assert echo(followed)["cluster"] == "eu-central"
    assert followed.headers["x-georouter-reason"] == "sticky"
    # The query reaches the application as it was written.
    assert echo(followed)["target"] == "/seaside?_k=2&_s=Qx7fK2"


def test_a_replay_hint_sends_the_request_on_and_moves_its_session_once(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    west, central = upstreams("eu-west"), upstreams("eu-central")
    west.extra_headers = [("georouter-replay", "eu-central")]
    # The second cluster's own hint is not followed: one replay per request.
    central.extra_headers = [("georouter-replay", "eu-west")]
    edge = make_edge(
        write_config(proxy_config([("eu-west", west), ("eu-central", central)], redis_server)),
        api_prefix=API,
    )
    body = b"tenant=acme"
    replayed = send(edge, "POST", "/tenant/acme", content=body)
    seen = echo(replayed)
    assert seen["cluster"] == "eu-central"
    assert seen["body_bytes"] == len(body)
    assert replayed.headers["x-georouter-reason"] == "replay"
    assert replayed.headers["x-georouter-cluster"] == "eu-central"
    assert "georouter-replay" not in replayed.headers
    cookie = router_cookie(replayed)
    assert cookie is not None
    session = cookie.split(";")[0]
    asked_west = len([s for s in west.seen if s["target"] == "/tenant/acme"])
    assert asked_west == 1
    central.extra_headers = []
    again = send(edge, "GET", "/tenant/acme", headers={"cookie": session})
    assert echo(again)["cluster"] == "eu-central"
    assert again.headers["x-georouter-reason"] == "sticky"
    assert len([s for s in west.seen if s["target"] == "/tenant/acme"]) == asked_west


def test_replay_hints_that_cannot_be_followed_are_ignored_and_never_shown(
    upstreams: Callable[..., Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    west, central = upstreams("eu-west"), upstreams("eu-central")
    west.extra_headers = [("georouter-replay", "nowhere")]
    text = proxy_config(
        [("eu-west", west), ("eu-central", central)],
        redis_server,
        proxy={"replay_body_bytes": 100},
    )
    edge = make_edge(write_config(text), api_prefix=API)
    unknown = send(edge, "GET", "/a")
    assert echo(unknown)["cluster"] == "eu-west"
    assert "georouter-replay" not in unknown.headers
    west.extra_headers = [("georouter-replay", "eu-central")]
    # A body over replay_body_bytes was not kept: it cannot be sent again.
    too_big = send(edge, "POST", "/b", content=b"x" * 101)
    assert echo(too_big)["cluster"] == "eu-west"
    assert too_big.headers["x-georouter-reason"] != "replay"
    assert "replay hint naming 'nowhere', ignored: no cluster has that name" in edge.log()
    assert "over [proxy] replay_body_bytes (100)" in edge.log()
    assert not [s for s in central.seen if s["target"] in ("/a", "/b")]
