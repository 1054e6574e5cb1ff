"""The routing policy: which cluster, in which order, and why. Pure.

Plain values in (a location, the clusters, which clusters cannot take traffic
and why), an ordered ranking out, with a verdict for every cluster, so
``explain`` can show the whole reasoning. No I/O, no clock: every edge that
holds the same inputs computes the same answer, which is what lets edges agree
without talking to each other (ties are broken by name for the same reason).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from georouter.config import Cluster
from georouter.location import Location

# IUGG mean Earth radius.
EARTH_RADIUS_KM = 6371.0088


class Reason(StrEnum):
    """Why a decision named its cluster. The policy itself answers only ``nearest``
    or ``fallback``; ``sticky`` and ``failover`` come from the session map."""

    NEAREST = "nearest"
    FALLBACK = "fallback"
    STICKY = "sticky"
    FAILOVER = "failover"


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance; haversine stays accurate for short distances, unlike acos."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Candidate:
    """One cluster as the policy saw it for one request."""

    cluster: Cluster
    distance_km: float | None
    chosen: bool
    why: str

    def as_json(self) -> dict[str, object]:
        return {
            "cluster": self.cluster.name,
            "distance_km": _round_km(self.distance_km),
            "chosen": self.chosen,
            "why": self.why,
        }


@dataclass(frozen=True, slots=True)
class Ranking:
    """Clusters in order of preference; ``chosen`` is None when none is routable."""

    reason: Reason
    candidates: tuple[Candidate, ...]

    @property
    def chosen(self) -> Candidate | None:
        for c in self.candidates:
            if c.chosen:
                return c
        return None


def _round_km(d: float | None) -> float | None:
    return None if d is None else round(d, 1)


def rank(
    location: Location | None,
    clusters: tuple[Cluster, ...],
    *,
    fallback: str,
    unroutable: Mapping[str, str],
) -> Ranking:
    """Order ``clusters`` for a client at ``location``; the first routable one is chosen.

    ``unroutable`` maps a cluster's name to why it takes no traffic (``"down"``).
    Without a point to measure from, the ``fallback`` cluster comes first and the
    rest follow by their distance from it, so its nearest neighbour stands in.
    """
    if location is not None and location.lat is not None and location.lon is not None:
        origin = (location.lat, location.lon)
        reason = Reason.NEAREST
    else:
        home = next((c for c in clusters if c.name == fallback), clusters[0])
        origin = (home.lat, home.lon)
        reason = Reason.FALLBACK

    measured = sorted(
        ((haversine_km(origin[0], origin[1], c.lat, c.lon), c) for c in clusters),
        key=lambda dc: (
            dc[1].name != fallback if reason is Reason.FALLBACK else False,
            dc[0],
            dc[1].name,
        ),
    )

    out: list[Candidate] = []
    winner: Cluster | None = None
    for distance, cluster in measured:
        shown = distance if reason is Reason.NEAREST else None
        why_not = unroutable.get(cluster.name)
        if why_not is not None:
            out.append(Candidate(cluster, shown, chosen=False, why=why_not))
        elif winner is None:
            winner = cluster
            why = (
                "nearest routable cluster"
                if reason is Reason.NEAREST
                else _fallback_why(cluster, fallback)
            )
            out.append(Candidate(cluster, shown, chosen=True, why=why))
        else:
            rel = "farther than" if reason is Reason.NEAREST else "ranked after"
            out.append(Candidate(cluster, shown, chosen=False, why=f"{rel} {winner.name}"))
    return Ranking(reason, tuple(out))


def _fallback_why(cluster: Cluster, fallback: str) -> str:
    if cluster.name == fallback:
        return "fallback cluster (client has no location)"
    return f"nearest routable cluster to the fallback {fallback} (client has no location)"
