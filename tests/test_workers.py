"""`georouter serve --workers N`: one prober, N workers on one socket, one supervisor over them.

Real processes throughout: the supervisor is a `georouter serve` process, its
children are found in /proc, the clusters are stand-in HTTP servers on
loopback, and Redis is a real redis-server (so the edge runs no embedded one
and every child of the supervisor is a georouter process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from georouter.demo.standin import StandIn
from tests.harness import (
    FAST_HEALTH,
    Edge,
    cluster_entries,
    config_text,
    georouter_command,
    pace_sync,
    wait_for,
)
from tests.procfs import alive, children
from tests.redis_harness import RedisServer

LONDON = "81.2.69.142"  # nearest: eu-west, then eu-central
SERVERS = [pytest.param("hypercorn"), pytest.param("uvicorn")]
INTERVAL_S = float(FAST_HEALTH["interval_s"])  # type: ignore[arg-type]


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    # ap-sydney is nobody's nearest here: it only ever hears health probes.
    return make_standins("us-east", "eu-west", "eu-central", "ap-sydney")


@pytest.fixture
def config_path(
    standins: dict[str, StandIn], write_config: Callable[[str], Path], redis_server: RedisServer
) -> Path:
    text = config_text(
        cluster_entries(standins),
        router={"fallback": "us-east"},
        health=FAST_HEALTH,
        # A Redis of its own: no embedded redis-server among the supervisor's children.
        sessions={"redis_url": redis_server.url},
    )
    return write_config(text)


@pytest.fixture
def serve_workers(
    make_edge: Callable[..., Edge], config_path: Path
) -> Iterator[Callable[..., Edge]]:
    """Start `serve --workers N --server KIND`; after the test, stop it and prove that
    none of its children outlived it (any that did are killed, by pid, and reported)."""
    edges: list[Edge] = []

    def start(*, workers: int = 2, server: str = "hypercorn") -> Edge:
        edge = make_edge(config_path, args=("--workers", str(workers), "--server", server))
        edges.append(edge)
        return edge

    yield start
    for edge in edges:
        pids = [pid for pid, _ in children(edge.process.pid)]
        was_running = edge.process.poll() is None
        code = edge.stop()
        leftovers = [pid for pid in pids if alive(pid)]
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda pids=pids: not any(alive(pid) for pid in pids),
                timeout_s=10,
                what="children gone",
            )
        leftovers = [pid for pid in leftovers if alive(pid)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"children {leftovers} outlived the supervisor:\n{edge.log()}"
        assert not was_running or code == 0, f"serve exited with {code}:\n{edge.log()}"


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def live_children(edge: Edge) -> set[int]:
    return {pid for pid, _ in children(edge.process.pid) if alive(pid)}


def three_children(edge: Edge) -> set[int]:
    """The supervisor's children once there are exactly three: a prober and two workers."""

    def three() -> set[int] | None:
        kids = live_children(edge)
        return kids if len(kids) == 3 else None

    return wait_for(
        three,
        timeout_s=15,
        what="the supervisor to have three children",
    )


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _inodes_connected_to(ports: set[int]) -> set[int]:
    """Sockets with an established TCP connection to one of ``ports`` on loopback."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and remote_port in ports:  # 01: ESTABLISHED
                    found.add(int(fields[9]))
    return found


def probers(edge: Edge, standins: dict[str, StandIn]) -> set[int]:
    """The supervisor's children that hold connections to the clusters (health probes)."""
    ports = {s.port for s in standins.values() if s.running}
    probing = _inodes_connected_to(ports)
    return {pid for pid in live_children(edge) if _socket_inodes(pid) & probing}


def the_prober(edge: Edge, standins: dict[str, StandIn]) -> int:
    found = wait_for(
        lambda: probers(edge, standins), timeout_s=15, what="a child probing the clusters"
    )
    assert len(found) == 1, f"{len(found)} children probe the clusters: {found}"
    return found.pop()


@contextlib.contextmanager
def fresh_connections(edge: Edge) -> Iterator[httpx.Client]:
    """A client that opens a new connection per request, so any worker may answer."""
    with httpx.Client(base_url=edge.url, timeout=5, headers={"connection": "close"}) as client:
        yield client


