"""The proxy slot: georouter in proxy mode against the same request straight to the
stand-in cluster, and against nginx ``proxy_pass`` to the same stand-in.

    .venv/bin/python -m bench --only proxy --report bench/out/proxy.md

Cores: every proxy (georouter's edge, one worker; nginx, one worker) on core 0; the
stand-in (nginx, one worker, a static answer) and wrk on core 1. The request is what a
returning browser sends: ``GET /app/items/42?view=full`` with a signed session cookie
drawn from 10k sessions pinned in Redis (a sticky decision, near cache on), so the
edge's figure is that of its steady state, not of a client's first request.

- latency: one connection (wrk -c1), so a figure is one request's time through the
  proxy, not a queue's; the edge's cost is its p50 and p99 minus the direct ones.
- throughput: 32 connections; each proxy's rate, as a share of nginx ``proxy_pass``'s,
  with the busy share of each core during the run (what limited it).
- streaming: 1 GiB down and 1 GiB up through the edge (curl, byte-exact: the download's
  SHA-256 and the upload's as the application saw it), the edge's VmHWM against its
  VmRSS before, read from /proc with the peak reset first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lab import Lab
from bench.load import Result, run_wrk
from bench.profile import OUT, start_sampler, top
from bench.proxylab import (
    GIB,
    edge_config,
    nginx_proxy,
    proxy_edge,
    session_cookies,
    standin_cluster,
)
from georouter.config import load
from tests.harness import REPO, config_text
from tests.procfs import tree_cpu_seconds
from tests.upstream import Upstream, pattern_bytes

SERVERS = ("hypercorn", "uvicorn")
PATH = "/app/items/42?view=full"
SESSIONS = 10_000
MIB = 1 << 20


def core_times() -> list[tuple[float, float]]:
    """(busy, total) clock ticks of each core so far, from /proc/stat."""
    out = []
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(x) for x in fields[:8]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                out.append((float(sum(ticks) - idle), float(sum(ticks))))
    return out


@dataclass
class Run:
    result: Result
    cores_busy: list[float]  # each core's busy share during the run
    proxy_cores: float | None  # CPU the proxy process used, in cores

    def as_json(self) -> dict[str, Any]:
        return self.result.as_json() | {
            "cores_busy": [round(c, 2) for c in self.cores_busy],
            "proxy_cores": None if self.proxy_cores is None else round(self.proxy_cores, 2),
        }


def one_run(url: str, pid: int | None, *, lab: Lab, ips: Path, env: dict[str, str],
            duration_s: float, connections: int, run_id: str) -> Run:  # fmt: skip
    before, cpu_before, started = core_times(), tree_cpu_seconds(pid) if pid else 0.0, time.time()
    result = run_wrk(
        url,
        mode="app",
        ips_file=ips,
        script=lab.workdir / "proxy.lua",
        duration_s=duration_s,
        connections=connections,
        run_id=run_id,
        env=env,
    )
    wall = time.time() - started
    after = core_times()
    busy = [(b1 - b0) / max(t1 - t0, 1.0) for (b0, t0), (b1, t1) in zip(before, after, strict=True)]
    proxy = (tree_cpu_seconds(pid) - cpu_before) / wall if pid else None
    return Run(result, busy, proxy)


def interleaved(
    targets: dict[str, tuple[str, int | None]], *, lab: Lab, ips: Path, env: dict[str, str],
    duration_s: float, rounds: int, connections: int,
) -> dict[str, list[Run]]:  # fmt: skip
    """Each target ``rounds`` times, one after the other in turn (drift hits all alike),
    after one unrecorded warm-up run of each."""
    found: dict[str, list[Run]] = {name: [] for name in targets}
    for round_ in range(rounds + 1):
        for name, (url, pid) in targets.items():
            run = one_run(
                url, pid, lab=lab, ips=ips, env=env,
                duration_s=min(duration_s, 2.0) if round_ == 0 else duration_s,
                connections=connections, run_id=f"{name}{round_}",
            )  # fmt: skip
            if round_:
                found[name].append(run)
    return found


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _latency(runs: dict[str, list[Run]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    direct = runs["direct"]
    for name, rs in runs.items():
        out[name] = {"rounds": [r.as_json() for r in rs]}
        out[name]["p50_ms"] = spread([r.result.p50_ms for r in rs])
        out[name]["p99_ms"] = spread([r.result.p99_ms for r in rs])
        if name == "direct":
            continue
        # Round by round, against the direct run of the same round.
        for pct in ("p50", "p99"):
            added = [
                getattr(r.result, f"{pct}_ms") - getattr(d.result, f"{pct}_ms")
                for r, d in zip(rs, direct, strict=True)
            ]
            out[name][f"added_{pct}_ms"] = spread(added)
    return out


def _throughput(runs: dict[str, list[Run]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        name: {"rounds": [r.as_json() for r in rs], "rps": spread([r.result.rps for r in rs], 1)}
        for name, rs in runs.items()
    }
    for name, rs in runs.items():
        used = [(r.proxy_cores or 0.0) / r.result.rps * 1e6 for r in rs if r.result.rps]
        out[name]["cpu_us_per_request"] = spread(used, 1)
    nginx = runs["nginx"]
    for name in SERVERS:
        shares = [r.result.rps / n.result.rps for r, n in zip(runs[name], nginx, strict=True)]
        out[name]["of_nginx"] = spread(shares, 4)
    return out


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _reset_peak(pid: int) -> bool:
    """Start VmHWM afresh (Linux: ``5`` to clear_refs); False if this kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _curl(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "1", "curl", "-sS", "--max-time", "300", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _download(url: str) -> tuple[int, str, float]:
    """Bytes, SHA-256 and seconds of a download, hashed as it arrives (by sha256sum)."""
    started = time.monotonic()
    # The body to stdout (and on to sha256sum), what curl counted to stderr.
    curl = _curl("-w", "%{stderr}%{http_code} %{size_download}", url)
    hashed = subprocess.run(
        ["taskset", "-c", "1", "sha256sum"], stdin=curl.stdout, capture_output=True, check=True
    )
    assert curl.stdout is not None
    assert curl.stderr is not None
    curl.stdout.close()
    said = curl.stderr.read().decode()
    if curl.wait(timeout=300) != 0 or not said.startswith("200 "):
        raise RuntimeError(f"curl {url} failed: {said}")
    return int(said.split()[1]), hashed.stdout.split()[0].decode(), time.monotonic() - started


def _upload(url: str, source: Path) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    curl = _curl("-H", "Expect:", "-X", "POST", "-T", str(source), url)
    out, err = curl.communicate(timeout=300)
    if curl.returncode != 0:
        raise RuntimeError(f"curl upload to {url} failed: {err.decode()}")
    return json.loads(out), time.monotonic() - started


@contextlib.contextmanager
def _streaming_app() -> Iterator[Upstream]:
    app = Upstream("stream").start()
    try:
        yield app
    finally:
        app.stop()


def section_streaming(lab: Lab, *, tree: Path | None = None) -> dict[str, Any]:
    """1 GiB each way through each server's edge; its peak RSS against its RSS before.

    The application here is the tests' (``tests/upstream.py``): it hashes what it is
    sent, so the upload is checked byte for byte, and streams a known pattern.
    """
    source = lab.workdir / "pattern-1gib.bin"
    digest = hashlib.sha256()
    with source.open("wb") as f:
        for piece in pattern_bytes(GIB):
            f.write(piece)
            digest.update(piece)
    expected = digest.hexdigest()
    out: dict[str, Any] = {}
    config = load(REPO / "clusters.toml")
    with _streaming_app() as app:
        path = lab.workdir / "clusters-stream.toml"
        path.write_text(
            config_text(
                [
                    {"name": c.name, "url": app.url, "lat": c.lat, "lon": c.lon}
                    for c in config.clusters
                ],
                router={"fallback": config.router.fallback, "mode": "proxy"},
                health={"interval_s": 5, "timeout_s": 2},
                sessions={"redis_url": lab.redis.url, "cookie_secure": False},
                proxy={"max_body_bytes": 2 * GIB},
            )
        )
        for server in SERVERS:
            with proxy_edge(path, lab.workdir / f"stream-{server}.log", server=server,
                            tree=tree) as edge:  # fmt: skip
                pid = edge.process.pid
                # Warm: imports, the pool, a first body through each way.
                _download(f"{edge.url}/bytes/{MIB}")
                before = _rss_kib(pid, "VmRSS")
                reset = _reset_peak(pid)
                down_bytes, down_sha, down_s = _download(f"{edge.url}/bytes/{GIB}")
                seen, up_s = _upload(f"{edge.url}/upload", source)
                peak = _rss_kib(pid, "VmHWM")
            entry = {
                "rss_before_mib": round(before / 1024, 1),
                "peak_mib": round(peak / 1024, 1),
                "growth_mib": round((peak - before) / 1024, 1),
                "peak_reset_before": reset,
                "download_ok": down_bytes == GIB and down_sha == expected,
                "upload_ok": seen.get("body_bytes") == GIB and seen.get("body_sha256") == expected,
                "download_mib_per_s": round(GIB / MIB / down_s, 1),
                "upload_mib_per_s": round(GIB / MIB / up_s, 1),
            }
            out[server] = entry
            print(f"  streaming {server}: " + json.dumps(entry), flush=True)
    source.unlink()
    return out


def _profile(url: str, pid: int, server: str, *, lab: Lab, ips: Path,
             env: dict[str, str], seconds: float = 6.0) -> dict[str, Any]:  # fmt: skip
    """Where a proxied request's CPU goes: py-spy on the edge under the throughput load
    (an unrecorded run: sampling slows the edge down)."""
    OUT.mkdir(parents=True, exist_ok=True)
    folded = OUT / f"profile-{server}-proxy.txt"
    sampler = start_sampler(pid, seconds, folded)
    run = one_run(url, pid, lab=lab, ips=ips, env=env, duration_s=seconds - 1,
                  connections=32, run_id=f"profile-{server}")  # fmt: skip
    sampler.wait(timeout=seconds + 30)
    return top(folded) | {"file": str(folded.relative_to(REPO)), "under_profiler": run.as_json()}


def section_proxy(
    lab: Lab, ips: Path, *, duration_s: float, rounds: int, tree: Path | None = None
) -> dict[str, Any]:
    names = [c.name for c in load(REPO / "clusters.toml").clusters]
    lab.preload_sessions(SESSIONS, clusters=names)
    env = {
        "BENCH_PATH": PATH,
        "BENCH_COOKIES": str(session_cookies(SESSIONS, lab.workdir / "cookies.txt")),
    }
    out: dict[str, Any] = {"path": PATH, "sessions": SESSIONS}
    with (
        standin_cluster(lab.workdir, names, cpus="1") as standin,
        nginx_proxy(lab.workdir, standin.urls[names[0]], cpus="0") as nginx,
        proxy_edge(edge_config(lab.workdir, standin, lab.redis.url),
                   lab.workdir / "proxy-hypercorn.log", server="hypercorn", tree=tree) as hyper,
        proxy_edge(edge_config(lab.workdir, standin, lab.redis.url),
                   lab.workdir / "proxy-uvicorn.log", server="uvicorn", tree=tree) as uvi,
    ):  # fmt: skip
        targets: dict[str, tuple[str, int | None]] = {
            "direct": (standin.urls[names[0]], standin.server.process.pid),
            "nginx": (nginx.url, nginx.process.pid),
            "hypercorn": (hyper.url, hyper.process.pid),
            "uvicorn": (uvi.url, uvi.process.pid),
        }
        common = {"lab": lab, "ips": ips, "env": env, "duration_s": duration_s, "rounds": rounds}
        latency = _latency(interleaved(targets, connections=1, **common))  # type: ignore[arg-type]
        out["latency"] = latency
        print(
            "  proxy latency (added p50 / p99 ms): "
            + ", ".join(
                f"{s} {added['added_p50_ms']['median']} / {added['added_p99_ms']['median']}"
                for s, added in ((s, latency[s]) for s in ("nginx", *SERVERS))
            ),
            flush=True,
        )
        del targets["direct"]
        throughput = _throughput(interleaved(targets, connections=32, **common))  # type: ignore[arg-type]
        out["throughput"] = throughput
        print(
            "  proxy throughput: "
            + ", ".join(f"{s} {throughput[s]['rps']['median']:,.0f}/s" for s in targets)
            + "; of nginx: "
            + ", ".join(f"{s} {throughput[s]['of_nginx']['median']:.1%}" for s in SERVERS),
            flush=True,
        )
        out["profile"] = {
            server: _profile(edge.url, edge.process.pid, server, lab=lab, ips=ips, env=env)
            for server, edge in (("hypercorn", hyper), ("uvicorn", uvi))
        }
    out["streaming"] = section_streaming(lab, tree=tree)
    return out
