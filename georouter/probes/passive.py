"""Passive health: what this process's data path sees of each cluster, as ejections.

The data path reports every proxied exchange's outcome (an answer below 500,
or a connection error, a timeout, a broken exchange, a 5xx); the pure state
machine in ``core.ejection`` decides when a cluster is ejected and for how
long. Each process judges from its own traffic (Envoy does the same per
worker), so no coordination is needed and nothing is shared.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from georouter.config import Config
from georouter.core import ejection
from georouter.core.ejection import Outlier, Outliers

log = logging.getLogger(__name__)


class PassiveHealth:
    """This process's outlier records; ``config`` is read for the current settings."""

    def __init__(
        self, config: Callable[[], Config], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config
        self._clock = clock
        self._outliers: Outliers = MappingProxyType({})
        # Grows whenever a cluster is ejected, so a cached view knows to rebuild.
        self.version = 0

    @property
    def outliers(self) -> Outliers:
        return self._outliers

    def outlier(self, name: str) -> Outlier:
        return self._outliers.get(name, Outlier())

    def report(self, cluster: str, *, ok: bool, detail: str = "") -> bool:
        """One exchange with ``cluster``: ``ok`` unless it failed or answered 5xx.
        True if it ejected the cluster."""
        config = self._config()
        settings = config.health
        if settings.passive_failures <= 0:
            return False
        if ok and self._outliers.get(cluster, Outlier()).consecutive_failures == 0:
            return False  # the common case: nothing to change
        now = self._clock()
        names = frozenset(c.name for c in config.clusters)
        outliers, ejected = ejection.report(
            ejection.forget(self._outliers, names),
            cluster,
            ok=ok,
            detail=detail,
            now=now,
            clusters=len(names),
            settings=settings,
        )
        self._outliers = outliers
        if ejected:
            self.version += 1
            out = outliers[cluster]
            assert out.ejected_until is not None
            log.warning(
                "cluster %s ejected for %gs after %d consecutive failures on the data path"
                " (the last: %s; ejection %d in a row)",
                cluster,
                out.ejected_until - now,
                out.ejected_after,
                detail,
                out.ejections,
            )
        return ejected

    def ejected(self, now: float) -> Mapping[str, str]:
        """The clusters out at ``now``, each with why."""
        if not self._outliers:
            return MappingProxyType({})
        return ejection.ejected(self._outliers, now)

    def next_change(self, now: float) -> float:
        if not self._outliers:
            return math.inf
        return ejection.next_change(self._outliers, now)
