"""Several worker processes on one socket, and one prober for all of them.

``georouter serve --workers N`` forks, from a process that runs no event loop
and no thread: one prober, which owns the health monitor and publishes to the
shared ``HealthBoard``, and N workers, which serve the API on the listening
socket they inherit and read health from the board. Each cluster is probed
once per edge, however many workers there are. The supervisor forwards
SIGTERM/SIGINT to its children, waits for them, and replaces a child that
dies unexpectedly; every child dies with the supervisor (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from georouter.config import Config
from georouter.geoip import refresh as geoip_refresh
from georouter.http.accesslog import AccessLogFormat
from georouter.http.app import create_app
from georouter.http.common import Drain
from georouter.http.reload import ConfigFile, Reloader, ReloadRequests, file_stamp
from georouter.metrics import Metrics
from georouter.metricsboard import MetricsBoard, SharedMetrics, publish_metrics
from georouter.probes.active import HealthMonitor, probe_client
from georouter.probes.board import HealthBoard
from georouter.serve.server import (
    ServerKind,
    event_loop_factory,
    reload_on_hangup,
    serve,
    sibling,
    stop_on_signals,
)
from georouter.sessions.embedded import die_with_parent
from georouter.sessions.ids import CookieSigner

log = logging.getLogger(__name__)

# A child that exits sooner than this after starting counts as a crash at start-up;
# after this many in a row the supervisor gives up instead of looping.
_QUICK_EXIT_S = 2.0
_MAX_QUICK_EXITS = 5
_STOP_GRACE_S = 15.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# Held back around a fork, until the child has its own handlers.
_FORK_BLOCKED = _STOP_SIGNALS | {signal.SIGHUP}


def run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's loop."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())


def _prober(
    config: Config, board: HealthBoard, config_file: ConfigFile | None, shared: SharedMetrics
) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        reloads = ReloadRequests()
        reload_on_hangup(reloads)
        # The probes' counts reach /metrics through the prober's slot on the board.
        metrics = Metrics()
        shared.carry_over(metrics)
        async with probe_client() as http:

            def publish() -> None:
                # Until its first round is done a new prober keeps quiet, so workers
                # keep the view they had (a replacement starts from that view anyway).
                if monitor.ready:
                    board.publish(monitor.states, ready=True)

            monitor = HealthMonitor(
                config.clusters,
                config.health,
                http,
                on_change=publish,
                initial=board.states if board.ready else None,
                metrics=metrics,
            )
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(monitor.run(), name="health-monitor"),
                    tg.create_task(publish_metrics(shared, metrics), name="metrics-publish"),
                ]
                reloader: Reloader | None = None
                if config_file is not None:
                    # The prober follows the file as the workers do; a reload changes
                    # the clusters it probes, and the board it publishes them on.
                    reloader = Reloader(
                        config_file,
                        config,
                        lambda new: monitor.reconfigure(new.clusters, new.health),
                        Metrics(),
                    )
                    tasks.append(tg.create_task(reloader.follow(reloads), name="config-reload"))
                # One download of each GeoIP update for the edge; every worker follows the file.
                tasks += geoip_refresh.start(
                    tg,
                    lambda: (config if reloader is None else reloader.running).geoip,
                    geo=None,
                    download=True,
                )
                await stop.wait()
                for task in tasks:
                    task.cancel()

    run_loop(main)


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    """How every process of an edge serves: the command line and the environment."""

    kind: ServerKind
    admin_token: str | None
    signer: CookieSigner | None
    drain_s: float = 0.0
    access_log: AccessLogFormat = AccessLogFormat.OFF
    # This edge's id in shared health (GEOROUTER_EDGE_ID); None: host name and port.
    edge_id: str | None = None


def serve_edge(
    config: Config,
    sock: socket.socket,
    options: EdgeOptions,
    *,
    config_file: ConfigFile | None,
    board: HealthBoard | None = None,
    on_started: Callable[[], None] | None = None,
    shared_metrics: SharedMetrics | None = None,
    admin_sock: socket.socket | None = None,
) -> None:
    """Serve one edge process until SIGTERM/SIGINT (draining ``options.drain_s`` first);
    SIGHUP reloads ``config_file``. A worker reads health from ``board``; without
    one, the process probes the clusters itself. ``admin_sock``: the router's own
    endpoints listen there, and ``sock`` carries only the application's traffic."""

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        reloads = ReloadRequests()
        reload_on_hangup(reloads)
        drain = Drain()
        app = create_app(
            config,
            admin_token=options.admin_token,
            signer=options.signer,
            health=board,
            drain=drain,
            config_file=config_file,
            reload_requests=reloads,
            # A worker asked to reload (the admin API) has the supervisor tell everyone.
            reload_everywhere=None if board is None else _hangup_parent,
            on_started=on_started,
            shared_metrics=shared_metrics,
            access_log=options.access_log,
            admin_port=None if admin_sock is None else admin_sock.getsockname()[1],
            # Every worker of an edge listens on the same port: one id for the edge.
            edge=options.edge_id or f"{socket.gethostname()}:{sock.getsockname()[1]}",
        )
        await serve(
            app,
            sock,
            stop,
            kind=options.kind,
            limits=config.limits,
            drain=drain,
            drain_s=options.drain_s,
            admin_sock=admin_sock,
        )

    run_loop(main)


def _hangup_parent() -> None:
    os.kill(os.getppid(), signal.SIGHUP)


