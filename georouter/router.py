"""From a client (and maybe a session) to a decision: locate, rank, pin, choose.

The router owns no I/O of its own: it is handed a GeoIP database, a health
view and optionally a session map at construction, so the same router answers
the HTTP API, the CLI's offline ``route`` command and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from georouter.clientip import IPAddress
from georouter.config import Cluster, Config
from georouter.location import Location
from georouter.metrics import Metrics
from georouter.pins import Pin
from georouter.policy import Ranking, Reason, haversine_km, rank
from georouter.sessionmap import Outcome, SessionMap

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


@dataclass(frozen=True, slots=True)
class SessionView:
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


@dataclass(frozen=True, slots=True)
class Decision:
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
            "reason": self.reason.value,
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
        self._metrics = metrics
        self._sessions = sessions
        metrics.describe("georouter_decisions_total", "Routing decisions by reason and cluster.")

    def _count(self, decision: Decision) -> Decision:
        self._metrics.inc(
            "georouter_decisions_total",
            reason=decision.reason.value if decision.cluster else "none",
            cluster=decision.cluster.name if decision.cluster else "",
        )
        return decision

    def _rank(
        self, client_ip: IPAddress | None
    ) -> tuple[Location | None, Ranking, Mapping[str, str]]:
        location = self._locator.lookup(client_ip) if client_ip is not None else None
        unroutable = self._health.unroutable()
        ranking = rank(
            location,
            self.config.clusters,
            fallback=self.config.router.fallback,
            unroutable=unroutable,
        )
        return location, ranking, unroutable

    def decide(self, client_ip: IPAddress | None) -> Decision:
        """The cluster for a client at ``client_ip`` with no session (None: no address)."""
        location, ranking, _ = self._rank(client_ip)
        chosen = ranking.chosen
        return self._count(
            Decision(
                cluster=chosen.cluster if chosen else None,
                reason=ranking.reason,
                client_ip=client_ip,
                location=location,
                distance_km=chosen.distance_km if chosen else None,
                ranking=ranking,
            )
        )

    async def route(self, client_ip: IPAddress | None, session_id: str | None) -> Decision:
        """The cluster for a client, keeping a session on the cluster it is pinned to."""
        if session_id is None or self._sessions is None:
            return self.decide(client_ip)
        location, ranking, unroutable = self._rank(client_ip)
        outcome = await self._sessions.read(session_id)
        degraded = outcome.degraded
        pinned = outcome.pin
        if pinned is not None and self._routable(pinned.cluster, unroutable):
            return self._sticky(
                client_ip=client_ip,
                location=location,
                ranking=ranking,
                session_id=session_id,
                pin=pinned,
                degraded=degraded,
            )

        chosen = ranking.chosen
        if chosen is None:
            view = SessionView(session_id, pinned, degraded)
            return self._count(
                Decision(None, ranking.reason, client_ip, location, None, ranking, view)
            )
        target = chosen.cluster.name
        replacing = pinned.cluster if pinned is not None else None
        result: Outcome = outcome
        for _ in range(MAX_PIN_ROUNDS):
            result = await self._sessions.pin(session_id, target, replacing=replacing)
            degraded = degraded or result.degraded
            held = result.pin
            if held is None or held.cluster == target:
                break
            if self._routable(held.cluster, unroutable):
                # Another edge pinned it first: every edge answers the same cluster.
                return self._sticky(
                    client_ip=client_ip,
                    location=location,
                    ranking=ranking,
                    session_id=session_id,
                    pin=held,
                    degraded=degraded,
                )
            # Pinned elsewhere to a cluster this edge cannot use: replace that pin.
            replacing = held.cluster
        reason = Reason.FAILOVER if pinned is not None else ranking.reason
        view = SessionView(session_id, result.pin, degraded)
        return self._count(
            Decision(chosen.cluster, reason, client_ip, location, chosen.distance_km, ranking, view)
        )

    def _routable(self, name: str, unroutable: Mapping[str, str]) -> bool:
        return name in self._clusters and name not in unroutable

    def _sticky(
        self,
        *,
        client_ip: IPAddress | None,
        location: Location | None,
        ranking: Ranking,
        session_id: str,
        pin: Pin,
        degraded: bool,
    ) -> Decision:
        cluster = self._clusters[pin.cluster]
        distance = None
        if location is not None and location.lat is not None and location.lon is not None:
            distance = haversine_km(location.lat, location.lon, cluster.lat, cluster.lon)
        view = SessionView(session_id, pin, degraded)
        return self._count(
            Decision(cluster, Reason.STICKY, client_ip, location, distance, ranking, view)
        )


__all__ = ["AssumeAllUp", "Decision", "HealthView", "Locator", "Reason", "Router"]
