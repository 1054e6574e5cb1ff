"""A pin as stored in Redis: ``cluster|pinned at ms|version``, and the two-field form of
earlier releases, which reads as version 0 (pure)."""

from __future__ import annotations

import pytest

from georouter.core.pin import TOMBSTONE, Pin


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("eu-west|1700000000000|42", Pin("eu-west", 1700000000000, 42), id="ours"),
        pytest.param(b"ap-sydney|5|7", Pin("ap-sydney", 5, 7), id="bytes"),
        pytest.param("!|42|9", Pin("!", 42, 9), id="tombstone"),
        pytest.param("eu-west|1700000000000", Pin("eu-west", 1700000000000, 0), id="legacy"),
        pytest.param(b"ap-sydney|5", Pin("ap-sydney", 5, 0), id="legacy-bytes"),
        pytest.param("!|42", Pin("!", 42, 0), id="legacy-tombstone"),
    ],
)
def test_pin_values_decode(raw: str | bytes, expected: Pin) -> None:
    assert Pin.decode(raw) == expected


def test_a_legacy_value_reads_as_version_zero_and_is_written_in_the_new_form() -> None:
    legacy = Pin.decode("eu-west|1000")
    assert legacy is not None
    assert legacy.version == 0
    assert legacy.encode() == "eu-west|1000|0"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("eu-west", id="no-separator"),
        pytest.param("", id="empty"),
        pytest.param("|5", id="legacy-without-cluster"),
        pytest.param("|5|1", id="no-cluster"),
        pytest.param("eu-west|soon", id="legacy-without-time"),
        pytest.param("eu-west|soon|1", id="no-time"),
        pytest.param("eu-west||1", id="empty-time"),
        pytest.param("eu-west|5|", id="empty-version"),
        pytest.param("eu-west|5|v2", id="no-version"),
        pytest.param("eu-west|-5|1", id="negative-time"),
        pytest.param("eu-west|5|-1", id="negative-version"),
        pytest.param("eu-west|5|1.5", id="fractional-version"),
        pytest.param("eu-west| 5|1", id="space-in-time"),
        pytest.param("eu-west|5|1|2", id="four-fields"),
        pytest.param("not a pin", id="prose"),
        # Characters str.isdigit() accepts that are not decimal digits.
        pytest.param("eu-west|\u00b2|1", id="superscript-time"),
        pytest.param("eu-west|5|\u00b2", id="superscript-version"),
        # A digit to str.isdigit(), not to the Lua script's %d: the two would disagree.
        pytest.param("eu-west|\uff15|1", id="fullwidth-time"),
    ],
)
def test_values_that_are_not_ours_decode_as_nothing(raw: str) -> None:
    assert Pin.decode(raw) is None
    assert Pin.decode(raw.encode()) is None


def test_a_pin_round_trips_and_its_read_ttl_is_not_stored() -> None:
    pin = Pin("eu-west", 1_000, 12)
    assert pin.encode() == "eu-west|1000|12"
    assert Pin.decode(pin.encode()) == pin
    read = Pin("eu-west", 1_000, 12, ttl_ms=30_000)
    assert read.encode() == "eu-west|1000|12"
    assert Pin.decode(read.encode(), ttl_ms=30_000) == read


def test_a_tombstone_is_forgotten_and_never_alive() -> None:
    tombstone = Pin(TOMBSTONE, 1_000, 3)
    assert tombstone.forgotten
    assert not Pin("eu-west", 1_000, 3).forgotten
    assert not tombstone.alive(now_ms=1_000, max_age_ms=0)
    assert not tombstone.expired(now_ms=1_000, max_age_ms=0)


def test_a_pin_knows_its_age() -> None:
    pin = Pin("eu-west", 1_000)
    assert not pin.expired(now_ms=1_000 + 500, max_age_ms=500)
    assert pin.alive(now_ms=1_000 + 500, max_age_ms=500)
    assert pin.expired(now_ms=1_000 + 501, max_age_ms=500)
    assert not pin.alive(now_ms=1_000 + 501, max_age_ms=500)
    assert not pin.expired(now_ms=10**15, max_age_ms=0)  # 0: no cap
    assert pin.alive(now_ms=10**15, max_age_ms=0)
