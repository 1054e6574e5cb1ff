"""Where an address is: a GeoIP2/GeoLite2 City or Country database behind a small class.

Raw records are read through ``maxminddb`` (the reader geoip2 is built on)
instead of geoip2's model objects, which cost half of a lookup. Results are
cached per database *network*: one lookup answers for every address of the
network the database stores it in, so a cache of a few thousand networks
covers most of the traffic an edge sees.

The open file, its description and its cache are one value (``OpenDatabase``):
a new file is opened and validated beside the old one and swapped in whole
(``GeoDatabase.switch``), so a lookup uses one database from start to end.
"""

from __future__ import annotations

import bisect
import importlib.resources
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

from georouter.config import GeoipSettings
from georouter.core.clientip import IPAddress
from georouter.core.location import Location, LocationSource, Precision
from georouter.errors import ConfigError, GeoDatabaseError, Problem

log = logging.getLogger(__name__)


# IPv4 keys are shifted above the IPv6 space so one sorted cache holds both.
_V4_OFFSET = 1 << 128
_MISSING = object()

# Addresses that are not globally reachable (the private and reserved ranges of
# Python's ipaddress, 100.64.0.0/10 and multicast): they have no location.
# Checked with one bisect instead of ipaddress's per-network walk.
_NOT_GLOBAL = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/29", "192.0.0.170/31", "192.0.2.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "::ffff:0:0/96", "100::/64", "2001::/23", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip


def _key_range(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    offset = _V4_OFFSET if net.version == 4 else 0
    return int(net.network_address) + offset, int(net.broadcast_address) + offset


_NOT_GLOBAL_RANGES = sorted(_key_range(ipaddress.ip_network(n)) for n in _NOT_GLOBAL)
_NOT_GLOBAL_STARTS = tuple(start for start, _ in _NOT_GLOBAL_RANGES)
_NOT_GLOBAL_ENDS = tuple(end for _, end in _NOT_GLOBAL_RANGES)


def address_key(ip: IPAddress) -> int:
    """One integer space for both families: IPv4 above every IPv6 address."""
    return int(ip) + _V4_OFFSET if ip.version == 4 else int(ip)


def is_global(key: int) -> bool:
    i = bisect.bisect_right(_NOT_GLOBAL_STARTS, key) - 1
    return i < 0 or key > _NOT_GLOBAL_ENDS[i]


def bundled_database() -> Path:
    """The GeoLite2 City snapshot shipped by the ``maxminddb-geolite2`` package."""
    return Path(str(importlib.resources.files("_maxminddb_geolite2") / "GeoLite2-City.mmdb"))


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    path: str
    database_type: str
    build_epoch: int
    age_days: float
    stale: bool
    bundled: bool

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "type": self.database_type,
            "build_epoch": self.build_epoch,
            "age_days": round(self.age_days, 1),
            "stale": self.stale,
            "bundled": self.bundled,
        }


