"""Whether a file is a database georouter can locate with, read through geoip2's typed reader.

The hot path reads raw records through ``maxminddb`` (``database``); a file
about to be installed, switched to, or named by a configuration is first read
the careful way. geoip2's ``Reader`` opens it; its type must be City or
Country (an ASN database opens fine and locates nothing, so it is named as
such); and sample lookups must decode into geoip2's ``City``/``Country``
models and locate at least one address. The samples come from the file
itself (its first networks) and from addresses spread over the address
space, so a regional database passes and a corrupt data section does not.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geoip2.database
import geoip2.errors
import geoip2.models
import maxminddb

from georouter.config import GeoipSettings
from georouter.errors import ConfigError, GeoDatabaseError, Problem
from georouter.geoip.database import bundled_database, require_location_type

# The first networks of the search tree, and addresses spread evenly over IPv4
# (and over 2000::/3, where IPv6 addresses are handed out).
_TREE_SAMPLES = 16
_SPREAD_V4 = 24
_SPREAD_V6 = 8


@dataclass(frozen=True, slots=True)
class Verified:
    """What a usable database says about itself, and how its samples went."""

    database_type: str
    build_epoch: int
    ip_version: int
    # Nodes of the search tree (``metadata().node_count``): a measure of its
    # size, not a count of networks, which only a walk of the whole tree gives.
    node_count: int
    record_size: int
    languages: tuple[str, ...]
    description: str
    samples: int
    located: int


def _spread(ip_version: int) -> Iterator[str]:
    for i in range(_SPREAD_V4):
        # The middle of each slice, away from the reserved starts (0/8, 224/4).
        yield str(ipaddress.IPv4Address((2 * i + 1) * (1 << 32) // (2 * _SPREAD_V4)))
    if ip_version == 6:
        base, span = 0x2000 << 112, 1 << 125
        for i in range(_SPREAD_V6):
            yield str(ipaddress.IPv6Address(base + (2 * i + 1) * span // (2 * _SPREAD_V6)))


def _tree_samples(path: Path) -> list[str]:
    with maxminddb.open_database(str(path), maxminddb.MODE_AUTO) as raw:
        return [str(net.network_address) for net, _ in itertools.islice(raw, _TREE_SAMPLES)]


def english(texts: dict[str, str]) -> str:
    """The English one of a database's descriptions, else any."""
    return str(texts.get("en") or next(iter(texts.values()), ""))


def _located(model: geoip2.models.Country) -> bool:
    if model.country.iso_code or model.registered_country.iso_code:
        return True
    if isinstance(model, geoip2.models.City):
        return model.location.latitude is not None and model.location.longitude is not None
    return False


def _reader(path: Path, label: str) -> geoip2.database.Reader:
    if path.is_dir():
        raise GeoDatabaseError(f"{label} is a directory, not a database file")
    try:
        return geoip2.database.Reader(str(path))
    except FileNotFoundError as exc:
        raise GeoDatabaseError(f"{label}: no such file") from exc
    except PermissionError as exc:
        raise GeoDatabaseError(f"{label}: permission denied") from exc
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        # maxminddb's "Error opening database file (PATH). Is this a valid MaxMind DB
        # file?" says no more than we do, and names a temporary file in an update.
        detail = "" if str(path) in str(exc) else f" ({exc})"
        raise GeoDatabaseError(f"{label} is not a MaxMind DB file{detail}") from exc


def read_metadata(path: Path, label: str | None = None) -> maxminddb.reader.Metadata:
    """The metadata of any MaxMind DB file (ASN too); GeoDatabaseError if it is none."""
    with _reader(path, label or str(path)) as reader:
        return reader.metadata()


def verify_database(path: Path, label: str | None = None) -> Verified:
    """Prove ``path`` is a City or Country database that answers lookups; a
    GeoDatabaseError naming ``label`` (default: the path) says why not."""
    label = label or str(path)
    with _reader(path, label) as reader:
        meta = reader.metadata()
        db_type = str(meta.database_type)
        if "ASN" in db_type:
            raise GeoDatabaseError(
                f"{label} is an ASN database ({db_type!r}): it names who holds an address,"
                " not where it is; georouter needs a GeoIP2/GeoLite2 City or Country database"
            )
        require_location_type(label, db_type)
        lookup = reader.city if "City" in db_type else reader.country
        samples = located = 0
        address = ""
        try:
            for address in itertools.chain(_tree_samples(path), _spread(meta.ip_version)):
                samples += 1
                try:
                    located += _located(lookup(address))
                except geoip2.errors.AddressNotFoundError:
                    continue
        # What geoip2 raises for a record that does not fit its model (TypeError:
        # a field of the wrong shape) or a data section it cannot decode.
        except (maxminddb.InvalidDatabaseError, ValueError, TypeError, KeyError) as exc:
            where = f" (at {address})" if address else ""
            raise GeoDatabaseError(
                f"{label} has records that cannot be read{where}: {exc}"
            ) from exc
        if not located:
            raise GeoDatabaseError(
                f"{label} ({db_type}) locates none of {samples} sample addresses: an empty"
                " or damaged database"
            )
        return Verified(
            database_type=db_type,
            build_epoch=int(meta.build_epoch),
            ip_version=int(meta.ip_version),
            node_count=int(meta.node_count),
            record_size=int(meta.record_size),
            languages=tuple(meta.languages),
            description=english(meta.description),
            samples=samples,
            located=located,
        )


def verify_configured(settings: GeoipSettings) -> Verified:
    """``verify_database`` for ``[geoip] database``; a ConfigError naming the key."""
    path = settings.database or bundled_database()
    try:
        return verify_database(path)
    except GeoDatabaseError as exc:
        raise ConfigError([Problem("geoip.database", str(exc))]) from exc
