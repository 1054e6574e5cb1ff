"""Residency rules: which rule, if any, a client falls under. Pure.

A rule matches a client whose country, continent or address it lists (any of
them). The first matching rule in the file applies; the others are not read.
What a rule does to the ranking (its clusters only, or first) is the
policy's; this module only answers "which rule", with one dict probe per
country and continent and integer range checks for the rules that list
networks.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from georouter.config import Cluster, Rule
from georouter.core.clientip import IPAddress
from georouter.core.location import Location

# A rule's networks as integer ranges: (rule index, ((version, first, last), ...)).
_NetRule = tuple[int, tuple[tuple[int, int, int], ...]]


class RuleBook:
    """The rules of one configuration, indexed for matching."""

    __slots__ = ("_by_continent", "_by_country", "_by_net", "forbidden", "rules")

    def __init__(self, rules: tuple[Rule, ...], clusters: tuple[Cluster, ...]) -> None:
        self.rules = rules
        by_country: dict[str, int] = {}
        by_continent: dict[str, int] = {}
        for i, rule in enumerate(rules):
            for code in rule.countries:
                by_country.setdefault(code, i)
            for code in rule.continents:
                by_continent.setdefault(code, i)
        self._by_country: Mapping[str, int] = MappingProxyType(by_country)
        self._by_continent: Mapping[str, int] = MappingProxyType(by_continent)
        self._by_net: tuple[_NetRule, ...] = tuple(
            (
                i,
                tuple(
                    (n.version, int(n.network_address), int(n.broadcast_address)) for n in r.cidrs
                ),
            )
            for i, r in enumerate(rules)
            if r.cidrs
        )
        # Per rule: the clusters a strict rule keeps its clients out of.
        self.forbidden: tuple[frozenset[str], ...] = tuple(
            frozenset(c.name for c in clusters if c.name not in r.clusters)
            if r.strict
            else frozenset()
            for r in rules
        )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, location: Location | None, ip: IPAddress | None) -> int | None:
        """The index of the first rule the client matches (None: no rule)."""
        best: int | None = None
        if location is not None:
            if location.country is not None:
                best = self._by_country.get(location.country)
            if location.continent is not None:
                found = self._by_continent.get(location.continent)
                if found is not None and (best is None or found < best):
                    best = found
        if ip is not None and self._by_net:
            version, key = ip.version, int(ip)
            for i, ranges in self._by_net:
                if best is not None and i >= best:
                    break
                for v, first, last in ranges:
                    if v == version and first <= key <= last:
                        return i
        return best