class Supervisor:
    def __init__(
        self,
        config: Config,
        sock: socket.socket,
        options: EdgeOptions,
        *,
        workers: int,
        config_file: ConfigFile | None = None,
        on_started: Callable[[], None] | None = None,
        admin_sock: socket.socket | None = None,
    ) -> None:
        self.config = config
        self.options = options
        # The supervisor follows the file too (quietly; its children log), so a
        # child started later (a replacement) starts from what the edge serves now.
        self.reloader = (
            None
            if config_file is None
            else Reloader(config_file, config, self._reloaded, Metrics(), quiet=True)
        )
        self._reload_asked = False
        self._next_look = 0.0
        # Said by the first worker to start, once (not by its replacements).
        self._on_started = on_started
        self.workers = workers
        self.board = HealthBoard(config.clusters)
        # A slot per worker, and the last one the prober's.
        self.metrics_board = MetricsBoard(workers + 1)
        # One listening socket per worker: with a single shared socket the first
        # worker to wake accepts most of a burst of keep-alive connections and the
        # others idle; with SO_REUSEPORT sockets the kernel spreads connections
        # evenly. The supervisor keeps them all open, so a replaced worker takes
        # over its socket and connections queued on it meanwhile.
        self.sockets = [sock, *(sibling(sock) for _ in range(workers - 1))]
        self.admin_sockets: list[socket.socket | None] = [admin_sock] * workers
        if admin_sock is not None:
            self.admin_sockets[1:] = [sibling(admin_sock) for _ in range(workers - 1)]
        self.children: dict[int, tuple[str, float]] = {}
        self.stopping = False
        self.failed = False
        self._quick_exits = 0

    def _spawn(self, role: str) -> None:
        parent = os.getpid()
        # Signals wait until the child is recorded (the parent) or has its own
        # handlers (the child): a SIGTERM in between would otherwise be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
        pid = os.fork()
        if pid:
            self.children[pid] = (role, time.monotonic())
            if role == "worker-0":
                self._on_started = None
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_BLOCKED)
            if self.stopping:
                self._stop(signal.SIGTERM, None)
            return
        # The child: never returns into the supervisor's code.
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # Not the supervisor's forwarding handler; the child's loop installs its own.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_BLOCKED)
            die_with_parent()
            if os.getppid() != parent:
                os._exit(1)
            if role == "prober":
                _prober(
                    self.config,
                    self.board,
                    self.config_file,
                    SharedMetrics(self.metrics_board, self.workers),
                )
            else:
                serve_edge(
                    self.config,
                    self.sockets[int(role.removeprefix("worker-"))],
                    self.options,
                    admin_sock=self.admin_sockets[int(role.removeprefix("worker-"))],
                    board=self.board,
                    config_file=self.config_file,
                    on_started=self._on_started if role == "worker-0" else None,
                    shared_metrics=SharedMetrics(
                        self.metrics_board, int(role.removeprefix("worker-"))
                    ),
                )
        except BaseException:
            log.exception("%s failed", role)
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        # Workers first: the prober keeps health current while they drain, and
        # stops once they are gone (run()).
        self._signal(signal.SIGTERM, workers_only=True)

    def _hangup(self, signum: int, frame: object) -> None:
        self._reload_asked = True
        self._signal(signal.SIGHUP)

    def _reloaded(self, config: Config) -> None:
        self.config = config

    @property
    def config_file(self) -> ConfigFile | None:
        return None if self.reloader is None else self.reloader.source

    def _follow_file(self, now: float) -> None:
        reloader = self.reloader
        if reloader is None:
            return
        watch_s = reloader.running.router.watch_config_s
        due = watch_s > 0 and now >= self._next_look
        if due:
            self._next_look = now + watch_s
        if self._reload_asked or (due and file_stamp(reloader.source.path) != reloader.seen):
            self._reload_asked = False
            reloader.reload()

    def _signal(self, signum: int, *, workers_only: bool = False) -> None:
        for pid, (role, _) in list(self.children.items()):
            if workers_only and role == "prober":
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def run(self) -> int:
        """Fork the prober and the workers, and supervise them until told to stop."""
        self._spawn("prober")
        for i in range(self.workers):
            self._spawn(f"worker-{i}")
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hangup)
        log.info("%d workers and a prober started", self.workers)
        stop_deadline: float | None = None
        prober_told = False
        while self.children:
            if not self.stopping:
                self._follow_file(time.monotonic())
            if self.stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + self.options.drain_s + _STOP_GRACE_S
            if (
                self.stopping
                and not prober_told
                and all(role == "prober" for role, _ in self.children.values())
            ):
                self._signal(signal.SIGTERM)
                prober_told = True
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                for pid in self.children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            for pid in list(self.children):
                self._reap(pid)
            if self._quick_exits >= _MAX_QUICK_EXITS and not self.failed:
                log.error("children keep failing at start-up; stopping")
                self.failed = True
                self._stop(signal.SIGTERM, None)
            time.sleep(0.1)
        return 1 if self.failed else 0

    def _reap(self, pid: int) -> None:
        # waitpid on our own children only: os.wait() would also reap the
        # embedded redis-server, which its Popen object must collect.
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if not done:
            return
        role, started = self.children.pop(pid)
        if self.stopping:
            return
        code = os.waitstatus_to_exitcode(status)
        log.warning("%s (pid %d) exited with %d; starting another", role, pid, code)
        self._quick_exits = (
            self._quick_exits + 1 if time.monotonic() - started < _QUICK_EXIT_S else 0
        )
        self._spawn(role)
