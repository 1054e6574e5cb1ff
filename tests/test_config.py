"""clusters.toml: what is accepted, and every way it can be wrong, named by key path."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from georouter.config import ClientIpHeader, Config, load, parse
from georouter.errors import ConfigError
from tests.harness import REPO

MINIMAL = """
[[clusters]]
name = "eu-west"
url = "https://eu.example.net"
lat = 53.35
lon = -6.26

[[clusters]]
name = "us-east"
url = "http://us.example.net:8080/"
lat = 38.94
lon = -77.45
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(text))
    return [str(p) for p in info.value.problems]


def test_minimal_config_gets_defaults_for_every_optional_key() -> None:
    config = parse(tomllib.loads(MINIMAL))
    assert [c.name for c in config.clusters] == ["eu-west", "us-east"]
    assert config.router.fallback == "eu-west"  # the first cluster
    assert config.router.trusted_proxies == ()
    assert config.router.client_ip_header is ClientIpHeader.X_FORWARDED_FOR
    assert config.geoip.database is None  # the bundled GeoLite2 snapshot
    assert (config.health.path, config.health.interval_s, config.health.timeout_s) == (
        "/healthz",
        5.0,
        2.0,
    )
    assert (config.health.rise, config.health.fall) == (2, 3)
    # A trailing slash is dropped so url + path never doubles it.
    assert config.clusters[1].url == "http://us.example.net:8080"


def test_repo_example_config_is_valid_with_at_least_eight_clusters() -> None:
    config = load(REPO / "clusters.toml")
    assert len(config.clusters) >= 8
    assert config.router.fallback in {c.name for c in config.clusters}


def test_every_key_is_read() -> None:
    config = parse(
        tomllib.loads(
            MINIMAL
            + """
[router]
fallback = "us-east"
trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "::ffff:192.168.0.0/112"]
client_ip_header = "forwarded"
max_forwarded_hops = 5

[geoip]
database = "geo/City.mmdb"
max_age_days = 45
cache_networks = 10

[health]
path = "/status"
interval_s = 0.5
timeout_s = 0.25
rise = 4
fall = 6
"""
        ),
        base_dir=Path("/etc/georouter"),
    )
    assert config.router.fallback == "us-east"
    assert config.router.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        # A mapped IPv6 range is kept as the IPv4 range it means: peers are normalised.
        ipaddress.ip_network("192.168.0.0/16"),
    )
    assert config.router.client_ip_header is ClientIpHeader.FORWARDED
    assert config.router.max_forwarded_hops == 5
    assert config.geoip.database == Path("/etc/georouter/geo/City.mmdb")
    assert (config.geoip.max_age_days, config.geoip.cache_networks) == (45, 10)
    assert config.health.path == "/status"
    assert (config.health.interval_s, config.health.timeout_s) == (0.5, 0.25)
    assert (config.health.rise, config.health.fall) == (4, 6)


def test_config_values_are_frozen() -> None:
    config = parse(tomllib.loads(MINIMAL))
    with pytest.raises(AttributeError):
        config.clusters[0].lat = 0.0  # type: ignore[misc]
    assert isinstance(config, Config)
    assert isinstance(config.clusters, tuple)


