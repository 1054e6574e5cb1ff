"""Build the test GeoIP databases in this folder from ``networks.csv``.

    python geodata/build.py            # rewrite the three .mmdb files
    python geodata/build.py --check    # exit 1 if they no longer match the CSV

Needs the test extra (``mmdb-writer``). The files are committed so the suite
does not depend on this script; ``tests/test_geodata.py`` proves they match.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

import maxminddb
from mmdb_writer import MmdbF64, MmdbU16, MMDBWriter
from netaddr import IPSet

HERE = Path(__file__).resolve().parent
CSV_PATH = HERE / "networks.csv"
CITY = HERE / "georouter-test-city.mmdb"
COUNTRY = HERE / "georouter-test-country.mmdb"
ASN = HERE / "georouter-test-asn.mmdb"


# The continent of every country networks.csv names (MaxMind's `continent.code`).
CONTINENT = {
    "AU": "OC", "BR": "SA", "CN": "AS", "DE": "EU", "GB": "EU", "JP": "AS",
    "NO": "EU", "SE": "EU", "US": "NA", "ZA": "AF",
}  # fmt: skip


@dataclass(frozen=True)
class Row:
    network: str
    country: str
    lat: float | None
    lon: float | None
    accuracy_km: int | None
    city: str


def rows(path: Path = CSV_PATH) -> list[Row]:
    with path.open(encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    out = []
    for r in csv.DictReader(lines):
        out.append(
            Row(
                network=r["network"],
                country=r["country"],
                lat=float(r["lat"]) if r["lat"] else None,
                lon=float(r["lon"]) if r["lon"] else None,
                accuracy_km=int(r["accuracy_km"]) if r["accuracy_km"] else None,
                city=r["city"],
            )
        )
    return out


def city_record(row: Row) -> dict[str, object]:
    record: dict[str, object] = {
        "continent": {"code": CONTINENT[row.country]},
        "country": {"iso_code": row.country, "names": {"en": row.country}},
        "registered_country": {"iso_code": row.country},
    }
    if row.lat is not None and row.lon is not None:
        location: dict[str, object] = {"latitude": MmdbF64(row.lat), "longitude": MmdbF64(row.lon)}
        if row.accuracy_km is not None:
            location["accuracy_radius"] = MmdbU16(row.accuracy_km)
        record["location"] = location
    if row.city:
        record["city"] = {"names": {"en": row.city}}
    return record


def build(target_dir: Path = HERE) -> list[Path]:
    data = rows()
    kinds = {
        "georouter-test-city.mmdb": ("GeoIP2-City", city_record),
        "georouter-test-country.mmdb": (
            "GeoIP2-Country",
            lambda r: {
                "continent": {"code": CONTINENT[r.country]},
                "country": {"iso_code": r.country},
            },
        ),
        "georouter-test-asn.mmdb": (
            "GeoLite2-ASN",
            lambda r: {"autonomous_system_number": 64512},
        ),
    }
    written = []
    for name, (db_type, make) in kinds.items():
        writer = MMDBWriter(
            ip_version=6,
            ipv4_compatible=True,
            database_type=db_type,
            languages=["en"],
            description=f"georouter test database ({db_type}), built from networks.csv",
        )
        for row in data:
            writer.insert_network(IPSet([row.network]), make(row))
        path = target_dir / name
        writer.to_db_file(str(path))
        written.append(path)
    return written


def check() -> list[str]:
    """Differences between the committed City database and the CSV."""
    problems = []
    with maxminddb.open_database(str(CITY)) as db:
        for row in rows():
            net = ipaddress.ip_network(row.network)
            for addr in (net[0], net[-1]):
                rec = db.get(addr)
                got = (
                    None
                    if not isinstance(rec, dict)
                    else (
                        rec.get("country", {}).get("iso_code"),
                        rec.get("location", {}).get("latitude"),
                        rec.get("location", {}).get("longitude"),
                        rec.get("location", {}).get("accuracy_radius"),
                    )
                )
                want = (row.country, row.lat, row.lon, row.accuracy_km)
                if got != want:
                    problems.append(f"{addr}: database has {got}, networks.csv says {want}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    for path in build():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
