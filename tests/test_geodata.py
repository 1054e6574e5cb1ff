"""The committed test databases say what geodata/networks.csv says."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import maxminddb

from tests.harness import GEODATA, TEST_CITY_DB


def builder() -> dict[str, object]:
    return runpy.run_path(str(GEODATA / "build.py"))


def test_committed_city_database_matches_the_csv() -> None:
    problems = builder()["check"]()  # type: ignore[operator]
    assert problems == []


def test_builder_reproduces_the_same_records(tmp_path: Path) -> None:
    written = builder()["build"](tmp_path)  # type: ignore[operator]
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in GEODATA.glob("*.mmdb"))
    with (
        maxminddb.open_database(str(tmp_path / TEST_CITY_DB.name)) as fresh,
        maxminddb.open_database(str(TEST_CITY_DB)) as committed,
    ):
        for addr in ("81.2.69.1", "1.130.0.1", "2001:480::1", "185.1.0.1", "8.8.8.8"):
            assert fresh.get(addr) == committed.get(addr)
    shutil.rmtree(tmp_path)
