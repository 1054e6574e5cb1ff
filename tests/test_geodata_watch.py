"""A running edge follows its GeoIP file: a new database renamed into place is
switched to without failing a request, a broken one is refused and the old one
keeps answering, and `[geoip] update_url` keeps an edge fresh with one download
however many workers it has."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from georouter.config import GeoipSettings
from georouter.core.clientip import parse_address
from georouter.demo.standin import StandIn
from georouter.geoip.database import GeoDatabase
from georouter.geoip.refresh import RETRY_S, Refresher
from georouter.geoip.watch import DatabaseWatcher
from tests.harness import (
    FAST_HEALTH,
    TEST_ASN_DB,
    TEST_CITY_DB,
    Edge,
    cluster_entries,
    config_text,
    wait_for,
)
from tests.test_geodata_update import FileServer, Served, tar_gz, write_db

LONDON = "81.2.69.1"  # London in the installed database, Tokyo in the fresh one


@pytest.fixture
def standins(make_standins: Callable[..., dict[str, StandIn]]) -> dict[str, StandIn]:
    return make_standins("eu-west", "ap-northeast")


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    folder = tmp_path / "geoip"
    folder.mkdir()
    dest = folder / "City.mmdb"
    shutil.copyfile(TEST_CITY_DB, dest)
    return dest


@pytest.fixture
def server() -> Iterator[FileServer]:
    files = FileServer()
    yield files
    files.stop()


def edge_config(
    standins: dict[str, StandIn], database: Path, tmp_path: Path, **geoip: object
) -> Path:
    path = tmp_path / "clusters.toml"
    path.write_text(
        config_text(
            cluster_entries(standins),
            router={"fallback": "eu-west"},
            health=FAST_HEALTH,
            geoip={"database": str(database), **geoip},
        )
    )
    return path


def rename_in(data: bytes | Path, dest: Path) -> None:
    """Install as `geodata update` does: a file beside ``dest``, renamed over it."""
    temp = dest.with_name(f".{dest.name}.new")
    if isinstance(data, Path):
        shutil.copyfile(data, temp)
    else:
        temp.write_bytes(data)
    os.replace(temp, dest)


def cluster_for(client: httpx.Client, ip: str) -> str:
    response = client.get("/v1/route", params={"ip": ip})
    assert response.status_code == 200, response.text
    found: str = response.json()["cluster"]
    return found


class Traffic:
    """Requests in a loop from a thread of their own, until stopped; every answer kept."""

    def __init__(self, url: str) -> None:
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    r = client.get("/v1/route", params={"ip": LONDON})
                    self.answers.append((r.status_code, r.json().get("cluster")))
                except httpx.HTTPError as exc:
                    self.answers.append((0, repr(exc)))

    def stop(self) -> list[tuple[int, str | None]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.answers


def test_a_database_renamed_into_place_is_switched_to_without_failing_a_request(
    standins: dict[str, StandIn],
    installed: Path,
    tmp_path: Path,
    make_edge: Callable[..., Edge],
) -> None:
    edge = make_edge(edge_config(standins, installed, tmp_path, watch_s=0.1))
    assert cluster_for(edge.client, LONDON) == "eu-west"
    built_before = edge.get("/v1/clusters").json()["geoip"]["build_epoch"]
    traffic = Traffic(edge.url)
    wait_for(lambda: len(traffic.answers) > 20, timeout_s=10, what="traffic before the swap")

    rename_in(write_db(tmp_path / "tokyo.mmdb"), installed)
    wait_for(
        lambda: cluster_for(edge.client, LONDON) == "ap-northeast",
        timeout_s=10,
        what="the edge to locate with the new database",
    )
    seen = len(traffic.answers)
    wait_for(lambda: len(traffic.answers) > seen + 20, timeout_s=10, what="traffic after it")
    answers = traffic.stop()

    assert {status for status, _ in answers} == {200}
    clusters = [cluster for _, cluster in answers]
    # One switch, never back: every answer came from one database or the other.
    switched_at = clusters.index("ap-northeast")
    assert set(clusters[:switched_at]) == {"eu-west"}
    assert set(clusters[switched_at:]) == {"ap-northeast"}
    assert edge.get("/v1/clusters").json()["geoip"]["build_epoch"] != built_before
    assert f"GeoIP database {installed} switched to GeoIP2-City" in edge.log()


def test_broken_files_renamed_into_place_leave_the_old_database_answering(
    standins: dict[str, StandIn],
    installed: Path,
    tmp_path: Path,
    make_edge: Callable[..., Edge],
) -> None:
    edge = make_edge(edge_config(standins, installed, tmp_path, watch_s=0.1))
    city = TEST_CITY_DB.read_bytes()
    broken = {
        "garbage": b"<html>503 Service Unavailable</html>\n" * 50,
        "truncated": city[: len(city) // 2],
        "asn": TEST_ASN_DB.read_bytes(),
    }
    for count, (kind, data) in enumerate(broken.items(), start=1):
        rename_in(data, installed)
        wait_for(
            lambda n=count: edge.log().count("not switched to") >= n,
            timeout_s=10,
            what=f"the edge to refuse the {kind} file",
        )
        assert cluster_for(edge.client, LONDON) == "eu-west", kind
    assert "is an ASN database" in edge.log()
    # Each refused once, though looked at many times since.
    assert edge.log().count("not switched to") == len(broken)

    rename_in(write_db(tmp_path / "tokyo.mmdb"), installed)
    wait_for(
        lambda: cluster_for(edge.client, LONDON) == "ap-northeast",
        timeout_s=10,
        what="the edge to take the good file after the broken ones",
    )


def test_an_edge_with_workers_downloads_each_update_once_and_every_worker_switches(
    standins: dict[str, StandIn],
    installed: Path,
    tmp_path: Path,
    server: FileServer,
    make_edge: Callable[..., Edge],
) -> None:
    fresh = write_db(tmp_path / "tokyo.mmdb").read_bytes()
    server.files["/GeoLite2-City.tar.gz"] = Served(
        tar_gz({"GeoLite2-City_20240102/GeoLite2-City.mmdb": fresh})
    )
    # Installed two days ago: with a daily interval, an update is due at start.
    two_days_ago = time.time() - 2 * 86400
    os.utime(installed, (two_days_ago, two_days_ago))
    config = edge_config(
        standins,
        installed,
        tmp_path,
        watch_s=0.1,
        update_url=server.url("/GeoLite2-City.tar.gz"),
        update_interval_h=24,
    )
    edge = make_edge(config, args=("--workers", "2"))

    def fresh_connection() -> str:
        # A connection of its own each time, so the kernel spreads them over the workers.
        with httpx.Client(base_url=edge.url, timeout=5) as client:
            return cluster_for(client, LONDON)

    wait_for(lambda: fresh_connection() == "ap-northeast", timeout_s=15, what="the update")
    # Twenty new connections in a row all answered from the new database: both
    # workers switched (were one still on the old one, each would have a 1 in 2 chance).
    streak = [0]

    def every_worker_switched() -> bool:
        streak[0] = streak[0] + 1 if fresh_connection() == "ap-northeast" else 0
        return streak[0] >= 20

    wait_for(every_worker_switched, timeout_s=15, what="every worker to switch")
    assert installed.read_bytes() == fresh
    assert server.requests_for("/GeoLite2-City.tar.gz") == 1
    assert edge.log().count("GeoIP update: GeoIP2-City built") == 1


# --- the watcher and the updater, in this process ---------------------------------


def open_db(path: Path) -> GeoDatabase:
    return GeoDatabase(path, cache_networks=1024, max_age_days=30, now=time.time())


def test_the_watcher_switches_whole_and_closes_the_old_reader_at_its_next_look(
    installed: Path, tmp_path: Path
) -> None:
    db = open_db(installed)
    watcher = DatabaseWatcher(db, lambda: GeoipSettings(database=installed, watch_s=0.1))
    london = parse_address(LONDON)
    assert london is not None
    before = db.lookup(london)
    old = db._open
    assert asyncio.run(watcher.look()) is False  # nothing new yet

    rename_in(write_db(tmp_path / "tokyo.mmdb"), installed)
    assert asyncio.run(watcher.look()) is True
    after = db.lookup(london)
    assert before is not None
    assert after is not None
    assert (before.country, after.country) == ("GB", "JP")
    assert not old.reader.closed  # a lookup could still be on it until the loop turns
    assert asyncio.run(watcher.look()) is False
    assert old.reader.closed
    db.close()


def test_the_watcher_refuses_a_broken_file_once_and_keeps_the_old_database(
    installed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = open_db(installed)
    watcher = DatabaseWatcher(db, lambda: GeoipSettings(database=installed, watch_s=0.1))
    rename_in(TEST_ASN_DB, installed)
    with caplog.at_level(logging.WARNING, logger="georouter.geoip.watch"):
        assert asyncio.run(watcher.look()) is False
        assert asyncio.run(watcher.look()) is False
    refusals = [r for r in caplog.records if "not switched to" in r.getMessage()]
    assert len(refusals) == 1
    assert db.info.database_type == "GeoIP2-City"
    london = parse_address(LONDON)
    assert london is not None
    found = db.lookup(london)
    assert found is not None
    assert found.country == "GB"
    db.close()


def test_a_failed_update_is_retried_within_the_hour_and_leaves_the_file(
    installed: Path, server: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.files["/City.mmdb"] = Served(status=500)
    now = [time.time()]
    settings = GeoipSettings(
        database=installed, update_url=server.url("/City.mmdb"), update_interval_h=24
    )
    refresher = Refresher(installed, lambda: settings, env={}, clock=lambda: now[0])
    mtime = installed.stat().st_mtime
    # First due a full interval after the installed file was written.
    assert refresher.due_at(settings) == pytest.approx(mtime + 86400)
    before = (installed.stat().st_ino, installed.read_bytes())
    with caplog.at_level(logging.WARNING, logger="georouter.geoip.refresh"):
        assert asyncio.run(refresher.attempt(settings)) is None
    assert (installed.stat().st_ino, installed.read_bytes()) == before
    assert refresher.due_at(settings) == pytest.approx(now[0] + RETRY_S)
    assert "HTTP 500 Internal Server Error" in caplog.text
    assert [p.name for p in installed.parent.iterdir()] == ["City.mmdb"]
