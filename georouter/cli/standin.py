"""``georouter standin NAME``: one stand-in cluster as a process of its own.

The stand-in that ``georouter demo`` runs in-process, exposed as a command so
that a Compose file or a Kubernetes manifest can run stand-in clusters from the
georouter image with nothing but a command line. It answers every request with
JSON naming the cluster (and an ``x-cluster`` header), its health path with 200,
and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from georouter.config import HealthSettings
from georouter.config.values import Invalid, cluster_name
from georouter.demo.standin import StandIn
from georouter.errors import ListenError
from georouter.serve.server import ListenAddress

# Any free port (printed): a stand-in is usually given --listen by whatever runs it.
DEFAULT_STANDIN_LISTEN = "127.0.0.1:0"


def _name(text: str) -> str:
    checked = cluster_name(text)
    if isinstance(checked, Invalid):
        raise argparse.ArgumentTypeError(str(checked))
    return checked


def _listen(text: str) -> ListenAddress:
    try:
        return ListenAddress.parse(text)
    except ListenError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _health_path(text: str) -> str:
    if not text.startswith("/") or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError(f"must be a path starting with '/', not {text!r}")
    return text


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``standin`` to the ``georouter`` command's subcommands."""
    p = subparsers.add_parser(
        "standin", help="run one stand-in cluster: an HTTP server that answers as cluster NAME"
    )
    p.add_argument("name", type=_name, metavar="NAME", help="the cluster it answers as")
    p.add_argument(
        "--listen",
        type=_listen,
        default=_listen(DEFAULT_STANDIN_LISTEN),
        metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_STANDIN_LISTEN}: any free port, printed)",
    )
    p.add_argument(
        "--health-path",
        type=_health_path,
        default=HealthSettings().path,
        metavar="PATH",
        help=f"answered 200 as the cluster's health (default {HealthSettings().path},"
        " the default [health] path)",
    )
    p.set_defaults(func=cmd_standin)


def cmd_standin(args: argparse.Namespace) -> int:
    address: ListenAddress = args.listen
    standin = StandIn(args.name, host=address.host, port=address.port, health_path=args.health_path)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    # Handlers, not the default action: as PID 1 in a container a signal with the
    # default action is ignored, and `docker stop` would wait for its SIGKILL.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            standin.start()
        except OSError as exc:
            print(
                f"georouter: --listen: cannot listen on {address.host}:{address.port}:"
                f" {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
        print(
            f"georouter: standin {standin.name} listening on {standin.url}",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    finally:
        standin.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
