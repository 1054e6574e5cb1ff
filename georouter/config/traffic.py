"""The traffic-policy tables of ``clusters.toml``: ``[[rules]]`` and ``[[overrides]]``,
and the ``[router]`` keys that decide what happens around "nearest healthy".

Both name clusters, so they are read after ``[[clusters]]`` with the names the
operator wrote (``names``); a name that is not among them is reported at its
own key path (``rules[0].clusters[1]: no cluster named 'x'``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection
from typing import Any

from georouter.config.model import (
    CONTINENTS,
    AllDown,
    Network,
    Override,
    PinnedDown,
    RouterSettings,
    Rule,
)
from georouter.config.values import (
    Invalid,
    Section,
    boolean,
    choice,
    fmt,
    networks,
    number,
    quoted,
    string,
    type_name,
)
from georouter.errors import Problem

_COUNTRY = re.compile(r"[A-Za-z]{2}")


def _tables(value: Any, what: str) -> list[Any] | Invalid:
    if not isinstance(value, list):
        return Invalid(f"must be an array of [[{what}]] tables, not {type_name(value)}")
    return value


def country(value: Any) -> str | Invalid:
    """An ISO 3166-1 alpha-2 code, in upper case."""
    if not isinstance(value, str) or not _COUNTRY.fullmatch(value):
        shown = quoted(value) if isinstance(value, str) else type_name(value)
        return Invalid(f"must be a two-letter ISO country code such as 'DE', not {shown}")
    return value.upper()


def continent(value: Any) -> str | Invalid:
    code = value.upper() if isinstance(value, str) else None
    if code not in CONTINENTS:
        shown = quoted(value) if isinstance(value, str) else type_name(value)
        allowed = ", ".join(sorted(CONTINENTS))
        return Invalid(f"must be a continent code ({allowed}), not {shown}")
    return code


def _codes(
    one: Callable[[Any], str | Invalid],
) -> Callable[[Any], frozenset[str] | Invalid]:
    def check(value: Any) -> frozenset[str] | Invalid:
        if not isinstance(value, list):
            return Invalid(f"must be an array of strings, not {type_name(value)}")
        found: list[str] = []
        for i, item in enumerate(value):
            code = one(item)
            if isinstance(code, Invalid):
                return Invalid(f"[{i}] {code}")
            if code in found:
                return Invalid(f"[{i}] repeats {code!r}")
            found.append(code)
        return frozenset(found)

    return check


def _cidr(value: Any) -> Network | Invalid:
    nets = networks([value]) if isinstance(value, str) else None
    if nets is None:
        return Invalid(f"must be a CIDR string such as '192.0.2.0/24', not {type_name(value)}")
    if isinstance(nets, Invalid):
        return Invalid(nets.removeprefix("[0] "))
    return nets[0]


def _cluster_names(
    s: Section, key: str, names: Collection[str], *, required: bool
) -> tuple[str, ...]:
    """An array of configured cluster names, each problem at its own index."""
    s.seen.add(key)
    if key not in s.table:
        if required:
            s.problem(key, "is required")
        return ()
    value = s.table[key]
    if not isinstance(value, list) or not value:
        s.problem(key, "must be a non-empty array of cluster names")
        return ()
    found: list[str] = []
    for i, item in enumerate(value):
        at = f"{s.key(key)}[{i}]"
        if not isinstance(item, str):
            s.problems.append(Problem(at, f"must be a cluster name, not {type_name(item)}"))
        elif item not in names:
            s.problems.append(Problem(at, f"no cluster named {quoted(item)}"))
        elif item in found:
            s.problems.append(Problem(at, f"repeats {quoted(item)}"))
        else:
            found.append(item)
    return tuple(found)


def parse_rules(value: Any, names: Collection[str], problems: list[Problem]) -> tuple[Rule, ...]:
    tables = _tables(value, "rules")
    if isinstance(tables, Invalid):
        problems.append(Problem("rules", tables))
        return ()
    rules: list[Rule] = []
    named: dict[str, int] = {}
    for i, table in enumerate(tables):
        path = f"rules[{i}]"
        before = len(problems)
        s = Section(table, path, problems)
        name = s.get("name", _rule_name, f"rule {i}")
        if name in named:
            s.problem("name", f"duplicate rule name {quoted(name)} (first at rules[{named[name]}])")
        named.setdefault(name, i)
        no_codes: frozenset[str] = frozenset()
        countries = s.get("countries", _codes(country), no_codes)
        continents = s.get("continents", _codes(continent), no_codes)
        no_nets: tuple[Network, ...] = ()
        cidrs = s.get("cidrs", networks, no_nets)
        if s.valid("countries", "continents", "cidrs") and not (countries or continents or cidrs):
            s.problem("", "matches no client: give countries, continents or cidrs")
        clusters = _cluster_names(s, "clusters", names, required=True)
        strict = s.get("strict", boolean, False)
        s.finish()
        if len(problems) == before:
            rules.append(Rule(name, clusters, strict, countries, continents, cidrs))
    return tuple(rules)


def _rule_name(value: Any) -> str | Invalid:
    name = string(value)
    if isinstance(name, Invalid) or (0 < len(name) <= 64 and name.isprintable()):
        return name
    return Invalid(f"must be 1-64 printable characters, not {quoted(name)}")


def parse_overrides(
    value: Any, names: Collection[str], problems: list[Problem]
) -> tuple[Override, ...]:
    tables = _tables(value, "overrides")
    if isinstance(tables, Invalid):
        problems.append(Problem("overrides", tables))
        return ()
    overrides: list[Override] = []
    seen: dict[Network, int] = {}
    for i, table in enumerate(tables):
        path = f"overrides[{i}]"
        before = len(problems)
        s = Section(table, path, problems)
        cidr = s.get("cidr", _cidr, ipaddress.ip_network("0.0.0.0/32"), required=True)
        if s.valid("cidr") and "cidr" in s.table:
            if cidr in seen:
                s.problem("cidr", f"{str(cidr)!r} is overridden already at overrides[{seen[cidr]}]")
            seen.setdefault(cidr, i)
        cluster = s.get("cluster", string, None)
        if cluster is not None and cluster not in names:
            s.problem("cluster", f"no cluster named {quoted(cluster)}")
        lat = s.get("lat", number(-90, 90), None)
        lon = s.get("lon", number(-180, 180), None)
        has_point = "lat" in s.table or "lon" in s.table
        if cluster is not None and has_point:
            s.problem("", "give either cluster or lat and lon, not both")
        elif has_point and ("lat" not in s.table or "lon" not in s.table):
            s.problem("lon" if "lat" in s.table else "lat", "is required beside the other")
        elif "cluster" not in s.table and not has_point:
            s.problem("", "needs either cluster or lat and lon")
        country_code = s.get("country", country, None)
        continent_code = s.get("continent", continent, None)
        s.finish()
        if len(problems) == before:
            overrides.append(Override(cidr, cluster, lat, lon, country_code, continent_code))
    return tuple(overrides)


def router_policy(r: Section) -> dict[str, Any]:
    """The ``[router]`` keys of the traffic policy, as RouterSettings fields."""
    defaults = RouterSettings(fallback="")
    spill_low = r.get("spill_low", number(0, 1), defaults.spill_low)
    spill_high = r.get("spill_high", number(0, 1), defaults.spill_high)
    if r.valid("spill_low", "spill_high") and spill_high <= spill_low:
        r.problem(
            "spill_high",
            f"must be above spill_low ({fmt(spill_low)}): between them a cluster's share"
            " of new sessions shrinks",
        )
    return {
        "on_pinned_down": r.get("on_pinned_down", choice(PinnedDown), defaults.on_pinned_down),
        "all_down": r.get("all_down", _all_down, defaults.all_down),
        "panic_below": r.get("panic_below", number(0, 1), defaults.panic_below),
        "spill_low": spill_low,
        "spill_high": spill_high,
        "failover_spread_km": r.get(
            "failover_spread_km", number(0, 20_000), defaults.failover_spread_km
        ),
    }


def _all_down(value: Any) -> AllDown | Invalid:
    # TOML users write 503 as a number as often as a string.
    if isinstance(value, int) and not isinstance(value, bool) and value == 503:
        return AllDown.REFUSE
    return choice(AllDown)(value)
