"""Reloading ``clusters.toml`` in a running edge: validated beside the old one, swapped whole.

A reload reads the file, validates all of it, compares it with the file the
edge runs (``config.diff``) and either applies it in one synchronous step (the
router's runtime snapshot and the health monitor's clusters together, so no
request sees half of each) or leaves the old one serving and says why. Three
things ask for one: SIGHUP, a change of the file (polled, so a Kubernetes
ConfigMap's symlink swap is seen too), and ``POST /v1/config/reload``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from georouter.config import Config, ConfigChange, compare, load_version
from georouter.errors import ConfigError
from georouter.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The file an edge was started from, as it read it."""

    path: Path
    version: str
    # What the file says; the running config may differ where the edge filled in
    # a default of its own (the embedded Redis's URL).
    as_loaded: Config
    # The file's identity and size when it was read (taken before reading, so a
    # change during the read is seen as a change).
    stamp: tuple[int, int, int, int] | None = None


@dataclass(slots=True)
class ReloadRequests:
    """Set by whatever asks for a reload (a signal handler); the app's reloader waits on it."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    def ask(self) -> None:
        self.event.set()


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str  # "ok", "unchanged", "invalid", "refused"
    version: str
    change: ConfigChange | None = None
    problems: tuple[str, ...] = ()
    dry_run: bool = False

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"result": self.result, "version": self.version}
        if self.dry_run:
            body["dry_run"] = True
        if self.change is not None:
            body["change"] = self.change.as_json()
        if self.problems:
            body["problems"] = list(self.problems)
        return body


def file_stamp(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()  # follows symlinks: a ConfigMap swaps a link to a new inode
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class Reloader:
    """Reloads one edge's configuration; ``apply`` installs a new running config."""

    def __init__(
        self,
        source: ConfigFile,
        running: Config,
        apply: Callable[[Config], None],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        propagate: Callable[[], None] | None = None,
        quiet: bool = False,
    ) -> None:
        self.source = source
        self.running = running
        self._apply = apply
        self._clock = clock
        # A worker's way to have every process of its edge reload (SIGHUP to the
        # supervisor), when a reload is asked of it alone (the admin API).
        self.propagate = propagate
        # The supervisor keeps track without logging what every child logs.
        self._quiet = quiet
        # The file's identity when last read: what the watch compares against.
        self.seen = source.stamp
        self.loaded_at = clock()
        self.last: Outcome | None = None
        self._results = metrics.family(
            "georouter_config_reloads_total",
            "Configuration reloads by result (ok, unchanged, invalid, refused).",
            ("result",),
        ).values
        for result in ("ok", "unchanged", "invalid", "refused"):
            self._results[(result,)] += 0

    def reload(self, *, dry_run: bool = False) -> Outcome:
        """Read the file again and apply it if it is valid and reloadable."""
        path = self.source.path
        stamp = file_stamp(path)
        if not dry_run:
            self.seen = stamp
        try:
            new, version = load_version(path)
        except ConfigError as exc:
            outcome = Outcome("invalid", self.source.version, problems=_lines(exc))
            return self._record(outcome, dry_run)
        change = compare(self.source.as_loaded, new)
        if change.needs_restart:
            problems = tuple(
                f"{key}: changed, but only a restart applies it (the rest of the file is"
                " not applied either)"
                for key in change.needs_restart
            )
            return self._record(Outcome("refused", self.source.version, change, problems), dry_run)
        if change.empty:
            if not dry_run:
                # Same meaning (comments, order of keys): the version is the file's.
                self.source = ConfigFile(path, version, new, stamp)
            return self._record(Outcome("unchanged", version, change), dry_run)
        if dry_run:
            return self._record(Outcome("ok", version, change, dry_run=True), dry_run)
        # The file left [sessions] redis_url alone (needs_restart is empty), so the
        # Redis the edge runs with, embedded or not, stays.
        running = dataclasses.replace(
            new, sessions=dataclasses.replace(new.sessions, redis=self.running.sessions.redis)
        )
        self._apply(running)
        self.source = ConfigFile(path, version, new, stamp)
        self.running = running
        self.loaded_at = self._clock()
        return self._record(Outcome("ok", version, change), dry_run)

    def _record(self, outcome: Outcome, dry_run: bool) -> Outcome:
        outcome = dataclasses.replace(outcome, dry_run=dry_run)
        if dry_run:
            return outcome
        self.last = outcome
        self._results[(outcome.result,)] += 1
        if self._quiet:
            return outcome
        if outcome.result == "ok":
            assert outcome.change is not None
            log.info(
                "configuration %s loaded from %s: %s",
                outcome.version,
                self.source.path,
                _summary(outcome.change),
            )
        elif outcome.result in ("invalid", "refused"):
            log.warning(
                "configuration in %s not loaded (%s); still serving %s:\n  %s",
                self.source.path,
                outcome.result,
                self.source.version,
                "\n  ".join(outcome.problems),
            )
        return outcome

    def status(self, *, problems: bool = True) -> dict[str, object]:
        """The running file; ``problems=False`` leaves out what a failed reload said,
        which may quote the file's values (for answers that need no token)."""
        last = None if self.last is None else self.last.as_json()
        if last is not None and not problems:
            last.pop("problems", None)
        return {
            "path": str(self.source.path),
            "version": self.source.version,
            "loaded_at": self.loaded_at,
            "last_reload": last,
        }

    async def follow(self, requests: ReloadRequests | None) -> None:
        """Reload when asked (``requests``) or when the file changes (looked at every
        ``[router] watch_config_s``; 0: never). Runs until cancelled."""
        path = self.source.path
        if file_stamp(path) != self.seen:
            # Started from a file that has changed since it was read (a worker that
            # replaces one that died): catch up at once.
            self.reload()
        while True:
            watch_s = self.running.router.watch_config_s
            if requests is None and not watch_s:
                return
            asked = False
            if requests is not None:
                try:
                    await asyncio.wait_for(requests.event.wait(), watch_s or None)
                    asked = True
                    requests.event.clear()
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(watch_s)
            if asked or (watch_s and file_stamp(path) != self.seen):
                # On the loop, in one step: the file is small (load bounds it) and
                # apply() touches loop-owned state (the monitor's tasks).
                self.reload()


def _lines(exc: ConfigError) -> tuple[str, ...]:
    return tuple(str(p) for p in exc.problems)


def _summary(change: ConfigChange) -> str:
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("added", change.added),
            ("removed", change.removed),
            ("moved", change.moved),
            ("re-addressed", change.readdressed),
        )
        if names
    ]
    if change.changed:
        parts.append("changed " + ", ".join(change.changed))
    return "; ".join(parts) or "no change"
