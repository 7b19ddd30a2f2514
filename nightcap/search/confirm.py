"""Confirm a knee on fresh windows: the figure a stage reports is measured after the search chose where.

Where: on the plateau the search found (`nightcap.search.knee.plateau_users`), not at the knee's users, whose goodput
sits up to the plateau's noise below it.

Why fresh: the search picks the knee among noisy levels, and the best of several noisy figures is biased upwards
(simulated: +2% to +3.5% on average, +8-10% at the 95th percentile). So once the knee's users are chosen,
that level is measured again on windows the choice never saw — at least `min_windows`, more until the
interval between them is within `precision` or `max_windows` — and those windows are the reported figure.
Its interval comes from their spread (`confidence.between_windows`: t on k − 1 df, never narrower than one
window's own), which holds the machine's drift from window to window.

Pure: `measure(users)` is a callable (the step runner in a flow, a model in tests and benchmarks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from nightcap.analysis.confidence import Estimate, between_windows, window_estimate
from nightcap.analysis.slo import Slo, level_of
from nightcap.search.knee import report_knee
from nightcap.search.levels import Measured, Point, SearchParams, SearchResult, judge, valid_windows


@dataclass
class ConfirmParams:
    min_windows: int = 3
    max_windows: int = 6
    precision: float = 0.05  # stop adding windows once the 95% half-width is within this share of the figure
    max_invalid: int = 3


@dataclass
class Confirmation:
    """One level measured on fresh windows: the figure, its interval, and whether it met the SLO there."""

    users: int
    windows: list[Measured] = field(default_factory=list)
    estimate: Estimate = field(default_factory=lambda: Estimate(0.0, None, 0))
    good: bool = False
    why_bad: str = ""
    p95_ms: float | None = None  # the level's p95 and error rate as the SLO judges them (`slo.level_of`)
    error_rate: float = 0.0
    generator_bound: bool = False
    fell_back_from: int | None = None  # the knee's users when the knee failed its fresh windows

    @property
    def rps(self) -> float:
        return self.estimate.mean

    @property
    def half_width(self) -> float | None:
        return self.estimate.half_width


def summarize_windows(users: int, windows: Sequence[Measured], slo: Slo, first: int | None = None) -> Confirmation:
    """Fresh windows of one level as one figure: goodput between windows, the median p95, the mean error rate.

    The level meets the SLO when that median p95 and mean error rate do; a generator-bound window makes the
    figure the generator's, not the target's.
    """
    c = Confirmation(users, list(windows))
    if not windows:
        c.why_bad = "no valid window"
        return c
    c.estimate = between_windows([window_estimate(w) for w in windows], spread_from=first)
    c.p95_ms, c.error_rate = level_of((w.p95_ms for w in windows), (w.error_rate for w in windows))
    c.generator_bound = any(w.generator_bound for w in windows)
    c.good, c.why_bad = judge(Point(users, c.estimate.mean, c.p95_ms, c.error_rate, c.generator_bound), slo)
    return c


def measure_fresh(measure: Callable[[int], Measured], users: int, slo: Slo, p: ConfirmParams) -> Confirmation:
    """`min_windows` fresh windows at `users`, then as many more as their spread says the precision needs (at most
    `max_windows`).

    Two stages, as Stein's procedure: the first windows' spread decides how many to measure, and the interval is
    that spread over the square root of all of them (t on min_windows − 1 df). Stopping the moment an interval
    looks narrow enough would stop exactly when the spread happened to come out small, and such intervals cover
    the truth less often than they claim (simulated: 90% for a 95% interval).
    Stops early on a generator-bound window (the figure would be the generator's) and on a level that plainly
    fails the SLO after `min_windows`. Invalid windows (a generator worker died) are measured again.
    """
    windows: list[Measured] = []
    fresh = valid_windows(measure, users, p.max_invalid, f"while confirming {users} users")
    target = max(p.min_windows, 1)
    while len(windows) < target:
        m = next(fresh)
        windows.append(m)
        if m.generator_bound:
            break
        if len(windows) == p.min_windows:
            first = summarize_windows(users, windows, slo)
            if not first.good:
                break
            target = windows_needed(first.estimate, p)
    return summarize_windows(users, windows, slo, first=p.min_windows)


def windows_needed(first: Estimate, p: ConfirmParams) -> int:
    """How many windows bring the half-width within `precision`, judged from the first windows' interval: it
    shrinks with the square root of the count (at least `min_windows`, at most `max_windows`)."""
    rel = first.relative
    if rel is None or rel <= p.precision:
        return p.min_windows
    return min(max(p.min_windows, math.ceil(p.min_windows * (rel / p.precision) ** 2)), p.max_windows)


def confirm_knee(measure: Callable[[int], Measured], result: SearchResult, slo: Slo,
                 p: ConfirmParams) -> Confirmation | None:
    """Fresh windows on the plateau the search found (`SearchResult.plateau_users`, the knee when it has no level
    above it); None when the search found no knee.

    A level that fails the SLO on its fresh windows sat on the SLO's edge: the next level down is confirmed instead
    (the knee, then the good level below it), and the confirmation says which level it fell back from.
    """
    if not result.saturation_users or result.saturation_rps is None:
        return None
    first = result.plateau_users or result.saturation_users
    below = [lv.users for lv in result.levels if lv.good and lv.users < result.saturation_users]
    fallbacks = ([result.saturation_users] if first != result.saturation_users else []) + below[-1:]
    tried = measure_fresh(measure, first, slo, p)
    c = tried
    for users in fallbacks:  # the next level down while the last one failed its fresh windows
        if c.good or c.generator_bound:
            return c
        c = measure_fresh(measure, users, slo, p)
        c.fell_back_from = first
    return c if c.good or c.generator_bound else tried  # none held: say why the level chosen first did not


def settle_ceiling(result: SearchResult, c: Confirmation | None, p: SearchParams) -> bool:
    """A search that reached search.max_users still gaining is a lower bound, unless the fresh windows at its top
    say the gain was one window's noise: when the confirmed figure does not beat the best good level below it by
    `min_gain` (the doubling's own rule for "flat"), the plateau was reached after all. Then `result` is marked
    found, its knee is placed among the levels below by the search's own rule (`report_knee`), and the stop reason
    says why; returns whether it changed.

    Seen in a test night: 4 slots x 40 ms (100 rps), search.max_users 16, one 1-s window per level: 8 users read
    99.8 rps, 16 users 107.7 (one window's count), so the run ended "inconclusive: throughput still grew" while
    three fresh windows at 16 users read 99.7 ± 3%.
    """
    if result.found or not result.at_ceiling or c is None or not c.good or c.generator_bound:
        return False
    below = sorted((lv for lv in result.levels if lv.good and lv.users < c.users), key=lambda lv: lv.users)
    if not below:
        return False
    best = max(below, key=lambda lv: lv.rps)
    if c.rps >= best.rps * (1 + p.min_gain):
        return False  # the growth held on fresh windows: still a lower bound
    top = result.saturation_users
    report_knee(result, below, p)
    result.found, result.at_ceiling = True, False
    result.stop_reason = (f"{result.stop_reason}, but {len(c.windows)} fresh window(s) at {c.users} users read "
                          f"{c.rps:.1f} rps, under {p.min_gain:.0%} over {best.users} users' {best.rps:.1f}: the gain "
                          f"at {top} users was one window's noise, and the knee is at {result.saturation_users} users")
    return True
