from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from georouter.standin import StandIn
from tests.harness import Edge, start_edge


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

    def make(config_path: Path, *, ready: bool = True) -> Edge:
        edge = start_edge(config_path, tmp_path / f"edge-{len(edges)}.log", ready=ready)
        edges.append(edge)
        return edge

    yield make
    for edge in edges:
        code = edge.stop()
        assert code == 0, f"georouter serve exited with {code}:\n{edge.log()}"
