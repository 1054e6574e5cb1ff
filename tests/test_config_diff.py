"""What a new configuration changes (config.diff): pure, both files as written."""

from __future__ import annotations

from typing import Any

from georouter.config import compare, parse


def config(*names: str, **sections: dict[str, Any]) -> Any:
    sites = {"a": (1.0, 1.0), "b": (2.0, 2.0), "c": (3.0, 3.0)}
    clusters = [
        {"name": n, "url": f"https://{n}.example.net", "lat": sites[n][0], "lon": sites[n][1]}
        for n in names
    ]
    return parse({"clusters": clusters, **sections})


def test_the_same_file_changes_nothing() -> None:
    change = compare(config("a", "b"), config("a", "b"))
    assert change.empty
    assert change.needs_restart == ()


def test_clusters_added_removed_moved_and_readdressed_are_named() -> None:
    old = config("a", "b")
    new = parse(
        {
            "clusters": [
                {"name": "a", "url": "https://a.example.net", "lat": 9.0, "lon": 1.0},
                {"name": "c", "url": "https://c.example.net", "lat": 3.0, "lon": 3.0},
            ],
        }
    )
    change = compare(old, new)
    assert (change.added, change.removed, change.moved) == (("c",), ("b",), ("a",))
    assert change.readdressed == ()
    # The fallback defaulted to the first cluster in both: unchanged.
    assert change.changed == ()
    readdressed = parse(
        {"clusters": [{"name": "a", "url": "https://a2.example.net", "lat": 1.0, "lon": 1.0}]}
    )
    assert compare(config("a"), readdressed).readdressed == ("a",)


def test_router_and_health_keys_reload_and_others_need_a_restart() -> None:
    old = config("a", "b")
    reloadable = config(
        "a",
        "b",
        router={"fallback": "b", "trusted_proxies": ["10.0.0.0/8"]},
        health={"interval_s": 1, "timeout_s": 0.5},
        sessions={"header": "x-sid", "unsigned_sources": ["query"]},
    )
    change = compare(old, reloadable)
    assert set(change.changed) == {
        "router.fallback",
        "router.trusted_proxies",
        "health.interval_s",
        "health.timeout_s",
        "sessions.header",
        "sessions.unsigned_sources",
    }
    assert change.needs_restart == ()
    restart = config(
        "a",
        "b",
        sessions={"ttl_s": 60, "near_cache_s": 10},
        limits={"body_bytes": 1000},
        geoip={"cache_networks": 10},
    )
    assert set(compare(old, restart).needs_restart) == {
        "sessions.ttl_s",
        "sessions.near_cache_s",
        "limits.body_bytes",
        "geoip.cache_networks",
    }


def test_only_a_new_order_of_the_same_clusters_is_a_change() -> None:
    change = compare(config("a", "b"), config("b", "a", router={"fallback": "a"}))
    assert change.changed == ("clusters (order)",)
    assert not change.empty


def test_data_path_keys_built_into_the_app_need_a_restart_and_the_rest_reload() -> None:
    old = config("a", "b", router={"mode": "proxy"})
    reloadable = config(
        "a",
        "b",
        router={"mode": "proxy"},
        proxy={"read_timeout_s": 5, "retries": 0, "preserve_host": False},
        sessions={"learn": ["cookie:JSESSIONID"], "query": "_s", "cookie_secure": False},
    )
    assert compare(old, reloadable).needs_restart == ()
    restart = config(
        "a",
        "b",
        router={"mode": "proxy", "api_prefix": "/_edge", "admin_listen": "127.0.0.1:9090"},
        proxy={"max_connections": 64, "max_keepalive": 8, "max_body_bytes": 1, "body_idle_s": 1},
    )
    assert set(compare(old, restart).needs_restart) == {
        "router.api_prefix",
        "router.admin_listen",
        "proxy.max_connections",
        "proxy.max_keepalive",
        "proxy.max_body_bytes",
        "proxy.body_idle_s",
    }
    # Back to api mode: the endpoints' prefix, "/_georouter" in proxy mode, is "" again.
    assert set(compare(old, config("a", "b")).needs_restart) == {"router.mode", "router.api_prefix"}
