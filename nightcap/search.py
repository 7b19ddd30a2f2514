"""The saturation search: pure logic over a `measure(users)` callable, so it is tested in milliseconds.

Users grow in powers of two until errors, an SLO breach or no throughput gain (< min_gain); then a binary
search between the last good and the first bad level. Throughput is goodput (successful requests only),
and each level is measured in windows until the 95% half-width of its goodput is within `precision`
(each window brings its own sub-window batch means) and its last two windows agree, or `max_windows` is
reached; the level records the half-width it reached. Saturation is the knee: the fewest users on the
plateau (`reaches`: within min_gain of the best goodput seen, and not told apart from the plateau's goodput
(the median of the levels near the best) by their intervals, or within 1%), and its figure is the goodput measured *at* those users (never the peak of another level).
When the knee lies between two doubling levels it is placed where the linear rise meets the peak, then
bisected. The operating point is `headroom` × that figure. Optionally the search goes on past the knee to
find the most users the SLO allows (queueing adds latency long before errors appear).

The search *chooses* the knee; a figure chosen on the same windows it is reported from is biased upwards
(the best of several noisy levels). `nightcap.confirm` measures the chosen level again on fresh windows,
and those are what a stage reports.

Levels over the SLO or the error limit never give a throughput figure: only good levels are candidates. What
"over" means (p95 ≤ SLO meets it) is `nightcap.analysis.slo`'s rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

from nightcap.analysis.confidence import Estimate, combine_windows, window_estimate
from nightcap.analysis.slo import Slo


class Measured(Protocol):
    """One measured window. `rps` is goodput; `rps_halfwidth` its 95% half-width over `batches` sub-windows."""

    users: int
    rps: float
    p95_ms: float | None
    error_rate: float
    generator_bound: bool
    valid: bool


@dataclass
class Point:
    """A plain `Measured`: what models, benchmarks and tests hand the search.

    Without `rps_halfwidth` (and `batches` ≥ 2) a window counts as one sample of its level.
    """

    users: int
    rps: float
    p95_ms: float | None
    error_rate: float
    generator_bound: bool = False
    valid: bool = True
    rps_halfwidth: float | None = None
    batches: int = 0


@dataclass
class Level:
    """One user count: goodput over its windows with the 95% half-width reached (`stable`: within precision)."""

    users: int
    rps: float
    p95_ms: float | None
    error_rate: float
    windows: int
    stable: bool
    good: bool
    generator_bound: bool
    why_bad: str = ""
    rps_halfwidth: float | None = None
    batches: int = 0

    @property
    def estimate(self) -> Estimate:
        return _level_estimate(self)


@dataclass
class SearchResult:
    saturation_users: int | None
    saturation_rps: float | None  # the goodput measured at saturation_users
    operating_users: int | None
    operating_rps: float | None  # headroom × saturation_rps
    slo_users: int | None
    slo_rps: float | None  # the goodput measured at slo_users
    levels: list[Level] = field(default_factory=list)
    stop_reason: str = ""
    found: bool = True
    windows: int = 0
    saturation_halfwidth: float | None = None
    operating_halfwidth: float | None = None
    slo_halfwidth: float | None = None

    def level(self, users: int) -> Level | None:
        return next((lv for lv in self.levels if lv.users == users), None)


class SearchAborted(RuntimeError):
    """The search could not produce an answer (e.g. every window invalid)."""


@dataclass
class SearchParams:
    start_users: int = 1
    max_users: int = 256
    min_gain: float = 0.05
    precision: float = 0.05  # a level is settled when its goodput's 95% half-width is within this fraction
    stable_within: float = 0.10  # ... and its last two windows agree within this fraction (drift between them)
    max_windows: int = 3
    refine_steps: int = 3
    refine_knee: bool = True  # place the knee's users between doubling levels (tuning compares rps only)
    headroom: float = 0.7
    slo_capacity: bool = True
    max_invalid: int = 3


def judge(m: Measured, slo: Slo) -> tuple[bool, str]:
    # Errors first: closed-loop users spin on instant 503s, so an overloaded target pegs the generator too;
    # calling that level generator-bound reported "no saturation found, add load.workers" for a target
    # that was plainly rejecting load.
    if not slo.errors_met(m.error_rate):
        return False, f"error rate {m.error_rate:.1%} over {slo.max_error_rate:.1%}"
    if m.generator_bound:
        return False, "the load generator was CPU-bound"
    if m.p95_ms is None:
        return False, "no successful request"
    if not slo.p95_met(m.p95_ms):
        return False, f"p95 {m.p95_ms:.0f} ms over the SLO {slo.p95_ms:.0f} ms"
    return True, ""


def _level_estimate(level: Level) -> Estimate:
    if level.rps_halfwidth is None:
        return Estimate(level.rps, None, level.batches or level.windows)
    n = max(level.batches, 2)
    return Estimate(level.rps, level.rps_halfwidth, n, float(n - 1))


def settled(estimate: Estimate, windows: Sequence[Measured], p: SearchParams) -> bool:
    """Precise enough: half-width within `precision` of the goodput, and the last two windows agree."""
    if estimate.half_width is None:
        return False
    if estimate.mean > 0 and estimate.half_width > p.precision * estimate.mean:
        return False
    if len(windows) >= 2:
        a, b = windows[-2].rps, windows[-1].rps
        return abs(a - b) <= p.stable_within * max(a, b, 1e-9)
    return True


def measure_level(measure: Callable[[int], Measured], users: int, slo: Slo, p: SearchParams,
                  decisive: Callable[[Measured], bool] | None = None,
                  windows: list[Measured] | None = None) -> Level:
    """Windows at one level until its goodput is precise (`settled`), at most max_windows valid ones.

    A first window whose verdict cannot flip on a 10% wobble (`decisive`) needs no second one: confirming a
    level that doubled the throughput, or that rejects half its requests, only costs time. `windows` holds
    the level's earlier windows (it is extended): a level whose figure is reported is topped up later.
    """
    windows = [] if windows is None else windows
    invalid = 0
    stable = bool(windows) and settled(combine_windows([window_estimate(w) for w in windows]), windows, p)
    if len(windows) == 1 and decisive is not None and not windows[0].generator_bound and decisive(windows[0]):
        stable = True  # a window measured earlier (a warm start's) that is decisive here too: no loop
    while not stable and len(windows) < p.max_windows:
        m = measure(users)
        if not m.valid:
            invalid += 1
            if invalid > p.max_invalid:
                raise SearchAborted(f"{invalid} invalid windows in a row at {users} users")
            continue
        windows.append(m)
        if len(windows) == 1 and decisive is not None and not m.generator_bound and decisive(m):
            break
        if settled(combine_windows([window_estimate(w) for w in windows]), windows, p):
            stable = True
            break
    estimate = combine_windows([window_estimate(w) for w in windows])
    stable = settled(estimate, windows, p)  # a decisive window may be precise already
    last = windows[-1]
    good, why = judge(last, slo)
    bound = last.generator_bound and slo.errors_met(last.error_rate)  # see judge: errors name the target
    if not bound and any(w.generator_bound for w in windows) and slo.errors_met(last.error_rate):
        # one starved window makes the level untrustworthy: its rps would enter the average below
        bound, good, why = True, False, "the load generator was CPU-bound in a window at this level"
    return Level(users, estimate.mean, last.p95_ms, last.error_rate, len(windows), stable, good, bound, why,
                 rps_halfwidth=estimate.half_width, batches=estimate.n)


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


def decisive_errors(m: Measured, slo: Slo) -> bool:
    """Errors far over the limit (5x it, and over 5%): no second window can turn that level good."""
    return not slo.scaled(5, error_floor=0.05).errors_met(m.error_rate)


def rising_or_failing(slo: Slo, p: SearchParams, last_good: Level | None) -> Callable[[Measured], bool]:
    """Doubling: one window settles a level that clearly fails, or clearly gains (3x min_gain) well within the SLO."""
    def decisive(m: Measured) -> bool:
        if decisive_errors(m, slo):
            return True
        good, _ = judge(m, slo)
        if not good or not slo.scaled(0.8).p95_met(m.p95_ms):
            return False
        return last_good is None or m.rps >= last_good.rps * (1 + 3 * p.min_gain)
    return decisive


def clearly_in_or_out(slo: Slo) -> Callable[[Measured], bool]:
    """SLO searches: one window settles a level far from the SLO line (or failing on errors)."""
    def decisive(m: Measured) -> bool:
        if decisive_errors(m, slo):
            return True
        if m.p95_ms is None or not slo.errors_met(m.error_rate):
            return False
        return not slo.scaled(1.5).p95_met(m.p95_ms) or slo.scaled(0.67).p95_met(m.p95_ms)
    return decisive


def near_peak_or_clearly_below(slo: Slo, p: SearchParams, peak: float) -> Callable[[Measured], bool]:
    """Knee refinement: one window settles a level at the peak or far under it; near the band's edge, two."""
    def decisive(m: Measured) -> bool:
        if decisive_errors(m, slo):
            return True
        good, _ = judge(m, slo)
        return good and (m.rps >= peak or m.rps < peak * (1 - 3 * p.min_gain))
    return decisive


