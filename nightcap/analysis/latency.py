"""Latency percentiles from histograms (milliseconds -> count), pooled over windows, with an interval.

Why histograms: a percentile of several windows is not the mean of their percentiles; the windows' request
counts are merged and the percentile read once. Why an interval: a p95 from 400 requests is uncertain by a few
of its neighbours' ranks (the order statistics' binomial interval), and two windows can differ by more than that
when the machine moved between them, so the interval is never narrower than the windows' own p95s' range.

Pure: dicts in, numbers out.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

Histogram = Mapping[int, int]


def merge(histograms: Iterable[Histogram | None]) -> dict[int, int] | None:
    """The request counts of several histograms added up; None when none was given."""
    merged: dict[int, int] = {}
    seen = False
    for h in histograms:
        if h is None:
            continue
        seen = True
        for ms, count in h.items():
            merged[int(ms)] = merged.get(int(ms), 0) + int(count)
    return merged if seen else None


def percentile(histogram: Histogram, q: float) -> float | None:
    """Locust's rule: the smallest bucket with at least q of the requests at or below it; None if empty."""
    return _at_rank(histogram, q * sum(histogram.values()))


def _at_rank(histogram: Histogram, rank: float) -> float | None:
    count = sum(histogram.values())
    if count == 0:
        return None
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= rank - 1e-9:
            return float(ms)
    return float(max(histogram))


def percentile_interval(histogram: Histogram, q: float, z: float = 1.96) -> tuple[float, float] | None:
    """A distribution-free 95% interval of the q-quantile: the values at ranks n·q ∓ z·sqrt(n·q·(1 − q))."""
    n = sum(histogram.values())
    if n == 0:
        return None
    spread = z * math.sqrt(n * q * (1 - q))
    low = _at_rank(histogram, max(1.0, math.floor(n * q - spread)))
    high = _at_rank(histogram, min(float(n), math.ceil(n * q + spread)))
    return (low, high) if low is not None and high is not None else None
