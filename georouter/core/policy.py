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

import math
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from georouter.config import Cluster, Rule
from georouter.core.admission import Admission, point_of
from georouter.core.candidate import Candidate, verdict_of
from georouter.core.split import SPREAD_BITS, band_of, headroom, pick_by_weight, spread_of
from georouter.core.tenants import TenantView

# IUGG mean Earth radius.
EARTH_RADIUS_KM = 6371.0088


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
    # A nearer cluster's load kept this new session off it (`spill_low`/`spill_high`).
    SPILL = "spill"
    # A nearer cluster is back from being down and not yet taking this session
    # (`[health] stabilize_s`, `ramp_s`).
    RAMP = "ramp"
    # The nearest cluster takes no new sessions; they spread over the next ones by
    # headroom (`router.failover_spread_km`), and this one was drawn.
    SPREAD = "spread"
    # The session's pin is kept while its cluster is down (`on_pinned_down =
    # "temporary"`, or the cluster is down from this edge only): served here meanwhile.
    DETOUR = "detour"
    # The session's cluster is down and `on_pinned_down = "strict"`: a 503.
    PINNED_DOWN = "pinned_down"
    # Fewer than `router.panic_below` of the clusters are routable: health ignored.
    PANIC = "panic"
    # No cluster the client may go to is routable; `router.all_down` chose this one.
    ALL_DOWN = "all_down"
    # No cluster could take the client (every one is down): the answer is a 503.
    NONE = "none"


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance; haversine stays accurate for short distances, unlike acos."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


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
    # The band's weights (weight, times headroom in a failover spread).
    band_weights: tuple[float, ...] = ()
    # The clusters taking less than their share of new sessions now, and the ones
    # (indices) this request passed over for it.
    admit: Mapping[str, Admission] = MappingProxyType({})
    held: tuple[int, ...] = ()
    # What health said, when the choice ignored it (panic, all_down); None: it did not.
    ignored: Mapping[str, str] | None = None
    # The loads the clusters reported, for the explanation.
    loads: Mapping[str, float] = MappingProxyType({})
    # The chosen cluster is held back too, but no other one may take the session.
    overflow: bool = False
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
        # Distances from the client's point (not a country's, an override's cluster
        # or the fallback's): whatever moved the choice along (spill, ramp, panic).
        measured = self.order[0][1] is not None
        first = self.anchor or self.order[0][0].name
        rule = self.rule
        preferred = len(rule.clusters) if rule is not None else 0
        weights = self.band_weights or tuple(self.order[j][0].weight for j in self.band)
        total = sum(weights)
        ignored = self.ignored or {}
        for i, (cluster, distance) in enumerate(self.order):
            verdict = verdict_of(rule, i < preferred)
            share = None
            if i in self.band:
                at = self.band.index(i)
                share = weights[at] / total if total else float(at == 0)
            name = cluster.name
            why_not = self.unroutable.get(name)
            chosen = False
            if name in self.forbidden:
                assert rule is not None
                why, share = f"outside strict rule {rule.name!r}", None
            elif why_not is not None:
                why = why_not
            elif i in self.held:
                why = f"{self.admit[name].why}; this session is not among them"
            elif i == self.chosen_at:
                winner, chosen = cluster, True
                why = self._chosen_why(cluster, first, measured, share)
                if self.overflow:
                    why += "; held back too, but no other cluster may take the session"
            else:
                why = self._passed_why(i, cluster, winner, measured, preferred)
            admission = self.admit.get(name)
            ignored_why = ignored.get(name)
            load = self.loads.get(name)
            out.append(
                Candidate(
                    cluster, distance, chosen, why, verdict, share, admission, ignored_why, load
                )
            )
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
        if self.ignored is not None:
            return self._ignored_why(cluster)
        if self.reason is Reason.WEIGHT:
            return f"chosen by weight among clusters within tie_km{of_rule} (share {share:.0%})"
        if self.reason is Reason.SPREAD:
            return (
                f"drawn by weight and headroom among the clusters within failover_spread_km"
                f" of the first routable one{of_rule} (share {share:.0%})"
            )
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
        if self.held:
            why = f"nearest routable cluster{of_rule} taking this session"
        if share is not None:
            why += f", drawn by weight among clusters within tie_km (share {share:.0%})"
        return why

    def _ignored_why(self, cluster: Cluster) -> str:
        what = "health ignored"
        if self.reason is Reason.PANIC:
            what = "fewer clusters routable than router.panic_below: health ignored"
        elif self.reason is Reason.ALL_DOWN:
            what = "no cluster routable: router.all_down chose it"
        assert self.ignored is not None
        state = self.ignored.get(cluster.name)
        return f"{what}" + (f" (it is {state})" if state else "")

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
        if self.ignored is not None and self.reason is Reason.ALL_DOWN:
            return f"router.all_down chose {winner.name}"
        if self.rule is not None and self.chosen_at < preferred <= i:
            return f"not in rule {self.rule.name!r}, whose {winner.name} is routable"
        rel = "farther than" if measured else "ranked after"
        return f"{rel} {winner.name}"


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
    admit: Mapping[str, Admission] = MappingProxyType({}),
    spread_km: float = 0.0,
    loads: Mapping[str, float] = MappingProxyType({}),
) -> Ranking:
    """The first cluster of ``order`` that is neither in ``unroutable`` nor
    ``forbidden``, and that takes this session (``admit``: the clusters taking only a
    share of new sessions, compared with a point drawn from ``spread``). With
    ``tie_km`` and a ``spread`` (the session's hash, or the session id or address
    bytes to hash with ``spread_of``, only once a split needs it), one of the
    clusters whose biased distance is within ``tie_km`` of it, by weight; with
    ``spread_km``, when a nearer cluster was passed over, one within ``spread_km``
    of it, by weight times headroom (1 - its load in ``loads``).

    With a ``rule``, ``order`` must hold its clusters first (``arrange``); a tie
    split never crosses from the rule's clusters to the others.
    """
    if spread is not None and not isinstance(spread, int) and (admit or tie_km or spread_km):
        spread = spread_of(spread)
    point = None
    first = None
    home = None
    held: list[int] = []
    for i, (cluster, _) in enumerate(order):
        name = cluster.name
        if name in forbidden:
            continue
        if home is None:
            home = i
        if name in unroutable:
            continue
        if admit:
            admission = admit.get(name)
            if admission is not None:
                if point is None:
                    point = point_of(spread) if isinstance(spread, int) else 0.0
                if point >= admission.share:
                    held.append(i)
                    continue
        first = i
        break
    overflow = first is None and bool(held)
    if overflow:
        # Held back is not down: with nowhere else to go, a loaded or ramping cluster
        # takes the session rather than the client getting a 503.
        first, held = held[0], held[1:]
    base = Ranking(reason, order, unroutable, first, rule, forbidden, (), anchor, (), admit)
    if overflow:
        base = base._replace(overflow=True)
    if loads:
        base = base._replace(loads=loads)
    if held:
        base = base._replace(held=tuple(held))
        if first is None or held[0] < first:
            base = base._replace(reason=Reason(admit[order[held[0]][0].name].held))
    if first is None:
        return base._replace(chosen_at=None)
    measured = reason is Reason.NEAREST
    if not measured or spread is None:
        return base
    assert isinstance(spread, int)
    failing_over = spread_km > 0 and home is not None and home != first
    width = max(tie_km, spread_km) if failing_over else tie_km
    if width <= 0:
        return base
    at = point_of(spread) if point is None else point
    band = band_of(
        order,
        first,
        unroutable=unroutable,
        forbidden=forbidden,
        width=width,
        rule=rule,
        taken=lambda name: name not in admit or at < admit[name].share,
    )
    if len(band) < 2:
        return base
    weights = [order[j][0].weight for j in band]
    if failing_over:
        weights = [
            w * headroom(loads.get(order[j][0].name)) for w, j in zip(weights, band, strict=True)
        ]
    chosen = band[pick_by_weight(weights, spread)]
    why = base.reason
    if chosen != first:
        why = Reason.SPREAD if failing_over else Reason.WEIGHT
    return base._replace(reason=why, chosen_at=chosen, band=band, band_weights=tuple(weights))


def _fallback_why(cluster: Cluster, fallback: str) -> str:
    if cluster.name == fallback:
        return "fallback cluster (client has no location)"
    return f"nearest routable cluster to the fallback {fallback} (client has no location)"


__all__ = [
    "SPREAD_BITS",
    "Candidate",
    "Order",
    "Ranking",
    "Reason",
    "arrange",
    "choose",
    "fallback_order",
    "haversine_km",
    "nearest_order",
    "pick_by_weight",
    "spread_of",
    "unmeasured",
]
