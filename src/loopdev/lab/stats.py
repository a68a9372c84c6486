"""Failure rates with their uncertainty: the 95% Wilson score interval of k failures in n runs;
and the spread of a measurement over a cell's runs (median, percentiles, range).

The Wilson interval stays inside [0, 1] and is honest for small n and for rates near 0 or 1
(0 of 8 runs: 0-32%; 40 of 40: 91-100%), which is where the lab's cells live.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: the normal quantile of a two-sided 95% interval
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    den = 1 + z2 / n
    return max(0.0, (centre - half) / den), min(1.0, (centre + half) / den)


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def percent(x: float) -> str:
    """``37``, ``0.4``, ``100``: a rate in percent, as few digits as it needs."""
    v = x * 100
    if v < 0.05 or v >= 9.95:
        return f"{v:.0f}"
    return f"{v:.1f}"


def interval_text(k: int, n: int) -> str:
    """``3/8 = 38% [14-69%]``: the count, the rate and its 95% interval."""
    if n <= 0:
        return "no verdict"
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {percent(k / n)}% [{percent(lo)}-{percent(hi)}%]"


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear between order statistics (numpy's
    default); ``values`` need not be sorted and must not be empty."""
    vals = sorted(values)
    pos = (len(vals) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


@dataclass(frozen=True)
class Spread:
    """How a measurement spread over a cell's runs (seconds): n, median, the 10th and 90th
    percentiles and the range."""

    n: int
    median: float
    p10: float
    p90: float
    low: float
    high: float

    def to_json(self) -> dict[str, float | int]:
        return {"n": self.n, "median": round(self.median, 6), "p10": round(self.p10, 6),
                "p90": round(self.p90, 6), "min": round(self.low, 6),
                "max": round(self.high, 6)}  # fmt: skip

    def text(self, scale: float = 1000.0, unit: str = "ms") -> str:
        """``n=37, median 4.4 ms, p10-p90 1.9-8.1 ms, range 1.1-59 ms``."""

        def g(v: float) -> str:
            return f"{v * scale:.2g}" if v * scale < 10 else f"{v * scale:.0f}"

        return (f"n={self.n}, median {g(self.median)} {unit}, p10-p90 {g(self.p10)}-"
                f"{g(self.p90)} {unit}, range {g(self.low)}-{g(self.high)} {unit}")  # fmt: skip


def spread(values: Sequence[float]) -> Spread | None:
    """The :class:`Spread` of ``values``; None when there are none."""
    if not values:
        return None
    return Spread(len(values), quantile(values, 0.5), quantile(values, 0.1),
                  quantile(values, 0.9), min(values), max(values))  # fmt: skip
