"""Several real `georouter serve` edges sharing one real Redis: every edge answers one cluster.

Each test starts real stand-in clusters, a real redis-server and two or three
edges on loopback. Clients on different continents ask different edges about
the same session; the session map in Redis must make them all agree, on the
first request (a race between edges), after a cluster dies (one failover, not
one per edge) and after it comes back (no move back).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from georouter.core.pin import Pin
from georouter.demo.standin import StandIn
from tests.harness import FAST_HEALTH, SITES, Edge, cluster_entries, config_text, wait_for
from tests.redis_harness import RedisServer

# Agreement between edges is under test, not health checks: on a machine kept busy
# on purpose, a short probe deadline (which includes the edge's own event-loop lag)
# takes healthy clusters down at one edge, and its sessions fail over, on purpose.
STEADY_HEALTH = {**FAST_HEALTH, "interval_s": 1.0, "timeout_s": 1.0}
LONDON = "81.2.69.142"  # nearest: eu-west
TOKYO = "1.0.16.1"  # nearest: ap-northeast
SYDNEY = "203.2.218.214"  # nearest: ap-sydney

KEY_PREFIX = "georouter:s:"


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins(*SITES)


@pytest.fixture
def shared_config(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
) -> Path:
    text = config_text(
        cluster_entries(standins),
        router={"fallback": "us-east"},
        health=STEADY_HEALTH,
        # Agreement between edges is under test, not Redis timeouts: generous ones keep
        # a loaded machine from turning a slow answer into a degraded, local decision.
        sessions={"redis_url": redis_server.url, "command_timeout_s": 1, "connect_timeout_s": 1},
        # One test process stands for many clients: no per-address new-session budget.
        limits={"new_sessions_per_s": 0},
    )
    return write_config(text)


def new_session(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:16]}"


def route(client: httpx.Client, edge: Edge, ip: str, session: str) -> dict[str, object]:
    response = client.get(f"{edge.url}/v1/route", params={"ip": ip, "session": session})
    assert response.status_code == 200, f"{edge.url}: {response.status_code} {response.text}"
    body: dict[str, object] = response.json()
    return body


def session_of(body: dict[str, object]) -> dict[str, object]:
    session = body["session"]
    assert isinstance(session, dict), body
    return session


def redis_pin(redis_server: RedisServer, session: str) -> str | None:
    """The cluster Redis holds for ``session``."""
    with redis_server.client() as r:
        raw = r.get(KEY_PREFIX + session)
    if raw is None:
        return None
    pin = Pin.decode(str(raw))
    assert pin is not None, f"unexpected value for {session}: {raw!r}"
    return pin.cluster


def cluster_status(edge: Edge, client: httpx.Client, name: str) -> str:
    clusters = client.get(f"{edge.url}/v1/clusters").json()["clusters"]
    return next(str(c["health"]["status"]) for c in clusters if c["name"] == name)


def ask_together(
    asks: list[tuple[Edge, str]], sessions: list[str]
) -> list[list[dict[str, object]]]:
    """For each session, every ``(edge, client ip)`` asks at the same moment (a barrier).

    One thread and one HTTP client per ask; the answers come back per session,
    in the order of ``asks``.
    """
    barrier = threading.Barrier(len(asks))
    answers: list[list[dict[str, object] | None]] = [[None] * len(asks) for _ in sessions]
    errors: list[BaseException] = []

    def worker(slot: int, edge: Edge, ip: str) -> None:
        with httpx.Client(timeout=10) as client:
            # Open the connection first, so the barrier releases requests, not handshakes.
            client.get(f"{edge.url}/healthz")
            for n, session in enumerate(sessions):
                try:
                    barrier.wait(timeout=30)
                    answers[n][slot] = route(client, edge, ip, session)
                except threading.BrokenBarrierError:
                    return  # another asker failed: its error is the one reported
                except (AssertionError, httpx.HTTPError) as exc:
                    errors.append(exc)
                    barrier.abort()
                    return

    threads = [
        threading.Thread(target=worker, args=(slot, edge, ip), name=f"ask-{slot}")
        for slot, (edge, ip) in enumerate(asks)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "an asking thread hung"
    if errors:
        raise errors[0]
    out: list[list[dict[str, object]]] = []
    for row in answers:
        assert all(a is not None for a in row)
        out.append([a for a in row if a is not None])
    return out


def test_concurrent_first_requests_at_three_edges_agree_on_one_cluster(
    shared_config: Path, make_edge: Callable[..., Edge], redis_server: RedisServer
) -> None:
    edges = [make_edge(shared_config) for _ in range(3)]
    asks = [(edges[0], LONDON), (edges[1], TOKYO), (edges[2], SYDNEY)]
    sessions = [new_session(f"race{n}") for n in range(20)]

    answers = ask_together(asks, sessions)

    winners: dict[str, int] = {}
    for session, row in zip(sessions, answers, strict=True):
        clusters = {a["cluster"] for a in row}
        assert len(clusters) == 1, f"{session}: edges answered {[a['cluster'] for a in row]}"
        (cluster,) = clusters
        reasons = sorted(str(a["reason"]) for a in row)
        assert reasons == ["nearest", "sticky", "sticky"], f"{session}: {reasons}"
        # The winner's own client is the one nearest to the cluster it pinned.
        winner = next(i for i, a in enumerate(row) if a["reason"] == "nearest")
        expected = {0: "eu-west", 1: "ap-northeast", 2: "ap-sydney"}[winner]
        assert cluster == expected, f"{session}: edge {winner} won with {cluster}"
        winners[str(cluster)] = winners.get(str(cluster), 0) + 1
        for a in row:
            s = session_of(a)
            assert s["id"] == session
            assert s["pinned"] == cluster
            assert s["degraded"] is False
        assert redis_pin(redis_server, session) == cluster
    print(f"MULTI-EDGE race: sessions={len(sessions)} winners={winners}")


def test_a_session_pinned_at_one_edge_is_sticky_at_another_across_continents(
    shared_config: Path, make_edge: Callable[..., Edge], redis_server: RedisServer
) -> None:
    edge_a, edge_b = make_edge(shared_config), make_edge(shared_config)
    sessions = [new_session(f"cross{n}") for n in range(5)]
    with httpx.Client(timeout=10) as client:
        for session in sessions:
            first = route(client, edge_a, LONDON, session)
            assert (first["cluster"], first["reason"]) == ("eu-west", "nearest")
            assert redis_pin(redis_server, session) == "eu-west"

            for ip in (TOKYO, SYDNEY):
                there = route(client, edge_b, ip, session)
                assert (there["cluster"], there["reason"]) == ("eu-west", "sticky"), there
                assert session_of(there)["pinned"] == "eu-west"
                assert session_of(there)["degraded"] is False
                # The distance is the real one, to the pinned cluster, not to the nearest.
                assert isinstance(there["distance_km"], float)
                assert there["distance_km"] > 5000

            # A session never seen is still routed by distance at edge B.
            other = route(client, edge_b, TOKYO, new_session("fresh"))
            assert (other["cluster"], other["reason"]) == ("ap-northeast", "nearest")
        assert all(redis_pin(redis_server, s) == "eu-west" for s in sessions)


def test_a_dead_cluster_moves_its_sessions_once_to_one_cluster_and_never_back(
    shared_config: Path,
    make_edge: Callable[..., Edge],
    redis_server: RedisServer,
    standins: dict[str, StandIn],
) -> None:
    edge_a, edge_b = make_edge(shared_config), make_edge(shared_config)
    sessions = [new_session(f"fail{n}") for n in range(10)]
    with httpx.Client(timeout=10) as client:
        for session in sessions:
            body = route(client, edge_a, LONDON, session)
            assert (body["cluster"], body["reason"]) == ("eu-west", "nearest")
            body = route(client, edge_b, TOKYO, session)
            assert (body["cluster"], body["reason"]) == ("eu-west", "sticky")
            assert redis_pin(redis_server, session) == "eu-west"

        standins["eu-west"].stop()
        for edge in (edge_a, edge_b):
            wait_for(
                lambda edge=edge: cluster_status(edge, client, "eu-west") == "down",
                timeout_s=10,
                what=f"{edge.url} to see eu-west down",
            )

        # Both edges are asked at once, by a London client at A (next nearest:
        # eu-central) and a Tokyo client at B (nearest: ap-northeast).
        answers = ask_together([(edge_a, LONDON), (edge_b, TOKYO)], sessions)
        moved: dict[str, str] = {}
        for session, row in zip(sessions, answers, strict=True):
            clusters = {a["cluster"] for a in row}
            assert len(clusters) == 1, f"{session}: edges answered {[a['cluster'] for a in row]}"
            (cluster,) = clusters
            assert cluster in ("eu-central", "ap-northeast"), f"{session}: moved to {cluster}"
            reasons = sorted(str(a["reason"]) for a in row)
            assert reasons == ["failover", "sticky"], f"{session}: {reasons}"
            assert all(session_of(a)["pinned"] == cluster for a in row)
            assert redis_pin(redis_server, session) == cluster
            moved[session] = str(cluster)

        # Asked again at either edge, by either client: sticky on the new cluster.
        for session in sessions:
            for edge, ip in ((edge_a, LONDON), (edge_b, TOKYO), (edge_a, SYDNEY)):
                body = route(client, edge, ip, session)
                assert (body["cluster"], body["reason"]) == (moved[session], "sticky"), body

        standins["eu-west"].start()
        for edge in (edge_a, edge_b):
            wait_for(
                lambda edge=edge: cluster_status(edge, client, "eu-west") == "up",
                timeout_s=10,
                what=f"{edge.url} to see eu-west up again",
            )
        # A fresh London session goes to eu-west again: the edges do use it.
        assert route(client, edge_a, LONDON, new_session("fresh"))["cluster"] == "eu-west"

        for session in sessions:
            for edge, ip in ((edge_a, LONDON), (edge_b, TOKYO), (edge_b, LONDON)):
                body = route(client, edge, ip, session)
                assert (body["cluster"], body["reason"]) == (moved[session], "sticky"), (
                    f"{session} moved back: {body}"
                )
            assert redis_pin(redis_server, session) == moved[session]
    counts = {c: list(moved.values()).count(c) for c in sorted(set(moved.values()))}
    print(f"MULTI-EDGE failover: sessions={len(sessions)} moved_to={counts} moved_back=0")


def test_an_edge_that_lost_the_race_keeps_the_winners_pin_through_a_redis_outage(
    shared_config: Path, make_edge: Callable[..., Edge], redis_server: RedisServer
) -> None:
    edge_a, edge_b = make_edge(shared_config), make_edge(shared_config)
    sessions = [new_session(f"lost{n}") for n in range(300)]
    answers = ask_together([(edge_a, LONDON), (edge_b, TOKYO)], sessions)
    winner = {}
    for session, (at_a, at_b) in zip(sessions, answers, strict=True):
        assert at_a["cluster"] == at_b["cluster"], session
        winner[session] = at_a["cluster"]
    lost_at_a = sum(a["reason"] == "sticky" for a, _ in answers)
    # Later requests go to B only; A last saw each session in the race.
    with httpx.Client(timeout=10) as client:
        for session in sessions:
            assert route(client, edge_b, TOKYO, session)["cluster"] == winner[session]
        redis_server.kill()
        during = {s: route(client, edge_a, LONDON, s) for s in sessions}
    forgotten = [s for s in sessions if during[s]["cluster"] != winner[s]]
    redis_server.restart_empty()
    wait_for(
        lambda: all(redis_pin(redis_server, s) == winner[s] for s in sessions),
        timeout_s=15,
        what="every pin back in Redis, on its winner's cluster",
    )
    print(
        f"MULTI-EDGE lost race then outage: sessions={len(sessions)} lost_at_a={lost_at_a}"
        f" forgotten_at_a={len(forgotten)}"
    )
    assert lost_at_a > 0, "edge A never lost a race: the scenario was not exercised"
    assert not forgotten, f"edge A answered another cluster for {len(forgotten)}: {forgotten[:3]}"
    assert all(session_of(during[s])["degraded"] is True for s in sessions)


def burn_cpu(seconds: float) -> subprocess.Popen[bytes]:
    """A process that keeps one core busy for ``seconds`` (then exits by itself)."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_burst_of_new_sessions_at_two_fresh_edges_on_a_busy_machine_is_never_split(
    standins: dict[str, StandIn],
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    # The default Redis deadlines (50 ms + 50 ms): a busy edge must not mistake its
    # own lag for a Redis outage and pin on its own.
    path = write_config(
        config_text(
            cluster_entries(standins),
            router={"fallback": "us-east"},
            health=STEADY_HEALTH,
            sessions={"redis_url": redis_server.url},
            limits={"new_sessions_per_s": 0},
        )
    )
    edges = [make_edge(path), make_edge(path)]
    ips = [LONDON, TOKYO]
    sessions = [new_session(f"burst{n}") for n in range(360)]
    clients_per_edge = 32
    answers: dict[tuple[int, str], dict[str, object]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2 * clients_per_edge)

    def client_thread(e: int, slot: int) -> None:
        try:
            with httpx.Client(timeout=20) as client:
                client.get(f"{edges[e].url}/healthz")
                start.wait(timeout=30)
                # Slot k at both edges asks the same sessions in the same order: races.
                for session in sessions[slot::clients_per_edge]:
                    answers[(e, session)] = route(client, edges[e], ips[e], session)
        except (AssertionError, httpx.HTTPError, threading.BrokenBarrierError) as exc:
            errors.append(exc)

    # Both cores busy besides the edges, Redis and the clients.
    burners = [burn_cpu(30), burn_cpu(30)]
    try:
        threads = [
            threading.Thread(target=client_thread, args=(e, k))
            for e in range(2)
            for k in range(clients_per_edge)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert not errors, errors[:3]
    split = [s for s in sessions if answers[(0, s)]["cluster"] != answers[(1, s)]["cluster"]]
    degraded = [k for k, a in answers.items() if session_of(a)["degraded"]]
    wrong = [s for s in sessions if redis_pin(redis_server, s) != answers[(0, s)]["cluster"]]
    print(
        f"MULTI-EDGE burst: sessions={len(sessions)} clients={2 * clients_per_edge}"
        f" split={len(split)} degraded={len(degraded)} redis_disagrees={len(wrong)}"
    )
    logs = [ln for e in edges for ln in e.log().splitlines() if "httpx" not in ln]
    assert not split, f"{len(split)} split, e.g. {split[:3]}; edge logs: {logs[-30:]}"
    assert not degraded, f"{len(degraded)} answers degraded while Redis was up"
    assert not wrong
