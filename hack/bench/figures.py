"""Turning measurements into figures and the report table.

- `percentile` is nearest-rank: the smallest observed value with at least p % of all
  values at or below it (p50 of [1, 2, 3, 4] is 2), so every figure printed was observed.
- `render_table` prints Markdown (it pastes into docs/benchmarks.md as is), one bold row
  per section; `to_json` turns the attrs reports into plain JSON values.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of `values` (see the module docstring); needs a value."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


@attrs.frozen
class Summary:
    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary | None:
        if not values:
            return None
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            max=max(values),
        )

    def describe(self, unit: str = "s", digits: int = 2) -> str:
        values = (self.p50, self.p90, self.p99, self.max)
        p50, p90, p99, top = (f"{v:.{digits}f}" for v in values)
        return f"{p50} / {p90} / {p99} / {top} {unit} (n={self.count})"


def parse_time(text: str | None) -> datetime.datetime | None:
    """An RFC 3339 timestamp of the API server (second resolution), or None."""
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def fmt_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def per(count: float, n: int) -> float:
    return count / n if n else 0.0


# -- report table ------------------------------------------------------------------------

Row = tuple[str, str]
Section = tuple[str, Sequence[Row]]


def render_table(sections: Sequence[Section]) -> str:
    """A Markdown table (pastes into docs/benchmarks.md as is), one bold row per section."""
    lines = ["| figure | value |", "| --- | --- |"]
    for title, rows in sections:
        lines.append(f"| **{title}** | |")
        lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def to_json(value: Any) -> Any:
    """attrs instances (nested), tuples and mappings as plain JSON values."""
    if attrs.has(type(value)):
        return {k: to_json(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def note(message: str) -> None:
    """Progress, on stderr (stdout carries only the report)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)
