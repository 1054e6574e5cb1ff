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
from typing import NamedTuple

from georouter.config import Cluster

# IUGG mean Earth radius.
EARTH_RADIUS_KM = 6371.0088


class Reason(StrEnum):
    """Why a decision named its cluster, or named none. The policy orders by
    ``nearest`` or ``fallback``; ``sticky`` and ``failover`` come from the session
    map; ``none`` is a decision without a cluster."""

    NEAREST = "nearest"
    FALLBACK = "fallback"
    STICKY = "sticky"
    FAILOVER = "failover"
    # Proxy mode: the first cluster asked sent the request on to this one (its
    # `georouter-replay` hint), and the session moved with it.
    REPLAY = "replay"
    # No cluster could take the client (every one is down): the answer is a 503.
    NONE = "none"


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


# Clusters in order of preference, each with its distance (None: not measured
# from the client, as for the fallback order).
Order = tuple[tuple[Cluster, float | None], ...]


def nearest_order(lat: float, lon: float, clusters: tuple[Cluster, ...]) -> Order:
    """Every cluster by great-circle distance from (lat, lon), ties broken by name."""
    measured = sorted(
        ((haversine_km(lat, lon, c.lat, c.lon), c.name, c) for c in clusters),
    )
    return tuple((c, d) for d, _, c in measured)


def fallback_order(clusters: tuple[Cluster, ...], fallback: str) -> Order:
    """The fallback cluster, then the rest by their distance from it."""
    home = next((c for c in clusters if c.name == fallback), clusters[0])
    rest = [(c, d) for c, d in nearest_order(home.lat, home.lon, clusters) if c is not home]
    return ((home, None), *((c, None) for c, _ in rest))


class Ranking(NamedTuple):
    """An order of preference and the clusters that cannot take traffic now.

    ``chosen`` is the first routable cluster (None when there is none). The
    per-cluster verdicts (``candidates``) are only built when asked for.
    """

    reason: Reason
    order: Order
    unroutable: Mapping[str, str]
    chosen_at: int | None

    @property
    def chosen(self) -> Candidate | None:
        if self.chosen_at is None:
            return None
        return self.candidates[self.chosen_at]

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        out: list[Candidate] = []
        winner: Cluster | None = None
        nearest = self.reason is Reason.NEAREST
        fallback = self.order[0][0].name
        for i, (cluster, distance) in enumerate(self.order):
            why_not = self.unroutable.get(cluster.name)
            if why_not is not None:
                out.append(Candidate(cluster, distance, chosen=False, why=why_not))
            elif i == self.chosen_at:
                winner = cluster
                why = "nearest routable cluster" if nearest else _fallback_why(cluster, fallback)
                out.append(Candidate(cluster, distance, chosen=True, why=why))
            else:
                assert winner is not None
                rel = "farther than" if nearest else "ranked after"
                out.append(Candidate(cluster, distance, chosen=False, why=f"{rel} {winner.name}"))
        return tuple(out)


def _round_km(d: float | None) -> float | None:
    return None if d is None else round(d, 1)


def choose(order: Order, reason: Reason, unroutable: Mapping[str, str]) -> Ranking:
    """The first cluster of ``order`` that is not in ``unroutable``."""
    for i, (cluster, _) in enumerate(order):
        if cluster.name not in unroutable:
            return Ranking(reason, order, unroutable, i)
    return Ranking(reason, order, unroutable, None)


def _fallback_why(cluster: Cluster, fallback: str) -> str:
    if cluster.name == fallback:
        return "fallback cluster (client has no location)"
    return f"nearest routable cluster to the fallback {fallback} (client has no location)"
