"""The traffic policy from the outside: a real `georouter serve` edge, real stand-in
clusters on loopback that report their load, go down and come back, and a real
redis-server holding the sessions. Spill proportions, failback's stabilize and
ramp with `temporary` sessions going home, panic and the all-down modes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from georouter.core.admission import ramp_share
from georouter.demo.standin import StandIn
from tests.harness import FAST_HEALTH, Edge, cluster_entries, config_text, wait_for
from tests.redis_harness import RedisServer

# A German client of the bundled GeoLite2 database, located to Germany only: ranked
# from the country's point, eu-central first, then eu-west.
GERMAN = "80.156.1.1"
SESSIONS = 400
NO_BUDGET = {"new_sessions_per_s": 100000, "new_sessions_burst": 100000}

Standins = Callable[..., dict[str, StandIn]]
Configs = Callable[[str], Path]
Edges = Callable[..., Edge]


def start(
    make_standins: Standins,
    write_config: Configs,
    make_edge: Edges,
    redis_server: RedisServer | None,
    *,
    router: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> tuple[dict[str, StandIn], Edge]:
    standins = make_standins("us-east", "eu-west", "eu-central")
    sections: dict[str, dict[str, object]] = {
        "router": {"fallback": "us-east", **(router or {})},
        "health": {**FAST_HEALTH, **(health or {})},
        "limits": dict(NO_BUDGET),
    }
    if redis_server is not None:
        sections["sessions"] = {"redis_url": redis_server.url}
    edge = make_edge(write_config(config_text(cluster_entries(standins), **sections)))
    return standins, edge


def batch(edge: Edge, prefix: str, count: int = SESSIONS) -> list[dict[str, Any]]:
    """``count`` sessions of the German client routed in one batch request."""
    asks = [{"ip": GERMAN, "session": f"{prefix}-{n}"} for n in range(count)]
    response = edge.client.post("/v1/route", json={"requests": asks}, timeout=30)
    assert response.status_code == 200, response.text
    decisions: list[dict[str, Any]] = response.json()["decisions"]
    return decisions


def cluster_view(edge: Edge, name: str) -> dict[str, Any]:
    clusters = edge.get("/v1/clusters").json()["clusters"]
    found: dict[str, Any] = next(c for c in clusters if c["name"] == name)
    return found


def share_is(edge: Edge, name: str, share: float) -> bool:
    return bool(cluster_view(edge, name)["new_session_share"]["share"] == pytest.approx(share))


def test_a_loaded_cluster_takes_its_share_of_new_sessions_and_keeps_the_ones_it_has(
    make_standins: Standins, write_config: Configs, make_edge: Edges, redis_server: RedisServer
) -> None:
    standins, edge = start(
        make_standins,
        write_config,
        make_edge,
        redis_server,
        router={"spill_low": 0.8, "spill_high": 0.95},
    )
    standins["eu-central"].load = 0.875  # halfway: half of its new sessions
    wait_for(lambda: share_is(edge, "eu-central", 0.5), timeout_s=10, what="the load to be seen")
    first = batch(edge, "a")
    counts = Counter(d["cluster"] for d in first)
    print(f"\nSPILL load=0.875 share=0.5 sessions={SESSIONS} {dict(counts)}")
    assert set(counts) == {"eu-central", "eu-west"}
    assert 0.42 * SESSIONS <= counts["eu-central"] <= 0.58 * SESSIONS, counts
    assert {d["reason"] for d in first if d["cluster"] == "eu-west"} == {"spill"}
    view = cluster_view(edge, "eu-central")["new_session_share"]
    assert (view["held"], view["share"]) == ("spill", 0.5)
    assert "load 0.88 above spill_low" in view["why"]

    standins["eu-central"].load = 0.99
    wait_for(lambda: share_is(edge, "eu-central", 0.0), timeout_s=10, what="the full load")
    second = batch(edge, "b")
    assert Counter(d["cluster"] for d in second) == Counter({"eu-west": SESSIONS})
    # Its own sessions stay: load decides where new sessions go, not where pins hold.
    again = batch(edge, "a")
    assert [d["cluster"] for d in again] == [d["cluster"] for d in first]
    assert {d["reason"] for d in again} == {"sticky"}
    explained = edge.get("/v1/route", params={"ip": GERMAN, "explain": "1"}).json()
    central = next(c for c in explained["explain"] if c["cluster"] == "eu-central")
    assert central["admission"]["held"] == "spill"
    assert "spill_high" in central["why"]


def test_temporary_sessions_wait_out_stabilize_then_go_home_along_the_ramp(
    make_standins: Standins, write_config: Configs, make_edge: Edges, redis_server: RedisServer
) -> None:
    stabilize_s, ramp_s = 1.5, 4.0
    standins, edge = start(
        make_standins,
        write_config,
        make_edge,
        redis_server,
        router={"on_pinned_down": "temporary"},
        health={"stabilize_s": stabilize_s, "ramp_s": ramp_s},
    )
    assert Counter(d["cluster"] for d in batch(edge, "t")) == Counter({"eu-central": SESSIONS})
    standins["eu-central"].health_status = 503
    wait_for(
        lambda: cluster_view(edge, "eu-central")["health"]["status"] == "down",
        timeout_s=10,
        what="eu-central to go down",
    )
    away = batch(edge, "t")
    assert {(d["cluster"], d["reason"]) for d in away} == {("eu-west", "detour")}
    assert {d["session"]["pinned"] for d in away} == {"eu-central"}

    standins["eu-central"].health_status = 200
    back = wait_for(
        lambda: (h := cluster_view(edge, "eu-central")["health"])["status"] == "up" and h,
        timeout_s=10,
        what="eu-central to come back",
    )
    recovered_at = back["recovered_at"]
    assert isinstance(recovered_at, float)
    home_counts = []
    deadline = time.time() + stabilize_s + ramp_s + 10
    while time.time() < deadline:
        decisions = batch(edge, "t")
        after = time.time()
        home = sum(d["cluster"] == "eu-central" for d in decisions)
        # Never ahead of the schedule (the batch was answered by `after`).
        allowed = ramp_share(after - recovered_at, stabilize_s, ramp_s)
        assert home <= (allowed + 0.06) * SESSIONS, (after - recovered_at, home)
        assert {d["reason"] for d in decisions} <= {"sticky", "detour"}
        home_counts.append(home)
        if home == SESSIONS:
            break
        time.sleep(0.3)
    print(f"\nRAMP stabilize_s={stabilize_s} ramp_s={ramp_s} home per batch: {home_counts}")
    assert home_counts[-1] == SESSIONS, home_counts
    assert home_counts[0] == 0, home_counts
    assert home_counts == sorted(home_counts), home_counts
    # It went home gradually, not all at once.
    assert any(0 < h < SESSIONS for h in home_counts), home_counts


@pytest.mark.parametrize(
    ("mode", "status", "cluster", "reason"),
    [
        pytest.param("503", 503, None, "none", id="all_down_503"),
        pytest.param("fallback", 200, "us-east", "all_down", id="all_down_fallback"),
        pytest.param("ignore_health", 200, "eu-central", "all_down", id="all_down_ignore_health"),
    ],
)
def test_when_every_cluster_is_down_all_down_decides(
    make_standins: Standins,
    write_config: Configs,
    make_edge: Edges,
    mode: str,
    status: int,
    cluster: str | None,
    reason: str,
) -> None:
    standins, edge = start(make_standins, write_config, make_edge, None, router={"all_down": mode})
    for standin in standins.values():
        standin.health_status = 500
    wait_for(
        lambda: edge.get("/v1/clusters").json()["policy"]["routable"] == 0,
        timeout_s=10,
        what="every cluster to go down",
    )
    answer = edge.get("/v1/route", params={"ip": GERMAN, "explain": "1"})
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert (body["cluster"], body["reason"]) == (cluster, reason)
    if cluster is not None:
        chosen = next(c for c in body["explain"] if c["chosen"])
        assert chosen["health_ignored"] == "down"
        assert "all_down" in chosen["why"]
    assert edge.get("/v1/clusters").json()["policy"]["all_down"] == mode


def test_below_panic_below_an_edge_ignores_health_and_says_so(
    make_standins: Standins, write_config: Configs, make_edge: Edges
) -> None:
    standins, edge = start(
        make_standins, write_config, make_edge, None, router={"panic_below": 0.5}
    )
    # The bundled database places this address only to Germany: "country".
    assert edge.get("/v1/route", params={"ip": GERMAN}).json()["reason"] == "country"
    standins["eu-central"].health_status = 500
    standins["eu-west"].health_status = 500
    policy = wait_for(
        lambda: (p := edge.get("/v1/clusters").json()["policy"])["panic"] and p,
        timeout_s=10,
        what="the edge to panic",
    )
    assert (policy["routable"], policy["panic_below"]) == (1, 0.5)
    answer = edge.get("/v1/route", params={"ip": GERMAN}).json()
    assert (answer["cluster"], answer["reason"]) == ("eu-central", "panic")
    metrics = {
        s.name: s.value
        for family in text_string_to_metric_families(edge.get("/metrics").text)
        for s in family.samples
        if s.name == "georouter_panic"
    }
    assert metrics == {"georouter_panic": 1.0}
    standins["eu-west"].health_status = 200
    calm = wait_for(
        lambda: (
            (r := edge.get("/v1/route", params={"ip": GERMAN}).json())["reason"] != "panic" and r
        ),
        timeout_s=10,
        what="the panic to end",
    )
    assert (calm["cluster"], calm["reason"]) == ("eu-west", "country")


def test_a_route_answer_never_names_a_reason_the_api_does_not_describe(
    make_standins: Standins, write_config: Configs, make_edge: Edges
) -> None:
    _, edge = start(make_standins, write_config, make_edge, None)
    spec = httpx.get(f"{edge.url}/openapi.json").json()
    reasons = spec["components"]["schemas"]["Decision"]["properties"]["reason"]["enum"]
    for wanted in ("spill", "ramp", "spread", "detour", "pinned_down", "panic", "all_down"):
        assert wanted in reasons
