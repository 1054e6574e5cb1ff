"""Counters an operator scrapes (Prometheus text format); plain values, no I/O."""

from __future__ import annotations

from collections import Counter


class Metrics:
    """Monotonic counters keyed by (name, labels). One instance per app."""

    def __init__(self) -> None:
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._help: dict[str, str] = {}

    def describe(self, name: str, text: str) -> None:
        self._help[name] = text

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        self._counters[(name, tuple(sorted(labels.items())))] += amount

    def value(self, name: str, **labels: str) -> int:
        return self._counters[(name, tuple(sorted(labels.items())))]

    def render(self, gauges: dict[str, float] | None = None) -> str:
        lines: list[str] = []
        names = sorted({n for n, _ in self._counters} | set(self._help))
        for name in names:
            if name in self._help:
                lines.append(f"# HELP {name} {self._help[name]}")
            lines.append(f"# TYPE {name} counter")
            for (n, labels), v in sorted(self._counters.items()):
                if n == name:
                    lines.append(f"{name}{_labels(labels)} {v}")
        for name, value in sorted((gauges or {}).items()):
            lines.append(f"# TYPE {name.split('{')[0]} gauge")
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + body + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
