"""The decision: what the router answers for one request, and its JSON form. Pure."""

from __future__ import annotations

from typing import NamedTuple

from georouter.config import Cluster
from georouter.core.clientip import IPAddress
from georouter.core.location import Location
from georouter.core.pin import Pin
from georouter.core.policy import Ranking, Reason


class SessionView(NamedTuple):
    id: str
    pin: Pin | None
    # Decided without Redis.
    degraded: bool
    # Pinned by this request (a new session, not a failover).
    new: bool = False

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
        rule = self.ranking.rule
        if rule is not None:
            # The residency rule the client falls under, so a 503 says which one held.
            body["rule"] = rule.name
        if self.cluster is None and self.reason is Reason.PINNED_DOWN:
            assert self.session is not None
            assert self.session.pin is not None
            home = self.session.pin.cluster
            body["error"] = "pinned_cluster_down"
            body["message"] = (
                f"the session is pinned to {home}, which cannot take it now"
                f" ({self.ranking.unroutable.get(home, 'down')}), and router.on_pinned_down"
                ' = "strict" keeps it there'
            )
        elif self.cluster is None:
            body["error"] = "no_routable_cluster"
            whom = "no cluster"
            if rule is not None and rule.strict:
                whom = f"no cluster allowed by strict rule {rule.name!r}"
            body["message"] = f"{whom} can take this client: " + _why_none(self.ranking)
        if explain and self.ranking.tenant is not None:
            body["tenant"] = self.ranking.tenant.as_json()
        if explain:
            body["explain"] = [c.as_json() for c in self.ranking.candidates]
        return body


def _why_none(ranking: Ranking) -> str:
    reasons = sorted({c.why for c in ranking.candidates})
    return ", ".join(f"{sum(c.why == r for c in ranking.candidates)} {r}" for r in reasons)
