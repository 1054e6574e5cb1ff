"""The proxy slot's part of bench/RESULTS.md, from the figures of ``bench.proxy``."""

from __future__ import annotations

from typing import Any

LABELS = {
    "direct": "straight to the stand-in (baseline)",
    "nginx": "nginx proxy_pass",
    "hypercorn": "georouter, Hypercorn",
    "uvicorn": "georouter, Uvicorn",
}
SERVERS = ("hypercorn", "uvicorn")


def _ms(spread: dict[str, float]) -> str:
    return f"{spread['median']:.3f} ({spread['min']:.3f}-{spread['max']:.3f})"


def _busy(rounds: list[dict[str, Any]]) -> str:
    cores = len(rounds[0]["cores_busy"])
    per_core = [sorted(r["cores_busy"][i] for r in rounds)[len(rounds) // 2] for i in range(cores)]
    return " / ".join(f"{c:.0%}" for c in per_core)


def _limit(row: dict[str, Any]) -> str:
    """What held the rate, from where the CPU went during the runs (median round)."""
    rounds = row["rounds"]
    proxy = sorted(r["proxy_cores"] or 0.0 for r in rounds)[len(rounds) // 2]
    load = sorted(r["cores_busy"][1] for r in rounds)[len(rounds) // 2]
    if proxy >= 0.9:
        return "its core (CPU-bound)"
    if load >= 0.9:
        return "core 1 (wrk and the stand-in)"
    return "neither core saturated (waits)"


def proxy_report(p: dict[str, Any]) -> list[str]:
    lat, thr, stream = p.get("latency"), p.get("throughput"), p.get("streaming")
    lines = [
        "## Proxy mode",
        "",
        "Cores: each proxy (georouter with one worker, or nginx with one worker) on core 0;"
        " the stand-in cluster (nginx with one worker answering a static body) and wrk on"
        f" core 1. The request: `GET {p['path']}` with the signed cookie of one of"
        f" {p['sessions']:,} sessions pinned in Redis (a returning browser: sticky, near cache"
        " on). Figures: median of the interleaved rounds (min-max in brackets).",
        "",
    ]
    if lat:
        lines += [
            "### Added latency (one connection, so no queue)",
            "",
            "| path | p50 ms | p99 ms | added p50 ms | added p99 ms |",
            "|---|---|---|---|---|",
        ]
        for name, row in lat.items():
            added = (
                ("", "")
                if name == "direct"
                else (_ms(row["added_p50_ms"]), _ms(row["added_p99_ms"]))
            )
            lines.append(
                f"| {LABELS[name]} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])}"
                f" | {added[0]} | {added[1]} |"
            )
        lines += ["", "Target: at most 1 ms added at p50 on one core.", ""]
    if thr:
        lines += [
            "### Throughput (32 connections)",
            "",
            "| proxy | req/s | of nginx proxy_pass | errors | proxy CPU µs per request"
            " | core 0 / core 1 busy | limited by |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in thr.items():
            share = "1" if name == "nginx" else f"{row['of_nginx']['median']:.1%}"
            if name != "nginx":
                share += f" ({row['of_nginx']['min']:.1%}-{row['of_nginx']['max']:.1%})"
            rps = row["rps"]
            errors = sum(r["errors"] for r in row["rounds"])
            cpu = row["cpu_us_per_request"]
            lines.append(
                f"| {LABELS[name]} | {rps['median']:,.0f} ({rps['min']:,.0f}-{rps['max']:,.0f})"
                f" | {share} | {errors} | {cpu['median']:.0f} | {_busy(row['rounds'])}"
                f" | {_limit(row)} |"
            )
        lines += ["", "Aim: 25% of nginx proxy_pass with the faster server.", ""]
    prof = p.get("profile")
    if prof:
        lines += [
            "### Where a proxied request's CPU goes (py-spy, 500 Hz, under the same load)",
            "",
            "Share of the edge's busy samples: *self* is time in the function itself,"
            " *on stack* time in it and what it calls. Raw stacks: "
            + ", ".join(f"`{v['file']}`" for v in prof.values())
            + ".",
            "",
        ]
        for server, v in prof.items():
            lines += [
                f"{LABELS[server]} ({v['samples']:,} samples):",
                "",
                "| self % | function | | on stack % | function |",
                "|---|---|---|---|---|",
            ]
            for (s_name, s_pct), (o_name, o_pct) in zip(v["self"], v["on_stack"], strict=False):
                lines.append(f"| {s_pct} | `{s_name}` | | {o_pct} | `{o_name}` |")
            lines.append("")
    if stream:
        lines += [
            "### Memory while streaming 1 GiB each way",
            "",
            "| server | RSS before MiB | peak MiB (VmHWM) | growth MiB | byte-exact down / up"
            " | MiB/s down / up |",
            "|---|---|---|---|---|---|",
        ]
        for server, row in stream.items():
            exact = " / ".join("yes" if row[k] else "**no**" for k in ("download_ok", "upload_ok"))
            lines.append(
                f"| {LABELS[server]} | {row['rss_before_mib']} | {row['peak_mib']}"
                f" | {row['growth_mib']} | {exact} | {row['download_mib_per_s']:,.0f}"
                f" / {row['upload_mib_per_s']:,.0f} |"
            )
        reset = all(row["peak_reset_before"] for row in stream.values())
        lines += [
            "",
            "Target: growth under 64 MiB. "
            + (
                "The peak was reset (clear_refs) just before streaming, so it is the"
                " streaming's own."
                if reset
                else "The kernel refused to reset the peak, so it is the process's lifetime peak."
            ),
            "",
        ]
    return lines
