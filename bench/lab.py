"""The things a benchmark run starts, on loopback, and stops: stand-ins, Redis, edges, nginx."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import maxminddb
import redis

from georouter.config import load
from georouter.demo.standin import StandIn
from georouter.geoip.database import bundled_database
from tests.harness import REPO, Edge, config_text, start_edge, wait_for
from tests.redis_harness import RedisServer, free_port

CONFIG = REPO / "clusters.toml"


def sample_addresses(count: int, *, seed: int = 7) -> list[str]:
    """Real client addresses: random global IPv4 addresses the GeoLite2 snapshot locates,
    and one in ten IPv6 addresses from a few real allocations."""
    rng = random.Random(seed)
    out: list[str] = []
    with maxminddb.open_database(str(bundled_database())) as db:
        while len(out) < count:
            if len(out) % 10 == 9:
                base = rng.choice((0x2001_4860, 0x2A00_1450, 0x2400_CB00, 0x2C0F_F248))
                addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(
                    (base << 96) | rng.getrandbits(96)
                )
            else:
                addr = ipaddress.IPv4Address(rng.getrandbits(32))
            if not addr.is_global or addr.is_multicast:
                continue
            record = db.get(addr)
            if isinstance(record, dict) and "location" in record:
                out.append(str(addr))
    return out


@dataclass
class Lab:
    """Everything one run needs; ``close()`` stops it all."""

    workdir: Path
    standins: dict[str, StandIn]
    redis: RedisServer
    edges: list[Edge]

    @classmethod
    def open(cls, workdir: Path) -> Lab:
        workdir.mkdir(parents=True, exist_ok=True)
        config = load(CONFIG)
        standins = {c.name: StandIn(c.name).start() for c in config.clusters}
        server = RedisServer(workdir / "redis").start()
        return cls(workdir, standins, server, [])

    def config_path(self, *, near_cache_s: float = 30.0) -> Path:
        config = load(CONFIG)
        clusters = [
            {"name": c.name, "url": self.standins[c.name].url, "lat": c.lat, "lon": c.lon}
            for c in config.clusters
        ]
        path = self.workdir / f"clusters-near{near_cache_s:g}.toml"
        path.write_text(
            config_text(
                clusters,
                router={"fallback": config.router.fallback},
                health={"interval_s": 5, "timeout_s": 2},
                sessions={
                    "redis_url": self.redis.url,
                    "near_cache_s": near_cache_s,
                    "pool_size": 128,
                },
                # One load generator stands for many clients: no per-address budget.
                limits={"new_sessions_per_s": 0},
            )
        )
        return path

    @contextlib.contextmanager
    def edge(
        self,
        *,
        server: str = "hypercorn",
        workers: int = 1,
        cpus: str | None = "0",
        near_cache_s: float = 30.0,
    ) -> Iterator[Edge]:
        """A `georouter serve` process, pinned to ``cpus`` (None: not pinned)."""
        prefix = ("taskset", "-c", cpus) if cpus else ()
        # nginx, the peer, runs with access_log off too: like is compared with like.
        args = (
            "--server",
            server,
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--access-log",
            "off",
        )
        edge = start_edge(
            self.config_path(near_cache_s=near_cache_s),
            self.workdir / f"edge-{len(self.edges)}.log",
            args=args,
            prefix=prefix,
        )
        self.edges.append(edge)
        try:
            yield edge
        finally:
            edge.stop()

    def preload_sessions(self, count: int, *, clusters: list[str]) -> None:
        """``count`` pinned sessions s0..s{count-1} straight into Redis (sticky runs)."""
        with redis.Redis(host="127.0.0.1", port=self.redis.port) as client:
            client.flushall()
            now = int(time.time() * 1000)
            pipe = client.pipeline(transaction=False)
            for i in range(count):
                pipe.set(f"georouter:s:s{i}", f"{clusters[i % len(clusters)]}|{now}", px=3_600_000)
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()

    def redis_memory(self) -> int:
        with redis.Redis(host="127.0.0.1", port=self.redis.port) as client:
            return int(client.info("memory")["used_memory"])

    def close(self) -> None:
        for edge in self.edges:
            edge.stop()
        self.redis.stop()
        for standin in self.standins.values():
            standin.stop()


NGINX_CONF = """
load_module {module};
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    geoip2 {database} {{
        $geo_country source=$arg_ip country iso_code;
        $geo_lat source=$arg_ip location latitude;
        $geo_lon source=$arg_ip location longitude;
    }}
    map $geo_country $cluster {{
        default {fallback};
{mapping}
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
        location = /v1/route {{
            default_type application/json;
            return 200
              '{{"cluster":"$cluster","country":"$geo_country","lat":"$geo_lat","lon":"$geo_lon"}}';
        }}
    }}
}}
"""


def nginx_module() -> Path | None:
    for candidate in (
        Path("/usr/lib/nginx/modules/ngx_http_geoip2_module.so"),
        Path("/usr/lib64/nginx/modules/ngx_http_geoip2_module.so"),
    ):
        if candidate.exists():
            return candidate
    return None


@contextlib.contextmanager
def nginx_peer(workdir: Path, country_map: dict[str, str], fallback: str) -> Iterator[str]:
    """nginx + ngx_http_geoip2_module answering the routing question from the same database,
    by country (a map built from georouter's own decisions), on one worker pinned to CPU 0."""
    module = nginx_module()
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if module is None or not Path(binary).exists():
        raise RuntimeError(
            "nginx with the geoip2 module is missing: apt-get install nginx-light"
            " libnginx-mod-http-geoip2"
        )
    port = free_port()
    mapping = "\n".join(f"        {cc} {cluster};" for cc, cluster in sorted(country_map.items()))
    conf = workdir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            module=module,
            workdir=workdir,
            database=bundled_database(),
            fallback=fallback,
            mapping=mapping,
            port=port,
        )
    )
    process = subprocess.Popen(
        ["taskset", "-c", "0", binary, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited: {process.stderr.read().decode() if process.stderr else ''}"
                )
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout_s=10, what="nginx")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
