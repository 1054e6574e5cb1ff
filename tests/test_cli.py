"""The `georouter` command, run as a real process."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import REPO, TEST_ASN_DB, TEST_CITY_DB, config_text, georouter_command

GOOD_CLUSTERS = [
    {"name": "eu-west", "url": "https://eu.example.net", "lat": 53.35, "lon": -6.26},
    {"name": "ap-northeast", "url": "https://jp.example.net", "lat": 35.68, "lon": 139.65},
    {"name": "us-east", "url": "https://us.example.net", "lat": 38.94, "lon": -77.46},
]


def run(*args: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        georouter_command(*args),
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def good_config(write_config: Callable[[str], Path], **geoip: object) -> Path:
    return write_config(
        config_text(
            GOOD_CLUSTERS,
            router={"fallback": "us-east"},
            geoip={"database": str(TEST_CITY_DB), **geoip},
        )
    )


def test_check_accepts_the_repo_example() -> None:
    result = run("check")
    assert result.returncode == 0, result.stderr
    assert "clusters.toml: ok: 11 clusters, fallback us-east" in result.stdout
    assert "GeoLite2-City" in result.stdout


def test_check_prints_every_problem_with_its_key_path(
    write_config: Callable[[str], Path],
) -> None:
    bad = [dict(GOOD_CLUSTERS[0], lat=123), dict(GOOD_CLUSTERS[1], name="eu-west", colour="red")]
    path = write_config(config_text(bad, router={"fallback": "nowhere"}))
    result = run("check", "--config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"georouter: {path}: invalid configuration"
    assert lines[1:] == [
        "  clusters[0].lat: must be within -90..90",
        "  clusters[1].colour: unknown key",
        "  clusters[1].name: duplicate name 'eu-west' (first at clusters[0])",
        "  router.fallback: names no cluster: 'nowhere' (clusters: eu-west)",
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("database", "message"),
    [
        pytest.param(str(TEST_ASN_DB), "geoip.database: ", id="asn"),
        pytest.param("/nonexistent/City.mmdb", "geoip.database: no such file", id="missing"),
        pytest.param(
            str(REPO / "README.md"), "geoip.database: not a MaxMind DB file", id="not-a-database"
        ),
    ],
)
def test_check_refuses_an_unusable_database(
    write_config: Callable[[str], Path], database: str, message: str
) -> None:
    result = run("check", "--config", str(good_config(write_config, database=database)))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_check_of_a_missing_file_names_it(tmp_path: Path) -> None:
    result = run("check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 1
    assert "nope.toml: cannot read" in result.stderr


def test_serve_refuses_an_invalid_config_with_the_same_messages(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(config_text([dict(GOOD_CLUSTERS[0], lon=500)]))
    result = run("serve", "--config", str(path), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert "clusters[0].lon: must be within -180..180" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        pytest.param("localhost", "expected HOST:PORT", id="no-port"),
        pytest.param("127.0.0.1:http", "port must be 0..65535", id="named-port"),
        pytest.param("127.0.0.1:70000", "port must be 0..65535", id="port-range"),
        pytest.param("my-host:80", "is not an IP address", id="hostname"),
        pytest.param("192.0.2.1:8080", "cannot listen on 192.0.2.1:8080", id="foreign-address"),
    ],
)
def test_serve_names_a_bad_listen_address(
    write_config: Callable[[str], Path], listen: str, message: str
) -> None:
    result = run("serve", "--config", str(good_config(write_config)), "--listen", listen)
    assert result.returncode == 2
    assert "--listen" in result.stderr
    assert message in result.stderr


def test_route_decides_offline_as_json(write_config: Callable[[str], Path]) -> None:
    path = good_config(write_config)
    result = run("route", "202.12.27.33", "--config", str(path), "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["cluster"] == "ap-northeast"
    assert decision["reason"] == "nearest"
    assert decision["location"]["country"] == "JP"


def test_route_prints_a_table_for_several_addresses(write_config: Callable[[str], Path]) -> None:
    path = good_config(write_config)
    result = run("route", "81.2.69.1", "10.0.0.1", "--config", str(path), "--explain")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].split() == ["CLIENT", "WHERE", "COUNTRY", "CLUSTER", "DISTANCE", "REASON"]
    located = rows[1].split()
    assert located[0] == "81.2.69.1"
    # WHERE: where the database puts the address (it used to stay empty).
    assert re.fullmatch(r"-?\d+\.\d\d,-?\d+\.\d\d", located[1]), located
    assert located[2:4] == ["GB", "eu-west"]
    assert rows[2].split()[:4] == ["10.0.0.1", "-", "-", "us-east"]
    assert "nearest routable cluster" in result.stdout


def test_route_names_a_bad_address_argument(write_config: Callable[[str], Path]) -> None:
    result = run("route", "1.2.3.999", "--config", str(good_config(write_config)))
    assert result.returncode == 2
    assert "argument ADDR: '1.2.3.999' is not an IPv4 or IPv6 address" in result.stderr


def _table_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        words = line.split()
        with contextlib.suppress(IndexError, ValueError):
            ipaddress.ip_address(words[0])
            rows[words[0]] = words
    return rows


def test_demo_routes_real_addresses_through_a_real_edge() -> None:
    result = run("demo", "--once", "--listen", "127.0.0.1:0", timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "in front of 11 demo clusters on loopback" in out
    rows = _table_rows(out)
    assert rows["81.2.69.142"][3] == "eu-west"
    assert rows["1.0.16.1"][3] == "ap-northeast"
    assert rows["203.2.218.214"][3] == "ap-sydney"
    assert rows["10.1.2.3"][-1] == "fallback"


def test_demo_tour_shows_a_session_sticking_failing_over_draining_and_a_websocket() -> None:
    result = run("demo", "--once", "--listen", "127.0.0.1:0", timeout=120)
    assert result.returncode == 0, result.stderr
    answers = re.findall(r"HTTP (\d+)  cluster (\S+)  reason (\S+)", result.stdout)
    first, *sticky = answers[:3]
    assert first == ("200", "eu-west", "nearest")
    assert sticky == [("200", "eu-west", "sticky")] * 2, "the cookie kept it on eu-west"
    failover, after = answers[3:5]
    moved = failover[1]
    assert failover == ("200", moved, "failover")
    assert moved != "eu-west"
    assert after == ("200", moved, "sticky")
    assert re.search(rf"\n   HTTP 200 .*\"{moved}\"", result.stdout), "the drain was accepted"
    pinned, fresh = answers[5:7]
    assert pinned == ("200", moved, "sticky"), "a drained cluster keeps its pinned sessions"
    assert fresh[0] == "200"
    assert fresh[1] not in (moved, "eu-west"), "a new session avoids the drained cluster"
    assert f"got '{moved}: hello'" in result.stdout, "the WebSocket stayed on its cluster"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(
            "redis://127.0.0.1:6399/0?socket_timeout=abc",
            "Invalid value for 'socket_timeout'",
            id="bad-option-value",
        ),
        pytest.param(
            "redis://127.0.0.1:6399/0?colour=red",
            "has unknown option(s) in its query: colour",
            id="unknown-option",
        ),
    ],
)
def test_check_and_serve_refuse_a_redis_url_redis_py_would_refuse_later(
    write_config: Callable[[str], Path], url: str, message: str
) -> None:
    path = write_config(
        config_text(
            GOOD_CLUSTERS,
            router={"fallback": "us-east"},
            geoip={"database": str(TEST_CITY_DB)},
            sessions={"redis_url": url},
        )
    )
    for args in (("check",), ("serve", "--listen", "127.0.0.1:0")):
        result = run(*args, "--config", str(path))
        assert result.returncode == 1, result.stderr
        assert f"sessions.redis_url: {message}" in result.stderr
        assert "Traceback" not in result.stderr


def test_check_diff_says_what_a_reload_would_change(write_config: Callable[[str], Path]) -> None:
    def clusters(*names: str, lat: float = 1.0) -> list[dict[str, object]]:
        return [
            {"name": n, "url": f"https://{n}.example.net", "lat": lat, "lon": 1.0} for n in names
        ]

    old = write_config(config_text(clusters("a", "b")))
    new = write_config(config_text(clusters("a", "c", lat=2.0)))
    result = run("check", "--diff", str(old), str(new))
    assert result.returncode == 0, result.stderr
    assert "clusters added: c" in result.stdout
    assert "clusters removed (their sessions fail over): b" in result.stdout
    assert "clusters moved (clients may now be nearer another): a" in result.stdout

    restart = write_config(config_text(clusters("a", "b"), limits={"body_bytes": 5000}))
    refused = run("check", "--diff", str(old), str(restart))
    assert refused.returncode == 1
    assert "needs a restart: limits.body_bytes" in refused.stderr

    broken = write_config("[[clusters]]\nname = 1\n")
    invalid = run("check", "--diff", str(old), str(broken))
    assert invalid.returncode == 1
    assert "clusters[0].name" in invalid.stderr
    assert "Traceback" not in invalid.stderr


def test_serve_says_listening_only_once_it_can_answer(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    # The embedded Redis cannot start: its state directory is under a plain file.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    clusters = [{"name": "a", "url": "https://a.example.net", "lat": 1.0, "lon": 1.0}]
    path = write_config(config_text(clusters, sessions={"state_dir": str(blocker / "state")}))
    result = run("serve", "--config", str(path), "--listen", "127.0.0.1:0")
    assert result.returncode != 0
    assert "listening on" not in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_outside_a_checkout_on_the_example_it_ships(tmp_path: Path) -> None:
    result = run("demo", "--once", "--listen", "127.0.0.1:0", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "using the example" in result.stderr
    assert "eu-west" in result.stdout


def test_the_shipped_example_is_the_repositorys_clusters_toml() -> None:
    shipped = REPO / "georouter" / "demo" / "clusters.toml"
    assert shipped.read_bytes() == (REPO / "clusters.toml").read_bytes(), (
        "georouter/demo/clusters.toml is a copy of clusters.toml: copy it again"
    )


def test_route_and_check_warn_of_a_stale_database_on_stderr() -> None:
    # The bundled GeoLite2 snapshot is years old: both say so, on stderr only.
    for args in (("check",), ("route", "81.2.69.142")):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        assert "warning: the GeoIP database is" in result.stderr
        assert "warning" not in result.stdout
