"""The runtime snapshot: the configuration and everything derived from it, as one value.

``Runtime.of(config)`` is a pure function of the configuration: the cluster
index, the fallback order, the trust rule for forwarding headers, and the
cluster order for a client's position. A request reads the router's snapshot
once and uses only it; a reload will build a new one beside it and swap the
reference (``Router.swap``), so no request ever sees half of each. Nothing
else copies configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from georouter.config import Cluster, Config
from georouter.core.clientip import TrustRule
from georouter.core.location import Location
from georouter.core.policy import Order, Ranking, Reason, choose, fallback_order, nearest_order

# Distinct client positions whose cluster order is remembered; GeoIP databases
# place most addresses at a few thousand city centroids.
ORDER_CACHE_SIZE = 65536


@dataclass(frozen=True, slots=True, eq=False)
class Runtime:
    config: Config
    clusters: Mapping[str, Cluster]
    trust: TrustRule
    fallback_order: Order
    # The order for a position depends only on the position and the clusters (health
    # only picks within it): computed once per position, for this snapshot's life.
    _orders: dict[tuple[float, float], Order] = field(default_factory=dict, repr=False)
    # The last health view seen and its routable names: a health view is one value
    # until health changes, so nearly every request reuses the test.
    _routable: list[tuple[Mapping[str, str], Callable[[str], bool]]] = field(
        default_factory=list, repr=False
    )

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
        )

    def order(self, location: Location | None) -> tuple[Order, Reason]:
        """The clusters in order of preference for a client at ``location``: by
        distance, or without a point to measure from, the fallback order."""
        if location is None or location.lat is None or location.lon is None:
            return self.fallback_order, Reason.FALLBACK
        point = (location.lat, location.lon)
        order = self._orders.get(point)
        if order is None:
            if len(self._orders) >= ORDER_CACHE_SIZE:
                self._orders.clear()
            order = self._orders[point] = nearest_order(*point, self.config.clusters)
        return order, Reason.NEAREST

    def rank(self, location: Location | None, unroutable: Mapping[str, str]) -> Ranking:
        """The ranking for a client at ``location``: its order, the first routable chosen."""
        order, reason = self.order(location)
        return choose(order, reason, unroutable)

    def usable(self, unroutable: Mapping[str, str]) -> Callable[[str], bool]:
        """Whether a session pinned to a cluster may stay there: configured, routable."""
        last = self._routable
        if last and last[0][0] is unroutable:
            return last[0][1]
        test = frozenset(n for n in self.clusters if n not in unroutable).__contains__
        self._routable[:] = [(unroutable, test)]
        return test
