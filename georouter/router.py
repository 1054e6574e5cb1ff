"""From a client address to a decision: locate, rank, choose.

The router owns no I/O of its own: it is handed a GeoIP database and a health
view at construction, so the same router answers the HTTP API, the CLI's
offline ``route`` command and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from georouter.clientip import IPAddress
from georouter.config import Cluster, Config
from georouter.location import Location
from georouter.metrics import Metrics
from georouter.policy import Ranking, Reason, rank


class Locator(Protocol):
    def lookup(self, ip: IPAddress) -> Location | None: ...


class HealthView(Protocol):
    def unroutable(self) -> Mapping[str, str]: ...


class AssumeAllUp:
    """The health view of an offline tool: every cluster is taken to be up."""

    def unroutable(self) -> Mapping[str, str]:
        return {}


@dataclass(frozen=True, slots=True)
class Decision:
    cluster: Cluster | None
    reason: Reason
    client_ip: IPAddress | None
    location: Location | None
    ranking: Ranking

    @property
    def distance_km(self) -> float | None:
        chosen = self.ranking.chosen
        return None if chosen is None or chosen.distance_km is None else chosen.distance_km

    def as_json(self, *, explain: bool = False) -> dict[str, object]:
        distance = self.distance_km
        body: dict[str, object] = {
            "cluster": self.cluster.name if self.cluster else None,
            "url": self.cluster.url if self.cluster else None,
            "reason": self.reason.value,
            "client_ip": str(self.client_ip) if self.client_ip is not None else None,
            "location": self.location.as_json() if self.location else None,
            "distance_km": None if distance is None else round(distance, 1),
        }
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
        self, config: Config, *, locator: Locator, health: HealthView, metrics: Metrics
    ) -> None:
        self.config = config
        self._locator = locator
        self._health = health
        self._metrics = metrics
        metrics.describe("georouter_decisions_total", "Routing decisions by reason and cluster.")

    def decide(self, client_ip: IPAddress | None) -> Decision:
        """The cluster for a client at ``client_ip`` (None: a client without an address)."""
        location = self._locator.lookup(client_ip) if client_ip is not None else None
        ranking = rank(
            location,
            self.config.clusters,
            fallback=self.config.router.fallback,
            unroutable=self._health.unroutable(),
        )
        chosen = ranking.chosen
        self._metrics.inc(
            "georouter_decisions_total",
            reason=ranking.reason.value if chosen else "none",
            cluster=chosen.cluster.name if chosen else "",
        )
        return Decision(
            cluster=chosen.cluster if chosen else None,
            reason=ranking.reason,
            client_ip=client_ip,
            location=location,
            ranking=ranking,
        )
