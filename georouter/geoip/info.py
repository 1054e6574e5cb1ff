"""What a GeoIP database file is: ``georouter geodata info``.

Any MaxMind DB file is described from its metadata (read through geoip2), an
ASN database too; whether georouter can locate with it is ``verify``'s
verdict, given alongside.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from georouter.errors import GeoDatabaseError
from georouter.geoip.verify import english, read_metadata, verify_database


@dataclass(frozen=True, slots=True)
class Description:
    path: str
    bundled: bool
    size_bytes: int
    database_type: str
    build_epoch: int
    age_days: float
    max_age_days: int
    ip_version: int
    # Nodes of the search tree: its size, not a count of networks.
    node_count: int
    record_size: int
    languages: tuple[str, ...]
    description: str
    # None: georouter can locate with it; else why not.
    unusable: str | None
    samples: int = 0
    located: int = 0

    @property
    def stale(self) -> bool:
        return self.age_days > self.max_age_days

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "bundled": self.bundled,
            "size_bytes": self.size_bytes,
            "type": self.database_type,
            "build_epoch": self.build_epoch,
            "built": _utc(self.build_epoch),
            "age_days": round(self.age_days, 1),
            "stale": self.stale,
            "ip_versions": [4, 6] if self.ip_version == 6 else [4],
            "node_count": self.node_count,
            "record_size": self.record_size,
            "languages": list(self.languages),
            "description": self.description,
            "usable": self.unusable is None,
            "problem": self.unusable,
            "sample_lookups": self.samples,
            "located": self.located,
        }

    def lines(self) -> list[str]:
        age = f"{self.age_days:.1f} days"
        if self.stale:
            age += f" (stale: older than {self.max_age_days} days)"
        usable = (
            f"yes ({self.located} of {self.samples} sample lookups located through geoip2)"
            if self.unusable is None
            else f"no: {self.unusable}"
        )
        rows = [
            ("path", self.path + (" (the bundled GeoLite2 snapshot)" if self.bundled else "")),
            ("type", self.database_type),
            ("built", _utc(self.build_epoch)),
            ("age", age),
            ("ip versions", "IPv4 and IPv6" if self.ip_version == 6 else "IPv4 only"),
            (
                "nodes",
                f"{self.node_count:,} in the search tree (its size, not a count of networks)",
            ),
            ("languages", ", ".join(self.languages) or "-"),
            ("description", self.description or "-"),
            ("size", f"{self.size_bytes:,} bytes"),
            ("usable", usable),
        ]
        return [f"{name + ':':<13}{value}" for name, value in rows]


def _utc(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def describe(path: Path, *, now: float, max_age_days: int, bundled: bool = False) -> Description:
    """The description of ``path``; a GeoDatabaseError if it is no MaxMind DB at all."""
    meta = read_metadata(path)
    unusable = None
    samples = located = 0
    try:
        verified = verify_database(path)
        samples, located = verified.samples, verified.located
    except GeoDatabaseError as exc:
        unusable = str(exc)
    return Description(
        path=str(path),
        bundled=bundled,
        size_bytes=path.stat().st_size,
        database_type=str(meta.database_type),
        build_epoch=int(meta.build_epoch),
        age_days=max(0.0, (now - meta.build_epoch) / 86400),
        max_age_days=max_age_days,
        ip_version=int(meta.ip_version),
        node_count=int(meta.node_count),
        record_size=int(meta.record_size),
        languages=tuple(meta.languages),
        description=english(meta.description),
        unusable=unusable,
        samples=samples,
        located=located,
    )
