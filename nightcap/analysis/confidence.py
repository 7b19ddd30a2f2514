"""Confidence intervals for throughput: batch means within a window, fresh windows of a figure, paired ratios.

Why batch means: the requests of one window are not independent samples (a closed loop, a CPU quota
enforced per 100 ms period, a garbage collection pause all make neighbouring instants alike), so the
variance of a window's goodput is estimated from the spread of the means of consecutive sub-windows
(batches), made long enough that neighbouring batches are nearly uncorrelated: the batch size doubles
while the lag-1 autocorrelation of the batch means stays above `MAX_LAG1` and enough batches are left,
and what correlation is left widens the interval (the AR(1) variance factor (1 + ρ) / (1 − ρ)).

Why between windows: the machine's speed drifts from one window to the next, which no sub-window of one
window can see. A reported figure is therefore the mean of several *fresh* windows (`between_windows`),
its interval from their spread (t on k − 1 degrees of freedom), never narrower than one window's own. A
ratio of two configurations (N pods vs one, several generators vs one) comes from windows that alternate
between them (`paired_ratio`), so a slow drift moves both sides of each pair alike and cancels.

Everything here is pure (numbers in, numbers out) and uses scipy's Student t quantiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

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


class GoodputWindow(Protocol):
    """A measured window's goodput; `rps_halfwidth` and `batches`, when it has them, are read too."""

    rps: float


def window_estimate(window: GoodputWindow) -> Estimate:
    """A measured window's goodput (`rps`) as an estimate: its batch means' half-width (`rps_halfwidth` over
    `batches`), or a single sample without one. Any window with those fields: a search window, a step row."""
    half = getattr(window, "rps_halfwidth", None)
    batches = int(getattr(window, "batches", 0) or 0)
    if half is None or batches < 2:
        return Estimate(window.rps, None, 1)
    return Estimate(window.rps, half, batches, float(batches - 1))


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
        rho = _lag1(means)
        if rho > max_lag1 and count >= 2 * min_batches:
            size *= 2
            continue
        df = count - 1
        half = t_quantile(df) * float(np.std(means, ddof=1)) / math.sqrt(count) * autocorrelation_factor(rho)
        return Estimate(mean, half, count, float(df)), size


def autocorrelation_factor(rho: float) -> float:
    """How much wider a mean's interval is when neighbouring samples correlate with lag-1 ρ (AR(1)):
    sqrt((1 + ρ) / (1 − ρ)); 1 for ρ ≤ 0 (a negative ρ is not trusted to narrow it), capped at ρ = 0.9."""
    r = min(max(rho, 0.0), 0.9)
    return math.sqrt((1 + r) / (1 - r))


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


def _own_floor(windows: Sequence[Estimate]) -> float | None:
    """The median of the windows' own half-widths: the floor of an interval from their spread (None: none has one)."""
    own = [w.half_width for w in windows if w.half_width is not None]
    return float(np.median(own)) if own else None


def between_windows(windows: Sequence[Estimate], spread_from: int | None = None) -> Estimate:
    """A figure measured on k fresh windows: the mean of their means, with a 95% half-width from the spread
    between them (t on k − 1 df), never narrower than the median window's own interval.

    `spread_from`: the spread of the first that many windows only (t on their count − 1 df), over √k: Stein's
    two-stage interval, exact when those first windows decided how many more to measure.

    The spread between windows holds the machine's drift from one window to the next; a window's own batch
    means cannot see it. With very few windows their spread can be small by chance (or exactly 0 on a
    deterministic server), so one window's own half-width is the floor. One window: its own interval.
    """
    ws = [w for w in windows if math.isfinite(w.mean)]
    if not ws:
        return Estimate(0.0, None, 0)
    means = np.asarray([w.mean for w in ws], dtype=float)
    mean = float(means.mean())
    floor = _own_floor(ws)
    k = len(ws)
    if k < 2:
        return Estimate(mean, floor, 1, ws[0].df)
    first = k if spread_from is None else max(2, min(spread_from, k))
    between = t_quantile(first - 1) * float(np.std(means[:first], ddof=1)) / math.sqrt(k)
    return Estimate(mean, max(between, floor or 0.0), k, float(first - 1))


def over_time(windows: Sequence[Estimate]) -> Estimate:
    """A figure from fresh windows spread over a run, in time order (a confirmation, then each later stage's
    verification): the mean of their means, with a 95% half-width from batch means over the *sequence* of windows,
    never narrower than the median window's own interval.

    Why not `between_windows`: windows minutes apart are not exchangeable. The machine's speed wanders over
    minutes (a 1-CPU pod at one user read 130-254 rps in consecutive 2-s windows, its CPU per request 4.1-6.7 ms,
    on a quiet machine), so neighbouring windows resemble each other more than windows of different stages do.
    Batch means over the sequence merge neighbouring windows while their means correlate (`batch_means`), and the
    correlation left widens the interval, so a drift between stages is in it rather than hidden by many windows.
    """
    ws = [w for w in windows if math.isfinite(w.mean)]
    if len(ws) < 2:
        return between_windows(ws)
    est, _ = batch_means([w.mean for w in ws])
    floor = _own_floor(ws) or 0.0
    if est.half_width is None:
        return Estimate(est.mean, floor or None, len(ws))
    return Estimate(est.mean, max(est.half_width, floor), len(ws), est.df)


def agree(a: Estimate, b: Estimate) -> bool:
    """Two measurements of one quantity agree when their difference is within its own 95% interval
    (sqrt(ha² + hb²)); a side without an interval counts as exact."""
    ha, hb = a.half_width or 0.0, b.half_width or 0.0
    return abs(a.mean - b.mean) <= math.hypot(ha, hb) + 1e-12


def paired_ratio(a: Sequence[Estimate], b: Sequence[Estimate], scale: float = 1.0) -> Estimate:
    """B / (scale × A) from windows measured in pairs (A, B, then B, A, ...): the mean of the pairs' ratios and
    its 95% half-width from their spread (t on pairs − 1 df), never narrower than one pair's own interval
    (the delta method over the two windows' half-widths).

    Each pair's two windows are neighbours in time, so a slow drift of the machine moves both alike and cancels
    in their ratio; `scale` is N for efficiency at N pods (B / (N × A)).
    """
    pairs = [(x, y) for x, y in zip(a, b) if x.mean > 0 and math.isfinite(y.mean)]
    if not pairs:
        return Estimate(0.0, None, 0)
    ratios = np.asarray([y.mean / (scale * x.mean) for x, y in pairs], dtype=float)
    own = [r * math.hypot(x.relative or 0.0, y.relative or 0.0) for r, (x, y) in zip(ratios, pairs)
           if x.half_width is not None or y.half_width is not None]
    floor = float(np.median(own)) if own else None
    mean = float(ratios.mean())
    k = len(pairs)
    if k < 2:
        return Estimate(mean, floor, 1)
    between = t_quantile(k - 1) * float(np.std(ratios, ddof=1)) / math.sqrt(k)
    return Estimate(mean, max(between, floor or 0.0), k, float(k - 1))
