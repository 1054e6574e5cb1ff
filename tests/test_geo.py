"""GeoIP lookups against real .mmdb files: the project's test database and GeoLite2."""

from __future__ import annotations

import ipaddress
import shutil
import time
from pathlib import Path

import pytest

from georouter.core.location import LocationSource
from georouter.errors import GeoDatabaseError
from georouter.geoip.database import GeoDatabase, bundled_database
from tests.harness import TEST_ASN_DB, TEST_CITY_DB, TEST_COUNTRY_DB


def open_db(path: Path | None, *, now: float | None = None, cache: int = 1024) -> GeoDatabase:
    return GeoDatabase(path, cache_networks=cache, max_age_days=30, now=now or time.time())


@pytest.fixture
def city() -> GeoDatabase:
    db = open_db(TEST_CITY_DB)
    yield db  # type: ignore[misc]
    db.close()


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("addr", "country", "lat", "lon", "accuracy"),
    [
        pytest.param("81.2.69.1", "GB", 51.5074, -0.1278, 10, id="london"),
        pytest.param("81.2.69.255", "GB", 51.5074, -0.1278, 10, id="london-last-address"),
        pytest.param("202.12.27.33", "JP", 35.6895, 139.6917, 20, id="tokyo"),
        pytest.param("1.130.0.1", "AU", -33.8688, 151.2093, 50, id="sydney-in-a-slash-11"),
        pytest.param("2001:480:10::1", "US", 38.9072, -77.0369, 100, id="ipv6"),
        pytest.param("12.1.2.3", "US", 37.751, -97.822, 1000, id="country-centroid-guess"),
    ],
)
def test_city_database_gives_exact_locations(
    city: GeoDatabase, addr: str, country: str, lat: float, lon: float, accuracy: int
) -> None:
    loc = city.lookup(ip(addr))
    assert loc is not None
    assert (loc.country, loc.lat, loc.lon, loc.accuracy_km) == (country, lat, lon, accuracy)
    assert loc.source is LocationSource.GEOIP


@pytest.mark.parametrize(
    "addr",
    [
        pytest.param("10.1.2.3", id="rfc1918"),
        pytest.param("192.168.0.1", id="rfc1918-192"),
        pytest.param("127.0.0.1", id="loopback"),
        pytest.param("169.254.1.1", id="link-local"),
        pytest.param("100.64.0.1", id="cgnat"),
        pytest.param("192.0.2.1", id="documentation"),
        pytest.param("198.51.100.7", id="documentation-2"),
        pytest.param("240.0.0.1", id="reserved"),
        pytest.param("224.0.0.1", id="multicast"),
        pytest.param("0.0.0.0", id="unspecified"),
        pytest.param("::1", id="v6-loopback"),
        pytest.param("fe80::1", id="v6-link-local"),
        pytest.param("fc00::1", id="v6-unique-local"),
        pytest.param("2001:db8::1", id="v6-documentation"),
        pytest.param("8.8.8.8", id="global-but-not-in-the-database"),
        pytest.param("2a00:1450::1", id="v6-not-in-the-database"),
    ],
)
def test_private_reserved_and_unknown_addresses_have_no_location(
    city: GeoDatabase, addr: str
) -> None:
    assert city.lookup(ip(addr)) is None


def test_record_with_country_and_no_coordinates_has_no_point(city: GeoDatabase) -> None:
    loc = city.lookup(ip("185.1.2.3"))
    assert loc is not None
    assert (loc.country, loc.lat, loc.lon) == ("DE", None, None)


def test_country_database_gives_countries_without_points() -> None:
    db = open_db(TEST_COUNTRY_DB)
    try:
        loc = db.lookup(ip("202.12.27.33"))
        assert loc is not None
        assert (loc.country, loc.lat, loc.lon) == ("JP", None, None)
        assert db.info.database_type == "GeoIP2-Country"
    finally:
        db.close()


def test_one_lookup_answers_for_the_whole_database_network(city: GeoDatabase) -> None:
    first = city.lookup(ip("1.128.0.1"))
    assert city.cached_networks == 1
    # Another address of the same /11 is answered from the cache: same object, no new entry.
    assert city.lookup(ip("1.159.255.254")) is first
    assert city.cached_networks == 1
    city.lookup(ip("81.2.69.7"))
    assert city.cached_networks == 2