def route_from(client: httpx.Client, ip: str) -> tuple[int, str | None]:
    response = client.get("/v1/route", params={"ip": ip})
    body = response.json()
    return response.status_code, body.get("cluster") or body.get("error")


@pytest.mark.parametrize("server", SERVERS)
def test_two_workers_answer_and_share_one_prober(
    serve_workers: Callable[..., Edge], standins: dict[str, StandIn], server: str
) -> None:
    edge = serve_workers(workers=2, server=server)
    kids = three_children(edge)
    # Forked, not spawned: every child is a georouter (python) process like its parent.
    assert [comm(pid) for pid in kids] == [comm(edge.process.pid)] * 3
    prober = the_prober(edge, standins)
    assert prober in kids

    # Health probes heard at one cluster over a measured window: one prober's worth.
    sydney = standins["ap-sydney"]
    before, started = sydney.requests, time.monotonic()
    pace_sync(2.0)  # the window being measured, not a wait for a condition
    probes, window = sydney.requests - before, time.monotonic() - started
    one_prober = window / INTERVAL_S
    assert one_prober * 0.5 <= probes <= one_prober * 1.5, (
        f"{probes} probes in {window:.2f}s at a {INTERVAL_S}s interval: expected one prober's"
        f" ~{one_prober:.0f}, two probers would make ~{2 * one_prober:.0f}"
    )

    with fresh_connections(edge) as client:
        answers = [route_from(client, LONDON) for _ in range(200)]
    assert answers == [(200, "eu-west")] * 200
    assert live_children(edge) == kids  # nobody died serving them
    assert probers(edge, standins) == {prober}


@pytest.mark.parametrize("server", SERVERS)
def test_a_cluster_that_dies_is_avoided_by_every_worker(
    serve_workers: Callable[..., Edge], standins: dict[str, StandIn], server: str
) -> None:
    edge = serve_workers(workers=2, server=server)
    with fresh_connections(edge) as client:
        assert route_from(client, LONDON) == (200, "eu-west")

        standins["eu-west"].stop()
        wait_for(
            lambda: route_from(client, LONDON) == (200, "eu-central"),
            timeout_s=15,
            what="london to fail over to eu-central",
        )
        answers = [route_from(client, LONDON) for _ in range(100)]
        assert answers == [(200, "eu-central")] * 100

        for _ in range(10):
            clusters = client.get("/v1/clusters").json()["clusters"]
            health = {c["name"]: c["health"] for c in clusters}
            assert health["eu-west"]["status"] == "down"
            assert health["eu-central"]["status"] == "up"


@pytest.mark.parametrize("server", SERVERS)
def test_a_killed_worker_is_replaced(
    serve_workers: Callable[..., Edge], standins: dict[str, StandIn], server: str
) -> None:
    edge = serve_workers(workers=2, server=server)
    kids = three_children(edge)
    prober = the_prober(edge, standins)
    victim = max(kids - {prober})

    os.kill(victim, signal.SIGKILL)

    def replaced_one() -> set[int] | None:
        now = live_children(edge)
        return now if len(now) == 3 and victim not in now else None

    replaced = wait_for(
        replaced_one,
        timeout_s=15,
        what="the killed worker to be replaced",
    )
    assert prober in replaced  # the prober was left alone
    assert len(replaced - kids) == 1  # one new process
    assert "exited with -9; starting another" in edge.log()
    with fresh_connections(edge) as client:
        answers = [route_from(client, LONDON) for _ in range(20)]
    assert answers == [(200, "eu-west")] * 20


