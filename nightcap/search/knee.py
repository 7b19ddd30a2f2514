"""The knee of a saturation search: the plateau of the good levels, the fewest users on it, where between two
doubling levels it lies, and the level deeper in where the pod's figure is measured (`plateau_users`).

The knee is the fewest users within noise of the plateau's goodput (or within 1%), never the peak of another
level; its goodput therefore sits up to that noise under the plateau, which is why a reported figure is
confirmed on fresh windows deeper in (`nightcap.search.confirm`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from nightcap.analysis.slo import Slo
from nightcap.search.levels import Level, SearchParams, SearchResult


PLATEAU = 0.01  # a level within 1% of the plateau is on it whatever the intervals say


def plateau(good: Sequence[Level], p: SearchParams) -> tuple[float, float, float]:
    """(best goodput, the plateau's goodput, its half-width): the plateau is the median of the good levels within
    min_gain of the best, so one lucky window (a burst after a stall) does not set the bar for every other level."""
    best = max(lv.rps for lv in good)
    top = [lv for lv in good if lv.rps >= best * (1 - p.min_gain)]
    halves = sorted(lv.rps_halfwidth or 0.0 for lv in top)
    rates = sorted(lv.rps for lv in top)
    mid = len(top) // 2
    median = rates[mid] if len(top) % 2 else (rates[mid - 1] + rates[mid]) / 2
    return best, median, halves[mid]


def reaches(lv: Level, good: Sequence[Level], p: SearchParams) -> bool:
    """`lv` is on the plateau of the `good` levels: within min_gain of the best goodput, and within their combined
    95% noise (or 1%) of the plateau's goodput (`plateau`).

    min_gain alone would put the knee at the first level 5% short of the plateau (4 users at 190 rps when 5
    give 200), a figure biased low by up to min_gain; the noise decides instead, bounded by min_gain.
    """
    best, level, half = plateau(good, p)
    if lv.rps < best * (1 - p.min_gain):
        return False
    noise = math.hypot(lv.rps_halfwidth or 0.0, half)
    return lv.rps >= level - max(noise, PLATEAU * level)


PLATEAU_REACH = 2.0  # the plateau's figure is measured at most this many times the knee's users


PLATEAU_P95_SHARE = 0.8  # ... at a level whose p95 left this much of the SLO, so fresh windows do not fail it


def on_plateau(lv: Level, good: Sequence[Level], p: SearchParams) -> bool:
    """`lv`, a level at or past the knee, is not clearly below the plateau's goodput: within their combined 95%
    noise (or 1%) of it. Unlike `reaches` it does not also ask for min_gain of the best level: that places the knee
    (the fewest users), while a level deeper in only has to show it is not past a decline."""
    _, level, half = plateau(good, p)
    noise = math.hypot(lv.rps_halfwidth or 0.0, half)
    return lv.rps >= level - max(noise, PLATEAU * level)


def plateau_users(levels: Sequence[Level], knee_users: int | None, slo: Slo, p: SearchParams) -> int | None:
    """Where a pod's capacity is measured: the good level on the plateau (`on_plateau`) with the most users, at most
    PLATEAU_REACH × the knee's users and with p95 within PLATEAU_P95_SHARE of the SLO; the knee if none.

    The knee is the fewest users *within noise* of the plateau, so its goodput sits up to that noise below it: a
    soft knee (a per-connection balancer spreading 9 users over 2 × 4 slots as 5 and 4) measured 3-5% under the
    service's capacity in every run. The deepest level into the plateau is chosen by users, not by goodput:
    the level with the best goodput is often the knee itself on a lucky window. Whichever is chosen, the figure
    is then measured there on fresh windows (`nightcap.search.confirm`), never on the windows that chose it.
    A deeper level only has to be not clearly below the plateau: the bundled model's 0.5-CPU pod read 109.7 ± 10 rps
    at 1 user and 95 ± 50 at 2 on one window each in tune, so 2 users did not *reach* and the figure was measured
    at 1 user, 108 rps, while the same run's later windows at 2-14 users read 132-142 (a one-worker server idles
    while a single client turns around); three of five consistency runs measured their figure there.
    """
    if knee_users is None:
        return None
    good = [lv for lv in levels if lv.good]
    near = [lv for lv in good if knee_users <= lv.users <= PLATEAU_REACH * knee_users and on_plateau(lv, good, p)
            and lv.p95_ms is not None and slo.scaled(PLATEAU_P95_SHARE).p95_met(lv.p95_ms)]
    return max(lv.users for lv in near) if near else knee_users


def knee_of(levels: dict[int, Level], p: SearchParams) -> tuple[Level, Level | None, float] | None:
    """The knee (fewest users on the peak's plateau: `reaches`), the good level just below it, and the peak."""
    good = sorted((lv for lv in levels.values() if lv.good), key=lambda lv: lv.users)
    if not good:
        return None
    knee = next(lv for lv in good if reaches(lv, good, p))
    below = [lv for lv in good if lv.users < knee.users]
    return knee, (below[-1] if below else None), max(lv.rps for lv in good)


def refine_knee(at: Callable[[int, float], Level], levels: dict[int, Level], p: SearchParams) -> None:
    """Place the knee between the doubling levels around it when the rise stopped short of linear.

    Doubling can stop on errors with the knee anywhere between its last two good levels (16 users at 320
    rps, 32 at 480: the knee may be 24). Throughput that rose linearly to the knee meets the peak where the
    line through the level below does, so that users count is measured first; if it falls short, bisect.
    A rise that was linear all the way (the knee at the upper level) costs nothing.
    """
    lo_users = 0
    for _ in range(p.refine_steps):
        found = knee_of(levels, p)
        if found is None or found[1] is None:
            return
        knee, below, peak = found
        lo = max(below.users, lo_users)
        if knee.users - lo < 2 or below.rps <= 0:
            return
        if lo_users == 0:  # first try: where the line through `below` reaches the peak
            guess = round(below.users * peak / below.rps)
            if guess >= knee.users * (1 - p.min_gain):
                return  # linear up to the knee level: it is the knee
            guess = max(guess, lo + 1)
        else:
            guess = (lo + knee.users) // 2
        if guess in levels or not lo < guess < knee.users:
            return
        lv = at(guess, peak)
        if not (lv.good and reaches(lv, [x for x in levels.values() if x.good], p)):
            lo_users = guess  # still rising there: the knee is above it


def report_knee(result: SearchResult, good: list[Level], p: SearchParams) -> None:
    """Saturation and operating point from the knee of the good levels (sorted by users)."""
    knee = next(lv for lv in good if reaches(lv, good, p))
    # the figure measured where it is reported: the knee's own goodput, not the best level's
    result.saturation_users, result.saturation_rps = knee.users, knee.rps
    result.saturation_halfwidth = knee.rps_halfwidth
    result.operating_users = max(1, math.floor(knee.users * p.headroom))
    result.operating_rps = knee.rps * p.headroom
    result.operating_halfwidth = None if knee.rps_halfwidth is None else knee.rps_halfwidth * p.headroom
