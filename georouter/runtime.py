"""The runtime snapshot: the configuration and everything derived from it, as one value.

``Runtime.of(config)`` is a pure function of the configuration: the cluster
index, the fallback order, the trust rule for forwarding headers, the
residency rules and location overrides indexed for lookup, and the cluster
order for a client's position. A request reads the router's snapshot once
and uses only it; a reload will build a new one beside it and swap the
reference (``Router.swap``), so no request ever sees half of each. Nothing
else copies configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from georouter.config import AllDown, Cluster, Config, Override
from georouter.core.admission import Admission
from georouter.core.clientip import IPAddress, TrustRule
from georouter.core.location import Location, LocationSource, Precision
from georouter.core.overrides import OverrideTable
from georouter.core.policy import (
    Order,
    Ranking,
    Reason,
    arrange,
    choose,
    fallback_order,
    nearest_order,
    unmeasured,
)
from georouter.core.rules import RuleBook
from georouter.core.tenants import StoredHome, TenantView, find_home

# Distinct client positions whose cluster order is remembered; GeoIP databases
# place most addresses at a few thousand city centroids.
ORDER_CACHE_SIZE = 65536
# Points GeoIP databases give an address they know only the country of; MaxMind's
# records without a city are caught by their precision, these whatever the record.
DEFAULT_POINTS = frozenset({(37.751, -97.822)})

# (lat, lon, rule index or -1, country-level) for a position's order; a string
# first for the orders built around a cluster.
_OrderKey = tuple[object, ...]
_NOTHING: Mapping[str, str] = MappingProxyType({})
_NO_RULE: frozenset[str] = frozenset()
_NO_ADMISSIONS: Mapping[str, Admission] = MappingProxyType({})
_NO_LOADS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class Runtime:
    config: Config
    clusters: Mapping[str, Cluster]
    trust: TrustRule
    fallback_order: Order
    rules: RuleBook
    overrides: OverrideTable
    # The configured tenant homes ([[tenants.homes]]), by tenant id.
    homes: Mapping[str, str]
    # The order for a position depends only on the position, the clusters and the
    # client's rule (health only picks within it): computed once per position.
    _orders: dict[_OrderKey, Order] = field(default_factory=dict, repr=False)
    # The last health view seen and its routable names, per rule: a health view is
    # one value until health changes, so nearly every request reuses the test.
    _routable: list[tuple[Mapping[str, str], dict[frozenset[str], Callable[[str], bool]]]] = field(
        default_factory=list, repr=False
    )
    # Locations built for overridden networks, by override and database answer.
    _placed: dict[tuple[int, Location | None], Location] = field(default_factory=dict, repr=False)
    # The last health view seen and whether it puts the edge in panic.
    _panic: list[tuple[Mapping[str, str], bool]] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, config: Config) -> Runtime:
        return cls(
            config=config,
            clusters={c.name: c for c in config.clusters},
            trust=TrustRule(
                trusted=config.router.trusted_proxies,
                header=config.router.client_ip_header,
                max_hops=config.router.max_forwarded_hops,
            ),
            fallback_order=fallback_order(config.clusters, config.router.fallback),
            rules=RuleBook(config.rules, config.clusters),
            overrides=OverrideTable(config.overrides),
            homes={h.tenant: h.cluster for h in config.tenants.homes},
        )

    @property
    def weighted(self) -> bool:
        """Whether a ranking may split new sessions by weight (callers pass a spread)."""
        router = self.config.router
        return router.tie_km > 0 or router.failover_spread_km > 0

    def coarse(self, location: Location) -> bool:
        """Whether ``location`` is only a country-level guess (see README, [geoip])."""
        if location.precision is Precision.COUNTRY:
            return True
        accuracy = location.accuracy_km
        if accuracy is not None and accuracy > self.config.geoip.max_accuracy_km:
            return True
        return (location.lat, location.lon) in DEFAULT_POINTS

    def order(self, location: Location | None, rule: int | None = None) -> tuple[Order, Reason]:
        """The clusters in order of preference for a client at ``location`` (under
        rule number ``rule``): by distance; for a country-level location, from its
        point but without claiming a distance; without a point, the fallback order."""
        if location is None or location.lat is None or location.lon is None:
            return self._cached(("fallback", rule), self._fallback), Reason.FALLBACK
        coarse = self.coarse(location)
        key = (location.lat, location.lon, -1 if rule is None else rule, coarse)
        order = self._orders.get(key)
        if order is None:
            if len(self._orders) >= ORDER_CACHE_SIZE:
                self._orders.clear()
            order = nearest_order(location.lat, location.lon, self.config.clusters)
            if coarse:
                order = unmeasured(order)
            if rule is not None:
                order = arrange(order, self.rules.rules[rule])
            self._orders[key] = order
        return order, Reason.COUNTRY if coarse else Reason.NEAREST

    def _fallback(self) -> Order:
        return self.fallback_order

    def _cached(self, key: _OrderKey, build: Callable[[], Order]) -> Order:
        order = self._orders.get(key)
        if order is None:
            order = build()
            rule = key[-1]
            if isinstance(rule, int):
                order = arrange(order, self.rules.rules[rule])
            self._orders[key] = order
        return order

    def rank(
        self,
        location: Location | None,
        unroutable: Mapping[str, str],
        *,
        client_ip: IPAddress | None = None,
        spread: int | str | bytes | None = None,
        override: Override | None = None,
        admit: Mapping[str, Admission] = _NO_ADMISSIONS,
        loads: Mapping[str, float] = _NO_LOADS,
        tenant: TenantView | None = None,
        operator: Callable[[], Mapping[str, str]] | None = None,
    ) -> Ranking:
        """The ranking for a client at ``location``: its order (its rule's clusters
        first), the first routable allowed cluster that takes the session
        (``admit``) chosen, or with ``router.tie_km`` one within reach of it drawn
        by ``spread`` (a hash, or a session id or address bytes to hash, see
        ``policy.choose``). A ``tenant`` whose home holds is ranked from its home,
        like an override's cluster. Below ``router.panic_below`` health is ignored;
        with no cluster routable, ``router.all_down`` decides."""
        rule_at = self.rules.match(location, client_ip) if self.rules else None
        if tenant is not None and tenant.applied:
            tenant, rule_at = self._homed(tenant, rule_at)
        if tenant is not None and tenant.applied:
            home = tenant.home
            assert home is not None
            order = self._cached(
                ("tenant", home, rule_at),
                lambda: fallback_order(self.config.clusters, home),
            )
            reason, anchor = Reason.TENANT, home
        elif override is not None and override.cluster is not None:
            name = override.cluster
            order = self._cached(
                ("override", name, rule_at),
                lambda: fallback_order(self.config.clusters, name),
            )
            reason, anchor = Reason.OVERRIDE, name
        else:
            order, reason = self.order(location, rule_at)
            anchor = self.config.router.fallback if reason is Reason.FALLBACK else ""
        router = self.config.router
        rule = None if rule_at is None else self.rules.rules[rule_at]
        forbidden = _NO_RULE if rule_at is None else self.rules.forbidden[rule_at]
        panic = router.panic_below > 0 and self.panicking(unroutable)
        if not panic:
            ranking = choose(
                order,
                reason,
                unroutable,
                rule=rule,
                forbidden=forbidden,
                tie_km=router.tie_km,
                spread=spread,
                anchor=anchor,
                admit=admit,
                spread_km=router.failover_spread_km,
                loads=loads,
            )
        if panic or (ranking.chosen_at is None and router.all_down is not AllDown.REFUSE):
            ranking = self._ignoring(
                order,
                reason,
                unroutable,
                rule_at=rule_at,
                spread=spread,
                anchor=anchor,
                operator=_NOTHING if operator is None else operator(),
                panic=panic,
            )
        return ranking if tenant is None else ranking._replace(tenant=tenant)

    def _ignoring(
        self,
        order: Order,
        reason: Reason,
        unroutable: Mapping[str, str],
        *,
        rule_at: int | None,
        spread: int | str | bytes | None,
        anchor: str,
        operator: Mapping[str, str],
        panic: bool,
    ) -> Ranking:
        """The ranking when health is ignored: in panic (too few clusters look healthy
        to trust health: spread over all of them rather than pile every client onto
        the few left, Envoy's panic mode), or with every allowed cluster down and
        ``router.all_down`` other than a 503. The clusters in ``operator`` (drained,
        forced down) stay out: health is ignored, not the operator."""
        router = self.config.router
        rule = None if rule_at is None else self.rules.rules[rule_at]
        forbidden = _NO_RULE if rule_at is None else self.rules.forbidden[rule_at]
        if panic or router.all_down is AllDown.IGNORE_HEALTH:
            ranking = choose(
                order,
                reason,
                operator,
                rule=rule,
                forbidden=forbidden,
                tie_km=router.tie_km,
                spread=spread,
                anchor=anchor,
            )
        else:
            fallback = self._cached(("fallback", rule_at), self._fallback)
            ranking = choose(fallback, Reason.FALLBACK, operator, rule=rule, forbidden=forbidden)
        if ranking.chosen_at is None:
            return ranking
        why = Reason.PANIC if panic else Reason.ALL_DOWN
        return ranking._replace(reason=why, ignored=unroutable)

    def _homed(self, tenant: TenantView, rule_at: int | None) -> tuple[TenantView, int | None]:
        """The tenant, and the rule that still shapes its order: a strict rule keeps
        the client in (its home is ignored if outside); a preference yields to it."""
        if rule_at is None:
            return tenant, None
        rule = self.rules.rules[rule_at]
        if not rule.strict:
            return tenant, None
        if tenant.home in self.rules.forbidden[rule_at]:
            why = f"{tenant.home!r} is outside strict rule {rule.name!r}, which holds"
            return replace(tenant, ignored=why), rule_at
        return tenant, rule_at

    def tenant(self, tenant: str, stored: Mapping[str, StoredHome]) -> TenantView:
        """``tenant``'s home: run-time (``stored``) first, then the configured one."""
        return find_home(tenant, stored, self.homes, self.clusters)

    def panicking(self, unroutable: Mapping[str, str]) -> bool:
        """Whether fewer than ``router.panic_below`` of the clusters are routable."""
        below = self.config.router.panic_below
        if below <= 0:
            return False
        last = self._panic
        if last and last[0][0] is unroutable:
            return last[0][1]
        clusters = self.config.clusters
        routable = sum(1 for c in clusters if c.name not in unroutable)
        panic = routable < below * len(clusters)
        self._panic[:] = [(unroutable, panic)]
        return panic

    def locate(
        self, ip: IPAddress, lookup: Callable[[IPAddress], Location | None]
    ) -> tuple[Location | None, Override | None]:
        """Where ``ip`` is: its override's place if one holds it (longest prefix
        first), else what ``lookup`` (the GeoIP database) says."""
        found = lookup(ip)
        if not self.overrides:
            return found, None
        override = self.overrides.lookup(ip)
        if override is None:
            return found, None
        key = (id(override), found)
        placed = self._placed.get(key)
        if placed is None:
            if len(self._placed) >= ORDER_CACHE_SIZE:
                self._placed.clear()
            placed = self._placed[key] = _placed(override, found, self.clusters)
        return placed, override

    def usable(
        self, unroutable: Mapping[str, str], forbidden: frozenset[str] = frozenset()
    ) -> Callable[[str], bool]:
        """Whether a session pinned to a cluster may stay there: configured, routable,
        and not kept out by the client's strict rule (``forbidden``)."""
        last = self._routable
        if not last or last[0][0] is not unroutable:
            self._routable[:] = [(unroutable, {})]
        tests = self._routable[0][1]
        # One test per forbidden set (a frozenset keeps its hash) while health holds.
        test = tests.get(forbidden)
        if test is None:
            names = frozenset(n for n in self.clusters if n not in unroutable)
            test = tests[forbidden] = (names - forbidden).__contains__
        return test


def _placed(
    override: Override, found: Location | None, clusters: Mapping[str, Cluster]
) -> Location:
    if override.cluster is not None:
        at = clusters[override.cluster]
        lat, lon = at.lat, at.lon
    else:
        assert override.lat is not None
        assert override.lon is not None
        lat, lon = override.lat, override.lon
    # Where the override says nothing of the country, the database's still holds for
    # the residency rules; where it says either, both are its own.
    country, continent = override.country, override.continent
    if country is None and continent is None and found is not None:
        country, continent = found.country, found.continent
    return Location(
        lat=lat,
        lon=lon,
        country=country,
        accuracy_km=None,
        source=LocationSource.OVERRIDE,
        continent=continent,
    )