@pytest.mark.parametrize("server", SERVERS)
def test_a_killed_prober_is_replaced_and_workers_keep_routing(
    serve_workers: Callable[..., Edge], standins: dict[str, StandIn], server: str
) -> None:
    # A cluster whose health endpoint hangs (an overloaded host): each of its probes
    # takes the whole timeout, so it is down, and a new prober's first round is slow.
    slow = standins["ap-sydney"]
    slow.health_gate.clear()
    try:
        edge = serve_workers(workers=2, server=server)
        prober = the_prober(edge, standins)
        with fresh_connections(edge) as client:
            assert route_from(client, LONDON) == (200, "eu-west")

            os.kill(prober, signal.SIGKILL)
            answers = []
            deadline = time.monotonic() + 15
            replacement = None
            while replacement is None and time.monotonic() < deadline:
                answers.append(route_from(client, LONDON))
                found = probers(edge, standins) - {prober}
                replacement = found.pop() if len(found) == 1 else None
            assert replacement is not None, "no new prober within 15 s"
            # Through the new prober's first round (one timeout and more).
            until = time.monotonic() + 2 * float(FAST_HEALTH["timeout_s"])  # type: ignore[arg-type]
            while time.monotonic() < until:
                answers.append(route_from(client, LONDON))
            # An edge that was ready stays ready while its prober is replaced.
            wrong = [a for a in answers if a != (200, "eu-west")]
            assert not wrong, f"{len(wrong)} of {len(answers)} answers were {set(wrong)}"

            # And the new prober is heard: a cluster that dies now is avoided.
            standins["eu-west"].stop()
            wait_for(
                lambda: route_from(client, LONDON) == (200, "eu-central"),
                timeout_s=15,
                what="london to fail over to eu-central after the prober was replaced",
            )
        assert len(live_children(edge)) == 3
    finally:
        slow.health_gate.set()


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_supervisor_stops_every_child_on_sigterm(
    serve_workers: Callable[..., Edge], server: str, signum: signal.Signals
) -> None:
    edge = serve_workers(workers=2, server=server)
    kids = three_children(edge)
    if signum is signal.SIGTERM:
        assert edge.stop() == 0
    else:
        edge.process.send_signal(signum)
        assert edge.process.wait(timeout=20) == 0
    # The supervisor waited for its children: none is left, not even as a zombie.
    assert not [pid for pid in kids if alive(pid)]
    assert "Traceback" not in edge.log(), edge.log()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(("--workers", "0"), "--workers", id="workers-0"),
        pytest.param(("--workers", "abc"), "--workers", id="workers-abc"),
        pytest.param(("--workers", "65"), "--workers", id="workers-65"),
        pytest.param(("--server", "nginx"), "--server", id="server-nginx"),
    ],
)
def test_workers_and_servers_are_validated(
    config_path: Path, args: tuple[str, ...], named: str
) -> None:
    result = subprocess.run(
        georouter_command("serve", "--config", str(config_path), "--listen", "127.0.0.1:0", *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stderr


def test_a_second_edge_with_workers_on_a_taken_port_fails_as_with_one_worker(
    serve_workers: Callable[..., Edge], config_path: Path
) -> None:
    edge = serve_workers(workers=2)
    port = edge.url.rsplit(":", 1)[1]
    for workers in ("1", "2"):
        second = subprocess.run(
            georouter_command(
                "serve",
                "--config",
                str(config_path),
                "--listen",
                f"127.0.0.1:{port}",
                "--workers",
                workers,
            ),
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2, (workers, second.stderr)
        assert "cannot listen on 127.0.0.1" in second.stderr


def _decisions(edge: Edge) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    # A new connection each time: SO_REUSEPORT hands it to any worker.
    text = httpx.get(edge.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == "georouter_decisions":
            return sum(
                s.value
                for s in family.samples
                if s.name == "georouter_decisions_total" and s.labels["cluster"] == "eu-west"
            )
    return 0.0


def test_metrics_are_the_edges_whichever_worker_answers_and_survive_a_worker(
    serve_workers: Callable[..., Edge],
) -> None:
    edge = serve_workers(workers=2)
    asked = 60
    for _ in range(asked):
        assert (
            httpx.get(edge.url + "/v1/route", params={"ip": LONDON}, timeout=5).status_code == 200
        )
    # Each worker publishes within a second; then every scrape, on any worker, agrees.
    wait_for(lambda: _decisions(edge) == asked, timeout_s=10, what="the edge's count")
    scrapes = [_decisions(edge) for _ in range(20)]
    assert scrapes == [asked] * 20
    # Every child (both workers and the prober) dies and is replaced.
    for pid, _ in children(edge.process.pid):
        os.kill(pid, signal.SIGKILL)
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(seen) < 40:
        try:
            seen.append(_decisions(edge))
        except httpx.HTTPError:
            continue
    # Never backwards: each replacement goes on from its slot.
    assert seen
    assert all(v == asked for v in seen), seen
