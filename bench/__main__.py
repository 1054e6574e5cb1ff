"""georouter's benchmark: ``python -m bench`` (see README.md, "Benchmark").

Every figure is a ratio against a baseline measured in the same run, on this
machine, with everything started here on loopback and stopped at the end:

- decision: a full routing decision vs a raw maxminddb lookup; a sticky
  decision vs one bare Redis round trip (near cache off and on);
- api: GET /v1/route (no session, new session, sticky session) vs the same
  server's trivial endpoint, for Hypercorn and Uvicorn, one worker on one core,
  wrk on the other core;
- workers: 2 worker processes vs 1;
- scale: sticky requests with 10k and 1M pins in Redis, near cache on and off;
- peer: nginx + ngx_http_geoip2_module answering the same question from the
  same database, one worker on the same core;
- proxy: proxy mode: a proxied GET against the same request straight to the
  stand-in cluster (added p50, p99), the proxied rate against nginx proxy_pass to the
  same stand-in, and the edge's peak RSS while streaming 1 GiB each way (bench/proxy.py).

Results go to bench/out/results.json and a table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.inproc import decision_cost, sticky_cost
from bench.lab import Lab, nginx_peer, sample_addresses
from bench.load import Result, median_result, run_wrk
from bench.proxy import section_proxy
from bench.proxyreport import proxy_report
from georouter.config import load
from georouter.core.clientip import parse_address
from georouter.geoip.database import GeoDatabase
from georouter.metrics import Metrics
from georouter.router import AssumeAllUp, Router
from georouter.runtime import Runtime
from tests.harness import REPO
from tests.procfs import tree_cpu_seconds

OUT = REPO / "bench" / "out"
SECTIONS = ("decision", "api", "workers", "scale", "peer", "proxy")


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in (
        "starlette",
        "hypercorn",
        "uvicorn",
        "httptools",
        "uvloop",
        "redis",
        "hiredis",
        "maxminddb",
        "orjson",
        "httpx",
    ):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "missing"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "packages": packages,
        "redis_server": _version(["redis-server", "--version"]),
        "nginx": _version(["nginx", "-v"]),
        "wrk": _version(["wrk", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


class Runner:
    def __init__(self, lab: Lab, ips_file: Path, *, duration_s: float, rounds: int) -> None:
        self.lab = lab
        self.ips_file = ips_file
        self.duration_s = duration_s
        self.rounds = rounds
        self._runs = 0

    def measure(self, url: str, modes: list[str], **options: Any) -> dict[str, Result]:
        """Each mode ``rounds`` times, interleaved, so drift on a shared machine hits all alike.

        One unrecorded run of each mode first: the figures are of a warm edge
        (GeoIP networks and cluster orders cached, sessions in the near cache).
        """
        found: dict[str, list[Result]] = collections.defaultdict(list)
        for mode in modes:
            self._runs += 1
            run_wrk(
                url,
                mode=mode,
                ips_file=self.ips_file,
                script=self.lab.workdir / "bench.lua",
                duration_s=min(self.duration_s, 3.0),
                run_id=f"warm{self._runs}",
                **options,
            )
        for _ in range(self.rounds):
            for mode in modes:
                self._runs += 1
                found[mode].append(
                    run_wrk(
                        url,
                        mode=mode,
                        ips_file=self.ips_file,
                        script=self.lab.workdir / "bench.lua",
                        duration_s=self.duration_s,
                        run_id=str(self._runs),
                        **options,
                    )
                )
        return {mode: median_result(results) for mode, results in found.items()}


def _ratios(results: dict[str, Result], base: str = "trivial") -> dict[str, float]:
    return {
        f"{m}_over_{base}": round(r.rps / results[base].rps, 3)
        for m, r in results.items()
        if m != base
    }


def section_api(run: Runner, clusters: list[str]) -> dict[str, Any]:
    run.lab.preload_sessions(10_000, clusters=clusters)
    out: dict[str, Any] = {}
    for server in ("hypercorn", "uvicorn"):
        with run.lab.edge(server=server) as edge:
            results = run.measure(edge.url, ["trivial", "route", "new", "sticky"])
        out[server] = {m: r.as_json() for m, r in results.items()} | {"ratios": _ratios(results)}
        print(
            f"  api {server}: " + ", ".join(f"{m} {r.rps:,.0f}/s" for m, r in results.items()),
            flush=True,
        )
    return out


def section_workers(run: Runner) -> dict[str, Any]:
    """2 workers vs 1. On a 2-core machine wrk needs part of the second core, so the
    rate per CPU-second the server used is reported too: with linear scaling it
    stays the same, and the rate grows with the CPU the workers can get."""
    out: dict[str, Any] = {}
    for server in ("hypercorn", "uvicorn"):
        per: dict[str, dict[str, Any]] = {}
        for workers, cpus in ((1, "0"), (2, "0,1")):
            with run.lab.edge(server=server, workers=workers, cpus=cpus) as edge:
                before, started = tree_cpu_seconds(edge.process.pid), time.monotonic()
                result = run.measure(edge.url, ["route"])["route"]
                cpu = tree_cpu_seconds(edge.process.pid) - before
                wall = time.monotonic() - started
            per[f"{workers}w"] = result.as_json() | {
                "server_cores_used": round(cpu / wall, 2),
                "rps_per_server_core": round(result.rps / (cpu / wall), 1),
            }
        one, two = per["1w"], per["2w"]
        out[server] = per | {
            "two_over_one": round(two["rps"] / one["rps"], 3),
            "per_core_two_over_one": round(
                two["rps_per_server_core"] / one["rps_per_server_core"], 3
            ),
        }
        print(
            f"  workers {server}: 2/1 = {out[server]['two_over_one']}, per server core"
            f" {out[server]['per_core_two_over_one']}",
            flush=True,
        )
    return out


def section_scale(run: Runner, clusters: list[str], *, big: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in (10_000, big):
        run.lab.preload_sessions(count, clusters=clusters)
        memory = run.lab.redis_memory()
        entry: dict[str, Any] = {"redis_used_memory_bytes": memory}
        for near in (30.0, 0.0):
            with run.lab.edge(server="uvicorn", near_cache_s=near) as edge:
                result = run.measure(edge.url, ["sticky"], sessions=count)["sticky"]
            entry["near_cache_on" if near else "near_cache_off"] = result.as_json()
        out[f"{count}_pins"] = entry
        print(f"  scale {count:,} pins: " + json.dumps(entry), flush=True)
    return out


def country_map(ips: list[str]) -> tuple[dict[str, str], str]:
    """For nginx: each country's most frequent cluster among georouter's own decisions."""
    config = load(REPO / "clusters.toml")
    geo = GeoDatabase(None, cache_networks=65536, max_age_days=30, now=time.time())
    router = Router(Runtime.of(config), locator=geo, health=AssumeAllUp(), metrics=Metrics())
    votes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for ip in ips:
        decision = router.decide(parse_address(ip))
        if decision.location and decision.location.country and decision.cluster:
            votes[decision.location.country][decision.cluster.name] += 1
    geo.close()
    return ({cc: c.most_common(1)[0][0] for cc, c in votes.items()}, config.router.fallback)


def section_peer(run: Runner, ips: list[str], api: dict[str, Any] | None) -> dict[str, Any]:
    mapping, fallback = country_map(ips)
    with nginx_peer(run.lab.workdir, mapping, fallback) as url:
        nginx = run.measure(url, ["trivial", "route"])
    out: dict[str, Any] = {"nginx": {m: r.as_json() for m, r in nginx.items()}}
    if api:
        for server, results in api.items():
            out[f"{server}_route_over_nginx_route"] = round(
                results["route"]["rps"] / nginx["route"].rps, 4
            )
    print(f"  peer nginx: route {nginx['route'].rps:,.0f}/s", flush=True)
    return out


def _of_nginx(results: dict[str, Any], rps: float) -> str:
    """A rate as a fraction of nginx+geoip2's routing rate in the same run."""
    peer = results.get("peer")
    if not peer:
        return "n/a"
    return f"{rps / peer['nginx']['route']['rps']:.1%}"


