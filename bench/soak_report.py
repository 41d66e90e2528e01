"""What ``bench/soak.py``'s modes share for reporting: a PASS/FAIL check, a plain table, latency percentiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.load import percentiles


@dataclass(frozen=True)
class Check:
    """One target and how the run did against it."""

    mode: str
    name: str
    value: str
    target: str
    passed: bool

    def line(self) -> str:
        return f"{self.mode}: {self.name} = {self.value} (target {self.target}) {'PASS' if self.passed else 'FAIL'}"


def table(columns: list[str], rows: list[list[Any]]) -> str:
    """Right-aligned columns; floats with 2 decimals."""
    cells = [columns] + [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(" ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in cells)


def p50_p99(latencies_s: list[float], scale: float = 1.0) -> dict[str, float]:
    """``{"p50", "p99"}`` in ms, divided by ``scale``."""
    p50, _, p99 = percentiles(latencies_s)
    return {"p50": p50 / scale, "p99": p99 / scale}