def test_unknown_addresses_are_cached_as_unknown(city: GeoDatabase) -> None:
    assert city.lookup(ip("8.8.8.8")) is None
    assert city.cached_networks == 1
    assert city.lookup(ip("8.8.4.4")) is None


def test_the_cache_is_bounded() -> None:
    db = open_db(TEST_CITY_DB, cache=2)
    try:
        for addr in ("81.2.69.1", "202.12.27.1", "1.128.0.1", "41.0.0.1"):
            assert db.lookup(ip(addr)) is not None
            assert db.cached_networks <= 2
        # Still right after the cache started over.
        again = db.lookup(ip("81.2.69.1"))
        assert again is not None
        assert again.country == "GB"
    finally:
        db.close()


def test_ipv4_and_ipv6_keys_never_collide_in_the_cache(city: GeoDatabase) -> None:
    v4 = city.lookup(ip("81.2.69.1"))
    # ::5102:4501 is numerically 81.2.69.1, but it is an IPv6 address of no known network.
    assert city.lookup(ip("::5102:4501")) is None or city.lookup(ip("::5102:4501")) is not v4
    assert city.lookup(ip("81.2.69.1")) is v4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda d: d / "missing.mmdb", "no such file", id="missing"),
        pytest.param(lambda d: d, "is a directory", id="directory"),
        pytest.param(
            lambda d: _write(d / "junk.mmdb", b"not a database" * 100),
            "not a MaxMind DB file",
            id="junk",
        ),
        pytest.param(lambda d: _write(d / "empty.mmdb", b""), "not a MaxMind DB file", id="empty"),
        pytest.param(
            lambda d: _copy(TEST_ASN_DB, d / "asn.mmdb"),
            "is a 'GeoLite2-ASN' database",
            id="asn-database",
        ),
    ],
)
def test_unusable_database_files_are_refused_with_a_reason(
    tmp_path: Path, make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(GeoDatabaseError, match=message):
        open_db(path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def test_age_is_measured_against_the_given_clock() -> None:
    db = open_db(TEST_CITY_DB, now=time.time())
    built = db.info.build_epoch
    db.close()
    fresh = open_db(TEST_CITY_DB, now=built + 29 * 86400)
    old = open_db(TEST_CITY_DB, now=built + 31 * 86400)
    try:
        assert not fresh.info.stale
        assert old.info.stale
        assert old.info.age_days == pytest.approx(31)
    finally:
        fresh.close()
        old.close()


def test_bundled_geolite2_snapshot_opens_and_locates_real_addresses() -> None:
    db = open_db(None)
    try:
        assert db.bundled
        assert db.info.path == str(bundled_database())
        assert db.info.database_type == "GeoLite2-City"
        london = db.lookup(ip("81.2.69.142"))
        tokyo = db.lookup(ip("1.0.16.1"))
        assert london is not None
        assert tokyo is not None
        assert london.country == "GB"
        assert tokyo.country == "JP"
        assert london.lat == pytest.approx(51.5, abs=1)
    finally:
        db.close()


def test_not_global_ranges_agree_with_ipaddress() -> None:
    import random

    from georouter.geoip.database import _NOT_GLOBAL, address_key, is_global

    rng = random.Random(11)
    samples: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for net in map(ipaddress.ip_network, _NOT_GLOBAL):
        # Both edges of every range, and the addresses just outside them.
        first, last = int(net.network_address), int(net.broadcast_address)
        top = (1 << net.max_prefixlen) - 1
        for n in {first, last, max(first - 1, 0), min(last + 1, top)}:
            samples.append(
                ipaddress.ip_address(n) if net.version == 6 else ipaddress.IPv4Address(n)
            )
    samples += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(5000)]
    samples += [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(2000)]
    samples += [ipaddress.IPv6Address((0x2000 << 112) | rng.getrandbits(112)) for _ in range(2000)]
    for addr in samples:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            continue  # mapped addresses are normalised to IPv4 before any lookup
        expected = addr.is_global and not addr.is_multicast
        assert is_global(address_key(addr)) is expected, addr
