"""Configuration: ``clusters.toml`` into the frozen dataclasses of ``model``.

``parse(mapping)`` is pure and validates the whole document at once (``files``
reads the file and hands it here), so one run of ``georouter check`` reports
every problem, each named by its key path (``clusters[2].lat: must be within
-90..90``). Unknown keys are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from georouter.config.model import (
    DATA_PATH_API_PREFIX,
    MAX_CLUSTERS,
    ClientIpHeader,
    Cluster,
    Config,
    Network,
    RouterMode,
    RouterSettings,
)
from georouter.config.sections import (
    parse_geoip,
    parse_health,
    parse_limits,
    parse_proxy,
    parse_sessions,
)
from georouter.config.tenants import parse_tenants
from georouter.config.traffic import parse_overrides, parse_rules, router_policy
from georouter.config.values import (
    Invalid,
    Section,
    boolean,
    choice,
    cluster_name,
    count,
    http_url,
    listen_address,
    networks,
    number,
    quoted,
    string,
)
from georouter.errors import ConfigError, Problem


def _clusters_array(value: Any) -> list[Any] | Invalid:
    if not isinstance(value, list) or not value:
        return Invalid("must be a non-empty array of [[clusters]] tables")
    if len(value) > MAX_CLUSTERS:
        return Invalid(f"holds {len(value)} clusters; at most {MAX_CLUSTERS}")
    return value


def _parse_cluster(table: Any, path: str, problems: list[Problem]) -> Cluster | None:
    s = Section(table, path, problems)
    before = len(problems)
    name = s.get("name", cluster_name, "", required=True)
    url = s.get("url", http_url, "", required=True)
    lat = s.get("lat", number(-90, 90), 0.0, required=True)
    lon = s.get("lon", number(-180, 180), 0.0, required=True)
    health_url = s.get("health_url", http_url, None)
    bias_km = s.get("bias_km", number(-20_000, 20_000), 0.0)
    weight = s.get("weight", number(0, 1_000_000), 1.0)
    s.finish()
    if len(problems) > before:
        return None
    return Cluster(
        name=name,
        url=url,
        lat=lat,
        lon=lon,
        health_url=health_url,
        bias_km=bias_km,
        weight=weight,
    )


def parse(document: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate a decoded TOML document; raise ``ConfigError`` listing every problem.

    Relative file paths are resolved against ``base_dir`` (the config file's folder).
    """
    problems: list[Problem] = []
    top = Section(document, "", problems)

    clusters: list[Cluster] = []
    # Every name written, valid entry or not, so a duplicate or a fallback is
    # judged against what the operator wrote rather than what survived validation.
    names_at: dict[str, int] = {}
    raw_clusters: list[Any] = top.get("clusters", _clusters_array, [], required=True)
    for i, raw in enumerate(raw_clusters):
        path = f"clusters[{i}]"
        cluster = _parse_cluster(raw, path, problems)
        name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(name, str) and name in names_at:
            first = f"clusters[{names_at[name]}]"
            message = f"duplicate name {quoted(name)} (first at {first})"
            problems.append(Problem(f"{path}.name", message))
            continue
        if isinstance(name, str):
            names_at[name] = i
        if cluster is not None:
            clusters.append(cluster)

    r = Section(document.get("router", {}), "router", problems)
    top.seen.add("router")
    default_fallback = clusters[0].name if clusters else ""
    fallback = r.get("fallback", string, default_fallback)
    if "fallback" in r.table and isinstance(r.table["fallback"], str) and fallback not in names_at:
        known = ", ".join(names_at) or "none"
        r.problem("fallback", f"names no cluster: {quoted(fallback)} (clusters: {known})")
    no_proxies: tuple[Network, ...] = ()
    trusted_proxies = r.get("trusted_proxies", networks, no_proxies)
    # Only an acknowledgement: RouterSettings keeps no field for it.
    if not r.get("trust_all_proxies", boolean, False):
        for i, net in enumerate(trusted_proxies):
            # Wider than a /8 (v4) or /16 (v6): a sum of such halves is "everyone" too.
            if net.prefixlen < (8 if net.version == 4 else 16):
                whom = (
                    "every peer"
                    if net.prefixlen == 0
                    else f"2^{net.max_prefixlen - net.prefixlen} addresses"
                )
                r.problem(
                    "trusted_proxies",
                    f"[{i}] {str(net)!r} trusts {whom}, so nearly any client could choose"
                    " its own address; if every peer in it really is a proxy, set"
                    " trust_all_proxies = true",
                )
    mode = r.get("mode", choice(RouterMode), RouterMode.API)
    data_path = mode is not RouterMode.API
    api_prefix = r.get("api_prefix", _api_prefix, DATA_PATH_API_PREFIX if data_path else "")
    if data_path and r.valid("mode", "api_prefix") and not api_prefix:
        r.problem(
            "api_prefix",
            f"must not be empty in {mode} mode: the router's endpoints would shadow the"
            f" application's paths (default {DATA_PATH_API_PREFIX!r})",
        )
    admin_listen = r.get("admin_listen", listen_address, None)
    if admin_listen is not None and not data_path and r.valid("mode"):
        r.problem("admin_listen", 'only in proxy and redirect modes (mode = "api" here)')
    router = RouterSettings(
        fallback=fallback,
        mode=mode,
        api_prefix=api_prefix,
        admin_listen=admin_listen,
        trusted_proxies=trusted_proxies,
        client_ip_header=r.get(
            "client_ip_header", choice(ClientIpHeader), ClientIpHeader.X_FORWARDED_FOR
        ),
        max_forwarded_hops=r.get("max_forwarded_hops", count(1, 100), 20),
        watch_config_s=r.get("watch_config_s", number(0, 3600), 2.0),
        tie_km=r.get("tie_km", number(0, 20_000), 0.0),
        **router_policy(r),
    )
    r.finish()

    geoip = parse_geoip(document.get("geoip", {}), problems, base_dir)
    top.seen.add("geoip")

    health = parse_health(document.get("health", {}), problems)
    top.seen.add("health")

    sessions = parse_sessions(
        document.get("sessions", {}), problems, base_dir, router.client_ip_header
    )
    top.seen.add("sessions")

    limits = parse_limits(document.get("limits", {}), problems)
    top.seen.add("limits")

    proxy = parse_proxy(document.get("proxy", {}), problems)
    top.seen.add("proxy")

    rules = parse_rules(document.get("rules", []), names_at, problems)
    top.seen.add("rules")

    overrides = parse_overrides(document.get("overrides", []), names_at, problems)
    top.seen.add("overrides")

    tenants = parse_tenants(
        document.get("tenants"),
        names_at,
        problems,
        sessions=sessions,
        client_ip_header=router.client_ip_header,
    )
    top.seen.add("tenants")

    top.finish()
    if problems:
        raise ConfigError(problems)
    return Config(
        clusters=tuple(clusters),
        router=router,
        geoip=geoip,
        health=health,
        sessions=sessions,
        limits=limits,
        proxy=proxy,
        rules=rules,
        overrides=overrides,
        tenants=tenants,
    )


def _api_prefix(value: Any) -> str | Invalid:
    """ "" or a path of segments such as ``/_georouter``, without a trailing slash."""
    if value == "":
        return ""
    if not isinstance(value, str) or not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
        return Invalid(
            "must be \"\" or a path such as '/_georouter' (segments of letters, digits,"
            f" '.', '_', '~' or '-'; no trailing slash), not {quoted(str(value))}"
        )
    return value
