"""``georouter demo``'s guided tour: the edge as the balancer, shown as it happens.

The edge runs in proxy mode in front of demo clusters (real HTTP and WebSocket
applications on loopback). A browser-like client gets the router's cookie and
stays on its cluster, that cluster is stopped and the session fails over, the
cluster it moved to is drained, and a WebSocket stays on its cluster. Every
line printed is what the edge answered, read from its response headers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TextIO

import httpx
from websockets.asyncio.client import connect

from georouter.config import Config, RouterMode
from georouter.demo.cluster import DemoCluster

API_PREFIX = "/_georouter"
# Real addresses the bundled GeoLite2 snapshot places in London and Tokyo.
LONDON = "81.2.69.142"
TOKYO = "1.0.16.1"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def proxy_config(config: Config, clusters: dict[str, DemoCluster]) -> Config:
    """``config`` in proxy mode in front of ``clusters``, taking the tour's clients'
    addresses from ``X-Forwarded-For`` (the tour is a loopback proxy of itself)."""
    router = dataclasses.replace(
        config.router, mode=RouterMode.PROXY, api_prefix=API_PREFIX, trusted_proxies=LOOPBACK
    )
    return dataclasses.replace(
        config,
        clusters=tuple(
            dataclasses.replace(c, url=clusters[c.name].url, health_url=None)
            for c in config.clusters
        ),
        router=router,
        # Plain HTTP on loopback: a Secure cookie would never come back.
        sessions=dataclasses.replace(config.sessions, cookie_secure=False),
        # Probes often enough that the tour's stopped cluster is seen down soon.
        health=dataclasses.replace(config.health, interval_s=1.0, timeout_s=1.0),
    )


class Tour:
    def __init__(self, base: str, config: Config, admin_token: str, out: TextIO) -> None:
        self.base = base
        self.cookie_name = config.sessions.cookie
        self.admin = {"authorization": f"Bearer {admin_token}"}
        self.out = out
        self.step = 0

    def say(self, text: str) -> None:
        self.step += 1
        print(f"\n{self.step}. {text}", file=self.out, flush=True)

    def show(self, response: httpx.Response) -> str:
        cluster: str = response.headers.get("x-georouter-cluster", "-")
        reason = response.headers.get("x-georouter-reason", "-")
        print(
            f"   HTTP {response.status_code}  cluster {cluster}  reason {reason}",
            file=self.out,
            flush=True,
        )
        return cluster

    async def get(
        self, client: httpx.AsyncClient, path: str, ip: str, cookie: str | None
    ) -> httpx.Response:
        headers = {"x-forwarded-for": ip}
        if cookie is not None:
            headers["cookie"] = f"{self.cookie_name}={cookie}"
        # The tour says which cookie each request carries: none from the client's jar.
        client.cookies.clear()
        return await client.get(f"{self.base}{path}", headers=headers)

    async def run(self, clusters: dict[str, DemoCluster]) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            self.say(f"A browser in London ({LONDON}) opens /shop/cart with no cookie")
            first = await self.get(client, "/shop/cart", LONDON, None)
            home = self.show(first)
            cookie = first.cookies.get(self.cookie_name)
            if cookie is None:
                raise RuntimeError("the edge issued no session cookie")
            print(f"   Set-Cookie: {self.cookie_name}={cookie[:12]}... (signed)", file=self.out)

            self.say("It comes back twice with its cookie, once from Tokyo: sticky")
            for ip in (LONDON, TOKYO):
                self.show(await self.get(client, "/shop/cart", ip, cookie))

            self.say(f"Cluster {home} goes down (its server stops); the browser clicks again")
            await clusters[home].stop()
            moved = self.show(await self.get(client, "/shop/checkout", LONDON, cookie))
            self.show(await self.get(client, "/shop/checkout", LONDON, cookie))

            self.say(f"An operator drains {moved} (POST {API_PREFIX}/v1/clusters/{moved}/drain)")
            drained = await client.post(
                f"{self.base}{API_PREFIX}/v1/clusters/{moved}/drain",
                json={"deadline_s": 600},
                headers=self.admin,
            )
            print(f"   HTTP {drained.status_code} {drained.text.strip()[:100]}", file=self.out)
            print("   the pinned browser stays until the deadline:", file=self.out)
            self.show(await self.get(client, "/shop/checkout", LONDON, cookie))
            print("   a new browser in London goes elsewhere:", file=self.out)
            self.show(await self.get(client, "/", LONDON, None))

            self.say("The browser opens a WebSocket with its cookie")
            ws_url = self.base.replace("http://", "ws://", 1) + "/ws"
            headers = {"cookie": f"{self.cookie_name}={cookie}", "x-forwarded-for": LONDON}
            async with connect(ws_url, additional_headers=headers, proxy=None) as ws:
                for text in ("hello", "still here?"):
                    await ws.send(text)
                    print(f"   sent {text!r}, got {await ws.recv()!r}", file=self.out)
