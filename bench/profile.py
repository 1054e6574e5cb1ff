"""Where a request's CPU goes: py-spy samples one `georouter serve` worker under wrk load.

    .venv/bin/python -m bench.profile [--server uvicorn] [--modes route sticky] [--seconds 8]

For each mode (trivial | route | new | sticky, as in the benchmark) the edge is
warmed up with one wrk run, then sampled by py-spy (``pip install py-spy``)
during a second. Prints, side by side, the share of samples in which each
function is on the stack, largest differences first, and the edge's CPU time
per request; the raw folded stacks go to ``bench/out/profile-<mode>.txt``.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lab import Lab, sample_addresses
from bench.load import run_wrk
from tests.harness import REPO
from tests.procfs import tree_cpu_seconds

OUT = REPO / "bench" / "out"


def functions_on_stack(folded: Path) -> tuple[int, collections.Counter[str]]:
    """Samples in all, and per function (``name file``) the samples it was on the stack in."""
    total, seen_in = 0, collections.Counter[str]()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        names = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            names.add(f"{name} {where.split(':')[0].rsplit('/', 1)[-1]}".strip())
        for name in names:
            seen_in[name] += samples
    return total, seen_in


def functions_at_top(folded: Path) -> tuple[int, collections.Counter[str]]:
    """Samples in all, and per function the samples it was running in (its own time)."""
    total, own = 0, collections.Counter[str]()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        name, _, where = stack.split(";")[-1].partition(" (")
        own[f"{name} {where.split(':')[0].rsplit('/', 1)[-1]}".strip()] += int(count)
    return total, own


def top(folded: Path, count: int = 12) -> dict[str, Any]:
    """The functions with the largest shares of samples: on the stack, and running."""
    total, on_stack = functions_on_stack(folded)
    _, own = functions_at_top(folded)

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(n, round(100 * c / max(total, 1), 1)) for n, c in counter.most_common(count)]

    return {"samples": total, "self": shares(own), "on_stack": shares(on_stack)}


def py_spy() -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is missing: .venv/bin/pip install py-spy")
    return spy


def start_sampler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` at 500 Hz for ``seconds`` into ``out`` (raw folded stacks),
    attached once this returns."""
    sampler = subprocess.Popen(
        [py_spy(), "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "500",
         "-f", "raw", "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)  # py-spy attaches
    return sampler


def profile(lab: Lab, ips: Path, server: str, mode: str, seconds: float) -> tuple[Path, float]:
    out = OUT / f"profile-{server}-{mode}.txt"
    script = lab.workdir / "profile.lua"
    with lab.edge(server=server) as edge:
        run_wrk(edge.url, mode=mode, ips_file=ips, script=script, duration_s=3, run_id="warm")
        sampler = start_sampler(edge.process.pid, seconds, out)
        cpu_before = tree_cpu_seconds(edge.process.pid)
        result = run_wrk(
            edge.url, mode=mode, ips_file=ips, script=script, duration_s=seconds - 1, run_id="p"
        )
        cpu = tree_cpu_seconds(edge.process.pid) - cpu_before
        sampler.wait(timeout=seconds + 30)
    return out, cpu / (result.rps * (seconds - 1)) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--server", default="uvicorn", choices=("hypercorn", "uvicorn"))
    parser.add_argument("--modes", nargs="+", default=["route", "sticky"])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    ips = OUT / "ips.txt"
    ips.write_text("\n".join(sample_addresses(10_000)) + "\n")
    shares: dict[str, tuple[int, collections.Counter[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="georouter-profile-") as tmp:
        lab = Lab.open(Path(tmp))
        try:
            lab.preload_sessions(10_000, clusters=list(lab.standins))
            for mode in args.modes:
                folded, us_per_request = profile(lab, ips, args.server, mode, args.seconds)
                shares[mode] = functions_on_stack(folded)
                print(f"{mode}: {us_per_request:.1f} µs of edge CPU per request ({folded})")
        finally:
            lab.close()
    names = set().union(*(counter for _, counter in shares.values()))
    first, last = args.modes[0], args.modes[-1]

    def share(mode: str, name: str) -> float:
        total, counter = shares[mode]
        return 100 * counter[name] / max(total, 1)

    header = "  ".join(f"{m:>8}" for m in args.modes)
    print(header + "  % of samples with the function on the stack")
    for name in sorted(names, key=lambda n: share(first, n) - share(last, n))[:25]:
        print("  ".join(f"{share(m, name):8.1f}" for m in args.modes) + f"  {name[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
