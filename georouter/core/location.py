"""Where a client is: the value every location source produces and the policy reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class LocationSource(StrEnum):
    GEOIP = "geoip"
    # An `[[overrides]]` entry of the configuration.
    OVERRIDE = "override"


class Precision(StrEnum):
    """How much the point of a location says about the client."""

    # A city-level (or better) position, as precise as its `accuracy_km`.
    POINT = "point"
    # The database knows only the country: its point is the country's default
    # (MaxMind's US centroid 37.751, -97.822 and the like), not the client's.
    COUNTRY = "country"


@dataclass(frozen=True, slots=True)
class Location:
    """A client's position. ``lat``/``lon`` are None when only the country is known
    (a GeoIP2 Country database): such a location cannot be ranked by distance."""

    lat: float | None
    lon: float | None
    country: str | None
    accuracy_km: float | None
    source: LocationSource
    # MaxMind's continent code (EU, NA, AS, ...), which residency rules may match.
    continent: str | None = None
    precision: Precision = Precision.POINT
    # Built once: a location is shared by every address of its database network.
    _json: dict[str, object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = {
            "lat": self.lat,
            "lon": self.lon,
            "country": self.country,
            "continent": self.continent,
            "accuracy_km": self.accuracy_km,
            "precision": self.precision.value,
            "source": self.source.value,
        }
        object.__setattr__(self, "_json", body)

    def as_json(self) -> dict[str, object]:
        """The JSON form (shared: callers must not modify it)."""
        return self._json
