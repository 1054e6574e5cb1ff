"""Drains and overrides through the admin API, shared by every edge through Redis.

Real `georouter serve` processes in proxy mode, one real Redis, real application
servers: what one edge is told holds at every edge within a second, an edge
started later reads it at start, sessions pinned to a draining cluster stay until
its deadline, an override ends by itself, and bad requests get clear answers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.harness import Edge, wait_for
from tests.proxy_pair import API, Pair, cluster_status, reason, served_by
from tests.redis_harness import RedisServer
from tests.upstream import Upstream

TOKEN = "drain-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def edges(
    upstreams: Callable[[str], Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> Callable[[], Edge]:
    """Start one more edge of the same two clusters and Redis, with the admin token."""
    path = write_config(Pair(upstreams).config(redis_server))
    return lambda: make_edge(path, api_prefix=API, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})


def admin(
    edge: Edge, method: str, path: str, body: object = None, **kwargs: object
) -> httpx.Response:
    headers = kwargs.pop("headers", AUTH)
    return httpx.request(  # type: ignore[arg-type]
        method, edge.url + API + path, json=body, headers=headers, timeout=10, **kwargs
    )


def test_a_drain_at_one_edge_keeps_new_sessions_off_the_cluster_at_every_edge(
    edges: Callable[[], Edge],
) -> None:
    one, other = edges(), edges()
    assert served_by(one) == served_by(other) == "a"
    drained = admin(one, "POST", "/v1/clusters/a/drain", {"deadline_s": 60})
    assert drained.status_code == 200, drained.text
    assert drained.json()["drain"]["pinned_move_in_s"] == 60
    # Announced through Redis: the other edge holds it within about a second.
    wait_for(lambda: served_by(other) == "b", timeout_s=2, what="the drain at the other edge")
    assert [served_by(one) for _ in range(3)] == ["b"] * 3
    assert [served_by(other) for _ in range(3)] == ["b"] * 3
    shown = cluster_status(other, "a")
    drain = shown["drain"]
    assert isinstance(drain, dict)
    assert drain["by"] == "127.0.0.1"
    assert shown["routable"] is False
    assert str(shown["why_not"]).startswith("draining: no new sessions")
    assert "admin: cluster a drained by 127.0.0.1" in one.log()


def test_sessions_pinned_to_a_draining_cluster_stay_until_the_deadline_then_move(
    edges: Callable[[], Edge],
) -> None:
    one, other = edges(), edges()
    assert reason(one, "pinned-before-the-drain")[0] == "a"
    assert admin(one, "POST", "/v1/clusters/a/drain", {"deadline_s": 2}).status_code == 200
    wait_for(lambda: served_by(other) == "b", timeout_s=2, what="the drain at the other edge")
    assert reason(other, "pinned-before-the-drain") == ("a", "sticky")
    assert reason(one, "pinned-before-the-drain") == ("a", "sticky")
    assert reason(other, "new-during-the-drain")[0] == "b"
    moved = wait_for(
        lambda: (found := reason(other, "pinned-before-the-drain"))[0] == "b" and found,
        timeout_s=5,
        what="the pinned session moving at the deadline",
    )
    assert moved == ("b", "failover")
    assert reason(one, "pinned-before-the-drain") == ("b", "sticky")


def test_undrain_returns_the_cluster_to_new_sessions_everywhere(edges: Callable[[], Edge]) -> None:
    one, other = edges(), edges()
    admin(one, "POST", "/v1/clusters/a/drain", {"deadline_s": 60})
    wait_for(lambda: served_by(other) == "b", timeout_s=2, what="the drain at the other edge")
    undrained = admin(other, "POST", "/v1/clusters/a/undrain")
    assert undrained.json() == {"cluster": "a", "drain": None, "was_drained": True}
    wait_for(lambda: served_by(one) == "a", timeout_s=2, what="the undrain at the first edge")


def test_an_edge_started_after_a_drain_holds_it_from_its_first_request(
    edges: Callable[[], Edge],
) -> None:
    one = edges()
    assert admin(one, "POST", "/v1/clusters/a/drain", {}).status_code == 200
    later = edges()
    assert served_by(later) == "b"
    drain = cluster_status(later, "a")["drain"]
    assert isinstance(drain, dict)
    assert drain["pinned_move_in_s"] > 590  # the default deadline, 600 s


def test_an_override_down_holds_at_every_edge_and_expires_after_its_ttl(
    edges: Callable[[], Edge],
) -> None:
    one, other = edges(), edges()
    forced = admin(
        one, "POST", "/v1/clusters/a/override", {"state": "down", "ttl_s": 1.5, "reason": "db"}
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["override"]["state"] == "down"
    wait_for(lambda: served_by(other) == "b", timeout_s=2, what="the override at the other edge")
    # Pinned sessions move too: "down" is for everyone.
    assert reason(one, "pinned-anywhere")[0] == "b"
    why = cluster_status(other, "a")["why_not"]
    assert str(why).startswith("overridden down: db (expires in ")
    wait_for(lambda: served_by(other) == "a", timeout_s=5, what="the override expiring")
    assert served_by(one) == "a"
    assert cluster_status(one, "a")["override"] is None


def test_an_override_up_routes_to_a_cluster_its_probes_call_down_until_it_is_deleted(
    upstreams: Callable[[str], Upstream],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    pair = Pair(upstreams)
    path = write_config(pair.config(redis_server))
    edge = make_edge(path, api_prefix=API, env={"GEOROUTER_ADMIN_TOKEN": TOKEN})
    pair.probes["a"].mode = "error"
    wait_for(lambda: served_by(edge) == "b", timeout_s=5, what="a down by its probes")
    assert admin(edge, "POST", "/v1/clusters/a/override", {"state": "up"}).status_code == 200
    assert served_by(edge) == "a"
    ended = admin(edge, "DELETE", "/v1/clusters/a/override")
    assert ended.json() == {"cluster": "a", "override": None, "was_overridden": True}
    assert served_by(edge) == "b"


CALLS = [
    ("POST", "/v1/clusters/a/drain", {"deadline_s": 1}),
    ("POST", "/v1/clusters/a/undrain", None),
    ("POST", "/v1/clusters/a/override", {"state": "down"}),
    ("DELETE", "/v1/clusters/a/override", None),
]


def test_every_cluster_admin_call_refuses_a_missing_wrong_or_non_ascii_token_with_401(
    edges: Callable[[], Edge],
) -> None:
    edge = edges()
    tokens: list[dict[str, str | bytes]] = [
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": "Bearer t\u00f6ken-\u2603".encode()},
        {"authorization": f"Basic {TOKEN}"},
    ]
    for method, path, body in CALLS:
        for headers in tokens:
            answer = admin(edge, method, path, body, headers=headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.json()["error"] == "unauthorized"
    # Nothing was changed by any of them.
    assert served_by(edge) == "a"


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "error"),
    [
        ("POST", "/v1/clusters/nowhere/drain", b"{}", 404, "unknown_cluster"),
        ("POST", "/v1/clusters/nowhere/undrain", b"", 404, "unknown_cluster"),
        ("DELETE", "/v1/clusters/nowhere/override", b"", 404, "unknown_cluster"),
        ("POST", "/v1/clusters/a/drain", b"{not json", 400, "invalid_body"),
        ("POST", "/v1/clusters/a/drain", b'{"deadline_s": -1}', 400, "invalid_body"),
        ("POST", "/v1/clusters/a/drain", b'{"deadline_s": "soon"}', 400, "invalid_body"),
        ("POST", "/v1/clusters/a/drain", b'{"deadline": 5}', 400, "invalid_body"),
        ("POST", "/v1/clusters/a/drain", b"[600]", 400, "invalid_body"),
        ("POST", "/v1/clusters/a/override", b'{"state": "sideways"}', 400, "invalid_body"),
        ("POST", "/v1/clusters/a/override", b"{}", 400, "invalid_body"),
        ("POST", "/v1/clusters/a/override", b'{"state": "down", "ttl_s": 0}', 400, "invalid_body"),
    ],
    ids=[
        "drain-unknown",
        "undrain-unknown",
        "delete-override-unknown",
        "bad-json",
        "negative-deadline",
        "deadline-not-a-number",
        "unknown-field",
        "not-an-object",
        "bad-state",
        "no-state",
        "zero-ttl",
    ],
)
def test_bad_cluster_admin_requests_get_a_clear_json_error(
    edges: Callable[[], Edge], method: str, path: str, content: bytes, status: int, error: str
) -> None:
    edge = edges()
    answer = httpx.request(method, edge.url + API + path, content=content, headers=AUTH, timeout=10)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert served_by(edge) == "a"