def cluster(**overrides: object) -> str:
    fields = {"name": '"c1"', "url": '"https://c1.example.net"', "lat": "10", "lon": "20"}
    fields.update({k: str(v) for k, v in overrides.items()})
    return "[[clusters]]\n" + "\n".join(f"{k} = {v}" for k, v in fields.items() if v != "DROP")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(cluster(lat=91), "clusters[0].lat: must be within -90..90", id="lat-high"),
        pytest.param(cluster(lat=-90.5), "clusters[0].lat: must be within -90..90", id="lat-low"),
        pytest.param(cluster(lon=180.01), "clusters[0].lon: must be within -180..180", id="lon"),
        pytest.param(cluster(lat="nan"), "clusters[0].lat: must be within -90..90", id="lat-nan"),
        pytest.param(
            cluster(lat="true"), "clusters[0].lat: must be a number, not a boolean", id="lat-bool"
        ),
        pytest.param(
            cluster(lat='"10"'), "clusters[0].lat: must be a number, not a string", id="lat-string"
        ),
        pytest.param(cluster(lat="DROP"), "clusters[0].lat: is required", id="lat-missing"),
        pytest.param(cluster(name="DROP"), "clusters[0].name: is required", id="name-missing"),
        pytest.param(
            cluster(name='"a b"'), "clusters[0].name: must be 1-63 letters, digits", id="name-space"
        ),
        pytest.param(cluster(name='""'), "clusters[0].name: must be 1-63", id="name-empty"),
        pytest.param(
            cluster(name='"c1\\n"'), "clusters[0].name: must be 1-63", id="name-trailing-newline"
        ),
        pytest.param(
            cluster(url='"ftp://x.example"'),
            "clusters[0].url: must be an http:// or",
            id="url-scheme",
        ),
        pytest.param(cluster(url='"https://"'), "clusters[0].url: has no host", id="url-no-host"),
        pytest.param(
            cluster(url='"not a url"'), "clusters[0].url: must be an http:// or", id="url-garbage"
        ),
        pytest.param(
            cluster(url='"http://x.example:99999"'),
            "clusters[0].url: is not a valid URL",
            id="url-port",
        ),
        pytest.param(
            cluster(url='"http://x.example/?a=1"'),
            "clusters[0].url: must not have a",
            id="url-query",
        ),
        pytest.param(
            cluster(url="3"), "clusters[0].url: must be a string, not an integer", id="url-type"
        ),
        pytest.param(
            cluster(health_url='"x"'), "clusters[0].health_url: must be an http", id="health-url"
        ),
        pytest.param(cluster(weight=3), "clusters[0].weight: unknown key", id="cluster-unknown"),
        pytest.param(
            cluster() + '\n[router]\nfallback = "nowhere"',
            "router.fallback: names no cluster: 'nowhere'",
            id="fallback-unknown",
        ),
        pytest.param(
            cluster() + "\n[router]\nfallback = 3",
            "router.fallback: must be a string",
            id="fallback-type",
        ),
        pytest.param(
            cluster() + '\n[router]\ntrusted_proxies = ["10.0.0.0/33"]',
            "router.trusted_proxies: [0] is not an IP address or CIDR",
            id="cidr",
        ),
        pytest.param(
            cluster() + '\n[router]\ntrusted_proxies = "10.0.0.0/8"',
            "router.trusted_proxies: must be a list of CIDR strings",
            id="cidr-not-list",
        ),
        pytest.param(
            cluster() + '\n[router]\nclient_ip_header = "x-real-ip"',
            "router.client_ip_header: must be one of 'x-forwarded-for', 'forwarded'",
            id="header",
        ),
        pytest.param(
            cluster() + "\n[router]\nfalback = 1", "router.falback: unknown key", id="router-typo"
        ),
        pytest.param(
            cluster() + "\n[health]\ninterval_s = 0",
            "health.interval_s: must be greater",
            id="interval-zero",
        ),
        pytest.param(
            cluster() + "\n[health]\ntimeout_s = -1",
            "health.timeout_s: must be greater",
            id="timeout-negative",
        ),
        pytest.param(
            cluster() + "\n[health]\nrise = 0",
            "health.rise: must be within 1..1000",
            id="rise-zero",
        ),
        pytest.param(
            cluster() + "\n[health]\nfall = 1.5", "health.fall: must be an integer", id="fall-float"
        ),
        pytest.param(
            cluster() + '\n[health]\npath = "healthz"',
            "health.path: must be a path starting with '/'",
            id="path-relative",
        ),
        pytest.param(
            cluster() + "\n[geoip]\ndatabase = 7", "geoip.database: must be a string", id="db-type"
        ),
        pytest.param(
            cluster() + "\n[geoip]\nmaxage = 7", "geoip.maxage: unknown key", id="geoip-typo"
        ),
        pytest.param(cluster() + "\n[server]\nport = 1", "server: unknown key", id="top-unknown"),
        pytest.param("router = 1\n" + cluster(), "router: must be a table", id="router-not-table"),
        pytest.param("[router]\n", "clusters: is required", id="no-clusters"),
        pytest.param("clusters = []", "clusters: must be a non-empty array", id="empty-clusters"),
        pytest.param(
            cluster() + "\n" + cluster(lat=1),
            "clusters[1].name: duplicate name 'c1' (first at clusters[0])",
            id="duplicate-name",
        ),
    ],
)
def test_invalid_config_names_the_key_path(text: str, expected: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    text = (
        cluster(lat=100, url='"gopher://x"')
        + "\n"
        + cluster(name='"c2"', lon=-200)
        + '\n[router]\nfallback = "c1"\nbogus = 1\n[health]\nrise = 0'
    )
    found = problems_of(text)
    assert found == [
        "clusters[0].url: must be an http:// or https:// URL, not 'gopher://x'",
        "clusters[0].lat: must be within -90..90",
        "clusters[1].lon: must be within -180..180",
        "router.bogus: unknown key",
        "health.rise: must be within 1..1000",
    ]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "missing.toml")
    assert "cannot read" in str(info.value)


def test_invalid_toml_is_a_config_error_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[clusters]\nname = 1\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "invalid TOML" in str(info.value)
    assert "line 1" in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(
            "redis://:s3cret@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0", id="password"
        ),
        pytest.param(
            "rediss://app:s3cret@r.example:6380/1",
            "rediss://app:***@r.example:6380/1",
            id="user-and-password",
        ),
        pytest.param(
            "unix:///run/redis.sock?password=s3cret&db=2",
            "unix:///run/redis.sock?password=***&db=2",
            id="query-password",
        ),
        pytest.param(
            "redis+sentinel://u:s3cret@a:26379,b:26379/main",
            "redis+sentinel://u:***@a:26379,b:26379/main",
            id="sentinel",
        ),
        pytest.param("redis://10.0.0.5:6379/0", "redis://10.0.0.5:6379/0", id="no-password"),
    ],
)
def test_redis_passwords_never_show(url: str, shown: str) -> None:
    config = parse(tomllib.loads(MINIMAL + f'\n[sessions]\nredis_url = "{url}"\n'))
    assert config.sessions.redis is not None
    assert config.sessions.redis.redacted == shown
    assert "s3cret" not in shown
