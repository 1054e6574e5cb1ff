"""One cluster as the policy saw it for one request, and its JSON form. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from georouter.config import Cluster, Rule
from georouter.core.admission import Admission


@dataclass(frozen=True, slots=True)
class Candidate:
    """One cluster as the policy saw it for one request."""

    cluster: Cluster
    distance_km: float | None
    chosen: bool
    why: str
    # The residency rule's verdict on it: "allowed", "forbidden" (strict rule),
    # "preferred" or "not preferred" (non-strict rule); None: no rule applies.
    rule: str | None = None
    # Its share of new sessions in a tie split; None: not in one.
    share: float | None = None
    # How much of its share of new sessions it takes now (load, failback ramp).
    admission: Admission | None = None
    # Why it would not be routable, when health is ignored (panic, all_down).
    ignored: str | None = None
    # The load it last reported (None: none).
    load: float | None = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "cluster": self.cluster.name,
            "distance_km": round_km(self.distance_km),
            "chosen": self.chosen,
            "why": self.why,
        }
        if self.cluster.bias_km:
            body["bias_km"] = self.cluster.bias_km
            if self.distance_km is not None:
                body["biased_distance_km"] = round_km(self.distance_km - self.cluster.bias_km)
        if self.share is not None:
            body["weight"] = self.cluster.weight
            body["share"] = round(self.share, 4)
        if self.rule is not None:
            body["rule"] = self.rule
        if self.admission is not None:
            body["admission"] = {
                "share": round(self.admission.share, 4),
                "held": self.admission.held.value,
                "why": self.admission.why,
            }
        if self.ignored is not None:
            body["health_ignored"] = self.ignored
        if self.load is not None:
            body["load"] = self.load
        return body


def verdict_of(rule: Rule | None, inside: bool) -> str | None:
    """The residency rule's word on a cluster inside or outside its clusters."""
    if rule is None:
        return None
    if rule.strict:
        return "allowed" if inside else "forbidden"
    return "preferred" if inside else "not preferred"


def round_km(d: float | None) -> float | None:
    return None if d is None else round(d, 1)
