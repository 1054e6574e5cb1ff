"""Active health checks against real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from georouter.config import Cluster, HealthSettings
from georouter.core.health import Status
from georouter.demo.standin import StandIn
from georouter.probes.active import HealthMonitor
from tests.harness import until

pytestmark = pytest.mark.anyio

FAST = HealthSettings(path="/healthz", interval_s=0.05, timeout_s=0.5, rise=2, fall=3)


def clusters_for(standins: dict[str, StandIn]) -> tuple[Cluster, ...]:
    return tuple(Cluster(name, s.url, 0.0, 0.0) for name, s in standins.items())


async def test_first_round_decides_the_initial_state(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    standins = make_standins("alive", "sick", "dead")
    standins["sick"].health_status = 503
    standins["dead"].stop()
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(clusters_for(standins), FAST, client)
        task = asyncio.create_task(monitor.run())
        try:
            await asyncio.wait_for(monitor.first_round_done.wait(), timeout=5)
            assert monitor.states["alive"].status is Status.UP
            assert monitor.states["sick"].status is Status.DOWN
            assert monitor.states["sick"].last_detail == "HTTP 503"
            assert monitor.states["dead"].status is Status.DOWN
            assert monitor.states["dead"].last_detail.startswith("connect error")
            assert dict(monitor.unroutable()) == {"sick": "down", "dead": "down"}
        finally:
            task.cancel()


async def test_cluster_goes_down_after_fall_failures_and_up_after_rise_successes(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    standins = make_standins("c1")
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(clusters_for(standins), FAST, client)
        task = asyncio.create_task(monitor.run())
        try:
            await asyncio.wait_for(monitor.first_round_done.wait(), timeout=5)
            assert monitor.states["c1"].status is Status.UP

            standins["c1"].stop()
            await until(
                lambda: monitor.states["c1"].status is Status.DOWN, timeout_s=10, what="c1 down"
            )
            down = monitor.states["c1"]
            assert down.consecutive_failed == FAST.fall  # not one probe earlier

            standins["c1"].start()  # same port
            await until(
                lambda: monitor.states["c1"].status is Status.UP, timeout_s=10, what="c1 up"
            )
            assert monitor.states["c1"].consecutive_ok == FAST.rise
        finally:
            task.cancel()


async def test_a_hung_health_endpoint_counts_as_a_failure_after_the_timeout(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    standins = make_standins("slow")
    standins["slow"].health_gate.clear()
    settings = HealthSettings(path="/healthz", interval_s=0.05, timeout_s=0.2, rise=1, fall=1)
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(clusters_for(standins), settings, client)
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await monitor.probe(monitor.clusters[0])
        elapsed = loop.time() - started
    standins["slow"].health_gate.set()
    assert not result.ok
    assert result.detail == "timeout after 0.2s"
    # The promised bound, with a generous margin for a loaded machine.
    assert elapsed < 0.2 + 2.0


async def test_health_url_overrides_url_plus_path(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    standins = make_standins("main", "probe-target")
    standins["main"].health_status = 500
    cluster = Cluster(
        "main", standins["main"].url, 0.0, 0.0, health_url=standins["probe-target"].url + "/healthz"
    )
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor((cluster,), FAST, client)
        result = await monitor.probe(cluster)
    assert result.ok
    assert standins["probe-target"].requests == 1
    assert standins["main"].requests == 0


async def test_a_replacement_monitor_carries_on_from_the_published_states(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    from georouter.core.health import HealthState

    standins = make_standins("c1", "c2")
    published = {
        "c1": HealthState(status=Status.DOWN, consecutive_ok=1, consecutive_failed=0, probes=9),
        "c2": HealthState(status=Status.UP, probes=9),
    }
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(clusters_for(standins), FAST, client, initial=published)
        # Ready at once, with the down cluster still down: damping does not start over.
        assert monitor.ready
        assert dict(monitor.unroutable()) == {"c1": "down"}
        monitor.record(monitor.clusters[0], await monitor.probe(monitor.clusters[0]))
        assert monitor.states["c1"].status is Status.UP  # rise = 2: its 2nd success in a row


async def test_partial_published_states_are_not_trusted(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    from georouter.core.health import HealthState

    standins = make_standins("c1", "c2")
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(
            clusters_for(standins), FAST, client, initial={"c1": HealthState(status=Status.UP)}
        )
        assert not monitor.ready
        assert monitor.states["c1"].status is Status.UNKNOWN


async def test_a_url_the_client_cannot_use_is_a_failed_probe_not_a_dead_monitor(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    standins = make_standins("good")
    clusters = (
        Cluster("good", standins["good"].url, 0.0, 0.0),
        # Valid to the config's URL check, refused by the HTTP client (bad IDNA label).
        Cluster("odd", "http://xn--a", 0.0, 0.0),
    )
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(clusters, FAST, client)
        task = asyncio.create_task(monitor.run())
        try:
            await asyncio.wait_for(monitor.first_round_done.wait(), timeout=5)
            assert monitor.states["odd"].status is Status.DOWN
            assert monitor.states["good"].status is Status.UP
            probes = monitor.states["good"].probes
            await until(
                lambda: monitor.states["good"].probes > probes + 2,
                timeout_s=5,
                what="probing to go on",
            )
            assert not task.done()
        finally:
            task.cancel()


async def test_a_replacement_monitor_carries_on_from_the_published_window(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    from georouter.core.health import HealthState

    standins = make_standins("c1")
    standins["c1"].health_status = 503
    # Four failures, none two in a row, among its last nine probes (newest in bit 0).
    published = {
        "c1": HealthState(status=Status.UP, consecutive_ok=1, recent=0b1010_1010, recent_len=9)
    }
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(clusters_for(standins), FAST, client, initial=published)
        monitor.record(monitor.clusters[0], await monitor.probe(monitor.clusters[0]))
    # Its fifth among ten: down at once, though fall = 3 is far off.
    state = monitor.states["c1"]
    assert (state.status, state.consecutive_failed) == (Status.DOWN, 1)


@pytest.mark.parametrize(
    ("window", "window_fall"),
    [pytest.param(65, 5, id="longer-than-the-board-carries"), pytest.param(10, 0, id="no-fall")],
)
async def test_a_monitor_refuses_a_window_it_cannot_keep(window: int, window_fall: int) -> None:
    from dataclasses import replace

    settings = replace(FAST, window=window, window_fall=window_fall)
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="window"):
            HealthMonitor((Cluster("c1", "http://127.0.0.1:9", 0.0, 0.0),), settings, client)


async def test_a_reconfigured_monitor_keeps_what_stays_probes_what_comes_and_drops_what_goes(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    standins = make_standins("stays", "goes", "comes")
    first = tuple(c for c in clusters_for(standins) if c.name != "comes")
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(first, FAST, client)
        task = asyncio.create_task(monitor.run())
        try:
            await asyncio.wait_for(monitor.first_round_done.wait(), timeout=5)
            await until(lambda: monitor.states["stays"].probes >= 5, timeout_s=10, what="probes")
            kept = monitor.states["stays"]
            standins["goes"].health_status = 503  # a removed cluster's probes must stop

            monitor.reconfigure(tuple(c for c in clusters_for(standins) if c.name != "goes"), FAST)
            # At once, before any probe: the new one is not routable until probed.
            assert set(monitor.states) == {"stays", "comes"}
            assert dict(monitor.unroutable()) == {"comes": "not probed yet"}
            assert monitor.states["stays"].probes >= kept.probes
            assert monitor.ready
            await until(
                lambda: monitor.states["comes"].status is Status.UP, timeout_s=5, what="comes up"
            )
            assert dict(monitor.unroutable()) == {}
            assert "goes" not in monitor.states
            # A snapshot from before the reload (a batch mid-way) must not pick it.
            assert "goes" in monitor.unroutable()
            assert sorted(
                t.get_name() for t in asyncio.all_tasks() if "health:" in t.get_name()
            ) == [
                "health:comes",
                "health:stays",
            ]
        finally:
            task.cancel()


async def test_removing_a_cluster_before_its_first_probe_does_not_hold_readiness_back(
    make_standins: Callable[..., dict[str, StandIn]],
) -> None:
    standins = make_standins("fine", "hung")
    standins["hung"].health_gate.clear()
    settings = HealthSettings(path="/healthz", interval_s=5, timeout_s=5, rise=1, fall=1)
    async with httpx.AsyncClient() as client:
        monitor = HealthMonitor(clusters_for(standins), settings, client)
        task = asyncio.create_task(monitor.run())
        try:
            await until(lambda: monitor.states["fine"].probes == 1, timeout_s=5, what="fine")
            assert not monitor.ready
            monitor.reconfigure(
                tuple(c for c in clusters_for(standins) if c.name == "fine"), settings
            )
            assert monitor.ready
        finally:
            standins["hung"].health_gate.set()
            task.cancel()
