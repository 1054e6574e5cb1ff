"""clusters.toml: what is accepted, and every way it can be wrong, named by key path."""

from __future__ import annotations

import ipaddress
import subprocess
import tomllib
from pathlib import Path

import pytest

from georouter.config import (
    ClientIpHeader,
    Config,
    HealthSettings,
    LimitsSettings,
    SessionSource,
    load,
    parse,
)
from georouter.errors import ConfigError
from tests.harness import FAST_HEALTH, REPO, georouter_command

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
        pytest.param(
            cluster(priority=3), "clusters[0].priority: unknown key", id="cluster-unknown"
        ),
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


# --- A file that is not a valid document: a clear problem, never a traceback. ---

EXAMPLE = (REPO / "clusters.toml").read_bytes()


def problems_loading(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems, "a ConfigError names at least one problem"
    return [str(p) for p in info.value.problems]


def test_a_file_with_invalid_utf8_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    # A comment with "é" saved as Latin-1 by an editor: line 2, its 6th byte.
    path.write_bytes(b"# fine\n# caf\xe9\n" + EXAMPLE)
    assert problems_loading(path) == [
        f"{path}: is not UTF-8: byte 0xe9 at byte offset 12 (line 2, byte 6 of the line):"
        " invalid continuation byte"
    ]


def test_an_integer_of_more_than_4300_digits_is_a_clear_error_naming_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "huge.toml"
    path.write_bytes(EXAMPLE + b"\n[sessions]\npool_size = " + b"9" * 5000 + b"\n")
    lines = (EXAMPLE + b"\n[sessions]\n").count(b"\n") + 1
    [problem] = problems_loading(path)
    assert problem == (
        f"{path}: invalid TOML: an integer of 5000 digits (line {lines});"
        " no setting takes one of more than 4300"
    )


def test_an_array_nested_3000_deep_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_bytes(b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n" + EXAMPLE)
    assert problems_loading(path) == [
        f"{path}: invalid TOML: arrays or inline tables nested too deeply"
    ]


def test_an_integer_too_large_for_a_float_is_out_of_range_not_an_overflow(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.toml"
    path.write_bytes(EXAMPLE.replace(b"lat = 38.9445", b"lat = 1" + b"0" * 400, 1))
    assert problems_loading(path) == ["clusters[0].lat: must be within -90..90"]


def test_a_file_of_more_than_16_mib_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_bytes(EXAMPLE + b"#" + b" " * (16 << 20) + b"\n")
    assert problems_loading(path) == [f"{path}: is larger than 16 MiB; is it the right file?"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"\xff\xfe" + EXAMPLE, "is not UTF-8: byte 0xff at byte offset 0", id="utf8"),
        pytest.param(EXAMPLE + b"\nx = " + b"1" * 4400, "an integer of 4400 digits", id="digits"),
        pytest.param(b"x = " + b"[" * 3000 + b"]" * 3000, "nested too deeply", id="nesting"),
        pytest.param(
            EXAMPLE + b'\n[sessions]\nstate_dir = "~no-such-user-here/state"\n',
            "sessions.state_dir: cannot expand '~'",
            id="unknown-user",
        ),
    ],
)
def test_georouter_check_reports_a_broken_file_and_exits_1_without_a_traceback(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "broken.toml"
    path.write_bytes(content)
    result = subprocess.run(
        georouter_command("check", "--config", str(path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"georouter: {path}: invalid configuration\n  ")
    assert expected in result.stderr


def test_a_path_with_a_nul_character_is_refused() -> None:
    found = problems_of(
        MINIMAL + '\n[geoip]\ndatabase = "City\\u0000.mmdb"\n[sessions]\nstate_dir = "s\\u0000"\n'
    )
    assert found == [
        "geoip.database: must not contain a NUL character: 'City\\x00.mmdb'",
        "sessions.state_dir: must not contain a NUL character: 's\\x00'",
    ]


def test_a_key_with_control_characters_is_shown_escaped_in_its_path() -> None:
    found = problems_of(MINIMAL + '\n[router]\n"\\u001b[2Jfallback" = "x"\n')
    assert found == ["router.'\\x1b[2Jfallback': unknown key"]


def test_a_long_value_is_cut_short_in_the_message() -> None:
    found = problems_of(MINIMAL + f'\n[router]\nclient_ip_header = "{"x" * 100_000}"\n')
    assert len(found) == 1
    assert found[0].endswith("... (100000 characters)")
    assert len(found[0]) < 300


# --- Values that used to pass `check` and must not. ---


def router_with(*proxies: str, ack: str | None = None) -> str:
    listed = ", ".join(f'"{p}"' for p in proxies)
    text = MINIMAL + f"\n[router]\ntrusted_proxies = [{listed}]\n"
    return text + (f"trust_all_proxies = {ack}\n" if ack is not None else "")


@pytest.mark.parametrize(
    ("cidr", "shown"),
    [
        pytest.param("0.0.0.0/0", "0.0.0.0/0", id="ipv4"),
        pytest.param("::/0", "::/0", id="ipv6"),
        pytest.param("::ffff:0.0.0.0/96", "0.0.0.0/0", id="ipv4-mapped"),
    ],
)
def test_trusting_every_peer_as_a_proxy_needs_an_explicit_acknowledgement(
    cidr: str, shown: str
) -> None:
    assert problems_of(router_with("10.0.0.0/8", cidr)) == [
        f"router.trusted_proxies: [1] '{shown}' trusts every peer, so nearly any client could"
        " choose its own address; if every peer in it really is a proxy, set"
        " trust_all_proxies = true"
    ]
    config = parse(tomllib.loads(router_with("10.0.0.0/8", cidr, ack="true")))
    assert config.router.trusted_proxies[1] == ipaddress.ip_network(shown)
    assert problems_of(router_with(cidr, ack="false"))[0].startswith("router.trusted_proxies: [0]")


@pytest.mark.parametrize(
    ("cidr", "allowed"),
    [
        ("0.0.0.0/1", False),
        ("10.0.0.0/7", False),
        ("10.0.0.0/8", True),
        ("2000::/15", False),
        ("2001::/16", True),
    ],
)
def test_halves_of_everyone_need_the_acknowledgement_too(cidr: str, allowed: bool) -> None:
    text = router_with("192.168.0.0/16", cidr)
    if allowed:
        assert parse(tomllib.loads(text)).router.trusted_proxies[1] == ipaddress.ip_network(cidr)
    else:
        assert any("trust_all_proxies = true" in p for p in problems_of(text))


def test_trust_all_proxies_is_a_boolean_and_allowed_without_a_catch_all() -> None:
    assert problems_of(router_with("10.0.0.0/8", ack='"yes"')) == [
        "router.trust_all_proxies: must be true or false, not a string"
    ]
    config = parse(tomllib.loads(router_with("10.0.0.0/8", ack="true")))
    assert config.router.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("cidr", "meant"),
    [
        pytest.param("10.0.0.1/8", "10.0.0.0/8", id="ipv4"),
        pytest.param("192.168.1.77/24", "192.168.1.0/24", id="ipv4-24"),
        pytest.param("2001:db8::1/32", "2001:db8::/32", id="ipv6"),
    ],
)
def test_a_proxy_cidr_with_host_bits_set_is_refused_with_the_network_it_may_mean(
    cidr: str, meant: str
) -> None:
    assert problems_of(router_with(cidr)) == [
        f"router.trusted_proxies: [0] has host bits set: '{cidr}' (did you mean '{meant}'?)"
    ]


def test_a_plain_proxy_address_is_still_one_host() -> None:
    config = parse(tomllib.loads(router_with("10.0.0.1", "2001:db8::7")))
    assert config.router.trusted_proxies == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("2001:db8::7/128"),
    )


@pytest.mark.parametrize("key", ["url", "health_url"])
@pytest.mark.parametrize(
    "userinfo", ["admin:s3cret@", "admin@", ":s3cret@"], ids=["user-password", "user", "password"]
)
def test_a_cluster_url_with_credentials_is_refused_without_echoing_them(
    key: str, userinfo: str
) -> None:
    found = problems_of(cluster(**{key: f'"https://{userinfo}c1.example.net"'}))
    assert found == [
        f"clusters[0].{key}: must not contain a user or password ('user:password@'):"
        " the URL is sent to clients as their cluster's url"
    ]
    assert "s3cret" not in found[0]


def health_with(**keys: object) -> str:
    lines = "\n".join(f"{k} = {v}" for k, v in keys.items())
    return MINIMAL + f"\n[health]\n{lines}\n"


def test_a_health_interval_below_50_ms_is_refused() -> None:
    assert problems_of(health_with(interval_s=0.000001, timeout_s=0.000001)) == [
        "health.interval_s: must be at least 0.05: probing faster only loads the clusters",
        "health.timeout_s: must be at least 0.01: even a cluster on loopback may not answer faster",
    ]
    config = parse(tomllib.loads(health_with(interval_s=0.05, timeout_s=0.05)))
    assert (config.health.interval_s, config.health.timeout_s) == (0.05, 0.05)


def test_a_probe_timeout_longer_than_the_interval_is_refused() -> None:
    assert problems_of(health_with(interval_s=1, timeout_s=1.5)) == [
        "health.timeout_s: must be at most interval_s (1): a probe must finish before the next"
        " is due"
    ]
    # The default timeout (2 s) against an interval set alone.
    assert problems_of(health_with(interval_s=1))[0].startswith("health.timeout_s: must be at")


def test_the_test_suites_fast_health_settings_are_valid() -> None:
    config = parse({"clusters": tomllib.loads(MINIMAL)["clusters"], "health": FAST_HEALTH})
    assert config.health.timeout_s <= config.health.interval_s


@pytest.mark.parametrize(
    "url",
    [
        "redis://10.0.0.5:6379/99999999999",
        "redis://10.0.0.5:6379/0?db=99999999999",
        "rediss://r.example/2147483648",
        "unix:///run/redis.sock?db=99999999999",
        "redis+sentinel://a:26379,b:26379/main/99999999999",
    ],
)
def test_a_redis_database_beyond_redis_int_range_is_refused(url: str) -> None:
    [problem] = problems_of(MINIMAL + f'\n[sessions]\nredis_url = "{url}"\n')
    assert problem.startswith("sessions.redis_url: has a bad database number")
    assert problem.endswith(": use 0..2147483647")


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://10.0.0.5:6379/2147483647", 2147483647),
        ("redis://10.0.0.5:6379/3?db=4", 4),  # redis-py: the query wins
        ("redis://10.0.0.5:6379/", 0),
        ("unix:///run/redis.sock?db=7", 7),
        ("redis+sentinel://a:26379/main/9", 9),
    ],
)
def test_a_redis_database_number_is_read_as_redis_py_reads_it(url: str, db: int) -> None:
    config = parse(tomllib.loads(MINIMAL + f'\n[sessions]\nredis_url = "{url}"\n'))
    assert config.sessions.redis is not None
    assert config.sessions.redis.db == db


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "redis://h/not-a-db",
            "has a bad database number 'not-a-db': use 0..2147483647",
            id="word",
        ),
        pytest.param(
            "redis://h/1/2", "has a bad database number '1/2': use 0..2147483647", id="two"
        ),
        pytest.param(
            "redis://h/\u00b2",
            "has a bad database number '\u00b2': use 0..2147483647",
            id="superscript",
        ),
        pytest.param("redis+cluster://a:\u00b2", "has a bad host:port 'a:\u00b2'", id="port"),
        pytest.param(
            "redis+sentinel://a/main?db=1",
            "must not have a query or fragment: redis+sentinel:// URLs take none",
            id="sentinel-query",
        ),
    ],
)
def test_a_redis_url_redis_py_would_misread_is_refused(url: str, expected: str) -> None:
    assert problems_of(MINIMAL + f'\n[sessions]\nredis_url = "{url}"\n') == [
        f"sessions.redis_url: {expected}"
    ]


