"""An edge keeps its GeoIP file fresh: ``[geoip] update_url`` every ``update_interval_h``.

The download is ``georouter geodata update``'s own code (``update``), so it
installs only a verified database, by rename; the watcher of every process of
the edge then switches to it. One process per edge downloads: a single-process
edge itself, or the prober of an edge with workers (``start``), so N workers
never fetch N copies. The first attempt is due ``update_interval_h`` after
the installed file's mtime (when it was installed), so a restart does not
download again early; a failed attempt is retried within the hour, and the
installed file stays meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from georouter.config import GeoipSettings
from georouter.errors import GeoUpdateError
from georouter.geoip.database import GeoDatabase
from georouter.geoip.download import Credentials, shown
from georouter.geoip.update import UpdateRequest, UpdateResult, update_database
from georouter.geoip.watch import DatabaseWatcher

log = logging.getLogger(__name__)

RETRY_S = 3600.0
# The longest single wait, so a reload's new interval or URL is taken soon.
_LOOK_S = 60.0


class Refresher:
    """Downloads ``[geoip] update_url`` into ``dest`` whenever it is due."""

    def __init__(
        self,
        dest: Path,
        settings: Callable[[], GeoipSettings],
        *,
        env: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dest = dest
        self._settings = settings
        self._env = env
        self._clock = clock
        self.last_attempt: float | None = None
        self.failed = False

    def due_at(self, settings: GeoipSettings) -> float:
        interval_s = settings.update_interval_h * 3600
        if self.last_attempt is not None:
            return self.last_attempt + (min(interval_s, RETRY_S) if self.failed else interval_s)
        try:
            return self.dest.stat().st_mtime + interval_s
        except OSError:
            return 0.0  # nothing installed yet: now

    async def attempt(self, settings: GeoipSettings) -> UpdateResult | None:
        """One update from ``settings.update_url``; None (logged) if it failed."""
        assert settings.update_url is not None
        self.last_attempt = self._clock()
        url = shown(settings.update_url)
        try:
            result = await update_database(
                UpdateRequest(
                    settings.update_url,
                    self.dest,
                    sha256_url=settings.update_sha256_url,
                    credentials=Credentials.from_env(self._env),
                )
            )
        except GeoUpdateError as exc:
            self.failed = True
            log.warning(
                "GeoIP update from %s failed: %s; %s stays, next try in %.0f min",
                url,
                exc,
                self.dest,
                min(settings.update_interval_h * 3600, RETRY_S) / 60,
            )
            return None
        self.failed = False
        db = result.database
        built = time.strftime("%Y-%m-%d", time.gmtime(db.build_epoch))
        if result.installed:
            log.info(
                "GeoIP update: %s built %s installed at %s", db.database_type, built, self.dest
            )
        else:
            log.info("GeoIP update: %s still serves %s built %s", url, db.database_type, built)
        return result

    async def run(self) -> None:
        """Update whenever due, until cancelled."""
        while True:
            settings = self._settings()
            if settings.update_url is None:
                await asyncio.sleep(_LOOK_S)
                continue
            wait_s = self.due_at(settings) - self._clock()
            if wait_s > 0:
                await asyncio.sleep(min(wait_s, _LOOK_S))
                continue
            await self.attempt(settings)


def start(
    tg: asyncio.TaskGroup,
    settings: Callable[[], GeoipSettings],
    *,
    geo: GeoDatabase | None,
    download: bool,
) -> list[asyncio.Task[None]]:
    """The GeoIP work of one process: follow the file ``geo`` was opened from, and,
    if ``download`` (one process per edge), keep that file fresh."""
    path = settings().database
    if path is None:
        return []  # the bundled snapshot: nothing to follow or to replace
    tasks = []
    if geo is not None:
        tasks.append(tg.create_task(DatabaseWatcher(geo, settings).run(), name="geoip-watch"))
    if download:
        tasks.append(tg.create_task(Refresher(path, settings).run(), name="geoip-update"))
    return tasks
