"""`georouter geodata update` and `info`: downloads from a real HTTP server on loopback.

Every bad download (cut short, wrong checksum, not a database, an ASN
database, an HTTP error, an archive without a database) leaves the installed
file as it was, byte for byte and inode for inode, removes its temporary
files, and says why in one line. A good one replaces the file by rename.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import pty
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

from georouter.cli import main
from georouter.config import compare, parse
from georouter.errors import ConfigError
from tests.harness import (
    REPO,
    TEST_ASN_DB,
    TEST_CITY_DB,
    config_text,
    georouter_command,
)

# 81.2.69.0/24 is London in the committed test database; these put it in Tokyo.
TOKYO: dict[str, tuple[str, float, float]] = {
    "81.2.69.0/24": ("JP", 35.6895, 139.6917),
    "2001:480::/32": ("JP", 35.6895, 139.6917),
}
ACCOUNT, LICENSE = "123456", "test-license-key"


def write_db(
    path: Path,
    places: dict[str, tuple[str, float, float]] = TOKYO,
    *,
    db_type: str = "GeoIP2-City",
    record: object = None,
) -> Path:
    """A MaxMind DB at ``path``: ``places`` located there, or every network ``record``."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=db_type,
        languages=["en"],
        description="georouter geodata test",
    )
    for network, (country, lat, lon) in places.items():
        value = record
        if value is None:
            value = {
                "country": {"iso_code": country},
                "location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)},
            }
        writer.insert_network(IPSet([network]), value)
    writer.to_db_file(str(path))
    return path


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A gzipped tar as MaxMind ships it (``GeoLite2-City_YYYYMMDD/GeoLite2-City.mmdb``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Served:
    body: bytes = b""
    status: int = 200
    # Send only this many bytes of the body (its full Content-Length announced).
    cut_at: int | None = None
    # A Basic challenge unless the request carries these credentials.
    credentials: tuple[str, str] | None = None
    redirect: str | None = None


@dataclass
class FileServer:
    """A real HTTP/1.1 server on loopback serving ``files`` by path; it records each
    request's path and Authorization header."""

    files: dict[str, Served] = field(default_factory=dict)
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self._server = _Server(self)
        # A short poll, so that stopping the server takes no longer.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def requests_for(self, path: str) -> int:
        return sum(1 for seen, _ in self.seen if seen == path)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FileServer) -> None:
        self.owner = owner
        super().__init__((owner.host, 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up on a bad download (as georouter does) is not news;
        # the default prints to stderr, which is what these tests read of the command.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        auth = self.headers.get("authorization")
        owner.seen.append((self.path, auth))
        served = owner.files.get(self.path)
        if served is None:
            self._answer(404, b'{"error": "not found"}')
            return
        if served.credentials is not None:
            user, password = served.credentials
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if auth != expected:
                self._answer(401, b"unauthorized", {"www-authenticate": 'Basic realm="geodata"'})
                return
        if served.redirect is not None:
            self._answer(302, b"", {"location": served.redirect})
            return
        if served.status != 200:
            self._answer(served.status, b"failed")
            return
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(len(served.body)))
        self.end_headers()
        self.wfile.write(served.body[: served.cut_at])
        if served.cut_at is not None:
            self.wfile.flush()
            self.close_connection = True

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[FileServer]:
    files = FileServer()
    yield files
    files.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A database that locates 81.2.69.1 in Tokyo (the installed one says London)."""
    return write_db(tmp_path / "fresh.mmdb")


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The installed database, in a folder of its own."""
    folder = tmp_path / "geoip"
    folder.mkdir()
    dest = folder / "City.mmdb"
    shutil.copyfile(TEST_CITY_DB, dest)
    return dest


@pytest.fixture(autouse=True)
def no_maxmind_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's own, if any, must not reach the test servers.
    monkeypatch.delenv("MAXMIND_ACCOUNT_ID", raising=False)
    monkeypatch.delenv("MAXMIND_LICENSE_KEY", raising=False)


def snapshot(path: Path) -> tuple[int, bytes]:
    return path.stat().st_ino, path.read_bytes()


def update(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`georouter geodata update ARGS` in this process: exit code, stdout, stderr."""
    code = main(["geodata", "update", *args])
    out, err = capsys.readouterr()
    return code, out, err


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_plain_mmdb_is_installed_by_rename(
    server: FileServer, installed: Path, fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/City.mmdb"] = Served(fresh.read_bytes())
    inode_before = installed.stat().st_ino
    code, out, err = update(capsys, "--url", server.url("/City.mmdb"), "--dest", str(installed))
    assert (code, err) == (0, "")
    assert out.startswith("installed GeoIP2-City built ")
    assert str(installed) in out
    assert installed.read_bytes() == fresh.read_bytes()
    assert installed.stat().st_ino != inode_before
    assert [p.name for p in installed.parent.iterdir()] == ["City.mmdb"]


def test_a_maxmind_tar_gz_is_unpacked_and_checked_against_its_sha256(
    server: FileServer, installed: Path, fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tar_gz(
        {
            "GeoLite2-City_20240102/COPYRIGHT.txt": b"MaxMind\n",
            "GeoLite2-City_20240102/GeoLite2-City.mmdb": fresh.read_bytes(),
            "GeoLite2-City_20240102/LICENSE.txt": b"CC BY-SA 4.0\n",
        }
    )
    server.files["/download?suffix=tar.gz"] = Served(archive)
    code, out, err = update(
        capsys,
        "--url",
        server.url("/download?suffix=tar.gz"),
        "--sha256",
        sha256(archive).upper(),
        "--dest",
        str(installed),
    )
    assert (code, err) == (0, "")
    assert "(tar.gz, " in out
    assert installed.read_bytes() == fresh.read_bytes()
    assert [p.name for p in installed.parent.iterdir()] == ["City.mmdb"]


def test_a_dbip_mmdb_gz_is_unpacked_with_the_checksum_its_sha256_file_names(
    server: FileServer, installed: Path, fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packed = gzip.compress(fresh.read_bytes())
    server.files["/dbip-city-lite.mmdb.gz"] = Served(packed)
    server.files["/dbip-city-lite.mmdb.gz.sha256"] = Served(
        f"{sha256(packed)}  dbip-city-lite.mmdb.gz\n".encode()
    )
    code, out, err = update(
        capsys,
        "--url",
        server.url("/dbip-city-lite.mmdb.gz"),
        "--sha256-url",
        server.url("/dbip-city-lite.mmdb.gz.sha256"),
        "--dest",
        str(installed),
    )
    assert (code, err) == (0, "")
    assert "(mmdb.gz, " in out
    assert installed.read_bytes() == fresh.read_bytes()


def test_the_database_already_installed_is_left_in_place(
    server: FileServer, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/City.mmdb"] = Served(installed.read_bytes())
    before = snapshot(installed)
    code, out, _ = update(capsys, "--url", server.url("/City.mmdb"), "--dest", str(installed))
    assert code == 0
    assert "left as it is" in out
    assert snapshot(installed) == before


def test_update_defaults_to_the_configured_database_and_url(
    server: FileServer,
    installed: Path,
    fresh: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.files["/City.mmdb"] = Served(fresh.read_bytes())
    config = tmp_path / "clusters.toml"
    config.write_text(
        config_text(
            [{"name": "eu-west", "url": "https://eu.example.net", "lat": 53.35, "lon": -6.26}],
            router={"fallback": "eu-west"},
            geoip={"database": str(installed), "update_url": server.url("/City.mmdb")},
        )
    )
    code, _, err = update(capsys, "--config", str(config))
    assert (code, err) == (0, "")
    assert installed.read_bytes() == fresh.read_bytes()


CITY = TEST_CITY_DB.read_bytes()


def _bad_downloads() -> list[object]:
    text_gz = gzip.compress(b"this is a text file, not a database\n" * 50)
    return [
        pytest.param(Served(CITY, cut_at=len(CITY) // 2), (), "cut short", id="truncated-download"),
        pytest.param(Served(CITY[: len(CITY) // 2]), (), "not a MaxMind DB", id="truncated-file"),
        pytest.param(
            Served(CITY), ("--sha256", "0" * 64), "checksum mismatch", id="wrong-checksum"
        ),
        pytest.param(
            Served(b"<html>maintenance</html>\n" * 40), (), "not a MaxMind DB", id="garbage"
        ),
        pytest.param(Served(TEST_ASN_DB.read_bytes()), (), "is an ASN database", id="asn-database"),
        pytest.param(Served(status=404), (), "HTTP 404 Not Found: nothing at", id="http-404"),
        pytest.param(
            Served(CITY, credentials=(ACCOUNT, LICENSE)),
            (),
            "HTTP 401 Unauthorized from http://127.0.0.1",
            id="http-401",
        ),
        pytest.param(Served(status=500), (), "HTTP 500 Internal Server Error", id="http-500"),
        pytest.param(
            Served(text_gz), (), "holds neither a tar archive nor a MaxMind DB", id="gzip-not-tar"
        ),
        pytest.param(
            Served(tar_gz({"GeoLite2-City_20240102/LICENSE.txt": b"x"})),
            (),
            "the archive holds no .mmdb file",
            id="tar-without-mmdb",
        ),
        pytest.param(
            Served(tar_gz({"d/GeoLite2-City.mmdb": CITY * 4})[:-200]),
            (),
            "truncated or damaged",
            id="truncated-tar-gz",
        ),
    ]


@pytest.mark.parametrize(("served", "extra", "reason"), _bad_downloads())
def test_a_bad_download_leaves_the_installed_file_untouched_and_says_why(
    server: FileServer,
    installed: Path,
    served: Served,
    extra: tuple[str, ...],
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.files["/download"] = served
    before = snapshot(installed)
    code, out, err = update(
        capsys, "--url", server.url("/download"), "--dest", str(installed), *extra
    )
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("georouter: geodata update: ")
    assert reason in err
    assert err.rstrip().endswith(f"{installed} left as it was")
    assert "Traceback" not in err
    assert snapshot(installed) == before
    assert [p.name for p in installed.parent.iterdir()] == ["City.mmdb"]


def test_an_unreachable_server_is_named_in_one_line(
    server: FileServer, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url("/City.mmdb")
    server.stop()
    code, _, err = update(capsys, "--url", url, "--dest", str(installed))
    assert code == 1
    assert err.startswith(f"georouter: geodata update: cannot download {url}")
    assert err.count("\n") == 1


def test_credentials_go_where_they_are_asked_for_and_not_on_to_a_redirect(
    server: FileServer,
    installed: Path,
    fresh: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAXMIND_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("MAXMIND_LICENSE_KEY", LICENSE)
    # As MaxMind does: the authenticated URL redirects to storage elsewhere (another
    # origin: "localhost" is not "127.0.0.1").
    storage = server.url("/storage/GeoLite2-City.mmdb", host="localhost")
    server.files["/geoip/databases/GeoLite2-City/download"] = Served(
        credentials=(ACCOUNT, LICENSE), redirect=storage
    )
    server.files["/storage/GeoLite2-City.mmdb"] = Served(fresh.read_bytes())
    code, _, err = update(
        capsys,
        "--url",
        server.url("/geoip/databases/GeoLite2-City/download"),
        "--dest",
        str(installed),
    )
    assert (code, err) == (0, "")
    basic = "Basic " + base64.b64encode(f"{ACCOUNT}:{LICENSE}".encode()).decode()
    assert server.seen == [
        ("/geoip/databases/GeoLite2-City/download", None),
        ("/geoip/databases/GeoLite2-City/download", basic),
        ("/storage/GeoLite2-City.mmdb", None),
    ]
    assert installed.read_bytes() == fresh.read_bytes()


def test_refused_credentials_are_named_as_the_reason(
    server: FileServer,
    installed: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAXMIND_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("MAXMIND_LICENSE_KEY", "a-revoked-key")
    server.files["/City.mmdb"] = Served(CITY, credentials=(ACCOUNT, LICENSE))
    before = snapshot(installed)
    code, _, err = update(capsys, "--url", server.url("/City.mmdb"), "--dest", str(installed))
    assert code == 1
    assert "the server refused MAXMIND_ACCOUNT_ID/MAXMIND_LICENSE_KEY" in err
    assert "a-revoked-key" not in err
    assert snapshot(installed) == before


def test_half_of_the_maxmind_credentials_is_a_usage_error(
    installed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAXMIND_ACCOUNT_ID", ACCOUNT)
    code, _, err = update(capsys, "--url", "http://127.0.0.1:9/x", "--dest", str(installed))
    assert code == 2
    assert err == (
        "georouter: MAXMIND_LICENSE_KEY is not set: MaxMind needs the account id and the"
        " license key\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--sha256", "abc"), "--sha256: must be a SHA-256", id="short-sha256"),
        pytest.param(
            ("--dest", "/nonexistent-dir/City.mmdb"),
            "/nonexistent-dir does not exist",
            id="no-such-folder",
        ),
    ],
)
def test_bad_arguments_are_named(
    args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["geodata", "update", "--url", "http://127.0.0.1:9/x", *args])
    except SystemExit as exited:  # argparse's own refusal
        code = int(exited.code or 0)
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_the_progress_bar_is_drawn_on_a_terminal_only(
    server: FileServer, installed: Path, fresh: Path
) -> None:
    server.files["/City.mmdb"] = Served(fresh.read_bytes())
    command = georouter_command(
        "geodata", "update", "--url", server.url("/City.mmdb"), "--dest", str(installed)
    )
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    piped = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""

    main_fd, terminal = pty.openpty()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=terminal, env=env, cwd=REPO
    )
    os.close(terminal)
    drawn = b""
    while True:
        try:
            piece = os.read(main_fd, 4096)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not piece:
            break
        drawn += piece
    os.close(main_fd)
    assert process.wait(timeout=60) == 0
    text = drawn.decode("utf-8", "replace")
    assert "downloading" in text
    size_kb = f"{len(fresh.read_bytes()) / 1000:.1f}"
    assert f"{size_kb}/{size_kb} kB" in text, text


# --- geodata info -------------------------------------------------------------


def info(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["geodata", "info", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_describes_type_build_date_age_ip_versions_and_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = info(capsys, str(TEST_CITY_DB))
    assert (code, err) == (0, "")
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["type"].strip() == "GeoIP2-City"
    assert fields["ip versions"].strip() == "IPv4 and IPv6"
    assert fields["nodes"].strip().startswith("319 in the search tree")
    assert fields["languages"].strip() == "en"
    assert fields["usable"].strip().startswith("yes (")
    assert fields["built"].strip().endswith("UTC")
    assert "days" in fields["age"]


def test_info_as_json_says_what_the_record_count_is(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = info(capsys, "--json", str(TEST_CITY_DB))
    body = json.loads(out)
    assert code == 0
    assert body["type"] == "GeoIP2-City"
    assert body["ip_versions"] == [4, 6]
    assert body["node_count"] == 319
    assert body["usable"] is True
    assert body["located"] >= 1


def test_info_defaults_to_the_configured_database_else_the_bundled_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "clusters.toml"
    clusters = [{"name": "eu-west", "url": "https://eu.example.net", "lat": 53.35, "lon": -6.26}]
    config.write_text(
        config_text(clusters, router={"fallback": "eu-west"}, geoip={"database": str(TEST_CITY_DB)})
    )
    _, out, _ = info(capsys, "--json", "--config", str(config))
    assert json.loads(out)["path"] == str(TEST_CITY_DB)
    monkeypatch.chdir(tmp_path / "..")
    monkeypatch.delenv("GEOROUTER_CONFIG", raising=False)
    _, out, _ = info(capsys, "--json")
    body = json.loads(out)
    assert (body["bundled"], body["type"]) == (True, "GeoLite2-City")


def test_info_on_an_asn_database_says_georouter_cannot_use_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = info(capsys, str(TEST_ASN_DB))
    assert code == 1
    assert "type:        GeoLite2-ASN" in out
    assert "usable:      no: " in out
    assert "is an ASN database" in out


def test_info_on_a_file_that_is_no_database_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = info(capsys, str(REPO / "README.md"))
    assert (code, out) == (1, "")
    assert err.startswith("georouter: geodata info: ")
    assert "is not a MaxMind DB file" in err
    assert err.count("\n") == 1


# --- check reads the database through geoip2 too --------------------------------


@pytest.mark.parametrize(
    ("record", "message"),
    [
        pytest.param("a string", "has records that cannot be read", id="record-not-a-map"),
        pytest.param({"location": "nowhere"}, "has records that cannot be read", id="bad-field"),
        pytest.param({"names": {}}, "locates none of", id="locates-nothing"),
    ],
)
def test_check_refuses_a_city_database_geoip2_cannot_read(
    tmp_path: Path, record: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = write_db(tmp_path / "odd.mmdb", {"81.2.69.0/24": ("GB", 0, 0)}, record=record)
    config = tmp_path / "clusters.toml"
    clusters = [{"name": "eu-west", "url": "https://eu.example.net", "lat": 53.35, "lon": -6.26}]
    config.write_text(
        config_text(clusters, router={"fallback": "eu-west"}, geoip={"database": str(db)})
    )
    assert main(["check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"geoip.database: {db} " in err
    assert message in err


# --- the [geoip] keys --------------------------------------------------------


def _geoip(**table: object) -> dict[str, object]:
    return {
        "clusters": [{"name": "a", "url": "https://a.example.net", "lat": 0, "lon": 0}],
        "router": {"fallback": "a"},
        "geoip": table,
    }


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        pytest.param(
            {"update_url": "https://x.example/City.mmdb"},
            "geoip.update_url: needs geoip.database",
            id="url-without-database",
        ),
        pytest.param(
            {"database": "City.mmdb", "update_url": "ftp://x.example/City.mmdb"},
            "geoip.update_url: must be an http:// or https:// URL",
            id="not-http",
        ),
        pytest.param(
            {"database": "City.mmdb", "update_url": "https://1:key@x.example/City.mmdb"},
            "geoip.update_url: must not contain a user or password",
            id="credentials-in-url",
        ),
        pytest.param(
            {"database": "City.mmdb", "update_sha256_url": "https://x.example/City.sha256"},
            "geoip.update_sha256_url: is set without geoip.update_url",
            id="checksum-without-url",
        ),
        pytest.param(
            {"database": "City.mmdb", "update_url": "https://x.example/a", "update_interval_h": 0},
            "geoip.update_interval_h: must be within 1..8760",
            id="interval",
        ),
        pytest.param({"watch_s": -1}, "geoip.watch_s: must be within 0..3600", id="watch"),
    ],
)
def test_bad_geoip_update_keys_are_named_by_their_key_path(
    table: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(_geoip(**table))
    assert any(str(p).startswith(problem) for p in raised.value.problems), raised.value.problems


def test_a_maxmind_download_url_with_a_query_is_accepted() -> None:
    url = "https://download.maxmind.com/geoip/databases/GeoLite2-City/download?suffix=tar.gz"
    geoip = parse(_geoip(database="/var/lib/geoip/City.mmdb", update_url=url)).geoip
    assert (geoip.update_url, geoip.update_interval_h, geoip.watch_s) == (url, 24.0, 5.0)


def test_update_and_watch_keys_reload_while_the_database_path_needs_a_restart() -> None:
    old = parse(_geoip(database="/geo/City.mmdb"))
    new = parse(
        _geoip(
            database="/geo/City.mmdb",
            watch_s=1,
            update_url="https://x.example/City.mmdb",
            update_interval_h=12,
        )
    )
    change = compare(old, new)
    assert set(change.changed) == {"geoip.watch_s", "geoip.update_url", "geoip.update_interval_h"}
    assert change.needs_restart == ()
    moved = compare(old, parse(_geoip(database="/geo/Other.mmdb")))
    assert moved.needs_restart == ("geoip.database",)
