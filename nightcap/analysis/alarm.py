"""The nightly alarm's statistics: is the level of the last k nights outside what the baseline nights predict?

One figure, one look: the mean of the last `k` nights (tonight and the k-1 before it) against the nights
before them, in log units (capacity noise is relative: ±10% of 200 rps is ±10% of 100 rps). With `n`
baseline nights of mean m and standard deviation s, a new mean of k nights from the same level lies within
m ± t(n-1) · s · sqrt(1/k + 1/n): the prediction interval, Student's t on the n-1 degrees of freedom the
noise was estimated with (five nights know their noise badly, and t says how badly). A look at k = 2 or 3
nights lets a step too small to stand out on one night add up over two or three, as a persistent change does
and a one-off bad night does not.

The alarm is one decision per night: every look at every figure (figures x k) shares the night's false-alarm
rate `alpha` (weighted Bonferroni: a look over k nights gets k shares, so with looks at 1, 2 and 3 nights of
three figures the night alone is tested at alpha/18, three nights at alpha/6). Figures that are the same test
(rps per core is saturation / cores: with the same cores every night their log series differ by a constant
and give the same t) are counted once. Bonferroni holds whatever the correlation between figures, which a
dozen nights cannot estimate; the price is a rate below `alpha` when figures move together.

A baseline night that the other baseline nights call an outlier (studentized deleted residual, Bonferroni
p < OUTLIER_P over the baseline) is left out, at most one in five: one bad night must not widen the noise
band of the next two weeks.

Pure: numbers in, numbers out (scipy.special only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy.special import stdtr, stdtrit

OUTLIER_P = 0.01  # a baseline night is left out when the others make it this unlikely (Bonferroni over the nights)
MAX_OUTLIER_SHARE = 0.2  # at most one baseline night in five is left out
TINY = 1e-12  # a noise floor in log units, so identical nights give a finite t (resolution decides then)


@dataclass(frozen=True)
class Look:
    """One look at one figure: the mean of the last `k` nights against the baseline before them (log units)."""

    k: int
    start: int  # index (in the figure's series, tonight = len(history)) of the window's first night
    baseline: tuple[int, ...]  # indices of the baseline nights used (outliers left out)
    dropped: tuple[int, ...]  # baseline nights left out as outliers
    level: float  # the baseline's geometric mean, in the figure's unit
    window_level: float  # the window's geometric mean
    change: float  # log(window_level / level)
    scale: float  # s * sqrt(1/k + 1/n): the standard error of `change` under no change
    df: int  # n - 1
    interval: float | None  # half-width (log) of the window's own 95% interval; None when a night's is unknown
    nights: int  # comparable nights before the window (before outliers were left out)
    last: float = 0.0  # tonight's own log change: a window counts only while tonight is on its side

    @property
    def t(self) -> float:
        if self.change == 0:
            return 0.0
        return self.change / self.scale if self.scale > 0 else math.copysign(math.inf, self.change)

    def pvalue(self, worse_sign: int) -> float:
        """One-sided p-value of a change this far in the direction `worse_sign` (-1: down, +1: up)."""
        t = self.t * worse_sign
        if math.isinf(t):
            return 0.0 if t > 0 else 1.0
        return float(stdtr(self.df, -t))

    def band(self, alpha: float) -> float:
        """The log change a look like this one must exceed at one-sided level `alpha` (its noise band)."""
        return float(stdtrit(self.df, 1 - alpha)) * self.scale

    @property
    def change_pct(self) -> float:
        return pct(self.change)


@dataclass(frozen=True)
class Finding:
    """The night's verdict on one figure in one direction: the look that carries the most evidence."""

    look: Look
    pvalue: float  # the look's one-sided p-value
    adjusted: float  # / the look's share of the night's rate (weighted Bonferroni), capped at 1
    significant: bool  # adjusted < alpha
    beyond_threshold: bool  # the change is at least the smallest change worth an alarm
    beyond_interval: bool | None  # beyond the window's own interval (None: unknown, not required)
    beyond_resolution: bool  # larger than the measurement resolves

    @property
    def changed(self) -> bool:
        return (self.significant and self.beyond_threshold and self.beyond_resolution
                and self.beyond_interval is not False)


def logs(values: Sequence[float | None]) -> list[float | None]:
    """Natural logs; None for a night that did not measure, -inf for a figure measured at zero."""
    out: list[float | None] = []
    for v in values:
        if v is None or not math.isfinite(v) or v < 0:
            out.append(None)
        else:
            out.append(math.log(v) if v > 0 else -math.inf)
    return out