class _NetworkCache:
    """Disjoint address ranges (database networks) and what each resolves to.

    Bounded: when full it starts over, which costs a few misses, never memory.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._values: list[Location | None] = []

    def get(self, key: int) -> Location | object | None:
        i = bisect.bisect_right(self._starts, key) - 1
        if i >= 0 and key <= self._ends[i]:
            return self._values[i]
        return _MISSING

    def put(self, start: int, end: int, value: Location | None) -> None:
        if self.capacity <= 0:
            return
        if len(self._starts) >= self.capacity:
            self._starts.clear()
            self._ends.clear()
            self._values.clear()
        i = bisect.bisect_right(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)
        self._values.insert(i, value)

    def __len__(self) -> int:
        return len(self._starts)


def _location(record: Any) -> Location | None:
    if not isinstance(record, dict):
        return None
    country_rec = record.get("country") or record.get("registered_country") or {}
    country = country_rec.get("iso_code") if isinstance(country_rec, dict) else None
    loc = record.get("location") or {}
    lat, lon = loc.get("latitude"), loc.get("longitude")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        lat = lon = None
    if lat is None and country is None:
        return None
    radius = loc.get("accuracy_radius")
    continent_rec = record.get("continent") or {}
    continent = continent_rec.get("code") if isinstance(continent_rec, dict) else None
    return Location(
        lat=float(lat) if lat is not None else None,
        lon=float(lon) if lon is not None else None,
        country=country if isinstance(country, str) else None,
        accuracy_km=float(radius) if isinstance(radius, int | float) else None,
        source=LocationSource.GEOIP,
        continent=continent if isinstance(continent, str) else None,
        # A point without a city is the database's default for the country (MaxMind
        # puts every such US address at 37.751, -97.822): not the client's position.
        precision=Precision.POINT if record.get("city") else Precision.COUNTRY,
    )


# A file's identity, size and age: what a watcher compares to see a new file.
FileStamp = tuple[int, int, int, int]


def file_stamp(path: Path) -> FileStamp | None:
    try:
        st = path.stat()  # follows symlinks: a new link target is a new file
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def open_reader(path: Path) -> Any:
    """A ``maxminddb`` reader of ``path``; GeoDatabaseError saying why it cannot be one."""
    if path.is_dir():
        raise GeoDatabaseError(f"is a directory, not a database file: {path}")
    try:
        return maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except FileNotFoundError as exc:
        raise GeoDatabaseError(f"no such file: {path}") from exc
    except PermissionError as exc:
        raise GeoDatabaseError(f"cannot read {path}: permission denied") from exc
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoDatabaseError(f"not a MaxMind DB file: {path} ({exc})") from exc


def require_location_type(label: str, database_type: str) -> None:
    if "City" not in database_type and "Country" not in database_type:
        raise GeoDatabaseError(
            f"{label} is a {database_type!r} database; a GeoIP2/GeoLite2 City or Country"
            " database is required"
        )


@dataclass(frozen=True, slots=True, eq=False)
class OpenDatabase:
    """One open database file with its description and its own network cache."""

    reader: Any
    info: DatabaseInfo
    cache: _NetworkCache
    # The file as it was when opened (None: the bundled snapshot, never replaced).
    stamp: FileStamp | None

    def close(self) -> None:
        self.reader.close()


class GeoDatabase:
    """The GeoIP2/GeoLite2 City or Country database an edge locates with; one per
    process, closed by its owner. ``switch`` puts a new file in the old one's place."""

    def __init__(self, path: Path | None, *, cache_networks: int, max_age_days: int, now: float):
        self.bundled = path is None
        self.path = bundled_database() if path is None else path
        self.cache_networks = cache_networks
        self.max_age_days = max_age_days
        self._open = self.open_file(now=now)

    def open_file(self, *, now: float) -> OpenDatabase:
        """Open the file now at ``path`` beside the one in use (which stays in use)."""
        # Taken before opening: a file replaced meanwhile is seen as new next time.
        stamp = None if self.bundled else file_stamp(self.path)
        reader = open_reader(self.path)
        meta = reader.metadata()
        db_type = str(meta.database_type)
        try:
            require_location_type(str(self.path), db_type)
        except GeoDatabaseError:
            reader.close()
            raise
        age_days = max(0.0, (now - meta.build_epoch) / 86400)
        info = DatabaseInfo(
            path=str(self.path),
            database_type=db_type,
            build_epoch=int(meta.build_epoch),
            age_days=age_days,
            stale=age_days > self.max_age_days,
            bundled=self.bundled,
        )
        return OpenDatabase(reader, info, _NetworkCache(self.cache_networks), stamp)

    def switch(self, new: OpenDatabase) -> OpenDatabase:
        """Locate with ``new`` from now on; returns the database it replaces, for the
        caller to close once no lookup can be using it."""
        old, self._open = self._open, new
        return old

    @property
    def info(self) -> DatabaseInfo:
        return self._open.info

    @property
    def stamp(self) -> FileStamp | None:
        return self._open.stamp

    def lookup(self, ip: IPAddress) -> Location | None:
        """The location of ``ip``; None for private, reserved and unknown addresses."""
        key = address_key(ip)
        if not is_global(key):
            return None
        db = self._open  # read once: a switch never splits a lookup
        cached = db.cache.get(key)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        try:
            record, prefix_len = db.reader.get_with_prefix_len(ip)
        except (ValueError, maxminddb.InvalidDatabaseError) as exc:
            log.warning("GeoIP lookup of %s failed: %s", ip, exc)
            return None
        location = _location(record)
        host_bits = (32 if ip.version == 4 else 128) - prefix_len
        start = key >> host_bits << host_bits
        db.cache.put(start, start + (1 << host_bits) - 1, location)
        return location

    @classmethod
    def configured(cls, settings: GeoipSettings, *, now: float) -> GeoDatabase:
        """The database ``[geoip]`` names; a ConfigError naming ``geoip.database`` if
        it cannot be used."""
        try:
            return cls(
                settings.database,
                cache_networks=settings.cache_networks,
                max_age_days=settings.max_age_days,
                now=now,
            )
        except GeoDatabaseError as exc:
            raise ConfigError([Problem("geoip.database", str(exc))]) from exc

    @property
    def cached_networks(self) -> int:
        return len(self._open.cache)

    def close(self) -> None:
        self._open.close()
