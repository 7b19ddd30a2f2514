"""Confidence intervals for throughput: batch means within a window, windows within a level, stages per pod.

Why batch means: the requests of one window are not independent samples (a closed loop, a CPU quota
enforced per 100 ms period, a garbage collection pause all make neighbouring instants alike), so the
variance of a window's goodput is estimated from the spread of the means of consecutive sub-windows
(batches), made long enough that neighbouring batches are nearly uncorrelated: the batch size doubles
while the lag-1 autocorrelation of the batch means stays above `MAX_LAG1` and enough batches are left.

Everything here is pure (numbers in, numbers out) and uses scipy's Student t quantiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
MAX_LAG1 = 0.3  # batch means more correlated than this get merged into longer batches
MIN_BATCHES = 4  # never merge below this many batches: a t interval on 3 df is already wide


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student t quantile (12.7 for 1 df, 2.26 for 9, 1.96 for many)."""
    return float(stats.t.ppf(0.5 + confidence / 2, df))


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% half-width; `half_width` is None when one sample cannot tell the spread."""

    mean: float
    half_width: float | None
    n: int  # independent samples behind it: batches, or windows
    df: float | None = None  # degrees of freedom of the t quantile used

    @property
    def relative(self) -> float | None:
        """Half-width as a fraction of the mean (0.04 for ±4%); None when unknown or the mean is 0."""
        if self.half_width is None or self.mean <= 0:
            return None
        return self.half_width / self.mean

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else max(self.mean - self.half_width, 0.0)

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    def variance(self) -> float | None:
        """Variance of the mean implied by the half-width (inverse of the t interval)."""
        if self.half_width is None or self.df is None or self.df <= 0:
            return None
        return (self.half_width / t_quantile(self.df)) ** 2

    def scaled(self, factor: float) -> "Estimate":
        """The same estimate times a constant (the operating point is headroom × saturation)."""
        hw = None if self.half_width is None else self.half_width * factor
        return Estimate(self.mean * factor, hw, self.n, self.df)


def _lag1(values: np.ndarray) -> float:
    if values.size < 3 or float(np.var(values)) == 0.0:
        return 0.0
    centred = values - values.mean()
    return float(np.sum(centred[1:] * centred[:-1]) / np.sum(centred * centred))


def batch_means(series: Sequence[float], min_batch: int = 1, min_batches: int = MIN_BATCHES,
                max_lag1: float = MAX_LAG1) -> tuple[Estimate, int]:
    """Mean of a rate series (e.g. goodput per 100 ms) and its half-width by batch means; also the batch size.

    The mean is over every sample; the spread comes from consecutive batches of `min_batch` samples or
    more (a remainder shorter than a batch adds to the mean only). The batch size doubles while the
    batch means' lag-1 autocorrelation exceeds `max_lag1` and at least 2 × `min_batches` batches remain.
    """
    values = np.asarray([v for v in series if v is not None and math.isfinite(v)], dtype=float)
    if values.size == 0:
        return Estimate(0.0, None, 0), 0
    mean = float(values.mean())
    size = max(1, int(min_batch))
    while True:
        count = values.size // size
        if count < 2:
            return Estimate(mean, None, count), size
        means = values[: count * size].reshape(count, size).mean(axis=1)
        if _lag1(means) > max_lag1 and count >= 2 * min_batches:
            size *= 2
            continue
        df = count - 1
        half = t_quantile(df) * float(np.std(means, ddof=1)) / math.sqrt(count)
        return Estimate(mean, half, count, float(df)), size


def combine_windows(windows: Sequence[Estimate], weights: Sequence[float] | None = None) -> Estimate:
    """One level's goodput from its windows: their weighted mean, and a half-width that trusts neither alone.

    Windows measured with sub-windows are combined as independent estimates (variance Σ w²·var, degrees of
    freedom by Welch–Satterthwaite); the half-width is never less than half the spread between the windows,
    because sub-windows of one window cannot see a drift between windows. Windows without sub-windows count
    as one sample each (two equal windows of an exact model give ±0).
    """
    ws = [w for w in windows]
    if not ws:
        return Estimate(0.0, None, 0)
    raw = list(weights) if weights is not None else [1.0] * len(ws)
    total = sum(raw) or 1.0
    share = [r / total for r in raw]
    mean = sum(s * w.mean for s, w in zip(share, ws))
    spread = (max(w.mean for w in ws) - min(w.mean for w in ws)) / 2 if len(ws) > 1 else 0.0
    variances = [w.variance() for w in ws]
    if all(v is not None for v in variances):
        var = sum(s * s * v for s, v in zip(share, variances))  # type: ignore[operator]
        terms = [(s * s * v) ** 2 / w.df for s, v, w in zip(share, variances, ws) if w.df]  # type: ignore[operator]
        df = var * var / sum(terms) if var > 0 and sum(terms) > 0 else float(sum(w.n for w in ws) - 1)
        half = t_quantile(max(df, 1.0)) * math.sqrt(var) if var > 0 else 0.0
        return Estimate(mean, max(half, spread), sum(w.n for w in ws), max(df, 1.0))
    if len(ws) < 2:
        return Estimate(mean, None, len(ws))
    values = np.asarray([w.mean for w in ws], dtype=float)
    half = t_quantile(len(ws) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(ws))
    return Estimate(mean, max(half, spread), len(ws), float(len(ws) - 1))


@dataclass(frozen=True)
class Pooled:
    """Several measurements of one quantity pooled, and the pairs that disagree beyond their intervals."""

    estimate: Estimate
    disagreements: list[tuple[int, int]]  # index pairs whose intervals do not overlap
    heterogeneity_p: float | None  # Cochran's Q test: small means they measured different things


def pool(estimates: Sequence[Estimate]) -> Pooled:
    """Inverse-variance pooling with a random-effects widening when the estimates disagree (DerSimonian–Laird).

    When measurements of the same pod disagree beyond their intervals the machine changed between them;
    their fixed-effect mean would claim a precision nobody measured, so the between-measurement variance
    τ² is added to each one's before weighting. Estimates without a half-width are left out of the weights
    (and of the test) but never silently: they are still compared by the caller.
    """
    known = [(i, e, e.variance()) for i, e in enumerate(estimates) if e.variance() is not None]
    pairs = []
    for a in range(len(estimates)):
        for b in range(a + 1, len(estimates)):
            ea, eb = estimates[a], estimates[b]
            if ea.low is None or eb.low is None:
                continue
            if ea.high < eb.low or eb.high < ea.low:  # type: ignore[operator]
                pairs.append((a, b))
    if not known:
        means = [e.mean for e in estimates]
        if not means:
            return Pooled(Estimate(0.0, None, 0), pairs, None)
        if len(means) == 1:
            return Pooled(estimates[0], pairs, None)
        return Pooled(combine_windows([Estimate(m, None, 1) for m in means]), pairs, None)
    if len(known) == 1:
        return Pooled(known[0][1], pairs, None)
    floor = 1e-12
    v = np.asarray([max(var, floor) for _, _, var in known])
    x = np.asarray([e.mean for _, e, _ in known])
    w = 1.0 / v
    fixed = float(np.sum(w * x) / np.sum(w))
    q = float(np.sum(w * (x - fixed) ** 2))
    k = len(known)
    p_value = float(stats.chi2.sf(q, k - 1))
    tau2 = max(0.0, (q - (k - 1)) / (np.sum(w) - np.sum(w * w) / np.sum(w)))
    w_star = 1.0 / (v + tau2)
    mean = float(np.sum(w_star * x) / np.sum(w_star))
    se = math.sqrt(1.0 / float(np.sum(w_star)))
    df = 1e6  # the DerSimonian–Laird interval uses the normal quantile
    half = t_quantile(df) * se
    return Pooled(Estimate(mean, half, sum(e.n for _, e, _ in known), df), pairs, p_value)
