from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from georouter.demo.standin import StandIn
from tests.harness import Edge, start_edge
from tests.proxy_pair import Pair
from tests.redis_harness import RedisClusterSet, RedisServer, SentinelSet
from tests.upstream import Upstream


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_standins() -> Iterator[Callable[..., dict[str, StandIn]]]:
    """Start stand-in clusters by name; every one is stopped after the test."""
    started: list[StandIn] = []

    def make(*names: str, health_path: str = "/healthz") -> dict[str, StandIn]:
        out = {}
        for name in names:
            standin = StandIn(name, health_path=health_path).start()
            started.append(standin)
            out[name] = standin
        return out

    yield make
    for standin in started:
        standin.stop()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    counter = iter(range(1000))

    def write(text: str) -> Path:
        path = tmp_path / f"clusters-{next(counter)}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_edge(tmp_path: Path) -> Iterator[Callable[..., Edge]]:
    """Start real `georouter serve` processes; each is stopped (SIGTERM) after the test."""
    edges: list[Edge] = []

    def make(
        config_path: Path,
        *,
        ready: bool = True,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        api_prefix: str = "",
    ) -> Edge:
        edge = start_edge(
            config_path,
            tmp_path / f"edge-{len(edges)}.log",
            ready=ready,
            args=args,
            env=env,
            api_prefix=api_prefix,
        )
        edges.append(edge)
        return edge

    yield make
    for edge in edges:
        was_running = edge.process.poll() is None
        code = edge.stop()
        # A test may kill an edge on purpose; one still running must stop cleanly.
        assert not was_running or code == 0, f"georouter serve exited with {code}:\n{edge.log()}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, empty, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    group = SentinelSet(tmp_path / "sentinel-set").start()
    yield group
    group.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterSet]:
    group = RedisClusterSet(tmp_path / "cluster").start()
    yield group
    group.stop()


@pytest.fixture
def upstreams() -> Iterator[Callable[[str], Upstream]]:
    """Start real HTTP/WebSocket upstream clusters by name; each is stopped after the test."""
    started: list[Upstream] = []

    def make(name: str) -> Upstream:
        up = Upstream(name).start()
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()


@pytest.fixture
def pair(upstreams: Callable[[str], Upstream]) -> Pair:
    """Two upstream clusters and the edges in front of them (tests.proxy_pair)."""
    return Pair(upstreams)
