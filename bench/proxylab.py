"""What the proxy benchmark starts, on loopback, and stops: the stand-in cluster (nginx
serving a static answer), nginx ``proxy_pass`` in front of it, and georouter edges in
proxy mode in front of it, each pinned to its core.

The stand-in is nginx so that it is never the bottleneck: one nginx worker answers a
static body several times faster than one Python worker can proxy it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from georouter.config import load
from georouter.sessions.ids import CookieSigner
from tests.harness import REPO, Edge, config_text, start_edge, wait_for
from tests.redis_harness import free_port

API_PREFIX = "/_georouter"
# Every edge of the run signs with this key, so the benchmark can hand wrk cookies
# that the edge accepts (a returning browser's), as an operator's shared key would.
SESSION_KEY = "georouter-bench-session-key-0001"
COOKIE = "georouter_session"
GIB = 1 << 30
# The edge's proxy may open one connection to the stand-in per client connection.
EDGE_PROXY = {"max_connections": 512, "max_keepalive": 256, "max_body_bytes": 2 * GIB}

_TEMP_PATHS = "\n".join(
    f"    {kind}_temp_path {{workdir}}/{{name}}-{kind};"
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
)

STANDIN_CONF = (
    """
worker_processes 1;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
"""
    + _TEMP_PATHS
    + """
    # Neither proxy pays for reconnecting: both keep their upstream connections.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
{listen}
        location = /healthz {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
        location / {{
            default_type application/json;
            add_header x-app kept;
            return 200
                '{{"cluster":"$server_port","method":"$request_method","path":"$request_uri"}}';
        }}
    }}
}}
"""
)

PROXY_CONF = (
    """
worker_processes 1;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
"""
    + _TEMP_PATHS
    + """
    keepalive_requests 10000000;
    upstream standin {{
        server {upstream};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            # What an nginx reverse proxy in front of an application is set up with:
            # keep-alive upstream, the client's Host, the forwarding headers.
            proxy_pass http://standin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"""
)


def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is missing: bash bench/setup.sh (apt-get install nginx-light)")
    return binary


@dataclass
class Nginx:
    """One nginx (a master and one worker), pinned to ``cpus``."""

    name: str
    process: subprocess.Popen[bytes]
    url: str


@contextlib.contextmanager
def nginx(workdir: Path, name: str, conf: str, url: str, *, cpus: str) -> Iterator[Nginx]:
    """nginx with ``conf`` (a full nginx.conf), up once ``url`` + /healthz answers 200."""
    path = workdir / f"{name}.conf"
    path.write_text(conf)
    process = subprocess.Popen(
        ["taskset", "-c", cpus, nginx_binary(), "-c", str(path), "-p", str(workdir),
         "-e", str(workdir / f"{name}-error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def up() -> bool:
            if process.poll() is not None:
                said = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"nginx {name} exited: {said}")
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout_s=10, what=f"nginx {name}")
        yield Nginx(name, process, url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class StandinCluster:
    """The stand-in: one nginx listening on one port per configured cluster."""

    server: Nginx
    urls: dict[str, str]


@contextlib.contextmanager
def standin_cluster(
    workdir: Path, names: list[str], *, cpus: str = "1"
) -> Iterator[StandinCluster]:
    ports = {name: free_port() for name in names}
    listen = "\n".join(f"        listen 127.0.0.1:{port};" for port in ports.values())
    conf = STANDIN_CONF.format(workdir=workdir, name="standin", listen=listen)
    urls = {cluster: f"http://127.0.0.1:{port}" for cluster, port in ports.items()}
    with nginx(workdir, "standin", conf, next(iter(urls.values())), cpus=cpus) as server:
        yield StandinCluster(server, urls)


@contextlib.contextmanager
def nginx_proxy(workdir: Path, upstream_url: str, *, cpus: str = "0") -> Iterator[Nginx]:
    """nginx ``proxy_pass`` to the stand-in: the peer the edge's proxied rate is set against."""
    port = free_port()
    upstream = upstream_url.removeprefix("http://")
    conf = PROXY_CONF.format(workdir=workdir, name="proxy", upstream=upstream, port=port)
    with nginx(workdir, "proxy", conf, f"http://127.0.0.1:{port}", cpus=cpus) as server:
        yield server


def edge_config(workdir: Path, standin: StandinCluster, redis_url: str) -> Path:
    """clusters.toml's clusters, every one at a port of the stand-in, in proxy mode."""
    config = load(REPO / "clusters.toml")
    clusters = [
        {"name": c.name, "url": standin.urls[c.name], "lat": c.lat, "lon": c.lon}
        for c in config.clusters
    ]
    path = workdir / "clusters-proxy.toml"
    path.write_text(
        config_text(
            clusters,
            router={"fallback": config.router.fallback, "mode": "proxy"},
            health={"interval_s": 5, "timeout_s": 2},
            sessions={
                "redis_url": redis_url,
                "near_cache_s": 30.0,
                "pool_size": 128,
                "cookie_secure": False,
            },
            limits={"new_sessions_per_s": 0},
            proxy=EDGE_PROXY,
        )
    )
    return path


@contextlib.contextmanager
def proxy_edge(
    config: Path, log: Path, *, server: str, cpus: str = "0", tree: Path | None = None
) -> Iterator[Edge]:
    """``georouter serve`` in proxy mode, one worker pinned to ``cpus``.

    ``tree``: run the edge from another copy of the source (an A/B of a change to the
    hot path): the edge is started in that directory with it first on ``PYTHONPATH``.
    """
    prefix: tuple[str, ...] = ("taskset", "-c", cpus)
    env = {"GEOROUTER_SESSION_KEYS": SESSION_KEY}
    if tree is not None:
        prefix += ("env", "-C", str(tree))
        env["PYTHONPATH"] = os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])
    args = ("--server", server, "--log-level", "warning", "--access-log", "off")
    edge = start_edge(config, log, args=args, prefix=prefix, env=env, api_prefix=API_PREFIX)
    try:
        yield edge
    finally:
        edge.stop()


def session_cookies(count: int, out: Path) -> Path:
    """Signed cookies of sessions s0..s{count-1} (``Lab.preload_sessions`` pins them), one
    a line: what a returning browser sends."""
    signer = CookieSigner.from_env_value(SESSION_KEY)
    out.write_text("".join(f"{COOKIE}={signer.sign(f's{i}')}\n" for i in range(count)))
    return out
