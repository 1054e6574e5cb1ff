"""``georouter demo``: the whole router, running, on one machine, with nothing to install.

It starts a demo cluster (a real HTTP and WebSocket application on loopback)
for every cluster of the configuration and an edge in proxy mode in front of
them, asks the edge where clients from around the world should go, takes a
browser-like client on a guided tour (``demo.tour``), and keeps serving until
Ctrl-C so the user can ``curl`` it.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
from typing import TextIO

import httpx

from georouter.config import Config
from georouter.demo.cluster import DemoCluster
from georouter.demo.tour import API_PREFIX, Tour, proxy_config
from georouter.http.app import create_app
from georouter.serve.server import serve, stop_on_signals, url_of
from georouter.sessions.ids import CookieSigner

# Real addresses whose GeoLite2 records place them on every inhabited continent,
# plus a private address (no location: the fallback cluster).
SAMPLE_CLIENTS = (
    ("81.2.69.142", "London"),
    ("185.60.216.35", "Dublin"),
    ("80.156.1.1", "Germany"),
    ("213.180.204.3", "St Petersburg"),
    ("41.203.64.1", "Lagos"),
    ("196.25.1.1", "Johannesburg"),
    ("49.44.0.1", "India"),
    ("203.116.1.78", "Singapore"),
    ("218.102.23.1", "Hong Kong"),
    ("1.0.16.1", "Tokyo"),
    ("203.2.218.214", "Sydney"),
    ("24.48.0.1", "Québec"),
    ("103.21.244.1", "Ashburn"),
    ("2001:4860:4860::8888", "Mountain View"),
    ("190.210.1.1", "Buenos Aires"),
    ("200.160.2.3", "Rio de Janeiro"),
    ("10.1.2.3", "private network"),
)


def _coordinates(location: object) -> str:
    if not isinstance(location, dict):
        return "-"
    lat, lon = location.get("lat"), location.get("lon")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return "-"
    return f"{lat:.2f},{lon:.2f}"


def format_table(rows: list[dict[str, object]], places: dict[str, str]) -> str:
    header = ("CLIENT", "WHERE", "COUNTRY", "CLUSTER", "DISTANCE", "REASON")
    lines = [header]
    for d in rows:
        loc = d.get("location")
        country = loc.get("country") if isinstance(loc, dict) else None
        dist = d.get("distance_km")
        ip = str(d.get("client_ip"))
        # A place's name where the caller knows one (the demo), else where the
        # database puts the address.
        where = places.get(ip) or _coordinates(loc)
        lines.append(
            (
                ip,
                where,
                str(country or "-"),
                str(d.get("cluster") or "-"),
                f"{dist:,.0f} km" if isinstance(dist, int | float) else "-",
                str(d.get("reason")),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in lines
    )


async def _wait_ready(client: httpx.AsyncClient, base: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            if (await client.get(f"{base}/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the edge at {base} was not ready within {timeout_s:g}s")


async def run_demo(config: Config, sock: socket.socket, *, once: bool, out: TextIO) -> None:
    base = url_of(sock)
    api = f"{base}{API_PREFIX}"
    token = secrets.token_urlsafe(24)
    signer = CookieSigner((secrets.token_bytes(32),))
    stop = asyncio.Event()
    stop_on_signals(stop)
    clusters = {
        c.name: DemoCluster(c.name, health_path=config.health.path) for c in config.clusters
    }
    edge_config = proxy_config(config, clusters)
    async with asyncio.TaskGroup() as tg:
        for cluster in clusters.values():
            cluster.start(tg)
        app = create_app(edge_config, admin_token=token, signer=signer)
        tg.create_task(serve(app, sock, stop), name="edge")
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await _wait_ready(client, api, timeout_s=config.health.timeout_s + 10)
                ips = [ip for ip, _ in SAMPLE_CLIENTS]
                response = await client.post(
                    f"{api}/v1/route", json={"requests": [{"ip": ip} for ip in ips]}
                )
                response.raise_for_status()
            print(
                f"georouter demo: the edge at {base} in proxy mode, in front of"
                f" {len(clusters)} demo clusters on loopback.\n\nWhere clients around the"
                f" world would go (POST {API_PREFIX}/v1/route):\n",
                file=out,
            )
            print(format_table(response.json()["decisions"], dict(SAMPLE_CLIENTS)), file=out)
            await Tour(base, edge_config, token, out).run(clusters)
            if once:
                return
            print(
                f"\nTry:\n  curl -i -H 'X-Forwarded-For: 81.2.69.142' {base}/any/path\n"
                f"  curl '{api}/v1/route?ip=81.2.69.142&explain=1'\n"
                f"  curl {api}/v1/clusters\n"
                f"  curl -X POST -H 'Authorization: Bearer {token}' -d '{{\"deadline_s\": 60}}'"
                f" {api}/v1/clusters/eu-west/drain\n\nServing until Ctrl-C.",
                file=out,
                flush=True,
            )
            await stop.wait()
        finally:
            stop.set()
            for cluster in clusters.values():
                await cluster.stop()


def main(config: Config, sock: socket.socket, *, once: bool) -> int:
    asyncio.run(run_demo(config, sock, once=once, out=sys.stdout))
    return 0