def write_report(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Last run: {m['date']}, `python -m bench` ({results['settings']}).",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}; {m['redis_server']};"
        f" {m['nginx']}; {m['wrk']}.",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        "",
        "Every figure is a ratio against a baseline measured in the same run (medians of"
        " interleaved rounds). Absolute rates are shown for reference only: this machine is"
        " shared and noisy.",
        "",
    ]
    d = results.get("decision")
    if d:
        lines += [
            "## Decision cost, in process",
            "",
            "| measure | µs | ratio | target |",
            "|---|---|---|---|",
            f"| raw maxminddb lookup (baseline) | {d['raw_maxminddb_us']} | 1 | |",
            f"| full decision, no Redis | {d['decision_us']} | {d['decision_over_raw']} | ≤ 1.5 |",
            f"| full decision, first pass (cold caches) | {d['decision_first_pass_us']} | | |",
            f"| full decision with rules, overrides, bias and weights |"
            f" {d['policy_decision_us']} | {d['policy_over_raw']} | ≤ 1.5 |",
            "| ... and one cluster down, two spilling, one ramping, failover spread, panic_below"
            f" | {d.get('failure_policy_decision_us', '-')}"
            f" | {d.get('failure_policy_over_raw', '-')} | ≤ 1.5 |",
            f"| bare Redis GETEX round trip (baseline) | {d['bare_redis_getex_us']} | 1 | |",
            f"| sticky decision, near cache off | {d['sticky_decision_us']} |"
            f" {d['sticky_over_round_trip']} | |",
            f"| sticky decision, near cache on | {d['sticky_decision_near_cache_us']} |"
            f" {d['sticky_near_cache_over_round_trip']} | |",
            "",
        ]
    a = results.get("api")
    if a:
        lines += [
            "## API throughput (one worker on one core; wrk on the other)",
            "",
            "| server | endpoint | req/s | p50 ms | p99 ms | errors | ratio to trivial"
            " | of nginx's rate |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for server, r in a.items():
            for mode in ("trivial", "route", "new", "sticky"):
                ratio = 1 if mode == "trivial" else r["ratios"][f"{mode}_over_trivial"]
                label = {
                    "trivial": "GET /healthz (baseline)",
                    "route": "GET /v1/route, no session",
                    "new": "GET /v1/route, new session",
                    "sticky": "GET /v1/route, sticky (10k sessions)",
                }[mode]
                lines.append(
                    f"| {server} | {label} | {r[mode]['rps']:,.0f} | {r[mode]['p50_ms']}"
                    f" | {r[mode]['p99_ms']} | {r[mode]['errors']} | {ratio}"
                    f" | {_of_nginx(results, r[mode]['rps'])} |"
                )
        lines += ["", "Target: sticky ≥ 0.85 of trivial.", ""]
    w = results.get("workers")
    if w:
        lines += [
            "## Workers (GET /v1/route, no session)",
            "",
            "| server | 1 worker req/s | 2 workers req/s | ratio | server cores used (1 / 2)"
            " | req/s per server core (1 / 2) | per-core ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for server, r in w.items():
            lines.append(
                f"| {server} | {r['1w']['rps']:,.0f} | {r['2w']['rps']:,.0f} | {r['two_over_one']}"
                f" | {r['1w']['server_cores_used']} / {r['2w']['server_cores_used']}"
                f" | {r['1w']['rps_per_server_core']:,.0f} / {r['2w']['rps_per_server_core']:,.0f}"
                f" | {r['per_core_two_over_one']} |"
            )
        lines.append("")
        lines.append(
            "Of nginx's routing rate (one nginx worker): "
            + ", ".join(
                f"{server} 1 worker {_of_nginx(results, r['1w']['rps'])},"
                f" 2 workers {_of_nginx(results, r['2w']['rps'])}"
                for server, r in w.items()
            )
            + "."
        )
        lines += [
            "",
            "Target: 2 workers ≥ 1.8 x 1 worker. wrk runs on the second core, so two workers"
            " cannot have two whole cores on this machine; the per-core ratio shows whether each"
            " worker keeps the single worker's rate.",
            "",
        ]
    s = results.get("scale")
    if s:
        lines += [
            "## Sessions at scale (uvicorn, sticky requests over all pinned sessions)",
            "",
            "| pins in Redis | Redis memory | near cache on req/s | near cache off req/s"
            " | near cache on, of nginx's rate |",
            "|---|---|---|---|---|",
        ]
        for key, r in s.items():
            lines.append(
                f"| {key.split('_')[0]} | {r['redis_used_memory_bytes'] / 1e6:,.1f} MB |"
                f" {r['near_cache_on']['rps']:,.0f} | {r['near_cache_off']['rps']:,.0f} |"
                f" {_of_nginx(results, r['near_cache_on']['rps'])} |"
            )
        lines.append("")
    p = results.get("peer")
    if p:
        lines += [
            "## Peer: nginx + ngx_http_geoip2_module (one worker, same core)",
            "",
            f"nginx answers {p['nginx']['route']['rps']:,.0f} routing questions/s"
            f" (trivial: {p['nginx']['trivial']['rps']:,.0f}/s).",
            "",
        ]
        for key, value in p.items():
            if key.endswith("_over_nginx_route"):
                lines.append(
                    f"- {key.split('_')[0]}: georouter's GET /v1/route rate is"
                    f" **{value:.1%}** of nginx's (aim: 20% with the fastest server)"
                )
        lines.append("")
    if results.get("proxy"):
        lines += proxy_report(results["proxy"])
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--big", type=int, default=1_000_000, help="pins for the large map (1M)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s, 100k pins")
    parser.add_argument(
        "--report",
        type=Path,
        help="the table (default: bench/RESULTS.md for a full run, bench/out/ for --only)",
    )
    parser.add_argument(
        "--rewrite", action="store_true", help="only rewrite the report from the run's JSON"
    )
    parser.add_argument(
        "--edge-tree",
        type=Path,
        help="proxy: run the edges from this copy of the source (an A/B of a change)",
    )
    args = parser.parse_args(argv)
    sections = args.only or list(SECTIONS)
    # A partial run keeps its figures apart: a full run's results.json stays whole.
    saved = OUT / ("results.json" if not args.only else f"results-{'-'.join(sections)}.json")
    if args.report is None:
        args.report = REPO / "bench" / "RESULTS.md" if not args.only else saved.with_suffix(".md")
    if args.rewrite:
        write_report(json.loads(saved.read_text()), args.report)
        return 0
    if args.quick:
        args.duration, args.rounds, args.big = 2.0, 1, 100_000
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "settings": f"{args.rounds} rounds x {args.duration:g} s, sections: {' '.join(sections)}",
    }
    ips = sample_addresses(10_000)
    ips_file = OUT / "ips.txt"
    ips_file.write_text("\n".join(ips) + "\n")
    with tempfile.TemporaryDirectory(prefix="georouter-bench-") as tmp:
        lab = Lab.open(Path(tmp))
        try:
            run = Runner(lab, ips_file, duration_s=args.duration, rounds=args.rounds)
            clusters = list(lab.standins)
            if "decision" in sections:
                print("decision cost, in process", flush=True)
                results["decision"] = decision_cost(ips) | sticky_cost(ips, lab.redis.url)
                print("  " + json.dumps(results["decision"]), flush=True)
            if "api" in sections:
                print("API throughput", flush=True)
                results["api"] = section_api(run, clusters)
            if "workers" in sections:
                print("workers", flush=True)
                results["workers"] = section_workers(run)
            if "scale" in sections:
                print("sessions at scale", flush=True)
                results["scale"] = section_scale(run, clusters, big=args.big)
            if "peer" in sections:
                print("peer", flush=True)
                results["peer"] = section_peer(run, ips, results.get("api"))
            if "proxy" in sections:
                print("proxy mode", flush=True)
                results["proxy"] = section_proxy(
                    lab, ips_file, duration_s=args.duration, rounds=args.rounds,
                    tree=args.edge_tree,
                )  # fmt: skip
        finally:
            lab.close()
    saved.write_text(json.dumps(results, indent=2))
    write_report(results, args.report)
    print(f"wrote {saved} and {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
