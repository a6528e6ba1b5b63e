"""Figures measured in several rounds: each round's value kept, the median reported with its range."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Rounds:
    """Per-figure values, one per round, in the order measured."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, figure: str, value: float) -> None:
        self.values.setdefault(figure, []).append(value)

    def median(self, figure: str) -> float:
        return statistics.median(self.values[figure])

    def spread(self, figure: str, digits: int = 2) -> str:
        """`median (min a, max b, n rounds)`; a single value as it is."""
        got = self.values.get(figure, [])
        if not got:
            return "not measured"
        if len(got) == 1:
            return f"{got[0]:.{digits}f} (1 round)"
        return f"{statistics.median(got):.{digits}f} (min {min(got):.{digits}f}, max {max(got):.{digits}f}, " \
               f"{len(got)} rounds)"

    def medians(self) -> dict[str, float]:
        """Every figure's median: what the verdicts are computed from."""
        return {k: statistics.median(v) for k, v in self.values.items() if v}
