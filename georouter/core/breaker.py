"""A circuit breaker for the session store. Pure: outcomes in, a decision out.

While it is open the request path does not wait on Redis at all; a background
task probes Redis about once a second and closes it again (see sessionmap).
"""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class Breaker:
    """Opens after ``failures_to_open`` consecutive failures; closed again by ``close()``."""

    def __init__(self, failures_to_open: int = 3) -> None:
        self.failures_to_open = failures_to_open
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0

    @property
    def allows(self) -> bool:
        return self.state is BreakerState.CLOSED

    def success(self) -> None:
        self.consecutive_failures = 0

    def failure(self) -> bool:
        """Record a failure; True if this one opened the breaker."""
        self.consecutive_failures += 1
        if self.state is BreakerState.CLOSED and self.consecutive_failures >= self.failures_to_open:
            self.state = BreakerState.OPEN
            return True
        return False

    def close(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
