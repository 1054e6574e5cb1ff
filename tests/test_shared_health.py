"""Health the edges agree on (``[health] shared``), seen from outside real edges.

Three real `georouter serve` edges share one real redis-server; real stand-in
clusters answer on loopback. One edge's file sends its probes of eu-west to a
dead loopback port (the cluster's own address is unchanged), so eu-west is
unreachable from that edge only: there it is "down from here", new sessions
go elsewhere and pinned ones keep their pin; at the other two it stays up.
When eu-west really dies, every edge agrees it is down and fails over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from georouter.config import HealthSettings, SessionSettings
from georouter.core.health import HealthState, Status, unroutable
from georouter.core.pin import Pin
from georouter.demo.standin import StandIn
from georouter.sessions.sharedhealth import SharedHealth
from tests.harness import SITES, Edge, config_text, wait_for
from tests.redis_harness import RedisServer, free_port

LONDON = "81.2.69.142"  # nearest: eu-west, then eu-central
NAMES = ("eu-west", "eu-central", "us-east")
# Fast enough for seconds-long tests, with room for a busy machine: a probe may be
# slow twice in a row without taking a healthy cluster down (fall = 3), and an
# edge's report may be late by seconds before it stops counting (10 intervals).
HEALTH: dict[str, object] = {
    "interval_s": 0.2,
    "timeout_s": 0.2,
    "rise": 1,
    "fall": 3,
    "shared_window": 10,
}
SETTLE_S = 15.0


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins(*NAMES)


@pytest.fixture
def configs(
    standins: dict[str, StandIn], redis_server: RedisServer, write_config: Callable[[str], Path]
) -> Callable[..., Path]:
    """A file for an edge: ``blind`` sends its eu-west probes to a dead port."""

    def make(*, shared: bool, blind: bool = False, quorum: float = 0.5) -> Path:
        clusters: list[dict[str, object]] = []
        for name, s in standins.items():
            entry: dict[str, object] = {
                "name": name,
                "url": s.url,
                "lat": SITES[name][0],
                "lon": SITES[name][1],
            }
            if blind and name == "eu-west":
                entry["health_url"] = f"http://127.0.0.1:{free_port()}/healthz"
            clusters.append(entry)
        text = config_text(
            clusters,
            router={"fallback": "us-east"},
            health={**HEALTH, "shared": shared, "quorum": quorum},
            sessions={"redis_url": redis_server.url, "command_timeout_s": 1},
            limits={"new_sessions_per_s": 0},
        )
        return write_config(text)

    return make


def route(edge: Edge, session: str) -> dict[str, object]:
    response = edge.get("/v1/route", params={"ip": LONDON, "session": session, "explain": "1"})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def cluster(edge: Edge, name: str) -> dict[str, object]:
    body = edge.get("/v1/clusters").json()
    found: dict[str, object] = next(c for c in body["clusters"] if c["name"] == name)
    return found


def verdict(edge: Edge, name: str) -> str | None:
    shared = cluster(edge, name)["shared"]
    if shared is None:
        return None
    assert isinstance(shared, dict)
    return str(shared["verdict"])


def edges_seen(edge: Edge, name: str) -> int:
    shared = cluster(edge, name)["shared"]
    assert isinstance(shared, dict)
    edges = shared["edges"]
    assert isinstance(edges, list)
    return len(edges)


def pin_in_redis(redis_server: RedisServer, session: str) -> str | None:
    with redis_server.client() as r:
        raw = r.get(f"georouter:s:{session}")
    pin = None if raw is None else Pin.decode(str(raw))
    return None if pin is None else pin.cluster


def new_session() -> str:
    return f"shared-{uuid.uuid4().hex[:16]}"


def test_a_cluster_one_edge_cannot_reach_is_down_from_there_only_until_it_really_dies(
    configs: Callable[..., Path],
    make_edge: Callable[..., Edge],
    redis_server: RedisServer,
    standins: dict[str, StandIn],
) -> None:
    seeing = configs(shared=True)
    a, b = make_edge(seeing), make_edge(seeing)
    blind = make_edge(configs(shared=True, blind=True))
    everyone = (a, b, blind)
    wait_for(
        lambda: all(edges_seen(e, "eu-west") == 3 for e in everyone),
        timeout_s=SETTLE_S,
        what="every edge to count three edges' reports",
    )
    wait_for(
        lambda: verdict(blind, "eu-west") == "down_from_here",
        timeout_s=SETTLE_S,
        what="eu-west down from the blind edge only",
    )
    for edge in (a, b):
        assert verdict(edge, "eu-west") == "up"
        assert cluster(edge, "eu-west")["routable"] is True
    seen_at_blind = cluster(blind, "eu-west")
    assert seen_at_blind["routable"] is False
    assert seen_at_blind["why_not"] == "down from here only; up for 2 of 3 edges"
    shared = seen_at_blind["shared"]
    assert isinstance(shared, dict)
    states = {v["edge"]: v["state"] for v in shared["edges"]}
    assert sorted(states.values()) == ["down", "up", "up"]
    status = blind.get("/v1/clusters").json()["shared_health"]
    assert (status["on"], status["redis"], status["edges_reporting"]) == (True, "ok", 3)
    assert "georouter_health_edges_reporting 3.0" in blind.get("/metrics").text
    # Named by host and listening port, so the three edges on one host are three.
    assert status["edge"].endswith(":" + blind.url.rsplit(":", 1)[1])

    # The seeing edges keep sending new sessions to eu-west; the blind one does not.
    pinned = []
    for edge in (a, b):
        for _ in range(3):
            session = new_session()
            body = route(edge, session)
            assert (body["cluster"], body["reason"]) == ("eu-west", "nearest"), body
            pinned.append(session)
    for _ in range(3):
        body = route(blind, new_session())
        assert body["cluster"] == "eu-central", body
        candidates = body["explain"]
        assert isinstance(candidates, list)
        explained = {c["cluster"]: c["why"] for c in candidates}
        assert "down from here only" in str(explained["eu-west"]), explained

    # Sessions pinned to eu-west stay pinned there when the blind edge sees them.
    for session in pinned:
        body = route(blind, session)
        session_view = body["session"]
        assert isinstance(session_view, dict)
        assert session_view["pinned"] == "eu-west", body
        # ...served where the blind edge can reach, its pin untouched.
        assert (body["cluster"], body["reason"]) == ("eu-central", "detour"), body
        assert pin_in_redis(redis_server, session) == "eu-west"
        # ...and the other edges still serve them there.
        assert route(a, session)["cluster"] == "eu-west"

    # eu-west dies for real: every edge agrees and its sessions fail over, once.
    standins["eu-west"].stop()
    wait_for(
        lambda: all(verdict(e, "eu-west") == "down" for e in everyone),
        timeout_s=SETTLE_S,
        what="every edge to agree eu-west is down",
    )
    wait_for(
        lambda: cluster(a, "eu-west")["why_not"] == "down for 3 of 3 edges",
        timeout_s=SETTLE_S,
        what="every edge's report of eu-west down to reach edge a",
    )
    for session in pinned:
        moved = route(a, session)
        assert (moved["cluster"], moved["reason"]) == ("eu-central", "failover"), moved
        assert pin_in_redis(redis_server, session) == "eu-central"
        for edge in (b, blind):
            again = route(edge, session)
            assert (again["cluster"], again["reason"]) == ("eu-central", "sticky"), again
    for edge in everyone:
        assert route(edge, new_session())["cluster"] == "eu-central"


def test_without_sharing_the_blind_edge_fails_sessions_over_on_its_own_view(
    configs: Callable[..., Path], make_edge: Callable[..., Edge], redis_server: RedisServer
) -> None:
    a = make_edge(configs(shared=False))
    blind = make_edge(configs(shared=False, blind=True))
    wait_for(
        lambda: cluster(blind, "eu-west")["why_not"] == "down",
        timeout_s=SETTLE_S,
        what="eu-west down at the blind edge",
    )
    for edge in (a, blind):
        assert verdict(edge, "eu-west") is None
        assert edge.get("/v1/clusters").json()["shared_health"]["on"] is False
    assert cluster(a, "eu-west")["routable"] is True
    session = new_session()
    assert route(a, session)["cluster"] == "eu-west"
    # Today's behaviour: one edge's view alone moves the session.
    moved = route(blind, session)
    assert (moved["cluster"], moved["reason"]) == ("eu-central", "failover"), moved
    assert pin_in_redis(redis_server, session) == "eu-central"


def test_with_redis_gone_an_edge_decides_on_its_own_view_and_says_so(
    configs: Callable[..., Path], make_edge: Callable[..., Edge], redis_server: RedisServer
) -> None:
    # Two edges: a strict majority, so one edge's view alone takes nothing down.
    a = make_edge(configs(shared=True, quorum=0.6))
    blind = make_edge(configs(shared=True, blind=True, quorum=0.6))
    wait_for(
        lambda: verdict(blind, "eu-west") == "down_from_here",
        timeout_s=SETTLE_S,
        what="eu-west down from the blind edge only",
    )
    redis_server.stop()
    wait_for(
        lambda: str(blind.get("/v1/clusters").json()["shared_health"]["redis"]).startswith(
            "unavailable"
        ),
        timeout_s=SETTLE_S,
        what="the blind edge to report Redis unavailable",
    )
    # Alone, the blind edge's own view decides, as without sharing.
    assert verdict(blind, "eu-west") == "down"
    assert cluster(blind, "eu-west")["why_not"] == "down"
    assert blind.get("/v1/clusters").json()["shared_health"]["edges_reporting"] == 1
    wait_for(
        lambda: a.get("/v1/clusters").json()["shared_health"]["edges_reporting"] == 1,
        timeout_s=SETTLE_S,
        what="the other edge to count itself alone",
    )
    assert verdict(a, "eu-west") == "up"
    # Routing goes on without Redis: new sessions still get an answer.
    try:
        body = route(blind, new_session())
        assert body["cluster"] == "eu-central", body
    finally:
        redis_server.start()


def test_the_workers_of_one_edge_report_as_one_edge(
    configs: Callable[..., Path], make_edge: Callable[..., Edge]
) -> None:
    path = configs(shared=True)
    single, workers = make_edge(path), make_edge(path, args=("--workers", "2"))

    def reporting(edge: Edge) -> object:
        return edge.get("/v1/clusters").json()["shared_health"]["edges_reporting"]

    wait_for(
        lambda: reporting(single) == 2 and reporting(workers) == 2,
        timeout_s=SETTLE_S,
        what="both edges to count two edges",
    )
    # Every answer (from either worker) counts two, never three.
    for _ in range(10):
        assert reporting(workers) == 2
        assert reporting(single) == 2


def states_of(**seen: Status) -> dict[str, HealthState]:
    return {name: HealthState(status=status) for name, status in seen.items()}


def shared_at(
    client: Any, edge: str, states: dict[str, HealthState], health: HealthSettings
) -> SharedHealth:
    return SharedHealth(
        client,
        SessionSettings(),
        edge=edge,
        settings=lambda: health,
        names=lambda: NAMES,
        states=lambda: states,
        unroutable=lambda: unroutable(states),
    )


@pytest.mark.anyio
async def test_reports_are_stamped_by_redis_and_malformed_or_long_gone_ones_ignored(
    redis_server: RedisServer,
) -> None:
    health = HealthSettings(shared=True, interval_s=1.0)
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        here = states_of(**{"eu-west": Status.DOWN, "eu-central": Status.UP})
        there = states_of(**{"eu-west": Status.UP, "eu-central": Status.UP})
        a = shared_at(client, "edge-a", here, health)
        b = shared_at(client, "edge-b", there, health)
        c = shared_at(client, "edge-c", there, health)
        await client.hset(a.key, "garbage", "not a report")
        await client.hset(a.key, "gone", '1 {"eu-west": "down"}')
        await b.exchange()
        await c.exchange()
        await a.exchange()
        found = a.agreement()
        assert found is not None
        assert found.edges == 3
        assert dict(found.here_only) == {"eu-west": "down from here only; up for 2 of 3 edges"}
        # Not probed by anyone: as without sharing.
        assert dict(found.down) == {"us-east": "not probed yet"}
        fields = set(await client.hkeys(a.key))
        assert fields == {b"edge-a", b"edge-b", b"edge-c", b"garbage"}, fields
        raw = await client.hget(a.key, "edge-a")
        assert isinstance(raw, bytes)
        stamp = int(raw.split(b" ")[0])
        seconds, micros = await client.time()
        assert 0 <= seconds * 1000 + micros // 1000 - stamp < 5000
    finally:
        await client.aclose()
