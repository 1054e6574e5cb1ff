"""From a client (and maybe a session) to a decision: locate, rank, pin, choose.

The router owns no I/O of its own: it is handed a GeoIP database, a health
view and optionally a session map at construction, so the same router answers
the HTTP API, the CLI's offline ``route`` command and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from georouter.clientip import IPAddress
from georouter.config import Cluster, Config
from georouter.location import Location
from georouter.metrics import Metrics
from georouter.pins import Pin
from georouter.policy import (
    Order,
    Ranking,
    Reason,
    choose,
    fallback_order,
    nearest_order,
)
from georouter.sessionmap import SessionMap

# Bounds the compare-and-set rounds when edges disagree about health.
MAX_PIN_ROUNDS = 3


class Locator(Protocol):
    def lookup(self, ip: IPAddress) -> Location | None: ...


class HealthView(Protocol):
    def unroutable(self) -> Mapping[str, str]: ...


class AssumeAllUp:
    """The health view of an offline tool: every cluster is taken to be up."""

    def unroutable(self) -> Mapping[str, str]:
        return {}


class SessionView(NamedTuple):
    id: str
    pin: Pin | None
    degraded: bool

    def as_json(self) -> dict[str, object]:
        ttl_ms = self.pin.ttl_ms if self.pin else None
        return {
            "id": self.id,
            "pinned": self.pin.cluster if self.pin else None,
            "ttl_s": None if ttl_ms is None else round(ttl_ms / 1000, 3),
            "degraded": self.degraded,
        }


class Decision(NamedTuple):
    cluster: Cluster | None
    reason: Reason
    client_ip: IPAddress | None
    location: Location | None
    distance_km: float | None
    ranking: Ranking
    session: SessionView | None = None

    def as_json(self, *, explain: bool = False) -> dict[str, object]:
        body: dict[str, object] = {
            "cluster": self.cluster.name if self.cluster else None,
            "url": self.cluster.url if self.cluster else None,
            "reason": self.reason,  # a StrEnum: serialised as its value
            "client_ip": str(self.client_ip) if self.client_ip is not None else None,
            "location": self.location.as_json() if self.location else None,
            "distance_km": None if self.distance_km is None else round(self.distance_km, 1),
        }
        if self.session is not None:
            body["session"] = self.session.as_json()
        if self.cluster is None:
            body["error"] = "no_routable_cluster"
            body["message"] = "no cluster can take this client: " + _why_none(self.ranking)
        if explain:
            body["explain"] = [c.as_json() for c in self.ranking.candidates]
        return body


def _why_none(ranking: Ranking) -> str:
    reasons = sorted({c.why for c in ranking.candidates})
    return ", ".join(f"{sum(c.why == r for c in ranking.candidates)} {r}" for r in reasons)


# Distinct client positions whose cluster order is remembered; GeoIP databases
# place most addresses at a few thousand city centroids.
ORDER_CACHE_SIZE = 65536


class Router:
    def __init__(
        self,
        config: Config,
        *,
        locator: Locator,
        health: HealthView,
        metrics: Metrics,
        sessions: SessionMap | None = None,
    ) -> None:
        self.config = config
        self._clusters = {c.name: c for c in config.clusters}
        self._locator = locator
        self._health = health
        self._sessions = sessions
        self._decisions = metrics.family(
            "georouter_decisions_total",
            "Routing decisions by reason and cluster.",
            ("reason", "cluster"),
        ).values
        # The order of preference depends only on the position (health only picks
        # within it), so it is computed once per position.
        self._orders: dict[tuple[float, float], Order] = {}
        self._fallback_order = fallback_order(config.clusters, config.router.fallback)

    def _count(self, decision: Decision) -> Decision:
        if decision.cluster is None:
            self._decisions[("none", "")] += 1
        else:
            self._decisions[(decision.reason, decision.cluster.name)] += 1
        return decision

    def _ranking(self, location: Location | None, unroutable: Mapping[str, str]) -> Ranking:
        if location is None or location.lat is None or location.lon is None:
            return choose(self._fallback_order, Reason.FALLBACK, unroutable)
        point = (location.lat, location.lon)
        order = self._orders.get(point)
        if order is None:
            if len(self._orders) >= ORDER_CACHE_SIZE:
                self._orders.clear()
            order = self._orders[point] = nearest_order(*point, self.config.clusters)
        return choose(order, Reason.NEAREST, unroutable)

    def _plain(
        self,
        client_ip: IPAddress | None,
        location: Location | None,
        ranking: Ranking,
        session: SessionView | None = None,
        reason: Reason | None = None,
    ) -> Decision:
        """The decision the ranking makes on its own (nearest, fallback, failover)."""
        if ranking.chosen_at is None:
            cluster, distance = None, None
        else:
            cluster, distance = ranking.order[ranking.chosen_at]
        return self._count(
            Decision(
                cluster, reason or ranking.reason, client_ip, location, distance, ranking, session
            )
        )

    def decide(self, client_ip: IPAddress | None) -> Decision:
        """The cluster for a client at ``client_ip`` with no session (None: no address)."""
        location = self._locator.lookup(client_ip) if client_ip is not None else None
        return self._plain(client_ip, location, self._ranking(location, self._health.unroutable()))

    async def route(self, client_ip: IPAddress | None, session_id: str | None) -> Decision:
        """The cluster for a client, keeping a session on the cluster it is pinned to."""
        if session_id is None or self._sessions is None:
            return self.decide(client_ip)
        location = self._locator.lookup(client_ip) if client_ip is not None else None
        unroutable = self._health.unroutable()
        ranking = self._ranking(location, unroutable)
        # A near-cache hit is answered without creating a coroutine at all.
        held = self._sessions.cached(session_id)
        degraded = False
        if held is None:
            if ranking.chosen_at is not None and not self._sessions.remembers(session_id):
                # New to this edge: pin it to the nearest, unless another edge has
                # pinned it already, in one round trip either way.
                target = ranking.order[ranking.chosen_at][0].name
                (held, degraded), made = await self._sessions.claim(session_id, target)
                if made:
                    view = SessionView(session_id, held, degraded)
                    return self._plain(client_ip, location, ranking, view)
            else:
                held, degraded = await self._sessions.read(session_id)
        was_pinned = held is not None
        if held is None or not self._routable(held.cluster, unroutable):
            if ranking.chosen_at is None:
                return self._plain(
                    client_ip, location, ranking, SessionView(session_id, held, degraded)
                )
            target = ranking.order[ranking.chosen_at][0].name
            replacing = held.cluster if held is not None else None
            for _ in range(MAX_PIN_ROUNDS):
                result = await self._sessions.pin(session_id, target, replacing=replacing)
                degraded = degraded or result.degraded
                if result.pin is None or result.pin.cluster == target:
                    reason = Reason.FAILOVER if was_pinned else None
                    view = SessionView(session_id, result.pin, degraded)
                    return self._plain(client_ip, location, ranking, view, reason)
                held = result.pin
                if self._routable(held.cluster, unroutable):
                    break  # another edge pinned it first: every edge answers its cluster
                # Pinned elsewhere to a cluster this edge cannot use: replace that pin.
                replacing = held.cluster
            else:
                view = SessionView(session_id, held, degraded)
                return self._plain(client_ip, location, ranking, view, Reason.FAILOVER)
        cluster = self._clusters[held.cluster]
        distance = None
        if ranking.reason is Reason.NEAREST:
            # The order already holds the distance to every cluster.
            for ranked, d in ranking.order:
                if ranked is cluster:
                    distance = d
                    break
        view = SessionView(session_id, held, degraded)
        return self._count(
            Decision(cluster, Reason.STICKY, client_ip, location, distance, ranking, view)
        )

    def _routable(self, name: str, unroutable: Mapping[str, str]) -> bool:
        return name in self._clusters and name not in unroutable


__all__ = ["AssumeAllUp", "Decision", "HealthView", "Locator", "Reason", "Router"]
