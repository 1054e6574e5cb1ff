"""Two clusters behind a proxy-mode edge, for the passive health and drain tests."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.harness import FAST_HEALTH, Edge, config_text
from tests.redis_harness import RedisServer
from tests.upstream import Upstream

API = "/_georouter"


class Pair:
    """Clusters "a" (the fallback, so first choice for loopback clients) and "b",
    each an application server and a separate server answering its probes."""

    def __init__(self, make: Callable[[str], Upstream]) -> None:
        self.a, self.b = make("a"), make("b")
        self.probes = {"a": make("a-probes"), "b": make("b-probes")}

    def config(self, redis: RedisServer, **health: object) -> str:
        entries = [
            {
                "name": name,
                "url": app.url,
                "lat": 50.0 + i,
                "lon": 8.0,
                "health_url": self.probes[name].url + "/healthz",
            }
            for i, (name, app) in enumerate((("a", self.a), ("b", self.b)))
        ]
        return config_text(
            entries,
            router={"mode": "proxy"},
            health={**FAST_HEALTH, **health},
            # Plain session ids in the cookie, so a test names its sessions itself.
            sessions={
                "redis_url": redis.url,
                "cookie_secure": False,
                "unsigned_sources": ["cookie"],
            },
            # Tests present wrong tokens on purpose: no lockout here.
            limits={"admin_failures": 1_000_000},
        )


def served_by(edge: Edge, session: str | None = None) -> str:
    """The cluster a request went to: a fresh client's (no cookie: a new session), or
    one of ``session``'s."""
    headers = {} if session is None else {"cookie": f"georouter_session={session}"}
    response = httpx.get(edge.url + "/app", headers=headers, timeout=10)
    return response.headers["x-georouter-cluster"]


def cluster_status(edge: Edge, name: str) -> dict[str, object]:
    body = edge.get(API + "/v1/clusters").json()
    found: dict[str, object] = next(c for c in body["clusters"] if c["name"] == name)
    return found


def reason(edge: Edge, session: str) -> tuple[str, str]:
    """The cluster and the reason of one request of ``session``."""
    response = httpx.get(
        edge.url + "/app", headers={"cookie": f"georouter_session={session}"}, timeout=10
    )
    return response.headers["x-georouter-cluster"], response.headers["x-georouter-reason"]
