"""``georouter geodata``: install a fresh GeoIP database (``update``), describe one (``info``).

The work is the geoip layer's (``geoip.update``, ``geoip.info``); this module
reads the arguments, the configuration and the environment, draws the
progress bar on a terminal, and says in one line why an update failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as Bar

from georouter.config import Config, load
from georouter.errors import ConfigError, GeoDatabaseError, GeoUpdateError
from georouter.geoip.database import bundled_database
from georouter.geoip.download import Credentials, Progress, parse_sha256, shown
from georouter.geoip.info import describe
from georouter.geoip.update import UpdateRequest, update_database

ConfigPath = Callable[[str | None], Path]


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _report(path: Path, exc: ConfigError) -> int:
    print(f"georouter: {path}: invalid configuration", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def _sha256(text: str) -> str:
    try:
        return parse_sha256(text, "--sha256")
    except GeoUpdateError as exc:
        raise argparse.ArgumentTypeError("must be a SHA-256: 64 hex digits") from exc


@contextmanager
def _progress_bar() -> Iterator[Progress | None]:
    """A download bar on stderr when it is a terminal; nothing in a log or a pipe."""
    if not sys.stderr.isatty():
        yield None
        return
    with Bar(
        TextColumn("downloading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("download", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def cmd_update(args: argparse.Namespace, config_path: ConfigPath) -> int:
    url, dest, sha256_url = args.url, args.dest, args.sha256_url
    if url is None or dest is None:
        path = config_path(args.config)
        try:
            geoip = load(path).geoip
        except ConfigError as exc:
            return _report(path, exc)
        url = url or geoip.update_url
        sha256_url = sha256_url or (None if args.url else geoip.update_sha256_url)
        dest = dest or geoip.database
        if url is None:
            print(
                f"georouter: --url: not given, and {path} sets no [geoip] update_url",
                file=sys.stderr,
            )
            return 2
        if dest is None:
            print(
                f"georouter: --dest: not given, and {path} sets no [geoip] database"
                " (the bundled snapshot is never overwritten)",
                file=sys.stderr,
            )
            return 2
    dest = Path(dest)
    try:
        credentials = Credentials.from_env(os.environ)
    except GeoUpdateError as exc:
        print(f"georouter: {exc}", file=sys.stderr)
        return 2
    request = UpdateRequest(url, dest, args.sha256, sha256_url, credentials)
    try:
        with _progress_bar() as progress:
            result = asyncio.run(update_database(request, progress=progress))
    except GeoDatabaseError as exc:
        kept = f"{dest} left as it was" if dest.exists() else "nothing installed"
        print(f"georouter: geodata update: {_line(exc)}; {kept}", file=sys.stderr)
        return 1
    db = result.database
    built = time.strftime("%Y-%m-%d", time.gmtime(db.build_epoch))
    what = f"{db.database_type} built {built} ({result.packing}, {result.download_bytes:,} bytes)"
    if result.installed:
        print(f"installed {what} at {result.dest}")
    else:
        print(f"{result.dest} is already {what} from {shown(url)}; left as it is")
    return 0


def _info_target(args: argparse.Namespace, config_path: ConfigPath) -> tuple[Path, bool, int]:
    """The file ``info`` describes, whether it is the bundled one, and the age limit."""
    if args.path:
        return Path(args.path), False, 30
    path = config_path(args.config)
    config: Config | None = None
    if args.config or os.environ.get("GEOROUTER_CONFIG") or path.exists():
        config = load(path)
    if config is None or config.geoip.database is None:
        limit = 30 if config is None else config.geoip.max_age_days
        return bundled_database(), True, limit
    return config.geoip.database, False, config.geoip.max_age_days


def cmd_info(args: argparse.Namespace, config_path: ConfigPath) -> int:
    try:
        path, bundled, max_age_days = _info_target(args, config_path)
    except ConfigError as exc:
        return _report(config_path(args.config), exc)
    try:
        found = describe(path, now=time.time(), max_age_days=max_age_days, bundled=bundled)
    except GeoDatabaseError as exc:
        print(f"georouter: geodata info: {_line(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found.as_json(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(found.lines()))
    return 0 if found.unusable is None else 1


def register(sub: Any, *, config_path: ConfigPath, config_help: str) -> None:
    """Add ``geodata update`` and ``geodata info`` to the command's subparsers."""
    geodata = sub.add_parser("geodata", help="install a fresh GeoIP database, or describe one")
    actions = geodata.add_subparsers(dest="geodata_command", required=True, metavar="ACTION")

    p = actions.add_parser(
        "update",
        help="download a database (.mmdb, .mmdb.gz or .tar.gz), verify it, install it by rename",
        description="MaxMind's account id and license key are read from MAXMIND_ACCOUNT_ID"
        " and MAXMIND_LICENSE_KEY.",
    )
    p.add_argument("--url", help="where to download from (default: [geoip] update_url)")
    p.add_argument("--sha256", type=_sha256, metavar="HEX", help="the download's SHA-256")
    p.add_argument(
        "--sha256-url",
        metavar="URL",
        help="a file naming the download's SHA-256 (MaxMind: ...?suffix=tar.gz.sha256)",
    )
    p.add_argument("--dest", metavar="PATH", help="the file to install (default: [geoip] database)")
    p.add_argument("--config", metavar="PATH", help=config_help)
    p.set_defaults(func=lambda args: cmd_update(args, config_path))

    p = actions.add_parser("info", help="type, build date, age, IP versions and size of a database")
    p.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="default: [geoip] database, else the bundled GeoLite2 snapshot",
    )
    p.add_argument("--config", metavar="PATH", help=config_help)
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=lambda args: cmd_info(args, config_path))
