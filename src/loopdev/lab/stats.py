"""Failure rates with their uncertainty: the 95% Wilson score interval of k failures in n runs.

The Wilson interval stays inside [0, 1] and is honest for small n and for rates near 0 or 1
(0 of 8 runs: 0-32%; 40 of 40: 91-100%), which is where the lab's cells live.
"""

from __future__ import annotations

import math

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
