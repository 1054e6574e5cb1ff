"""A running edge follows its GeoIP file: a new file at the path is validated and swapped in.

Every ``[geoip] watch_s`` the watcher compares the file at the configured
path with the one it opened (device, inode, mtime, size): a database renamed
into place, a symlink pointed elsewhere, or a file rewritten there is new. The
new file is opened and verified beside the old one, off the event loop, and
swapped in as one value (``GeoDatabase.switch``); a file that fails is logged
once and the old database keeps answering. ``keep_fresh`` (``refresh``) and
``georouter geodata update`` install by rename, which is what this watches for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from georouter.config import GeoipSettings
from georouter.errors import GeoDatabaseError
from georouter.geoip.database import FileStamp, GeoDatabase, OpenDatabase, file_stamp
from georouter.geoip.verify import verify_database

log = logging.getLogger(__name__)

# How often a watcher that is turned off (watch_s = 0) looks whether a reload
# turned it on.
_IDLE_S = 30.0
_NOTHING: Final = object()


class DatabaseWatcher:
    """Keeps ``db`` on the newest valid file at its path."""

    def __init__(
        self,
        db: GeoDatabase,
        settings: Callable[[], GeoipSettings],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self._settings = settings
        self._clock = clock
        # The file last refused, so a broken file is reported once, not at every look.
        self._refused: FileStamp | object | None = _NOTHING
        # Replaced databases, closed at the next look.
        self._retired: list[OpenDatabase] = []
        self.switches = 0

    def _open(self, stamp: FileStamp) -> OpenDatabase | None:
        """The verified file with ``stamp``; None if it was replaced meanwhile."""
        verify_database(self.db.path)
        new = self.db.open_file(now=self._clock())
        if file_stamp(self.db.path) != stamp:
            # Replaced again while being read: what was verified may not be what
            # was opened. The next look takes the newer file.
            new.close()
            return None
        return new

    async def look(self) -> bool:
        """Switch to the file at the path if it is new and valid; whether it switched."""
        # Lookups run on the event loop without awaiting, so none spans a switch: a
        # replaced reader is idle by the next look, and closing it then is safe.
        self._close_retired()
        stamp = file_stamp(self.db.path)
        if stamp in (self.db.stamp, self._refused):
            return False
        if stamp is None:
            self._refused = None
            log.warning(
                "GeoIP database %s is gone; still serving the one opened before", self.db.path
            )
            return False
        try:
            new = await asyncio.to_thread(self._open, stamp)
        except GeoDatabaseError as exc:
            self._refused = stamp
            log.warning(
                "GeoIP database %s not switched to: %s; still serving %s built %s",
                self.db.path,
                exc,
                self.db.info.database_type,
                time.strftime("%Y-%m-%d", time.gmtime(self.db.info.build_epoch)),
            )
            return False
        if new is None:
            return False
        self._retired.append(self.db.switch(new))
        self._refused = _NOTHING
        self.switches += 1
        log.info(
            "GeoIP database %s switched to %s built %s",
            self.db.path,
            new.info.database_type,
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(new.info.build_epoch)),
        )
        return True

    def _close_retired(self) -> None:
        while self._retired:
            self._retired.pop().close()

    async def run(self) -> None:
        """Look every ``watch_s`` until cancelled."""
        try:
            while True:
                watch_s = self._settings().watch_s
                await asyncio.sleep(watch_s or _IDLE_S)
                if watch_s:
                    await self.look()
        finally:
            self._close_retired()
