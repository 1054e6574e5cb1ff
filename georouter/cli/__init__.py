"""The ``georouter`` command: check, serve, route, demo; the other commands' parts
in this package (diff, explain, geodata, standin)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import importlib.util
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from georouter import __version__
from georouter.cli import diff as cli_diff
from georouter.cli import explain as cli_explain
from georouter.cli import geodata as cli_geodata
from georouter.cli import standin as cli_standin
from georouter.cli.argtypes import drain_seconds, workers_count
from georouter.config import Config, RouterMode, load, load_version
from georouter.config.redisurl import RedisMode, RedisTarget
from georouter.demo import run as demo
from georouter.errors import ConfigError, EmbeddedRedisError, ListenError, Problem, UsageError
from georouter.geoip.database import DatabaseInfo, GeoDatabase
from georouter.geoip.verify import verify_configured
from georouter.http.accesslog import AccessLogFormat
from georouter.http.reload import ConfigFile, file_stamp
from georouter.metrics import Metrics
from georouter.router import Router
from georouter.runtime import Runtime
from georouter.serve.server import (
    ListenAddress,
    ServerKind,
    configure_logging,
    url_of,
)
from georouter.serve.supervisor import EdgeOptions, Supervisor, serve_edge
from georouter.sessions import keyfile
from georouter.sessions.clients import check_target
from georouter.sessions.embedded import EmbeddedRedis
from georouter.sessions.ids import CookieSigner

log = logging.getLogger("georouter")

DEFAULT_CONFIG = "clusters.toml"
DEFAULT_LISTEN = "127.0.0.1:8080"


def _config_path(value: str | None) -> Path:
    return Path(value or os.environ.get("GEOROUTER_CONFIG") or DEFAULT_CONFIG)


def open_database(config: Config) -> GeoDatabase:
    return GeoDatabase.configured(config.geoip, now=time.time())


class Checked(NamedTuple):
    config: Config
    database: DatabaseInfo
    # The file's version (``config.load_version``): what a reload compares against.
    version: str


def load_checked(path: Path) -> Checked:
    """Load the config and prove that its GeoIP database opens and its Redis URL is
    usable; with the database's description and the file's version."""
    config, version = load_version(path)
    db = open_database(config)
    info = db.info
    db.close()
    # The careful read too: geoip2's typed reader answers sample lookups.
    verify_configured(config.geoip)
    if config.sessions.redis is not None:
        try:
            check_target(config.sessions.redis)
        except ValueError as exc:
            raise ConfigError([Problem("sessions.redis_url", str(exc))]) from exc
    return Checked(config, info, version)


def _report(path: Path, exc: ConfigError) -> int:
    print(f"georouter: {path}: invalid configuration", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    if args.diff or args.edge:
        return cli_diff.run(
            args,
            load_new=lambda p: load_checked(p)[::2],
            report=_report,
            admin_token=lambda: _env_secrets()[0],
        )
    path = _config_path(args.config)
    try:
        config, info, _ = load_checked(path)
    except ConfigError as exc:
        return _report(path, exc)
    policy = "".join(
        f", {len(table)} {noun}{'s' if len(table) != 1 else ''}"
        for table, noun in ((config.rules, "rule"), (config.overrides, "override"))
        if table
    )
    print(f"{path}: ok: {len(config.clusters)} clusters, fallback {config.router.fallback}{policy}")
    built = time.strftime("%Y-%m-%d", time.gmtime(info.build_epoch))
    print(f"GeoIP: {info.database_type} built {built} ({info.path})")
    _warn_if_stale(info)
    return 0


def _warn_if_stale(info: DatabaseInfo) -> None:
    # On stderr, as every warning: stdout is the command's answer.
    if info.stale:
        print(
            f"warning: the GeoIP database is {info.age_days:.0f} days old;"
            " install a current GeoIP2/GeoLite2 City database for accurate locations",
            file=sys.stderr,
        )


def _env_secrets() -> tuple[str | None, CookieSigner | None]:
    token = os.environ.get("GEOROUTER_ADMIN_TOKEN") or None
    if token is not None and len(token) < 16:
        raise UsageError("GEOROUTER_ADMIN_TOKEN: must be at least 16 characters")
    keys = os.environ.get("GEOROUTER_SESSION_KEYS")
    signer = None
    if keys:
        try:
            signer = CookieSigner.from_env_value(keys)
        except ValueError as exc:
            raise UsageError(f"GEOROUTER_SESSION_KEYS: {exc}") from exc
    return token, signer


def _own_signer(config: Config) -> CookieSigner | None:
    """Proxy and redirect modes issue cookies: without keys, sign with a key of our own."""
    if config.router.mode is RouterMode.API:
        return None
    try:
        key = keyfile.load_or_create(config.sessions.state_dir)
    except (OSError, ValueError) as exc:
        raise UsageError(f"sessions.state_dir: cannot keep a session key: {exc}") from exc
    log.warning(
        "session cookies signed with this edge's own key (%s): edges that share sessions"
        " need the same GEOROUTER_SESSION_KEYS",
        config.sessions.state_dir / keyfile.KEY_FILE,
    )
    return CookieSigner((key,))


@contextmanager
def session_backend(config: Config, *, state_dir: Path | None = None) -> Iterator[Config]:
    """``config`` with a Redis to use: its own, or a private embedded redis-server."""
    if config.sessions.redis is not None:
        yield config
        return
    embedded = EmbeddedRedis(state_dir or config.sessions.state_dir)
    url = embedded.start()
    log.info("embedded redis-server at %s (state in %s)", url, embedded.state_dir)
    try:
        target = RedisTarget(mode=RedisMode.STANDALONE, url=url)
        yield dataclasses.replace(
            config, sessions=dataclasses.replace(config.sessions, redis=target)
        )
    finally:
        embedded.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    path = _config_path(args.config)
    stamp = file_stamp(path)
    try:
        checked = load_checked(path)
    except ConfigError as exc:
        return _report(path, exc)
    config = checked.config
    config_file = ConfigFile(path, checked.version, config, stamp)
    access_log = (
        AccessLogFormat(args.access_log) if args.access_log else AccessLogFormat.default(sys.stdout)
    )
    try:
        admin_token, signer = _env_secrets()
        signer = signer or _own_signer(config)
        sock = ListenAddress.parse(args.listen).bind(reuse_port=args.workers > 1)
        admin_sock = _admin_socket(args, config)
    except ListenError as exc:
        print(f"georouter: --listen: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"georouter: {exc}", file=sys.stderr)
        return 2
    kind = ServerKind(args.server)
    if kind is ServerKind.UVICORN and importlib.util.find_spec("uvicorn") is None:
        print(
            "georouter: --server uvicorn: uvicorn is not installed"
            " (pip install 'georouter[uvicorn]')",
            file=sys.stderr,
        )
        return 2
    log.info("serving %d clusters from %s with %s", len(config.clusters), path, kind.value)
    url = url_of(sock)
    # Read now: the server takes the sockets over (and their descriptors) as it starts.
    admin_url = None if admin_sock is None else url_of(admin_sock)

    def announce() -> None:
        # Printed whatever the log level, once the edge can answer (its Redis and its
        # app started; the socket already queues connections): scripts wait for it.
        # One write per line: print writes the newline apart; a worker's line could come between.
        sys.stderr.write(f"georouter: listening on {url}\n")
        if admin_url is not None:
            sys.stderr.write(f"georouter: admin endpoints on {admin_url}\n")
        sys.stderr.flush()

    try:
        with session_backend(config) as ready:
            options = EdgeOptions(
                kind=kind,
                admin_token=admin_token,
                signer=signer,
                drain_s=args.drain_s,
                access_log=access_log,
                edge_id=os.environ.get("GEOROUTER_EDGE_ID") or None,
            )
            if args.workers > 1:
                return Supervisor(
                    ready,
                    sock,
                    options,
                    workers=args.workers,
                    config_file=config_file,
                    on_started=announce,
                    admin_sock=admin_sock,
                ).run()
            serve_edge(
                ready,
                sock,
                options,
                config_file=config_file,
                on_started=announce,
                admin_sock=admin_sock,
            )
    except EmbeddedRedisError as exc:
        print(f"georouter: sessions: {exc}", file=sys.stderr)
        return 1
    return 0


def _admin_socket(args: argparse.Namespace, config: Config) -> socket.socket | None:
    """The admin listener of ``--admin-listen`` (else ``[router] admin_listen``), if any."""
    text = args.admin_listen or config.router.admin_listen
    if text is None:
        return None
    if config.router.mode is RouterMode.API:
        raise UsageError('--admin-listen: only in proxy and redirect modes (mode = "api" here)')
    try:
        return ListenAddress.parse(text).bind(reuse_port=args.workers > 1)
    except ListenError as exc:
        raise UsageError(f"--admin-listen: {exc}") from exc


def cmd_route(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    try:
        config = load(path)
        health = cli_explain.what_if(config, args.set)
        db = open_database(config)
    except ConfigError as exc:
        return _report(path, exc)
    try:
        runtime = Runtime.of(config)
        router = Router(
            runtime, locator=db, health=health, metrics=Metrics(), admissions=health.admissions
        )
        decisions = [
            router.decide(ip, new_session=args.session, tenant=args.tenant).as_json(
                explain=args.explain
            )
            for ip in args.addresses
        ]
        _warn_if_stale(db.info)
    finally:
        db.close()
    if args.json:
        out: object = decisions[0] if len(decisions) == 1 else {"decisions": decisions}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(demo.format_table(decisions, {}))
        if args.explain:
            for d in decisions:
                print(cli_explain.explain_text(d))
    return 0


def _demo_config_path(value: str | None) -> Path:
    """The demo's config: as for the other commands, else (outside a checkout) the
    example that ships inside the package, so the embedded defaults just work."""
    path = _config_path(value)
    if value or os.environ.get("GEOROUTER_CONFIG") or path.exists():
        return path
    shipped = Path(str(importlib.resources.files("georouter.demo") / "clusters.toml"))
    print(f"georouter: no ./{DEFAULT_CONFIG} here; using the example {shipped}", file=sys.stderr)
    return shipped


def cmd_demo(args: argparse.Namespace) -> int:
    configure_logging("warning")
    path = _demo_config_path(args.config)
    try:
        config = load_checked(path).config
    except ConfigError as exc:
        return _report(path, exc)
    try:
        sock = ListenAddress.parse(args.listen).bind()
    except ListenError as exc:
        print(
            f"georouter: --listen: {exc} (try --listen 127.0.0.1:0 for any free port)",
            file=sys.stderr,
        )
        return 2
    try:
        with (
            tempfile.TemporaryDirectory(prefix="georouter-demo-") as state,
            session_backend(config, state_dir=Path(state)) as ready,
        ):
            return demo.main(ready, sock, once=args.once)
    except EmbeddedRedisError as exc:
        print(f"georouter: sessions: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="georouter", description="Geo-aware multi-cluster HTTP request router."
    )
    parser.add_argument("--version", action="version", version=f"georouter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"clusters file (default: $GEOROUTER_CONFIG, else ./{DEFAULT_CONFIG})"

    p = sub.add_parser("check", help="validate a configuration and its GeoIP database")
    p.add_argument("--config", metavar="PATH", help=config_help)
    cli_diff.add_arguments(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("serve", help="run an edge")
    p.add_argument("--config", metavar="PATH", help=config_help)
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=DEFAULT_LISTEN,
        help=f"address to serve on (default {DEFAULT_LISTEN}; port 0: any free port)",
    )
    p.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help="proxy and redirect modes: the router's own endpoints on this address alone"
        " (default [router] admin_listen; unset: under [router] api_prefix)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--access-log",
        choices=[f.value for f in AccessLogFormat],
        help="one line per request on stdout (default: json, or text on a terminal)",
    )
    p.add_argument(
        "--drain-s",
        type=drain_seconds,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, keep serving this long with /readyz answering 503 before"
        " stopping (default 0: stop at once)",
    )
    p.add_argument(
        "--workers",
        type=workers_count,
        default=1,
        metavar="N",
        help="worker processes sharing the socket (default 1); one prober for all",
    )
    p.add_argument(
        "--server",
        choices=[k.value for k in ServerKind],
        default="hypercorn",
        help="ASGI server (default hypercorn; uvicorn needs the uvicorn extra)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "route", help="decide offline where clients go (clusters taken as up unless --set)"
    )
    p.add_argument("--config", metavar="PATH", help=config_help)
    cli_explain.add_arguments(p)
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("demo", help="run stand-in clusters and an edge, and show it routing")
    p.add_argument("--config", metavar="PATH", help=config_help)
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=DEFAULT_LISTEN,
        help=f"address of the demo edge (default {DEFAULT_LISTEN})",
    )
    p.add_argument("--once", action="store_true", help="print the table and exit")
    p.set_defaults(func=cmd_demo)
    cli_standin.register(sub)
    cli_geodata.register(sub, config_path=_config_path, config_help=config_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("check", "route"):
        # check prints its own warnings; route shows the log's once, briefly.
        configure_logging("error" if args.command == "check" else "warning", brief=True)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # `georouter route ... | head`: the reader left; that is not an error.
        sys.stderr.close()
        code = 0
    return code


if __name__ == "__main__":
    sys.exit(main())
