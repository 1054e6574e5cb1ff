"""Per-client budgets: how much one address may ask for, as pure state.

The caller passes the time in (``now``, seconds on any monotonic clock), so a
test decides what time it is. Both limiters hold a bounded number of
addresses: a flood from many addresses evicts the oldest entries instead of
growing memory, which errs on the side of letting a request through.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from georouter.core.clientip import IPAddress


def client_key(address: IPAddress | None) -> str:
    """The budget an address draws on: IPv4 per address, IPv6 per /64.

    One IPv6 host is handed a whole /64, so per-address budgets would give one
    client 2**64 of them.
    """
    if address is None:
        return "-"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class TokenBuckets:
    """A token bucket per key: ``burst`` tokens, refilled at ``rate_per_s``."""

    def __init__(self, rate_per_s: float, burst: int, *, max_keys: int = 65536) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_keys = max_keys
        # key -> (tokens, updated at); oldest-touched first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0 and self.burst > 0

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)

    def take(self, key: str, now: float) -> bool:
        """Spend one token of ``key``'s bucket; False (nothing spent) when it is empty."""
        if not self.enabled:
            return True
        tokens = self._tokens(key, now)
        allowed = tokens >= 1.0
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def refund(self, key: str) -> None:
        """Give back a token ``take`` spent on something that did not happen."""
        found = self._buckets.get(key)
        if found is not None:
            self._buckets[key] = (min(float(self.burst), found[0] + 1.0), found[1])

    def retry_after_s(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token again (0 if it has one now)."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s


class FailureWindow:
    """Counts failures per key; ``limit`` of them within ``window_s`` locks the key out.

    A locked-out key stays refused until ``window_s`` after its first counted
    failure, whatever it sends meanwhile (HAProxy's ``sc_http_err_rate`` deny).
    """

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 65536) -> None:
        self.limit = limit
        self.window_s = window_s
        self._max_keys = max_keys
        # key -> (failures, window started at)
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _current(self, key: str, now: float) -> tuple[int, float]:
        count, since = self._failures.get(key, (0, now))
        if now - since >= self.window_s:
            return 0, now
        return count, since

    def locked_out(self, key: str, now: float) -> float:
        """Seconds ``key`` must still wait (0: it may try)."""
        if self.limit <= 0:
            return 0.0
        count, since = self._current(key, now)
        return max(0.0, since + self.window_s - now) if count >= self.limit else 0.0

    def failed(self, key: str, now: float) -> int:
        """Count one failure of ``key``; the failures in its window so far."""
        count, since = self._current(key, now)
        self._failures.pop(key, None)
        self._failures[key] = (count + 1, since)
        if len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
        return count + 1
