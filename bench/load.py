"""Load from a separate process: wrk (Debian's `wrk`), driven by a small Lua script.

wrk is a C event loop that sustains far more than one Python server core can
answer, so the figures are the server's, not the load generator's.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = r"""
-- georouter benchmark requests: BENCH_MODE is trivial | route | new | sticky | app
local mode = os.getenv("BENCH_MODE")
-- app: GET BENCH_PATH, with a Cookie header drawn from the lines of BENCH_COOKIES if set
local app_path = os.getenv("BENCH_PATH") or "/"
local cookies_file = os.getenv("BENCH_COOKIES")
local cookies = {}
local ncookies = 0
local sessions = tonumber(os.getenv("BENCH_SESSIONS") or "10000")
local run = os.getenv("BENCH_RUN") or "r"
local ips = {}
local n = 0
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_IPS")) do
    n = n + 1
    ips[n] = line
  end
  if cookies_file and cookies_file ~= "" then
    for line in io.lines(cookies_file) do
      ncookies = ncookies + 1
      cookies[ncookies] = line
    end
  end
  math.randomseed(tid * 7919)
  counter = tid * 104729
end

function request()
  counter = counter + 1
  if mode == "app" then
    if ncookies > 0 then
      return wrk.format("GET", app_path, {["Cookie"] = cookies[math.random(1, ncookies)]})
    end
    return wrk.format("GET", app_path)
  end
  if mode == "trivial" then
    return wrk.format("GET", "/healthz")
  end
  local path = "/v1/route?ip=" .. ips[(counter % n) + 1]
  if mode == "new" then
    path = path .. "&session=n" .. run .. "-" .. tid .. "-" .. counter
  elseif mode == "sticky" then
    path = path .. "&session=s" .. math.random(0, sessions - 1)
  end
  return wrk.format("GET", path)
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors

    def as_json(self) -> dict[str, float | int]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
        }


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is missing: apt-get install wrk (bench/setup does it)")
    return found


def _latency(text: str, pct: str) -> float:
    match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no {pct}% latency in wrk output:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    url: str,
    *,
    mode: str,
    ips_file: Path,
    script: Path,
    duration_s: float,
    connections: int = 32,
    threads: int = 1,
    sessions: int = 10_000,
    cpus: str | None = "1",
    run_id: str = "r",
    env: dict[str, str] | None = None,
) -> Result:
    """One wrk run against ``url``; the load generator pinned to ``cpus``.

    ``env`` adds to the script's settings (``BENCH_PATH``, ``BENCH_COOKIES`` of mode app).
    """
    script.write_text(LUA)
    cmd = [
        wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency",
        "-s", str(script), url,
    ]  # fmt: skip
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    env = {
        "BENCH_MODE": mode,
        "BENCH_IPS": str(ips_file),
        "BENCH_SESSIONS": str(sessions),
        "BENCH_RUN": run_id,
        "PATH": "/usr/bin:/bin",
        **(env or {}),
    }
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=env, check=True, timeout=duration_s + 60
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return Result(rps, _latency(out, "50"), _latency(out, "99"), errors)


def median_result(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )
