"""The routing policy: which cluster, in which order, and why. Pure.

Plain values in (a location, the clusters, which clusters cannot take traffic
and why, the residency rule the client falls under, a hash of its session),
an ordered ranking out, with a verdict for every cluster, so ``explain`` can
show the whole reasoning. No I/O, no clock, no random: every edge that holds
the same inputs computes the same answer, which is what lets edges agree
without talking to each other (ties are broken by name for the same reason,
and a weighted split draws from the session's hash, never from a generator).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from georouter.config import Cluster, Rule
from georouter.core.tenants import TenantView

# IUGG mean Earth radius.
EARTH_RADIUS_KM = 6371.0088
# A weighted split reads this many low bits of the caller's hash.
SPREAD_BITS = 32


class Reason(StrEnum):
    """Why a decision named its cluster, or named none. The policy orders by
    ``nearest``, ``country``, ``override`` or ``fallback`` (``weight`` when a tie
    split chose a cluster other than the nearest); ``sticky``, ``failover`` and
    ``rule`` come from the session map; ``none`` is a decision without a cluster."""

    NEAREST = "nearest"
    # Within `router.tie_km` of the nearest, chosen by the clusters' weights.
    WEIGHT = "weight"
    # The client is located only to its country: ranked from the country's point.
    COUNTRY = "country"
    # The client's network is overridden to a cluster (`[[overrides]] cluster`).
    OVERRIDE = "override"
    # The request names a tenant with a home cluster: ranked from the home, it first.
    TENANT = "tenant"
    FALLBACK = "fallback"
    STICKY = "sticky"
    FAILOVER = "failover"
    # The session's pin is to a cluster a strict residency rule keeps it out of.
    RULE = "rule"
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
    # The residency rule's verdict on it: "allowed", "forbidden" (strict rule),
    # "preferred" or "not preferred" (non-strict rule); None: no rule applies.
    rule: str | None = None
    # Its share of new sessions in a tie split; None: not in one.
    share: float | None = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "cluster": self.cluster.name,
            "distance_km": _round_km(self.distance_km),
            "chosen": self.chosen,
            "why": self.why,
        }
        if self.cluster.bias_km:
            body["bias_km"] = self.cluster.bias_km
            if self.distance_km is not None:
                body["biased_distance_km"] = _round_km(self.distance_km - self.cluster.bias_km)
        if self.share is not None:
            body["weight"] = self.cluster.weight
            body["share"] = round(self.share, 4)
        if self.rule is not None:
            body["rule"] = self.rule
        return body


# Clusters in order of preference, each with its distance (None: not measured
# from the client, as for the fallback order).
Order = tuple[tuple[Cluster, float | None], ...]


def nearest_order(lat: float, lon: float, clusters: tuple[Cluster, ...]) -> Order:
    """Every cluster by great-circle distance from (lat, lon) less its ``bias_km``,
    ties broken by name. The order keeps the true distance."""
    measured = sorted(
        (d - c.bias_km, c.name, d, c)
        for c, d in ((c, haversine_km(lat, lon, c.lat, c.lon)) for c in clusters)
    )
    return tuple((c, d) for _, _, d, c in measured)


def fallback_order(clusters: tuple[Cluster, ...], fallback: str) -> Order:
    """The fallback cluster, then the rest by their distance from it."""
    home = next((c for c in clusters if c.name == fallback), clusters[0])
    rest = [(c, d) for c, d in nearest_order(home.lat, home.lon, clusters) if c is not home]
    return ((home, None), *((c, None) for c, _ in rest))


def unmeasured(order: Order) -> Order:
    """``order`` without its distances: a ranking from a point that is not the client's."""
    return tuple((c, None) for c, _ in order)


def arrange(order: Order, rule: Rule) -> Order:
    """``order`` with the rule's clusters first, each part in its own order."""
    inside = [(c, d) for c, d in order if c.name in rule.clusters]
    return (*inside, *((c, d) for c, d in order if c.name not in rule.clusters))