@pytest.mark.parametrize(
    "header",
    ["cookie", "Authorization", "proxy-authorization", "Host", "X-Forwarded-Proto", "Via"],
)
def test_a_session_header_that_already_means_something_is_refused(header: str) -> None:
    assert problems_of(MINIMAL + f'\n[sessions]\nheader = "{header}"\n') == [
        f"sessions.header: '{header.lower()}' already has a meaning in HTTP; use a header of its"
        " own, such as 'x-session-id'"
    ]


def test_a_session_header_may_not_be_the_client_ip_header() -> None:
    assert problems_of(MINIMAL + '\n[sessions]\nheader = "X-Forwarded-For"\n') == [
        "sessions.header: 'x-forwarded-for' is router.client_ip_header; use a header of its own"
    ]
    other = MINIMAL + '\n[router]\nclient_ip_header = "forwarded"\n[sessions]\nheader = "%s"\n'
    assert problems_of(other % "forwarded") == [
        "sessions.header: 'forwarded' is router.client_ip_header; use a header of its own"
    ]
    assert problems_of(other % "x-forwarded-for")[0].startswith(
        "sessions.header: 'x-forwarded-for' already has a meaning in HTTP"
    )


def test_a_session_header_of_its_own_is_kept_lower_case() -> None:
    config = parse(tomllib.loads(MINIMAL + '\n[sessions]\nheader = "X-App-Session"\n'))
    assert config.sessions.header == "x-app-session"


