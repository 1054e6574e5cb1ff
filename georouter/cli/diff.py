"""``georouter check --diff OLD NEW``: what reloading NEW over OLD would change.

It prints the clusters added, removed, moved and re-addressed and the keys
changed (``config.diff``). When NEW (else OLD) names a shared Redis
(``[sessions] redis_url``), it also counts that Redis's session map
(``sessions.census``, bounded) and says how many sessions would move: those
pinned to removed clusters fail over on their next request, all others stay.
Given ``--edge URL``, it asks that running edge for its dry run
(``POST /v1/config/reload?dry_run=1``, the admin token from
``GEOROUTER_ADMIN_TOKEN``): the share of the edge's recent clients that its
file would send to another cluster, and, when no Redis could be counted here,
the edge's own census (an embedded Redis is the edge's alone).

The exit status is the diff's (0: a reload would apply NEW; 1: NEW is invalid
or needs a restart): a Redis or an edge that does not answer is said in one
line on stderr, and the rest is still printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from georouter.config import Config, ConfigChange, compare, load
from georouter.errors import ConfigError, StoreUnavailable, UsageError
from georouter.sessions.census import DEFAULT_BUDGET_S, DEFAULT_MAX_KEYS, census_at

# The edge's census has a 2 s budget of its own; this covers it and the exchange.
EDGE_TIMEOUT_S = 10.0
# How long a Redis may take to answer a PING before the census is given up.
REDIS_CONNECT_S = 1.0


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000_000:
        raise argparse.ArgumentTypeError(f"must be 1..10000000, not {text!r}")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``check`` command's options for a diff."""
    p.add_argument(
        "--diff",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="say what reloading NEW over OLD would change, and whether a reload can apply it",
    )
    p.add_argument(
        "--edge",
        metavar="URL",
        help="with --diff: ask this running edge (token: $GEOROUTER_ADMIN_TOKEN) for its dry"
        " run: the share of its recent clients its file would send to another cluster",
    )
    p.add_argument(
        "--census-keys",
        type=_count,
        default=DEFAULT_MAX_KEYS,
        metavar="N",
        help=f"with --diff: count at most N session keys in Redis (default {DEFAULT_MAX_KEYS})",
    )


