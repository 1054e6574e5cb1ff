"""``georouter route --explain``: every cluster a decision weighed, one line each,
and ``--set`` to ask what if a cluster were down, loaded or just back."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

from georouter.config import Config
from georouter.core.admission import Admission, admissions
from georouter.core.clientip import IPAddress, parse_address
from georouter.core.health import HealthState, Status

SET_HELP = (
    "answer as if NAME were so: NAME=down, NAME=up, NAME=load:0.9 (reporting that load),"
    " NAME=back:20 (up again after being down, 20 s ago); repeatable"
)


class Assumed(NamedTuple):
    """``--set NAME=STATE``, parsed: a cluster and the state assumed for it."""

    cluster: str
    up: bool
    load: float | None = None
    back_s: float | None = None


def assumed(text: str) -> Assumed:
    """argparse type of ``--set``."""
    name, sep, state = text.partition("=")
    what, _, figure = state.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=STATE (such as eu-west=down)")
    if state in ("down", "up"):
        return Assumed(name, state == "up")
    try:
        value = float(figure)
    except ValueError:
        value = -1.0
    if what == "load" and 0 <= value <= 1:
        return Assumed(name, True, load=value)
    if what == "back" and value >= 0:
        return Assumed(name, True, back_s=value)
    raise argparse.ArgumentTypeError(
        f"{text!r}: the state must be down, up, load:0.0 to 1.0 or back:SECONDS, not {state!r}"
    )


class WhatIf:
    """A health view of the clusters as ``--set`` says they are, the rest up."""

    def __init__(self, config: Config, sets: Sequence[Assumed], now: float) -> None:
        names = {c.name for c in config.clusters}
        unknown = [s.cluster for s in sets if s.cluster not in names]
        if unknown:
            # As argparse ends a command line it cannot use: the message, exit 2.
            print(
                f"georouter: --set: no cluster named {unknown[0]!r}"
                f" (clusters: {', '.join(sorted(names))})",
                file=sys.stderr,
            )
            raise SystemExit(2)
        states = {c.name: HealthState(status=Status.UP) for c in config.clusters}
        for s in sets:
            back = None if s.back_s is None else now - s.back_s
            status = Status.UP if s.up else Status.DOWN
            states[s.cluster] = HealthState(status=status, load=s.load, recovered_at=back)
        self._down: Mapping[str, str] = MappingProxyType(
            {n: "down (--set)" for n, st in states.items() if st.status is Status.DOWN}
        )
        held, _ = admissions(
            states,
            now=now,
            stabilize_s=config.health.stabilize_s,
            ramp_s=config.health.ramp_s,
            spill_low=config.router.spill_low,
            spill_high=config.router.spill_high,
        )
        loads = {n: st.load for n, st in states.items() if st.load is not None}
        self._held: tuple[Mapping[str, Admission], Mapping[str, float]] = (held, loads)

    def unroutable(self) -> Mapping[str, str]:
        return self._down

    def admissions(self) -> tuple[Mapping[str, Admission], Mapping[str, float]]:
        return self._held


def what_if(config: Config, sets: Sequence[Assumed]) -> WhatIf:
    return WhatIf(config, sets, time.time())


def _address(text: str) -> IPAddress:
    addr = parse_address(text)
    if addr is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address")
    return addr


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``georouter route``."""
    p.add_argument("addresses", nargs="+", type=_address, metavar="ADDR")
    p.add_argument("--json", action="store_true", help="print the decisions as JSON")
    p.add_argument("--explain", action="store_true", help="show every cluster and why")
    p.add_argument(
        "--set", type=assumed, action="append", default=[], metavar="NAME=STATE", help=SET_HELP
    )
    p.add_argument(
        "--session",
        metavar="ID",
        help="decide for a new session with this id (weights and shares draw by it)",
    )
    p.add_argument(
        "--tenant", metavar="ID", help="decide for this tenant ([[tenants.homes]] of the file)"
    )


def explain_text(decision: Mapping[str, object]) -> str:
    """The explain lines of one decision's JSON: distance, verdict and, where they
    apply, bias, the weighted split and the residency rule's verdict."""
    rule = f" (rule {decision['rule']!r})" if "rule" in decision else ""
    lines = [f"\n{decision['client_ip']}{rule}:"]
    candidates = decision["explain"]
    assert isinstance(candidates, list)
    for c in candidates:
        dist = "-" if c["distance_km"] is None else f"{c['distance_km']:,.0f} km"
        lines.append(f"  {c['cluster']:<20} {dist:>10}  {c['why']}{_extras(c)}")
    return "\n".join(lines)


def _extras(candidate: Mapping[str, object]) -> str:
    parts = []
    if "bias_km" in candidate:
        biased = candidate.get("biased_distance_km")
        to = f" -> {biased:,.0f} km" if isinstance(biased, float) else ""
        parts.append(f"bias {candidate['bias_km']:+,.0f} km{to}")
    if "weight" in candidate:
        share = candidate.get("share")
        of = f", share {share:.0%}" if isinstance(share, float) else ""
        parts.append(f"weight {candidate['weight']:g}{of}")
    if "rule" in candidate:
        parts.append(f"rule: {candidate['rule']}")
    if "load" in candidate:
        parts.append(f"load {candidate['load']:.2f}")
    admission = candidate.get("admission")
    if isinstance(admission, Mapping):
        parts.append(f"takes {admission['share']:.0%} of new sessions ({admission['held']})")
    if "health_ignored" in candidate:
        parts.append(f"health ignored: {candidate['health_ignored']}")
    return f"  [{'; '.join(parts)}]" if parts else ""
