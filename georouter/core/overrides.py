"""Location overrides: networks whose place the operator knows better than the GeoIP
database (gdnsd's ``nets``). Pure: a lookup table built once per configuration.

The most specific network wins (longest prefix first), whatever order the file
lists them in, so a /24 carved out of an overridden /16 keeps its own answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from georouter.config import Override
from georouter.core.clientip import IPAddress

# Per address family: (prefix length, {network address as an int: override}), the
# longest prefix first. A lookup masks the address once per prefix length in use.
_Levels = tuple[tuple[int, Mapping[int, Override]], ...]


class OverrideTable:
    """Which override, if any, holds an address; one dict probe per prefix length."""

    __slots__ = ("_bounds", "_levels")

    def __init__(self, overrides: tuple[Override, ...]) -> None:
        levels: dict[int, dict[int, dict[int, Override]]] = {4: {}, 6: {}}
        for override in overrides:
            net = override.cidr
            by_length = levels[net.version].setdefault(net.prefixlen, {})
            by_length.setdefault(int(net.network_address), override)
        self._levels: dict[int, _Levels] = {
            version: tuple(
                (length, MappingProxyType(found))
                for length, found in sorted(by_length.items(), reverse=True)
            )
            for version, by_length in levels.items()
        }
        # Per family, the lowest and highest address any override holds: most
        # addresses are outside every override and cost two comparisons.
        self._bounds: dict[int, tuple[int, int]] = {
            version: (
                min(int(o.cidr.network_address) for o in found),
                max(int(o.cidr.broadcast_address) for o in found),
            )
            for version in (4, 6)
            if (found := [o for o in overrides if o.cidr.version == version])
        }

    def __bool__(self) -> bool:
        return any(self._levels.values())

    def lookup(self, ip: IPAddress) -> Override | None:
        """The override of the most specific network holding ``ip`` (None: none)."""
        bounds = self._bounds.get(ip.version)
        key = int(ip)
        if bounds is None or not bounds[0] <= key <= bounds[1]:
            return None
        bits = 32 if ip.version == 4 else 128
        for length, found in self._levels[ip.version]:
            host_bits = bits - length
            hit = found.get(key >> host_bits << host_bits)
            if hit is not None:
                return hit
        return None