def find_saturation(measure: Callable[[int], Measured], slo: Slo, params: SearchParams | None = None,
                    known: Mapping[int, Sequence[Measured]] | None = None) -> SearchResult:
    """`known`: windows already measured tonight per users count (a warm start that fell back); a level the
    search visits starts from them and is measured further only if they do not settle it."""
    p = params or SearchParams()
    levels: dict[int, Level] = {}
    windows_at: dict[int, list[Measured]] = {}
    known = known or {}

    def at(users: int, decisive: Callable[[Measured], bool] | None = None) -> Level:
        if users not in levels:
            windows_at[users] = list(known.get(users, ()))
            levels[users] = measure_level(measure, users, slo, p, decisive, windows_at[users])
        return levels[users]

    def settle(pick: Callable[[], Level | None]) -> None:
        """Top up the level a figure is reported from until precise; a clear verdict skipped that for speed.

        More windows can move the figure (or turn the level bad), so the pick is re-made after each top-up;
        every top-up adds a window to a level below max_windows, which bounds the loop.
        """
        while (lv := pick()) is not None and not lv.stable and not lv.generator_bound \
                and len(windows_at[lv.users]) < p.max_windows:
            levels[lv.users] = measure_level(measure, lv.users, slo, p, None, windows_at[lv.users])

    def good_levels() -> list[Level]:
        return [lv for lv in levels.values() if lv.good]

    # 1) double until bad, flat, or the ceiling
    users = max(1, min(p.start_users, p.max_users))
    last_good: Level | None = None
    first_stop: Level | None = None
    stop_reason = ""
    while True:
        lv = at(users, rising_or_failing(slo, p, last_good))
        if lv.generator_bound:
            stop_reason = f"generator-bound at {users} users; add load.workers"
            first_stop = lv
            break
        if not lv.good:
            stop_reason = lv.why_bad + f" at {users} users"
            first_stop = lv
            break
        if last_good is not None and lv.rps < last_good.rps * (1 + p.min_gain):
            stop_reason = f"throughput gained under {p.min_gain:.0%} from {last_good.users} to {users} users"
            first_stop = lv
            break
        last_good = lv
        if users >= p.max_users:
            stop_reason = f"reached search.max_users ({p.max_users}) while throughput still grew"
            break
        users = min(users * 2, p.max_users)

    # 2) binary search between the last good level and the first stop
    if last_good is not None and first_stop is not None:
        lo, hi = last_good.users, first_stop.users
        for _ in range(p.refine_steps):
            mid = (lo + hi) // 2
            if mid in (lo, hi):
                break
            lv = at(mid, None if first_stop.good else clearly_in_or_out(slo))
            if first_stop.good:  # flat: looking for the knee
                if lv.good and reaches(lv, good_levels(), p):
                    hi = mid
                else:
                    lo = mid
            else:  # bad: looking for the last good level
                if lv.good:
                    lo = mid
                else:
                    hi = mid

    if p.refine_knee and not any(lv.generator_bound for lv in levels.values()):
        _refine_knee(lambda u, peak: at(u, near_peak_or_clearly_below(slo, p, peak)), levels, p)

    settle(lambda: (found[0] if (found := _knee(levels, p)) else None))
    good = sorted((lv for lv in levels.values() if lv.good), key=lambda lv: lv.users)
    # found stays False when no level met the SLO: there is no saturation point to report
    result = SearchResult(None, None, None, None, None, None, stop_reason=stop_reason, found=False)
    if good:
        _report_knee(result, good, p)
        result.found = first_stop is not None and not first_stop.generator_bound

        # 3) how many users fit under the SLO (keep doubling past the knee, then bisect)
        if p.slo_capacity and not any(lv.generator_bound for lv in levels.values()):
            walk_slo_capacity(lambda u: at(u, clearly_in_or_out(slo)), levels, p)
            settle(lambda: max((lv for lv in levels.values() if lv.good), key=lambda lv: lv.users, default=None))
            # the extension can find a good level with more goodput than the knee's (refinement stopped at a
            # level that failed on a balancer's uneven spread, the extension's bisection then passed below it):
            # the knee is the rule over every good level measured, not only those measured before
            settle(lambda: (found[0] if (found := _knee(levels, p)) else None))
        good = sorted((lv for lv in levels.values() if lv.good), key=lambda lv: lv.users)
        _report_knee(result, good, p)
        top = good[-1]
        result.slo_users, result.slo_rps, result.slo_halfwidth = top.users, top.rps, top.rps_halfwidth
    result.levels = sorted(levels.values(), key=lambda lv: lv.users)
    result.windows = sum(lv.windows for lv in result.levels)
    return result


