"""How much of its share of new sessions a routable cluster takes now. Pure.

Two things hold a healthy cluster back: its load (it reports one with its
health answer, and above ``spill_low`` it takes a shrinking share of new
sessions, none above ``spill_high``) and a recent recovery (it takes none until
it has stayed up for ``stabilize_s``, then a share that ramps up over
``ramp_s``, Envoy's slow start at cluster level, so a cluster that comes back
is not flooded by every session that left it).

A share is compared with a point drawn from the session's hash, from other bits
than the weight split reads, so every edge admits the same sessions and a
session admitted at one share is admitted at every larger one: as a ramp grows
the sessions already on the cluster stay, and new ones join.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import NamedTuple

from georouter.core.health import HealthState, Status

# The share a ramp starts from once stabilize_s has passed.
RAMP_START = 0.05
# The point reads these bits of the hash, above the weight split's 32.
_POINT_SHIFT = 32
_POINT_BITS = 32
# The header a cluster may report its load in (else the JSON body's "load").
LOAD_HEADER = "georouter-load"


class Held(StrEnum):
    """Why a cluster takes less than its share of new sessions."""

    SPILL = "spill"
    RAMP = "ramp"


class Admission(NamedTuple):
    """A routable cluster's share of new sessions (0 to 1), and why it is held back."""

    share: float
    held: Held
    why: str


def point_of(spread: int) -> float:
    """The session's point in [0, 1) that a share is compared with."""
    return ((spread >> _POINT_SHIFT) % (1 << _POINT_BITS)) / (1 << _POINT_BITS)


def admits(admission: Admission | None, point: float) -> bool:
    return admission is None or point < admission.share


def spill_share(load: float, low: float, high: float) -> float:
    """1 at or below ``low``, 0 at or above ``high``, linear between."""
    if load <= low:
        return 1.0
    if load >= high:
        return 0.0
    return (high - load) / (high - low)


def ramp_share(up_for_s: float, stabilize_s: float, ramp_s: float) -> float:
    """0 until ``stabilize_s``, then from ``RAMP_START`` to 1 over ``ramp_s``."""
    if up_for_s < stabilize_s:
        return 0.0
    if ramp_s <= 0:
        return 1.0
    into = (up_for_s - stabilize_s) / ramp_s
    return 1.0 if into >= 1 else RAMP_START + (1 - RAMP_START) * into


def admissions(
    states: Mapping[str, HealthState],
    *,
    now: float,
    stabilize_s: float,
    ramp_s: float,
    spill_low: float,
    spill_high: float,
) -> tuple[Mapping[str, Admission], float]:
    """The clusters held back now, and until when this answer holds (its next change;
    inf: until the states change)."""
    held: dict[str, Admission] = {}
    until = math.inf
    for name, state in states.items():
        if state.status is not Status.UP:
            continue
        ramp = 1.0
        if state.recovered_at is not None and (stabilize_s > 0 or ramp_s > 0):
            up_for = max(0.0, now - state.recovered_at)
            ramp = ramp_share(up_for, stabilize_s, ramp_s)
            if ramp < 1:
                # A ramp moves on continuously; 50 steps over it are smooth enough.
                step = stabilize_s - up_for if up_for < stabilize_s else ramp_s / 50
                until = min(until, now + max(step, 0.05))
        load = state.load
        spill = 1.0 if load is None else spill_share(load, spill_low, spill_high)
        if ramp < 1 and ramp <= spill:
            if ramp == 0:
                why = (
                    f"recovered {up_for:.1f}s ago; takes no new sessions"
                    f" until stabilize_s ({stabilize_s:g}s)"
                )
            else:
                why = f"recovered {up_for:.1f}s ago; ramping up over ramp_s ({ramp_s:g}s)"
            held[name] = Admission(ramp, Held.RAMP, why + f", share {ramp:.0%}")
        elif spill < 1:
            assert load is not None
            if spill == 0:
                why = f"load {load:.2f} at or above spill_high ({spill_high:g}): no new sessions"
            else:
                why = (
                    f"load {load:.2f} above spill_low ({spill_low:g}):"
                    f" takes {spill:.0%} of new sessions"
                )
            held[name] = Admission(spill, Held.SPILL, why)
    return held, until


def load_of(header: str | None, body: bytes) -> float | None:
    """The load a health answer reports: its ``georouter-load`` header, else a JSON
    object body's ``load``; None when it reports none or one that is not 0 to 1 (a
    bad figure must not take a healthy cluster out)."""
    value: object = None
    if header is not None:
        try:
            value = float(header)
        except ValueError:
            return None
    elif body[:1] == b"{" or body.lstrip()[:1] == b"{":
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if isinstance(document, dict):
            value = document.get("load")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    load = float(value)
    return load if 0.0 <= load <= 1.0 else None