class Ranking(NamedTuple):
    """An order of preference and the clusters that cannot take traffic now.

    ``chosen`` is the cluster picked (None when there is none). With a rule, the
    order holds the rule's clusters first; a strict rule's ``forbidden`` clusters
    are never chosen. ``band``: the clusters (indices in the order) that shared
    the choice by weight. The per-cluster verdicts (``candidates``) are only
    built when asked for.
    """

    reason: Reason
    order: Order
    unroutable: Mapping[str, str]
    chosen_at: int | None
    rule: Rule | None = None
    forbidden: frozenset[str] = frozenset()
    band: tuple[int, ...] = ()
    # The cluster an unmeasured order is built around (the fallback, or an
    # override's cluster); "": the order's first.
    anchor: str = ""
    # The request's tenant and its home (which leads the order unless ``ignored``).
    tenant: TenantView | None = None

    @property
    def keep_out(self) -> frozenset[str]:
        """The clusters a pinned session may not stay on: the strict rule's forbidden
        ones and, while its tenant's home is the choice, every cluster but the home
        (the session moves home; while the home is down, it stays where it is)."""
        tenant = self.tenant
        if tenant is None or not tenant.applied or self.chosen_at is None:
            return self.forbidden
        if self.order[self.chosen_at][0].name != tenant.home:
            return self.forbidden
        return frozenset(c.name for c, _ in self.order if c.name != tenant.home)

    @property
    def chosen(self) -> Candidate | None:
        if self.chosen_at is None:
            return None
        return self.candidates[self.chosen_at]

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        out: list[Candidate] = []
        winner: Cluster | None = None
        measured = self.reason in (Reason.NEAREST, Reason.WEIGHT)
        first = self.anchor or self.order[0][0].name
        rule = self.rule
        preferred = len(rule.clusters) if rule is not None else 0
        total = sum(self.order[j][0].weight for j in self.band)
        for i, (cluster, distance) in enumerate(self.order):
            verdict = _verdict(rule, i < preferred)
            share = None
            if i in self.band:
                share = cluster.weight / total if total else float(i == self.band[0])
            why_not = self.unroutable.get(cluster.name)
            if cluster.name in self.forbidden:
                assert rule is not None
                why = f"outside strict rule {rule.name!r}"
                out.append(Candidate(cluster, distance, False, why, verdict))
            elif why_not is not None:
                out.append(Candidate(cluster, distance, False, why_not, verdict, share))
            elif i == self.chosen_at:
                winner = cluster
                why = self._chosen_why(cluster, first, measured, share)
                out.append(Candidate(cluster, distance, True, why, verdict, share))
            else:
                why = self._passed_why(i, cluster, winner, measured, preferred)
                out.append(Candidate(cluster, distance, False, why, verdict, share))
        return tuple(out)

    def _chosen_why(self, cluster: Cluster, first: str, measured: bool, share: float | None) -> str:
        rule = self.rule
        of_rule = (
            f" of rule {rule.name!r}"
            if rule is not None
            and self.chosen_at is not None
            and self.chosen_at < len(rule.clusters)
            else ""
        )
        if self.reason is Reason.WEIGHT:
            return f"chosen by weight among clusters within tie_km{of_rule} (share {share:.0%})"
        if self.reason is Reason.COUNTRY:
            return f"nearest routable cluster{of_rule} to the client's country (located only to it)"
        if self.reason is Reason.OVERRIDE:
            if cluster.name == first:
                return "the cluster the client's network is overridden to"
            return f"nearest routable cluster{of_rule} to {first}, the override's cluster"
        if self.reason is Reason.TENANT:
            if cluster.name == first:
                return "the home cluster of the request's tenant"
            return f"nearest routable cluster{of_rule} to {first}, the tenant's home"
        if not measured:
            if of_rule or (rule is not None and self.chosen_at):
                return (
                    f"first routable cluster{of_rule} in the fallback order"
                    " (client has no location)"
                )
            return _fallback_why(cluster, first)
        why = f"nearest routable cluster{of_rule}"
        if share is not None:
            why += f", drawn by weight among clusters within tie_km (share {share:.0%})"
        return why

    def _passed_why(
        self, i: int, cluster: Cluster, winner: Cluster | None, measured: bool, preferred: int
    ) -> str:
        if winner is None:
            # A weighted choice may pass over a nearer cluster of its band.
            assert self.chosen_at is not None
            winner = self.order[self.chosen_at][0]
            return f"shares new sessions with {winner.name} by weight; not drawn this time"
        if i in self.band:
            return f"shares new sessions with {winner.name} by weight; not drawn this time"
        assert self.chosen_at is not None
        if self.rule is not None and self.chosen_at < preferred <= i:
            return f"not in rule {self.rule.name!r}, whose {winner.name} is routable"
        rel = "farther than" if measured else "ranked after"
        return f"{rel} {winner.name}"