def test_a_local_cache_too_small_to_keep_sessions_sticky_is_refused() -> None:
    [problem] = problems_of(MINIMAL + "\n[sessions]\nlocal_cache_size = 0\n")
    assert problem.startswith(
        "sessions.local_cache_size: must be within 1000..100000000: it is how many sessions"
        " this edge keeps sticky while Redis is away"
    )
    config = parse(tomllib.loads(MINIMAL + "\n[sessions]\nlocal_cache_size = 1000\n"))
    assert config.sessions.local_cache_size == 1000


@pytest.mark.parametrize(
    ("state_dir", "inside"),
    [
        ("/proc/self", "/proc"),
        ("/proc/../proc/self", "/proc"),
        ("/sys/kernel", "/sys"),
        ("/dev", "/dev"),
        ("/dev/shm/georouter", "/dev"),
    ],
)
def test_a_state_dir_in_a_kernel_interface_is_refused(state_dir: str, inside: str) -> None:
    [problem] = problems_of(MINIMAL + f'\n[sessions]\nstate_dir = "{state_dir}"\n')
    assert problem.startswith(f"sessions.state_dir: is inside {inside} (")


def test_a_state_dir_that_is_a_symlink_into_proc_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").symlink_to("/proc/self")
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(MINIMAL + '\n[sessions]\nstate_dir = "state"\n'), base_dir=tmp_path)
    assert [p.path for p in info.value.problems] == ["sessions.state_dir"]
    assert "is inside /proc" in str(info.value)


