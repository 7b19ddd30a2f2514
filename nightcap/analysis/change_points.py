"""Where did a nightly series change level? E-divisive means with a significance test (Apache Otava).

The hindsight view of `nightcap history` and the trend plot, not the nightly alarm: its significance is per
figure and per series, which no per-night false-alarm rate can hold (the alarm is `regression.py`). A
change-point analysis looks at the whole series: E-divisive means (Matteson & James 2014) splits the series
where the values before and after differ most, and keeps a split only when a Student's t-test between its
two sides gives a p-value below `max_pvalue`. Otava runs it as Fleming et al. (2023) describe for DataStax's
nightly performance tests (split over windows at a relaxed p-value, then merge the weak points back
until every one left is significant); MongoDB's nightly performance alerts use the same family.

Pure: numpy and `otava.analysis` (which imports numpy and scipy only, none of Otava's I/O clients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

MAX_PVALUE = 0.001  # Otava's default; 14 nights of 5% noise give a false change point in ~2% of series
WINDOW = 50  # nights per E-divisive window; nightly series are shorter, so one window covers them


@dataclass(frozen=True)
class ChangePoint:
    """The series changed level at `index`: the first value of the new level."""

    index: int
    mean_before: float  # mean of the level that ends here (from the previous change point)
    mean_after: float  # mean of the level that starts here (to the next change point)
    pvalue: float

    @property
    def change_pct(self) -> float:
        """Signed change of the level, relative to the level before."""
        if self.mean_before == 0:
            return 0.0 if self.mean_after == 0 else math.copysign(math.inf, self.mean_after)
        return (self.mean_after - self.mean_before) / abs(self.mean_before) * 100


def finite(value: Any) -> float | None:
    """A finite float, or None for None, booleans, non-numbers, NaN and infinity (a night that did not measure)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def find_change_points(values: Sequence[Any], *, max_pvalue: float = MAX_PVALUE,
                       min_change: float = 0.0) -> list[ChangePoint]:
    """Change points of a series, oldest value first; missing values (None, NaN) are skipped.

    Indices refer to `values` as given, so a night that did not measure the figure keeps its place.
    `min_change` (a fraction) drops level changes smaller than that even when significant: three nights
    within 0.1% of each other after one 6% lower make a significant change that no one needs to hear of.
    """
    if not 0 < max_pvalue < 1:
        raise ValueError(f"max_pvalue must be between 0 and 1, got {max_pvalue}")
    if min_change < 0:
        raise ValueError(f"min_change must be a fraction >= 0, got {min_change}")
    present = [(i, v) for i, v in ((i, finite(v)) for i, v in enumerate(values)) if v is not None]
    if len(present) < 3:
        return []  # two values are a difference, not a level: there is nothing to test
    from otava.analysis import compute_change_points

    series = [v for _, v in present]
    found, _weak = compute_change_points(series, window_len=max(WINDOW, len(series)), max_pvalue=max_pvalue,
                                         min_magnitude=min_change)
    points = []
    for cp in found:
        stats = cp.stats
        if not float(stats.pvalue) < max_pvalue:  # NaN from two constant sides, or a merge that kept a weak one
            continue
        points.append(ChangePoint(
            index=present[int(cp.index)][0],
            mean_before=float(stats.mean_before()),
            mean_after=float(stats.mean_after()),
            pvalue=float(stats.pvalue),
        ))
    return sorted(points, key=lambda p: p.index)


def levels(length: int, points: Sequence[ChangePoint]) -> list[range]:
    """The stretches of constant level between change points, covering `range(length)` in order."""
    cuts = [0, *sorted(p.index for p in points if 0 < p.index < length), length]
    return [range(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
