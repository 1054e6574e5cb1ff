"""``/metrics``: the edge's counts as Prometheus families, rendered by ``prometheus_client``.

The hot path counts into plain values (``georouter.metrics``). Only a scrape
builds Prometheus objects: ``EdgeCollector`` merges this worker's counts with
those of every other process of the edge (the other workers and the prober,
through the metrics board), starts every labelled series it can name (each
cluster, each reason) at zero so a ``rate()`` has a first point, adds the
gauges read from the live services, and hands the families to
``prometheus_client`` to render as Prometheus text or, when the scraper asks
for it, OpenMetrics. Each app has a registry of its own; nothing is global.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import HTTPConnection

from georouter import __version__
from georouter.core.breaker import BreakerState
from georouter.core.policy import Reason
from georouter.http.common import Services
from georouter.http.dataplane import upstream_failures
from georouter.http.routing import client_disconnects, decision_latency
from georouter.metrics import Histogram, Metrics
from georouter.probes.active import probe_metrics
from georouter.proxy.forward import Failure

# Where the lifespan keeps the app's registry, beside its services.
STATE_KEY = "metrics_registry"


class EdgeCollector(Collector):
    """Every family an edge's ``/metrics`` shows, collected afresh at each scrape."""

    def __init__(self, svc: Services, *, clock: Callable[[], float] = time.time) -> None:
        self._svc = svc
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        merged = self._merged()
        self._start_at_zero(merged)
        for family in sorted(merged.counters, key=lambda f: f.name):
            counter = CounterMetricFamily(family.name, family.help, labels=family.labels)
            if not family.values and not family.labels:
                counter.add_metric([], 0.0)
            for label_values, value in sorted(family.values.items()):
                counter.add_metric(label_values, value)
            yield counter
        for histogram in sorted(merged.histograms, key=lambda h: h.name):
            yield _histogram_family(histogram)
        yield from self._gauges()

    def _merged(self) -> Metrics:
        svc = self._svc
        if svc.shared_metrics is None:
            return svc.metrics.merged()
        # The edge's counts, whichever worker answers: this one's (published now, so
        # the next scrape, answered by another, sees at least as much) and the rest.
        svc.shared_metrics.publish(svc.metrics)
        return svc.metrics.merged(svc.shared_metrics.others())

    def _start_at_zero(self, merged: Metrics) -> None:
        """Every series the edge can name, at zero until it is counted (on the merged
        copy: the hot path's counters hold only what happened)."""
        config = self._svc.runtime.config
        clusters = [c.name for c in config.clusters]
        # The router names this family when it is built, so every app has it.
        decisions = merged.family("georouter_decisions_total", "", ("reason", "cluster")).values
        for reason in Reason:
            for name in clusters if reason is not Reason.NONE else ("",):
                decisions[(reason.value, name)] += 0
        decision_latency(merged).row()
        client_disconnects(merged)
        probes, probe_seconds = probe_metrics(merged)
        for name in clusters:
            probes.values[(name, "ok")] += 0
            probes.values[(name, "failed")] += 0
            probe_seconds.row((name,))
        if self._svc.upstream is not None:
            failures = upstream_failures(merged).values
            for name in clusters:
                for failure in Failure:
                    failures[(name, failure.value)] += 0

    def _gauges(self) -> Iterator[Metric]:
        svc = self._svc
        config = svc.runtime.config
        states = svc.health.states
        up = GaugeMetricFamily(
            "georouter_cluster_up",
            "Whether a configured cluster takes traffic (1: healthy, 0: down or not probed yet).",
            labels=("cluster",),
        )
        for cluster in config.clusters:
            state = states.get(cluster.name)
            up.add_metric((cluster.name,), float(state is not None and state.routable))
        yield up
        yield _gauge(
            "georouter_clusters_up",
            "Configured clusters that take traffic.",
            sum(st.routable for st in states.values()),
        )
        yield _gauge("georouter_clusters", "Configured clusters.", len(config.clusters))
        yield _gauge(
            "georouter_panic",
            "Whether health is ignored because fewer than router.panic_below of the"
            " clusters are routable (1: panic).",
            svc.runtime.panicking(svc.router.unroutable()),
        )
        held, _ = svc.router.admissions()
        share = GaugeMetricFamily(
            "georouter_cluster_new_session_share",
            "The share of its new sessions a routable cluster takes now (below 1: held"
            " back by its load or by failback's stabilize and ramp).",
            labels=("cluster",),
        )
        for cluster in config.clusters:
            admission = held.get(cluster.name)
            share.add_metric((cluster.name,), 1.0 if admission is None else admission.share)
        yield share
        info = GaugeMetricFamily(
            "georouter_build_info",
            "The georouter version this edge runs (always 1).",
            labels=("version",),
        )
        info.add_metric((__version__,), 1.0)
        yield info
        yield _gauge(
            "georouter_geoip_cached_networks",
            "GeoIP networks in this worker's lookup cache.",
            svc.geo.cached_networks,
        )
        # Whole seconds since the database was built: its build time has no finer grain.
        age_s = max(0, int(self._clock()) - svc.geo.info.build_epoch)
        yield _gauge(
            "georouter_geoip_database_age_seconds",
            "Seconds since the GeoIP database in use was built.",
            age_s,
        )
        found = None if svc.shared_health is None else svc.shared_health.agreement()
        if found is not None:
            yield _gauge(
                "georouter_health_edges_reporting",
                "Edges whose health reports count here, this one included ([health] shared).",
                found.edges,
            )
        if svc.sessions is not None:
            status = svc.sessions.status()
            yield _gauge(
                "georouter_redis_breaker_open",
                "Whether this worker has stopped asking Redis (1: the breaker is open).",
                status.breaker is BreakerState.OPEN,
            )
            yield _gauge(
                "georouter_session_local_pins",
                "Pins this worker remembers for when Redis is unreachable.",
                status.remembered_pins,
            )
            yield _gauge(
                "georouter_session_pending_write_back",
                "Pins made without Redis, waiting to be written back to it.",
                status.pending_write_back,
            )


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=float(value))


def _histogram_family(histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(histogram.name, histogram.help, labels=histogram.labels)
    # As prometheus_client writes them (``0.005``, ``1.0``): the bounds are small.
    bounds = [*(repr(float(b)) for b in histogram.buckets), "+Inf"]
    if not histogram.values and not histogram.labels:
        histogram.row()
    for label_values, row in sorted(histogram.values.items()):
        cumulative: list[tuple[str, float]] = []
        seen = 0.0
        for bound, count in zip(bounds, row[:-1], strict=True):
            seen += count
            cumulative.append((bound, seen))
        family.add_metric(label_values, cumulative, row[-1])
    return family


def registry_for(svc: Services) -> CollectorRegistry:
    """The app's own registry, holding its one collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgeCollector(svc))
    return registry


def render(conn: HTTPConnection) -> tuple[bytes, str]:
    """The scrape's body and content type: OpenMetrics if its Accept asks for it."""
    registry: CollectorRegistry = conn.scope["state"][STATE_KEY]
    encoder, content_type = choose_encoder(conn.headers.get("accept", ""))
    return encoder(registry), content_type