def _verdict(rule: Rule | None, inside: bool) -> str | None:
    if rule is None:
        return None
    if rule.strict:
        return "allowed" if inside else "forbidden"
    return "preferred" if inside else "not preferred"


def _round_km(d: float | None) -> float | None:
    return None if d is None else round(d, 1)


def choose(
    order: Order,
    reason: Reason,
    unroutable: Mapping[str, str],
    *,
    rule: Rule | None = None,
    forbidden: frozenset[str] = frozenset(),
    tie_km: float = 0.0,
    spread: int | str | bytes | None = None,
    anchor: str = "",
) -> Ranking:
    """The first cluster of ``order`` that is neither in ``unroutable`` nor
    ``forbidden``; with ``tie_km`` and a ``spread`` (the session's hash, or the
    session id or address bytes to hash with ``spread_of``, only once a split
    needs it), one of the clusters whose biased distance is within ``tie_km`` of
    it, by weight.

    With a ``rule``, ``order`` must hold its clusters first (``arrange``); a tie
    split never crosses from the rule's clusters to the others.
    """
    first = None
    for i, (cluster, _) in enumerate(order):
        if cluster.name not in unroutable and cluster.name not in forbidden:
            first = i
            break
    if first is None:
        return Ranking(reason, order, unroutable, None, rule, forbidden, (), anchor)
    if tie_km <= 0 or spread is None or reason is not Reason.NEAREST:
        return Ranking(reason, order, unroutable, first, rule, forbidden, (), anchor)
    band = _band(order, first, unroutable=unroutable, forbidden=forbidden, tie_km=tie_km, rule=rule)
    if len(band) < 2:
        return Ranking(reason, order, unroutable, first, rule, forbidden, (), anchor)
    if not isinstance(spread, int):
        spread = spread_of(spread)
    picked = pick_by_weight([order[j][0].weight for j in band], spread)
    chosen = band[picked]
    why = Reason.WEIGHT if chosen != first else reason
    return Ranking(why, order, unroutable, chosen, rule, forbidden, band, anchor)


def spread_of(key: str | bytes) -> int:
    """A hash of a session id (or a client address's bytes) that every edge computes
    alike, unlike ``hash()``, which Python salts per process."""
    data = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _band(
    order: Order,
    first: int,
    *,
    unroutable: Mapping[str, str],
    forbidden: frozenset[str],
    tie_km: float,
    rule: Rule | None,
) -> tuple[int, ...]:
    """The routable clusters from ``first`` on whose biased distance is within
    ``tie_km`` of its own, in the same part of the order (the rule's, or not)."""
    nearest, d0 = order[first]
    assert d0 is not None
    limit = d0 - nearest.bias_km + tie_km
    preferred = len(rule.clusters) if rule is not None else 0
    inside = first < preferred
    band = [first]
    for j in range(first + 1, len(order)):
        cluster, d = order[j]
        if (j < preferred) is not inside:
            break
        assert d is not None
        if d - cluster.bias_km > limit:
            break
        if cluster.name not in unroutable and cluster.name not in forbidden:
            band.append(j)
    return tuple(band)


def pick_by_weight(weights: list[float], spread: int) -> int:
    """The index drawn from ``weights`` by ``spread``: each index for the share of
    the hash space its weight is of the total (all weights 0: the first)."""
    total = sum(weights)
    if total <= 0:
        return 0
    point = (spread % (1 << SPREAD_BITS)) / (1 << SPREAD_BITS) * total
    reached = 0.0
    for i, weight in enumerate(weights):
        reached += weight
        if point < reached:
            return i
    # Rounding may leave the point just past the last bound.
    return max(i for i, w in enumerate(weights) if w > 0)


def _fallback_why(cluster: Cluster, fallback: str) -> str:
    if cluster.name == fallback:
        return "fallback cluster (client has no location)"
    return f"nearest routable cluster to the fallback {fallback} (client has no location)"