def _report_knee(result: SearchResult, good: list[Level], p: SearchParams) -> None:
    """Saturation and operating point from the knee of the good levels (sorted by users)."""
    knee = next(lv for lv in good if reaches(lv, good, p))
    # the figure measured where it is reported: the knee's own goodput, not the best level's
    result.saturation_users, result.saturation_rps = knee.users, knee.rps
    result.saturation_halfwidth = knee.rps_halfwidth
    result.operating_users = max(1, math.floor(knee.users * p.headroom))
    result.operating_rps = knee.rps * p.headroom
    result.operating_halfwidth = None if knee.rps_halfwidth is None else knee.rps_halfwidth * p.headroom


def _knee(levels: dict[int, Level], p: SearchParams) -> tuple[Level, Level | None, float] | None:
    """The knee (fewest users on the peak's plateau: `reaches`), the good level just below it, and the peak."""
    good = sorted((lv for lv in levels.values() if lv.good), key=lambda lv: lv.users)
    if not good:
        return None
    knee = next(lv for lv in good if reaches(lv, good, p))
    below = [lv for lv in good if lv.users < knee.users]
    return knee, (below[-1] if below else None), max(lv.rps for lv in good)


def _refine_knee(at: Callable[[int, float], Level], levels: dict[int, Level], p: SearchParams) -> None:
    """Place the knee between the doubling levels around it when the rise stopped short of linear.

    Doubling can stop on errors with the knee anywhere between its last two good levels (16 users at 320
    rps, 32 at 480: the knee may be 24). Throughput that rose linearly to the knee meets the peak where the
    line through the level below does, so that users count is measured first; if it falls short, bisect.
    A rise that was linear all the way (the knee at the upper level) costs nothing.
    """
    lo_users = 0
    for _ in range(p.refine_steps):
        found = _knee(levels, p)
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
                          saturation_halfwidth=knee.rps_halfwidth)
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