def run(
    args: argparse.Namespace,
    *,
    load_new: Callable[[Path], tuple[Config, str]],
    report: Callable[[Path, ConfigError], int],
    admin_token: Callable[[], str | None],
) -> int:
    """``check --diff``. ``load_new`` reads NEW as ``check`` does (its GeoIP database
    and Redis URL too); ``report`` prints a ConfigError; ``admin_token`` reads it."""
    if args.diff is None:
        print("georouter: --edge: only with --diff OLD NEW", file=sys.stderr)
        return 2
    old_path, new_path = (Path(p) for p in args.diff)
    try:
        old = load(old_path)
    except ConfigError as exc:
        return report(old_path, exc)
    try:
        new, version = load_new(new_path)
    except ConfigError as exc:
        return report(new_path, exc)
    change = compare(old, new)
    _print_change(change)
    counted = _census_here(old, new, change, max_keys=args.census_keys)
    if args.edge:
        try:
            token = admin_token()
        except UsageError as exc:
            print(f"georouter: {exc}", file=sys.stderr)
            token = None
        _ask_edge(args.edge, token, version, new, change, census_shown=counted)
    if change.needs_restart:
        print(
            f"needs a restart: {', '.join(change.needs_restart)} (a reload refuses the whole file)",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_change(change: ConfigChange) -> None:
    for label, names in (
        ("clusters added", change.added),
        ("clusters removed (their sessions fail over)", change.removed),
        ("clusters moved (clients may now be nearer another)", change.moved),
        ("clusters re-addressed", change.readdressed),
        ("keys changed", change.changed),
    ):
        if names:
            print(f"{label}: {', '.join(names)}")
    if change.empty:
        print("no change")


def _census_here(old: Config, new: Config, change: ConfigChange, *, max_keys: int) -> bool:
    """Count the sessions in the Redis NEW (else OLD) names; whether a census was printed."""
    config = new if new.sessions.redis is not None else old
    target = config.sessions.redis
    if target is None:
        print("sessions: neither file names a shared Redis ([sessions] redis_url): not counted")
        return False
    try:
        census = asyncio.run(
            census_at(
                target,
                config.sessions,
                connect_timeout_s=REDIS_CONNECT_S,
                max_keys=max_keys,
                budget_s=DEFAULT_BUDGET_S,
            )
        )
    except StoreUnavailable as exc:
        print(
            f"sessions: Redis at {target.redacted} did not answer ({exc}): not counted",
            file=sys.stderr,
        )
        return False
    kept = {c.name for c in new.clusters}
    print_sessions(f"Redis at {target.redacted}", census.as_json(kept, change.removed), kept)
    return True


def print_sessions(where: str, found: Mapping[str, Any], kept: set[str] | None) -> None:
    """A census as ``Census.as_json`` (or an edge's dry run) says it; ``kept``: NEW's
    clusters (None: the census was measured against another file)."""
    seen = found["keys_seen"]
    if found["census"] == "complete":
        scope = f"every one of {seen} keys"
    else:
        why = "the key limit" if found["stopped_by"] == "key_limit" else "the time limit"
        scope = f"a sample: stopped at {why} after {seen} keys; the counts are of those"
    pinned: Mapping[str, int] = found["pinned"]
    print(
        f"sessions in {where}: {sum(pinned.values())} pinned"
        f" ({scope}; {found['ignored']} ignored: tombstones, aged out, not pins)"
    )
    width = max((len(name) for name in pinned), default=0)
    for name, n in pinned.items():
        fate = ""
        if kept is not None:
            fate = "stay" if name in kept else "move: its cluster is not in NEW (fail over)"
        print(f"  {name:<{width}}  {n:>8}  {fate}".rstrip())
    print(
        f"sessions that would move: {found['moving']} of {sum(pinned.values())}"
        " (pinned to removed clusters, each fails over on its next request;"
        " all others stay, on moved clusters too)"
    )
    if found["orphaned"]:
        print(
            f"  and {found['orphaned']} pinned to clusters neither file has"
            " (they fail over on their next request, whichever file runs)"
        )


def _ask_edge(
    url: str,
    token: str | None,
    version: str,
    new: Config,
    change: ConfigChange,
    *,
    census_shown: bool,
) -> None:
    where = url.rstrip("/")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.post(
            f"{where}/v1/config/reload",
            params={"dry_run": "1"},
            headers=headers,
            timeout=EDGE_TIMEOUT_S,
        )
        body = reply.json()
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        print(f"georouter: --edge {url}: no answer ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    if not isinstance(body, dict) or reply.status_code not in (200, 422):
        message = body.get("message", "") if isinstance(body, dict) else ""
        hint = " (set GEOROUTER_ADMIN_TOKEN)" if reply.status_code in (401, 403) else ""
        print(
            f"georouter: --edge {url}: HTTP {reply.status_code} {message}{hint}".rstrip(),
            file=sys.stderr,
        )
        return
    impact = body.get("impact")
    if body.get("result") != "ok" or not isinstance(impact, dict):
        problems = "; ".join(body.get("problems", []))
        print(
            f"edge {where}: its own file would not change it ({body.get('result')}"
            f"{': ' + problems if problems else ''}); nothing to measure"
        )
        return
    measured = impact["version"]
    if measured != version:
        # The edge dry-runs the file it reads; its numbers are for that one.
        print(f"edge {where}: measured its own file, version {measured}, not NEW ({version})")
    decisions = impact["decisions"]
    sampled, changed = decisions["sampled"], decisions["changed"]
    share = f" ({decisions['share']:.1%})" if sampled else ""
    moves = ", ".join(f"{m['from']} -> {m['to']} {m['count']}" for m in decisions["moves"])
    print(
        f"recent decisions on {where}: {changed} of {sampled} sampled{share} would start"
        f" a new session on another cluster{': ' + moves if moves else ''}"
    )
    sessions = impact.get("sessions")
    if census_shown or sessions is None:
        return
    if sessions.get("census") == "unavailable":
        print(f"sessions in the edge's Redis: not counted ({sessions.get('message')})")
        return
    kept = {c.name for c in new.clusters} if measured == version else None
    print_sessions(f"{where}'s Redis", sessions, kept)
