"""What the session map needs of a store: one key per session, changed only by the pin rule."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import NamedTuple, Protocol

from georouter.core.pin import Ask, Pin


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: the clock session maps and stores read unless given one."""
    return time.time_ns() // 1_000_000


class Change(NamedTuple):
    """A pin another edge wrote, as it announced it."""

    session_id: str
    # None: the announcement did not carry the value (an earlier release's).
    pin: Pin | None


class SessionStore(Protocol):
    """Every method raises ``StoreUnavailable`` when the store cannot answer in time."""

    @property
    def announces_changes(self) -> bool: ...

    async def read(self, session_id: str) -> Pin | None:
        """The stored pin (a tombstone if forgotten), its TTL renewed; None if none."""

    async def read_many(self, session_ids: list[str]) -> list[Pin | None]:
        """``read`` of many sessions at once."""

    async def apply(self, session_id: str, ask: Ask) -> tuple[Pin | None, bool]:
        """``core.pin.apply`` on the stored key: what it holds after, and whether
        this ask wrote it (and so announced it)."""

    async def peek(self, session_id: str) -> Pin | None:
        """The stored pin and its TTL left, without renewing it."""

    async def ping(self) -> None: ...

    async def lost_data(self) -> bool:
        """Whether the store lost its data since this was last asked (restarted
        empty, flushed); False on the first call."""

    def changes(self) -> AsyncIterator[Change | None]:
        """Pins other edges wrote; None once subscribed. Ends (raising
        ``StoreUnavailable``) when the subscription is lost."""

    async def close(self) -> None: ...
