"""The one health view the router asks: active probes, passive ejections and the
operator's drains and overrides (``core.controls.routability``), rebuilt only
when one of them changes or time moves past an ejection's end, an override's
expiry or a drain's deadline, so nearly every request reuses the same value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from georouter.core.controls import NO_CONTROLS, Controls, Routability, routability
from georouter.probes.passive import PassiveHealth


class RoutableView:
    """``unroutable()`` for new sessions, ``pinned()`` for sessions pinned already."""

    def __init__(
        self,
        health: Callable[[], Mapping[str, str]],
        *,
        passive: PassiveHealth | None = None,
        controls: Callable[[], tuple[int, Controls]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._health = health
        self._passive = passive
        self._controls = controls
        self._clock = clock
        self._key: tuple[object, int, int] | None = None
        self._view = Routability({}, {}, -math.inf)

    def _current(self) -> Routability:
        base = self._health()
        passive_version = self._passive.version if self._passive is not None else 0
        version, controls = self._controls() if self._controls is not None else (0, NO_CONTROLS)
        key = (base, passive_version, version)
        view = self._view
        same = self._key is not None and self._key[0] is base and self._key[1:] == key[1:]
        if same and (view.until == math.inf or self._clock() < view.until):
            return view
        now = self._clock()
        ejected: Mapping[str, str] = {}
        ends = math.inf
        if self._passive is not None:
            ejected = self._passive.ejected(now)
            ends = self._passive.next_change(now)
        view = routability(base, ejected, controls, now)
        if ends < view.until:
            view = view._replace(until=ends)
        self._key, self._view = key, view
        return view

    def unroutable(self) -> Mapping[str, str]:
        """The clusters a new session may not go to, with why."""
        return self._current().new

    def pinned(self) -> Mapping[str, str]:
        """The clusters a session pinned to may not stay on (a draining one may)."""
        return self._current().pinned