def test_a_state_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = parse(tomllib.loads(MINIMAL + '\n[sessions]\nstate_dir = "s"\n'), base_dir=tmp_path)
    assert config.sessions.state_dir == tmp_path / "s"


# --- Keys of the probes, the sessions and the request limits. ---


def test_the_new_health_session_and_limits_keys_are_read() -> None:
    config = parse(
        tomllib.loads(
            MINIMAL
            + """
[health]
window = 20
window_fall = 7
expect_status = [200, 204]
expect_body = "ok"
max_body_bytes = 1024

[sessions]
unsigned_sources = ["query", "cookie"]

[limits]
header_bytes = 8192
header_count = 50
body_bytes = 4096
header_timeout_s = 2
request_deadline_s = 5.5
max_in_flight = 250
new_sessions_per_s = 2.5
new_sessions_burst = 30
admin_failures = 3
admin_lockout_s = 300
"""
        )
    )
    health = config.health
    assert (health.window, health.window_fall) == (20, 7)
    assert (health.expect_status, health.expect_body, health.max_body_bytes) == (
        (200, 204),
        "ok",
        1024,
    )
    assert config.sessions.unsigned_sources == (SessionSource.QUERY, SessionSource.COOKIE)
    assert config.limits == LimitsSettings(
        header_bytes=8192,
        header_count=50,
        body_bytes=4096,
        header_timeout_s=2.0,
        request_deadline_s=5.5,
        max_in_flight=250,
        new_sessions_per_s=2.5,
        new_sessions_burst=30,
        admin_failures=3,
        admin_lockout_s=300.0,
    )


def test_the_new_keys_default_to_the_models_defaults() -> None:
    config = parse(tomllib.loads(MINIMAL))
    assert config.health == HealthSettings()
    assert config.limits == LimitsSettings()
    assert config.sessions.unsigned_sources == ()


def test_window_0_turns_the_window_off_and_frees_window_fall() -> None:
    config = parse(tomllib.loads(health_with(window=0, window_fall=50)))
    assert (config.health.window, config.health.window_fall) == (0, 50)


