"""``georouter demo``: the whole router, running, on one machine, with nothing to install.

It starts a stand-in cluster (a real HTTP server on loopback) for every
cluster of the configuration, an edge in front of them, asks the edge where
clients from around the world should go, prints the answers, and keeps
serving until Ctrl-C so the user can ``curl`` it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
from contextlib import ExitStack
from typing import TextIO

import httpx

from georouter.config import Config
from georouter.demo.standin import StandIn
from georouter.http.app import create_app
from georouter.serve.server import serve, stop_on_signals, url_of

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


def with_standins(config: Config, standins: dict[str, StandIn]) -> Config:
    """``config`` with every cluster's URL pointing at its stand-in."""
    clusters = tuple(
        dataclasses.replace(c, url=standins[c.name].url, health_url=None) for c in config.clusters
    )
    return dataclasses.replace(config, clusters=clusters)


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
    with ExitStack() as stack:
        standins = {
            c.name: stack.enter_context(StandIn(c.name, health_path=config.health.path))
            for c in config.clusters
        }
        demo_config = with_standins(config, standins)
        base = url_of(sock)
        stop = asyncio.Event()
        stop_on_signals(stop)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve(create_app(demo_config), sock, stop), name="edge")
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    await _wait_ready(client, base, timeout_s=config.health.timeout_s + 10)
                    ips = [ip for ip, _ in SAMPLE_CLIENTS]
                    response = await client.post(
                        f"{base}/v1/route", json={"requests": [{"ip": ip} for ip in ips]}
                    )
                    response.raise_for_status()
                print(
                    f"georouter demo: {len(standins)} stand-in clusters on loopback,"
                    f" edge at {base}\n",
                    file=out,
                )
                print(format_table(response.json()["decisions"], dict(SAMPLE_CLIENTS)), file=out)
                if once:
                    return
                print(
                    f"\nTry:\n  curl '{base}/v1/route?ip=81.2.69.142&explain=1'\n"
                    f"  curl '{base}/v1/route?ip=81.2.69.142&session=alice'\n"
                    f"  curl '{base}/v1/route?ip=1.0.16.1&session=alice'   # sticky: same cluster\n"
                    f"  curl {base}/v1/clusters\n\nServing until Ctrl-C.",
                    file=out,
                    flush=True,
                )
                await stop.wait()
            finally:
                stop.set()


def main(config: Config, sock: socket.socket, *, once: bool) -> int:
    asyncio.run(run_demo(config, sock, once=once, out=sys.stdout))
    return 0
