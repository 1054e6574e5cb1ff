"""Active health checks: one probing task per cluster, feeding the pure state machine.

Every edge probes every cluster itself, so one edge's view never depends on
another's. All probes share one ``httpx.AsyncClient`` owned by the caller.

A health endpoint is the cluster's to answer, and a broken or hostile one must
not cost the edge more than one probe's worth: each probe has one deadline for
the whole exchange and reads a bounded body, so no answer can hold the edge's
readiness back or fill its memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import httpx

from georouter.config import Cluster, HealthSettings
from georouter.core.admission import LOAD_HEADER, load_of
from georouter.core.health import (
    HealthState,
    ProbeResult,
    Status,
    check_window,
    observe,
    unroutable,
)
from georouter.metrics import Family, Histogram, Metrics

log = logging.getLogger(__name__)


# The body's size is checked as it arrives off the wire: a compressed body would
# be inflated a whole network read at a time, before any check could stop it.
_PROBE_HEADERS = {"accept-encoding": "identity"}


def probe_client() -> httpx.AsyncClient:
    """The one HTTP client a process's probes share (its owner closes it)."""
    return httpx.AsyncClient(headers={"user-agent": "georouter-health/1"})


def probe_url(cluster: Cluster, settings: HealthSettings) -> str:
    return cluster.health_url or cluster.url + settings.path


def probe_metrics(metrics: Metrics) -> tuple[Family, Histogram]:
    """The probes' counter and latency histogram on ``metrics`` (created on first use)."""
    return (
        metrics.family(
            "georouter_probes_total",
            "Active health probes by cluster and result (ok, failed).",
            ("cluster", "result"),
        ),
        metrics.histogram(
            "georouter_probe_duration_seconds",
            "Time an active health probe took, to its answer or its timeout.",
            ("cluster",),
        ),
    )


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
        metrics: Metrics | None = None,
    ) -> None:
        # Here, not at the first probe: a window the board cannot carry must stop
        # the edge at start-up, not kill its monitor later.
        check_window(settings.window, settings.window_fall)
        self.clusters = clusters
        self.settings = settings
        # The probing tasks, by cluster, once run() has started them.
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._client = client
        self._clock = clock
        # Called after every probe result (the prober process publishes the states).
        self._on_change = on_change
        # Where each probe is counted and timed (None: nowhere).
        self._probes = None if metrics is None else probe_metrics(metrics)
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
        started = time.perf_counter()
        result = await self._probe(cluster)
        if self._probes is not None:
            counted, timed = self._probes
            counted.values[(cluster.name, "ok" if result.ok else "failed")] += 1
            timed.observe(time.perf_counter() - started, (cluster.name,))
        return result

    async def _probe(self, cluster: Cluster) -> ProbeResult:
        url = probe_url(cluster, self.settings)
        timeout_s = self.settings.timeout_s
        try:
            # httpx's own timeout applies to each read, so an endpoint that sends a
            # byte now and then would never trip it: this deadline covers connecting,
            # the headers and the body together.
            async with asyncio.timeout(timeout_s):
                return await self._exchange(url)
        except (TimeoutError, httpx.TimeoutException):
            return ProbeResult(ok=False, detail=f"timeout after {timeout_s:g}s")
        except httpx.ConnectError as exc:
            return ProbeResult(ok=False, detail=f"connect error: {exc or type(exc).__name__}")
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, ValueError) as exc:
            # InvalidURL and IDNA errors (a ValueError) are not HTTPErrors; a URL the
            # client cannot use is a failed probe, never a dead monitor.
            return ProbeResult(ok=False, detail=f"{type(exc).__name__}: {exc}")

    async def _exchange(self, url: str) -> ProbeResult:
        s = self.settings
        async with self._client.stream(
            "GET", url, headers=_PROBE_HEADERS, timeout=s.timeout_s, follow_redirects=False
        ) as response:
            # Leaving this block before the body's end closes the connection rather
            # than reading the rest to reuse it: a failed probe costs no more bytes.
            status = response.status_code
            seen = f"HTTP {status}"
            if s.expect_status and status not in s.expect_status:
                wanted = " or ".join(str(code) for code in s.expect_status)
                return ProbeResult(ok=False, detail=f"{seen}, expected {wanted}")
            if not s.expect_status and not 200 <= status < 300:
                return ProbeResult(ok=False, detail=seen)
            over = ProbeResult(ok=False, detail=f"{seen}, body over {s.max_body_bytes} bytes")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > s.max_body_bytes:
                return over
            body = bytearray()
            # Raw: the bytes as sent, so the cap bounds both memory and what is read.
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > s.max_body_bytes:
                    return over
            if s.expect_body:
                encoding = response.headers.get("content-encoding", "identity").lower()
                if encoding != "identity":
                    return ProbeResult(ok=False, detail=f"{seen}, body is {encoding}-encoded")
                if s.expect_body not in body.decode("utf-8", "replace"):
                    return ProbeResult(ok=False, detail=f"{seen}, body lacks {s.expect_body!r}")
            load = load_of(response.headers.get(LOAD_HEADER), bytes(body))
            return ProbeResult(ok=True, detail=seen, load=load)

    def record(self, cluster: Cluster, result: ProbeResult) -> HealthState:
        before = self.states[cluster.name]
        after = observe(
            before,
            result,
            now=self._clock(),
            rise=self.settings.rise,
            fall=self.settings.fall,
            window=self.settings.window,
            window_fall=self.settings.window_fall,
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
            self._group = tg
            for cluster in self.clusters:
                self._start(cluster)
            # The group lives as long as the monitor, whichever clusters come and go.
            await asyncio.Event().wait()

    def _start(self, cluster: Cluster) -> None:
        if self._group is not None:
            self._tasks[cluster.name] = self._group.create_task(
                self._watch(cluster), name=f"health:{cluster.name}"
            )

    def reconfigure(self, clusters: tuple[Cluster, ...], settings: HealthSettings) -> None:
        """Probe ``clusters`` with ``settings`` from now on (a reload).

        A cluster that stays keeps its state and counters, whatever else changed
        about it: its sessions must not fail over because a file was saved. A new
        one is "not probed yet", so unroutable, until its first probe, which
        starts at once. A removed one is forgotten. Synchronous, so the caller
        can swap the routing snapshot in the same step.
        """
        check_window(settings.window, settings.window_fall)
        old = {c.name: c for c in self.clusters}
        restart_all = settings != self.settings
        self.clusters, self.settings = clusters, settings
        new = {c.name: c for c in clusters}
        for name in old.keys() - new.keys():
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
            del self.states[name]
        for cluster in clusters:
            if cluster.name not in old:
                self.states[cluster.name] = HealthState()
            elif not restart_all and old[cluster.name] == cluster:
                continue
            task = self._tasks.pop(cluster.name, None)
            if task is not None:
                task.cancel()
            self._start(cluster)
        self._unroutable = self._build_unroutable()
        # Readiness waits only on clusters that are still configured (one removed
        # before its first probe would otherwise hold it back forever); before the
        # first round is done, a cluster added meanwhile joins it.
        self._first_round_left &= new.keys()
        if not self.first_round_done.is_set():
            self._first_round_left |= new.keys() - old.keys()
        if not self._first_round_left:
            self.first_round_done.set()
        if self._on_change is not None:
            self._on_change()
