"""The saturation search: pure logic over a `measure(users)` callable, so it is tested in milliseconds.

Users grow in powers of two until errors, an SLO breach or no throughput gain (< min_gain); then a binary
search between the last good and the first bad level. Throughput is goodput (successful requests only),
and each level is measured in windows until the 95% half-width of its goodput is within `precision`
(each window brings its own sub-window batch means) and its last two windows agree, or `max_windows` is
reached; the level records the half-width it reached. Saturation is the knee: the fewest users on the
plateau (`reaches`: within min_gain of the best goodput seen, and not told apart from the plateau's goodput
(the median of the levels near the best) by their intervals, or within 1%). Its goodput sits up to that noise
under the plateau, so the reported figure is measured deeper in (`plateau_users`, `nightcap.search.confirm`).
When the knee lies between two doubling levels it is placed where the linear rise meets the peak, then
bisected. The operating point is `headroom` × that figure. Optionally the search goes on past the knee to
find the most users the SLO allows (queueing adds latency long before errors appear).

The search *chooses* the knee; a figure chosen on the same windows it is reported from is biased upwards
(the best of several noisy levels). `nightcap.search.confirm` measures the chosen level again on fresh windows,
and those are what a stage reports.

Levels over the SLO or the error limit never give a throughput figure: only good levels are candidates. What
"over" means (p95 ≤ SLO meets it) is `nightcap.analysis.slo`'s rule.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from nightcap.analysis.slo import Slo
from nightcap.search.knee import knee_of, plateau_users, reaches, refine_knee, report_knee
from nightcap.search.levels import (Level, LevelBook, Measured, SearchParams, SearchResult, clearly_in_or_out,
                                    measure_level, near_peak_or_clearly_below, rising_or_failing)


def find_saturation(measure: Callable[[int], Measured], slo: Slo, params: SearchParams | None = None,
                    known: Mapping[int, Sequence[Measured]] | None = None) -> SearchResult:
    """`known`: windows already measured tonight per users count (a warm start that fell back); a level the
    search visits starts from them and is measured further only if they do not settle it."""
    p = params or SearchParams()
    book = LevelBook(measure, slo, p, known)
    last_good, first_stop, stop_reason = _double(book)
    if last_good is not None and first_stop is not None:
        _bisect(book, last_good, first_stop)
    if p.refine_knee and not book.generator_bound:
        refine_knee(lambda u, peak: book.at(u, near_peak_or_clearly_below(slo, p, peak)), book.levels, p)
    book.settle(lambda: (found[0] if (found := knee_of(book.levels, p)) else None))
    # found stays False when no level met the SLO: there is no saturation point to report
    result = SearchResult(None, None, None, None, None, None, stop_reason=stop_reason, found=False)
    if book.good():
        report_knee(result, book.good(), p)
        result.found = first_stop is not None and not first_stop.generator_bound
        result.at_ceiling = first_stop is None
        if p.slo_capacity and not book.generator_bound:
            _walk_past_knee(book)
        good = book.good()
        report_knee(result, good, p)
        top = good[-1]
        result.slo_users, result.slo_rps, result.slo_halfwidth = top.users, top.rps, top.rps_halfwidth
        result.plateau_users = plateau_users(good, result.saturation_users, slo, p)
    result.levels = sorted(book.levels.values(), key=lambda lv: lv.users)
    result.windows = sum(lv.windows for lv in result.levels)
    return result


def _double(book: LevelBook) -> tuple[Level | None, Level | None, str]:
    """Step 1: double the users until a level is bad, flat (gains under min_gain) or at the ceiling.
    (the last good level, the level that stopped the doubling, why it stopped)"""
    p, slo = book.p, book.slo
    users = max(1, min(p.start_users, p.max_users))
    last_good: Level | None = None
    while True:
        lv = book.at(users, rising_or_failing(slo, p, last_good))
        if lv.generator_bound:
            return last_good, lv, f"generator-bound at {users} users; add load.workers"
        if not lv.good:
            return last_good, lv, lv.why_bad + f" at {users} users"
        if last_good is not None and lv.rps < last_good.rps * (1 + p.min_gain):
            return last_good, lv, f"throughput gained under {p.min_gain:.0%} from {last_good.users} to {users} users"
        last_good = lv
        if users >= p.max_users:
            return last_good, None, f"reached search.max_users ({p.max_users}) while throughput still grew"
        users = min(users * 2, p.max_users)


def _bisect(book: LevelBook, last_good: Level, first_stop: Level) -> None:
    """Step 2: a binary search between the last good level and the first stop: for the knee when the stop was
    flat, for the last good level when it was bad."""
    p = book.p
    lo, hi = last_good.users, first_stop.users
    for _ in range(p.refine_steps):
        mid = (lo + hi) // 2
        if mid in (lo, hi):
            break
        lv = book.at(mid, None if first_stop.good else clearly_in_or_out(book.slo))
        if first_stop.good:  # flat: looking for the knee
            on = lv.good and reaches(lv, [x for x in book.levels.values() if x.good], p)
        else:  # bad: looking for the last good level
            on = not lv.good
        if on:
            hi = mid
        else:
            lo = mid


def _walk_past_knee(book: LevelBook) -> None:
    """Step 3: how many users fit under the SLO (keep doubling past the knee, then bisect), the figures topped up.

    The extension can find a good level with more goodput than the knee's (refinement stopped at a level that
    failed on a balancer's uneven spread, the extension's bisection then passed below it): the knee is the rule
    over every good level measured, not only those measured before.
    """
    p = book.p
    walk_slo_capacity(lambda u: book.at(u, clearly_in_or_out(book.slo)), book.levels, p)
    book.settle(lambda: max((lv for lv in book.levels.values() if lv.good), key=lambda lv: lv.users, default=None))
    book.settle(lambda: (found[0] if (found := knee_of(book.levels, p)) else None))


def walk_slo_capacity(at: Callable[[int], Level], levels: dict[int, Level], p: SearchParams) -> None:
    """Past the last good level to the most users the SLO allows: double until a level fails, then bisect
    (`at` measures a level into `levels`). The cold search, `extend_to_slo` and the warm start walk the same way."""
    bad = [lv.users for lv in levels.values() if not lv.good]
    good = [lv.users for lv in levels.values() if lv.good]
    lo = max(good)
    hi = min((u for u in bad if u > lo), default=None)
    while hi is None:
        nxt = min(lo * 2, p.max_users)
        if nxt == lo:
            return  # the ceiling is still within the SLO
        lv = at(nxt)
        if lv.generator_bound:
            return
        if lv.good:
            lo = nxt
        else:
            hi = nxt
    for _ in range(p.refine_steps):
        mid = (lo + hi) // 2
        if mid in (lo, hi):
            break
        if at(mid).good:
            lo = mid
        else:
            hi = mid


def extend_to_slo(measure: Callable[[int], Measured], slo: Slo, params: SearchParams, users: int,
                  windows: Sequence[Measured], stop_reason: str) -> SearchResult:
    """A knee already known (a confirmed figure at `users`, verified by `windows` measured at it): walk past it to
    the most users the SLO allows, as the search's third step does, without searching the knee again."""
    p = params
    levels: dict[int, Level] = {}
    windows_at: dict[int, list[Measured]] = {users: list(windows)}
    levels[users] = measure_level(measure, users, slo, p, None, windows_at[users])

    def at(u: int) -> Level:
        if u not in levels:
            windows_at[u] = []
            levels[u] = measure_level(measure, u, slo, p, clearly_in_or_out(slo), windows_at[u])
        return levels[u]

    knee = levels[users]
    result = SearchResult(knee.users, knee.rps, max(1, math.floor(knee.users * p.headroom)), knee.rps * p.headroom,
                          None, None, stop_reason=stop_reason, found=knee.good,
                          saturation_halfwidth=knee.rps_halfwidth, plateau_users=users)
    if knee.good and not knee.generator_bound and p.slo_capacity:
        walk_slo_capacity(at, levels, p)
        top = max((lv for lv in levels.values() if lv.good), key=lambda lv: lv.users)
        if not top.stable and len(windows_at[top.users]) < p.max_windows:  # the figure reported from it
            top = levels[top.users] = measure_level(measure, top.users, slo, p, None, windows_at[top.users])
        if top.good:
            result.slo_users, result.slo_rps, result.slo_halfwidth = top.users, top.rps, top.rps_halfwidth
    elif knee.good:
        result.slo_users, result.slo_rps, result.slo_halfwidth = knee.users, knee.rps, knee.rps_halfwidth
    result.levels = sorted(levels.values(), key=lambda lv: lv.users)
    result.windows = sum(lv.windows for lv in result.levels)
    return result
