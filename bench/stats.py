"""
Small statistics helpers for the benchmark: medians, percentiles, ratios and
latency summaries.  Pure functions, tested in C{tests/test_bench.py}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    """
    The median of C{values}: the middle value, or the mean of the two middle
    values for an even count.

    @raise ValueError: if C{values} is empty.
    """
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The C{fraction} (0 to 1) percentile of C{values} by the nearest-rank
    method: the smallest value such that at least C{fraction} of the values
    are less than or equal to it.

    @raise ValueError: if C{values} is empty or C{fraction} is outside [0, 1].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], not {fraction!r}")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """
    C{numerator / denominator}, or L{None} when either is missing or the
    denominator is 0.
    """
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def medianOrNone(values: Sequence[float | None]) -> float | None:
    """
    The median of the values that are not L{None}, or L{None} if there are
    none.
    """
    present = [v for v in values if v is not None]
    return median(present) if present else None


def latencySummary(nanoseconds: Sequence[int]) -> dict[str, float]:
    """
    Summarize per-call latencies given in nanoseconds: p50, p99 and max in
    microseconds.
    """
    return {
        "p50_us": percentile(nanoseconds, 0.50) / 1000,
        "p99_us": percentile(nanoseconds, 0.99) / 1000,
        "max_us": max(nanoseconds) / 1000,
    }
