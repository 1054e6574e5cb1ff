"""The embedded default: with no Redis URL an edge runs its own redis-server, and cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from georouter.demo.standin import StandIn
from georouter.sessions.embedded import EmbeddedRedis, EmbeddedRedisError, redis_server_binary
from tests.harness import (
    FAST_HEALTH,
    Edge,
    cluster_entries,
    config_text,
    georouter_command,
    wait_for,
)
from tests.procfs import alive, children


def redis_child(edge: Edge) -> int:
    pids = [pid for pid, comm in children(edge.process.pid) if comm.startswith("redis-server")]
    assert len(pids) == 1, children(edge.process.pid)
    return pids[0]


@pytest.fixture
def embedded_config(
    make_standins: Callable[..., dict[str, StandIn]],
    write_config: Callable[[str], Path],
    tmp_path: Path,
) -> Path:
    standins = make_standins("eu-west", "ap-northeast", "us-east")
    text = config_text(
        cluster_entries(standins),
        router={"fallback": "us-east"},
        health=FAST_HEALTH,
        sessions={"state_dir": str(tmp_path / "state")},
    )
    return write_config(text)


def test_edge_without_redis_url_runs_its_own_redis_with_persistence(
    embedded_config: Path, make_edge: Callable[..., Edge], tmp_path: Path
) -> None:
    edge = make_edge(embedded_config)
    body = edge.get("/v1/route", params={"ip": "81.2.69.142", "session": "kept"}).json()
    assert (body["cluster"], body["reason"]) == ("eu-west", "nearest")
    assert "embedded redis-server at unix://" in edge.log()
    redis_pid = redis_child(edge)
    state = tmp_path / "state"
    assert any(state.rglob("*.aof*")), list(state.iterdir())

    assert edge.stop() == 0
    assert not alive(redis_pid)  # stopped with the edge

    # A new edge on the same state directory finds the pin the old one made.
    again = make_edge(embedded_config)
    body = again.get("/v1/route", params={"ip": "1.0.16.1", "session": "kept"}).json()
    assert (body["cluster"], body["reason"]) == ("eu-west", "sticky")


def test_embedded_redis_dies_with_a_killed_edge(
    embedded_config: Path, make_edge: Callable[..., Edge]
) -> None:
    edge = make_edge(embedded_config)
    redis_pid = redis_child(edge)
    edge.process.send_signal(signal.SIGKILL)
    edge.process.wait(timeout=10)
    wait_for(lambda: not alive(redis_pid), timeout_s=10, what="the orphaned redis-server to exit")


def test_two_edges_cannot_share_one_state_directory(
    embedded_config: Path, make_edge: Callable[..., Edge]
) -> None:
    make_edge(embedded_config)
    second = subprocess.run(
        georouter_command("serve", "--config", str(embedded_config), "--listen", "127.0.0.1:0"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert second.returncode == 1
    assert "is in use by another georouter" in second.stderr
    assert "Traceback" not in second.stderr


def test_a_long_state_path_still_gets_a_working_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    embedded = EmbeddedRedis(deep)
    url = embedded.start()
    try:
        assert len(embedded.socket_path) <= 100
        with redis.Redis(unix_socket_path=embedded.socket_path) as client:
            assert client.ping()
        assert url == f"unix://{embedded.socket_path}"
    finally:
        embedded.stop()
    assert not os.path.exists(embedded.socket_path)


def test_an_unwritable_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EmbeddedRedisError, match="cannot create state directory"):
        EmbeddedRedis(blocker / "state").start()


def test_the_redis_server_binary_is_found() -> None:
    binary = redis_server_binary()
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=10
    )
    assert "Redis server" in version.stdout
