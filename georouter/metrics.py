"""Counters an operator scrapes (Prometheus text format); plain values, no I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Family:
    """A counter with labels; hot paths add to ``values[label_values]`` directly."""

    name: str
    help: str
    labels: tuple[str, ...]
    values: Counter[tuple[str, ...]] = field(default_factory=Counter)


class Metrics:
    """Every counter of one process, by name."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def family(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Family:
        """The counter family ``name``, created on first use."""
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = Family(name, help_text, labels)
        return found

    def render(self, gauges: dict[str, float] | None = None) -> str:
        lines: list[str] = []
        for name in sorted(self._families):
            fam = self._families[name]
            if fam.help:
                lines.append(f"# HELP {name} {fam.help}")
            lines.append(f"# TYPE {name} counter")
            if not fam.values and not fam.labels:
                lines.append(f"{name} 0")
            for label_values, v in sorted(fam.values.items()):
                lines.append(f"{name}{_labels(fam.labels, label_values)} {v}")
        for name, value in sorted((gauges or {}).items()):
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(names, values, strict=True))
    return "{" + body + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