def limits_with(**keys: object) -> str:
    lines = "\n".join(f"{k} = {v}" for k, v in keys.items())
    return MINIMAL + f"\n[limits]\n{lines}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(health_with(window=65), "health.window: must be within 0..64", id="w"),
        pytest.param(
            health_with(window=3, window_fall=4),
            "health.window_fall: must be at most window (3)",
            id="window-fall-over-window",
        ),
        pytest.param(
            health_with(window=3),
            "health.window_fall: must be at most window (3) (window_fall is 5 unless set)",
            id="window-fall-default-over-window",
        ),
        pytest.param(
            health_with(window_fall=0), "health.window_fall: must be within 1..64", id="wf-0"
        ),
        pytest.param(
            health_with(expect_status=[200, 600]),
            "health.expect_status: [1] must be an HTTP status code within 100..599",
            id="status-600",
        ),
        pytest.param(
            health_with(expect_status='"200"'),
            "health.expect_status: must be an array of HTTP status codes, not a string",
            id="status-string",
        ),
        pytest.param(
            health_with(expect_status="[true]"),
            "health.expect_status: [0] must be an integer, not a boolean",
            id="status-bool",
        ),
        pytest.param(
            health_with(expect_body=f'"{"x" * 1025}"'),
            "health.expect_body: must be at most 1024 characters, not 1025",
            id="body-long",
        ),
        pytest.param(
            health_with(expect_body='"healthy"', max_body_bytes=4),
            "health.expect_body: is longer in UTF-8 than max_body_bytes (4), so no body could"
            " hold it",
            id="body-over-max",
        ),
        pytest.param(
            health_with(max_body_bytes=(16 << 20) + 1),
            "health.max_body_bytes: must be within 1..16777216",
            id="max-body",
        ),
        pytest.param(
            health_with(max_body_bytes=0), "health.max_body_bytes: must be within 1..", id="mb-0"
        ),
        pytest.param(
            MINIMAL + '\n[sessions]\nunsigned_sources = ["query", "query"]\n',
            "sessions.unsigned_sources: [1] repeats 'query'",
            id="sources-duplicate",
        ),
        pytest.param(
            MINIMAL + '\n[sessions]\nunsigned_sources = ["body"]\n',
            "sessions.unsigned_sources: [0] must be one of 'query', 'header', 'cookie', not 'body'",
            id="sources-unknown",
        ),
        pytest.param(
            MINIMAL + '\n[sessions]\nunsigned_sources = "query"\n',
            "sessions.unsigned_sources: must be an array, not a string",
            id="sources-not-array",
        ),
        pytest.param(
            limits_with(header_bytes=1023),
            "limits.header_bytes: must be within 1024..1048576",
            id="header-bytes",
        ),
        pytest.param(
            limits_with(header_count=9),
            "limits.header_count: must be within 10..10000",
            id="header-count",
        ),
        pytest.param(
            limits_with(body_bytes=0),
            "limits.body_bytes: must be within 1..1073741824",
            id="body-bytes",
        ),
        pytest.param(
            limits_with(header_timeout_s=0.05),
            "limits.header_timeout_s: must be within 0.1..300",
            id="header-timeout-s",
        ),
        pytest.param(
            limits_with(request_deadline_s=3601),
            "limits.request_deadline_s: must be within 0.1..3600",
            id="request-deadline-s",
        ),
        pytest.param(
            limits_with(max_in_flight=0),
            "limits.max_in_flight: must be within 1..1000000",
            id="max-connections",
        ),
        pytest.param(
            limits_with(new_sessions_per_s=-1),
            "limits.new_sessions_per_s: must be within 0..1000000",
            id="new-sessions-per-s",
        ),
        pytest.param(
            limits_with(new_sessions_burst=10_000_001),
            "limits.new_sessions_burst: must be within 0..10000000",
            id="new-sessions-burst",
        ),
        pytest.param(
            limits_with(new_sessions_burst=0),
            "limits.new_sessions_burst: is 0, which turns the limit off although"
            " new_sessions_per_s is 20; set new_sessions_per_s = 0 to mean no limit",
            id="burst-0",
        ),
        pytest.param(
            limits_with(admin_failures=1.5),
            "limits.admin_failures: must be an integer, not a",
            id="admin-failures",
        ),
        pytest.param(
            limits_with(admin_lockout_s=0.5),
            "limits.admin_lockout_s: must be within 1..86400",
            id="admin-lockout-s",
        ),
        pytest.param(
            limits_with(max_conections=5), "limits.max_conections: unknown key", id="max-conections"
        ),
        pytest.param("limits = 3\n" + MINIMAL, "limits: must be a table", id="limits-type"),
    ],
)
def test_the_new_keys_are_bounded_and_named_by_key_path(text: str, expected: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_zero_means_no_limit_for_new_sessions_and_admin_lockout() -> None:
    config = parse(tomllib.loads(limits_with(new_sessions_per_s=0, admin_failures=0)))
    assert (config.limits.new_sessions_per_s, config.limits.admin_failures) == (0.0, 0)


def test_a_rule_relating_two_keys_is_not_judged_against_a_refused_value() -> None:
    # interval_s is refused, so timeout_s is not compared with the default (5) in its place.
    assert problems_of(health_with(interval_s='"fast"', timeout_s=6)) == [
        "health.interval_s: must be a number, not a string"
    ]
    assert problems_of(health_with(window=1001, window_fall=20)) == [
        "health.window: must be within 0..64"
    ]


def test_more_clusters_than_the_health_board_holds_are_refused() -> None:
    clusters = [
        {"name": f"c{i}", "url": f"https://c{i}.example.net", "lat": 0.0, "lon": 0.0}
        for i in range(1025)
    ]
    with pytest.raises(ConfigError) as info:
        parse({"clusters": clusters})
    assert [str(p) for p in info.value.problems] == ["clusters: holds 1025 clusters; at most 1024"]
