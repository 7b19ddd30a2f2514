"""The truth for an open-loop p95 on the reference target: a simulated M/D/c queue.

The reference server holds one of `slots` for a fixed `service_ms` and queues the rest first come, first
served; Poisson arrivals make it an M/D/c queue. Its p95 has no closed form, and the p95 *measured* over a
few seconds is itself noisy (at 70 rps on 4 slots x 40 ms, two 3-s windows read 73 ms at the median and
120 ms at the 99th percentile), so a test bounds a measured p95 by the quantile of the simulated ones.
"""

from __future__ import annotations

import heapq

import numpy as np


def sojourns(rng: np.random.Generator, rate: float, slots: int, service_s: float, window_s: float,
              warmup_s: float) -> list[float]:
    """Response times of the arrivals in one window that follows `warmup_s` of the same load."""
    span = warmup_s + window_s
    arrivals = np.sort(rng.uniform(0.0, span, rng.poisson(rate * span)))
    free_at = [0.0] * slots
    out = []
    for at in arrivals:
        start = max(at, heapq.heappop(free_at))
        heapq.heappush(free_at, start + service_s)
        if at >= warmup_s:
            out.append(start + service_s - at)
    return out


def mdc_p95_quantile_ms(rate: float, slots: int, service_ms: float, window_s: float, windows: int,
                        quantile: float, runs: int = 2000, seed: int = 7) -> float:
    """The `quantile` of the p95 (ms) pooled over `windows` windows, over `runs` simulated runs (seeded)."""
    rng = np.random.default_rng(seed)
    p95s = []
    for _ in range(runs):
        pooled: list[float] = []
        for _ in range(windows):
            pooled += sojourns(rng, rate, slots, service_ms / 1000, window_s, warmup_s=1.0)
        p95s.append(float(np.percentile(pooled, 95)) * 1000)
    return float(np.quantile(p95s, quantile))