def baseline_nights(values: Sequence[float], indices: Sequence[int]) -> tuple[list[int], list[int]]:
    """(kept, dropped): the baseline without the nights the others call outliers (at most one in five).

    The studentized deleted residual of a night is its distance from the others' mean in units of the others'
    standard deviation (x sqrt(1 + 1/(n-1))): Student's t on n-2 degrees of freedom when it is not an outlier.
    It grows with the night's distance from the mean of all, so only the farthest night needs testing.
    """
    kept, dropped = list(indices), []
    while len(dropped) + 1 <= MAX_OUTLIER_SHARE * len(indices) and len(kept) >= 4:
        x = [values[i] for i in kept]
        n = len(x)
        mean = sum(x) / n
        worst = max(range(n), key=lambda j: abs(x[j] - mean))
        d = abs(x[worst] - mean)
        others = x[:worst] + x[worst + 1:]
        o_mean = sum(others) / (n - 1)
        # the others' spread from the others themselves: the shortcut (all nights' sum of squares less the worst
        # night's share) cancels to rounding noise when the others are alike, whose sign then depended on the
        # figure's scale (a night dropped in rps and kept in the same nights x 0.25; Hypothesis found it)
        others_sd = math.sqrt(sum((v - o_mean) ** 2 for v in others) / (n - 2))
        if others_sd <= TINY:
            break  # the others are identical: no noise to call anything an outlier by
        resid = n / (n - 1) * d / (others_sd * math.sqrt(1 + 1 / (n - 1)))
        if 2 * float(stdtr(n - 2, -resid)) * n >= OUTLIER_P:
            break
        dropped.append(kept.pop(worst))
    return kept, dropped


def look(values: Sequence[float | None], k: int, *, first: int = 0, last_n: int | None = None,
         halfwidths: Sequence[float | None] | None = None, min_nights: int = 5,
         resolution: float = 0.0) -> Look | None:
    """The look at the last `k` values of `values` (log units, tonight last) against the nights before them.

    `first` is the first night that may be a baseline (the nights since a reported change), `last_n` how many
    baseline nights at most (the newest). None when a window night was not measured or the baseline has fewer
    than `min_nights` measured nights. `halfwidths` are the nights' own 95% half-widths in log units.
    `resolution` (in the figure's unit) floors the noise: nights rounded alike have no spread, yet rounding to r
    hides up to r/sqrt(12) of it.
    """
    end = len(values)
    start = end - k
    if k < 1 or start < first or any(values[i] is None for i in range(start, end)):
        return None
    candidates = [i for i in range(first, start) if values[i] is not None and math.isfinite(values[i])]  # type: ignore[arg-type]
    if last_n:
        candidates = candidates[-last_n:]
    if len(candidates) < min_nights:
        return None
    kept, dropped = baseline_nights(values, candidates)  # type: ignore[arg-type]
    base = [float(values[i]) for i in kept]  # type: ignore[arg-type]
    n = len(base)
    mean = sum(base) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in base) / (n - 1))
    sd = max(sd, resolution / math.exp(mean) / math.sqrt(12), TINY)
    window_mean = sum(float(values[i]) for i in range(start, end)) / k  # type: ignore[arg-type]
    hw: float | None = None
    if halfwidths is not None and all(halfwidths[i] is not None for i in range(start, end)):
        hw = math.sqrt(sum(float(halfwidths[i]) ** 2 for i in range(start, end))) / k  # type: ignore[arg-type]
    return Look(k, start, tuple(kept), tuple(dropped), math.exp(mean), math.exp(window_mean), window_mean - mean,
                sd * math.sqrt(1 / k + 1 / n), n - 1, hw, len(candidates), float(values[end - 1]) - mean)  # type: ignore[arg-type]


def same_test(a: Sequence[float | None], b: Sequence[float | None]) -> bool:
    """Two log series that differ by a constant on every night (and miss the same nights) give the same t."""
    if len(a) != len(b) or any((x is None) != (y is None) for x, y in zip(a, b)):
        return False
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    return bool(diffs) and max(diffs) - min(diffs) < 1e-9


def weight(k: int) -> float:
    """A look's share of the night's false-alarm rate, relative to the others: k nights, k shares.

    A persistent change adds up over nights, a one-off bad night does not; so the looks over more nights get
    more of the rate, and a single night must stand out further. Weighted Bonferroni: the shares sum to the rate.
    """
    return float(k)


def find(looks: Sequence[Look], worse_sign: int, *, family_weight: float, alpha: float, threshold: float,
         resolution: float = 0.0) -> Finding | None:
    """The look with the smallest p-value in direction `worse_sign`, judged for the night's family.

    A window of several nights counts only while tonight itself is on the side it moved to: a change that
    persists is still there tonight, and the best night in weeks never regresses because yesterday was bad.
    """
    looks = [lk for lk in looks if lk.k == 1 or lk.last * worse_sign > 0]
    if not looks:
        return None
    best = min(looks, key=lambda lk: (lk.pvalue(worse_sign) / weight(lk.k), lk.k))
    p = best.pvalue(worse_sign)
    adjusted = min(1.0, p * max(family_weight, weight(best.k)) / weight(best.k))
    moved = best.change * worse_sign
    relative = worse_sign * math.expm1(best.change)  # as the figure reports it: 200 -> 170 rps is a 15% fall
    beyond_interval = None if best.interval is None else moved > best.interval
    resolved = abs(best.window_level - best.level) > resolution if resolution else True
    return Finding(best, p, adjusted, adjusted < alpha, relative >= threshold, beyond_interval, resolved)


def pct(change: float) -> float:
    """A log change as a signed percentage (-inf: -100%; too large to hold: inf)."""
    if change > 700:
        return math.inf
    return math.expm1(change) * 100
