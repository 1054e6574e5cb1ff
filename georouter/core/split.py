"""Splitting new sessions among clusters by weight, the same way on every edge. Pure.

The draw reads a hash of the session id (or the client's address), never a
random generator, so every edge that holds the same inputs draws the same
cluster for a session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from georouter.config import Cluster, Rule

# A weighted split reads this many low bits of the caller's hash.
SPREAD_BITS = 32

# A full cluster still counts a little in a spread: all full is not "no cluster".
_MIN_HEADROOM = 0.01


def headroom(load: float | None) -> float:
    return 1.0 if load is None else max(_MIN_HEADROOM, 1.0 - load)


def spread_of(key: str | bytes) -> int:
    """A hash of a session id (or a client address's bytes) that every edge computes
    alike, unlike ``hash()``, which Python salts per process."""
    data = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def band_of(
    order: Sequence[tuple[Cluster, float | None]],
    first: int,
    *,
    unroutable: Mapping[str, str],
    forbidden: frozenset[str],
    width: float,
    rule: Rule | None,
    taken: Callable[[str], bool],
) -> tuple[int, ...]:
    """The routable clusters from ``first`` on that would take the session (``taken``)
    whose biased distance is within ``width`` of its own, in the same part of the
    order (the rule's, or not)."""
    nearest, d0 = order[first]
    assert d0 is not None
    limit = d0 - nearest.bias_km + width
    preferred = len(rule.clusters) if rule is not None else 0
    inside = first < preferred
    band = [first]
    for j in range(first + 1, len(order)):
        cluster, d = order[j]
        if (j < preferred) is not inside:
            break
        assert d is not None
        if d - cluster.bias_km > limit:
            break
        name = cluster.name
        if name not in unroutable and name not in forbidden and taken(name):
            band.append(j)
    return tuple(band)


def pick_by_weight(weights: list[float], spread: int) -> int:
    """The index drawn from ``weights`` by ``spread``: each index for the share of
    the hash space its weight is of the total (all weights 0: the first)."""
    total = sum(weights)
    if total <= 0:
        return 0
    point = (spread % (1 << SPREAD_BITS)) / (1 << SPREAD_BITS) * total
    reached = 0.0
    for i, weight in enumerate(weights):
        reached += weight
        if point < reached:
            return i
    # Rounding may leave the point just past the last bound.
    return max(i for i, w in enumerate(weights) if w > 0)
