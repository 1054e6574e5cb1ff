"""Active health checks: one probing task per cluster, feeding the pure state machine.

Every edge probes every cluster itself, so one edge's view never depends on
another's. All probes share one ``httpx.AsyncClient`` owned by the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import httpx

from georouter.config import Cluster, HealthSettings
from georouter.core.health import HealthState, ProbeResult, Status, observe, unroutable

log = logging.getLogger(__name__)


def probe_client() -> httpx.AsyncClient:
    """The one HTTP client a process's probes share (its owner closes it)."""
    return httpx.AsyncClient(headers={"user-agent": "georouter-health/1"})


def probe_url(cluster: Cluster, settings: HealthSettings) -> str:
    return cluster.health_url or cluster.url + settings.path


class HealthMonitor:
    """Holds each cluster's ``HealthState``; ``run()`` keeps it current until cancelled."""

    def __init__(
        self,
        clusters: tuple[Cluster, ...],
        settings: HealthSettings,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] | None = None,
        initial: Mapping[str, HealthState] | None = None,
    ) -> None:
        self.clusters = clusters
        self.settings = settings
        self._client = client
        self._clock = clock
        # Called after every probe result (the prober process publishes the states).
        self._on_change = on_change
        self.states: dict[str, HealthState] = {c.name: HealthState() for c in clusters}
        # A prober that replaces a dead one carries on from the states it published,
        # so rise/fall damping does not start over and readiness is not lost.
        if initial is not None and all(
            initial.get(c.name, HealthState()).status is not Status.UNKNOWN for c in clusters
        ):
            self.states = {c.name: initial[c.name] for c in clusters}
        # Rebuilt on every status change, read on every request.
        self._unroutable: Mapping[str, str] = self._build_unroutable()
        self._first_round_left = {
            name for name, st in self.states.items() if st.status is Status.UNKNOWN
        }
        # Set once every cluster has had its first probe: nothing is routed before.
        self.first_round_done = asyncio.Event()
        if not self._first_round_left:
            self.first_round_done.set()

    @property
    def ready(self) -> bool:
        """Every cluster has had its first probe."""
        return self.first_round_done.is_set()

    def unroutable(self) -> Mapping[str, str]:
        """Clusters that take no traffic now, with why (for the policy)."""
        return self._unroutable

    def _build_unroutable(self) -> Mapping[str, str]:
        return unroutable(self.states)

    async def probe(self, cluster: Cluster) -> ProbeResult:
        url = probe_url(cluster, self.settings)
        try:
            response = await self._client.get(
                url, timeout=self.settings.timeout_s, follow_redirects=False
            )
        except httpx.TimeoutException:
            return ProbeResult(ok=False, detail=f"timeout after {self.settings.timeout_s:g}s")
        except httpx.ConnectError as exc:
            return ProbeResult(ok=False, detail=f"connect error: {exc or type(exc).__name__}")
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            # InvalidURL and IDNA errors (a ValueError) are not HTTPErrors; a URL the
            # client cannot use is a failed probe, never a dead monitor.
            return ProbeResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
        ok = 200 <= response.status_code < 300
        return ProbeResult(ok=ok, detail=f"HTTP {response.status_code}")

    def record(self, cluster: Cluster, result: ProbeResult) -> HealthState:
        before = self.states[cluster.name]
        after = observe(
            before,
            result,
            now=self._clock(),
            rise=self.settings.rise,
            fall=self.settings.fall,
        )
        self.states[cluster.name] = after
        if after.status is not before.status:
            self._unroutable = self._build_unroutable()
            # Losing a cluster is what an operator must see; the rest is news.
            level = logging.WARNING if after.status is Status.DOWN else logging.INFO
            log.log(level, "cluster %s is %s (%s)", cluster.name, after.status.value, result.detail)
        self._first_round_left.discard(cluster.name)
        if not self._first_round_left:
            self.first_round_done.set()
        if self._on_change is not None:
            self._on_change()
        return after

    async def _watch(self, cluster: Cluster) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                result = await self.probe(cluster)
            except Exception as exc:
                log.exception("probing %s failed", cluster.name)
                result = ProbeResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
            self.record(cluster, result)
            await asyncio.sleep(max(0.0, self.settings.interval_s - (loop.time() - started)))

    async def run(self) -> None:
        """Probe every cluster every ``interval_s`` until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for cluster in self.clusters:
                tg.create_task(self._watch(cluster), name=f"health:{cluster.name}")
