"""``georouter route --explain``: every cluster a decision weighed, one line each."""

from __future__ import annotations

from collections.abc import Mapping


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
    return f"  [{'; '.join(parts)}]" if parts else ""
