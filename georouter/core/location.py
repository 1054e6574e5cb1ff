"""Where a client is: the value every location source produces and the policy reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class LocationSource(StrEnum):
    GEOIP = "geoip"


@dataclass(frozen=True, slots=True)
class Location:
    """A client's position. ``lat``/``lon`` are None when only the country is known
    (a GeoIP2 Country database): such a location cannot be ranked by distance."""

    lat: float | None
    lon: float | None
    country: str | None
    accuracy_km: float | None
    source: LocationSource
    # Built once: a location is shared by every address of its database network.
    _json: dict[str, object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = {
            "lat": self.lat,
            "lon": self.lon,
            "country": self.country,
            "accuracy_km": self.accuracy_km,
            "source": self.source.value,
        }
        object.__setattr__(self, "_json", body)

    def as_json(self) -> dict[str, object]:
        """The JSON form (shared: callers must not modify it)."""
        return self._json
