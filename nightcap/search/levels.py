"""What the search measures: windows, levels (a user count measured until its goodput is precise), the
parameters and the result; which windows are decisive enough to settle a level at once; the book of levels one
search keeps. Pure: a level is measured through a `measure(users)` callable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Protocol, Sequence

from nightcap.analysis.confidence import Estimate, combine_windows, window_estimate
from nightcap.analysis.slo import Slo, level_of


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
        return level_estimate(self)


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
    plateau_users: int | None = None  # where the plateau's figure is confirmed (`plateau_users`); None: the knee
    at_ceiling: bool = False  # the doubling reached search.max_users still gaining (`confirm.settle_ceiling`)

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
    missed = slo.misses(m.p95_ms, m.error_rate)
    if not slo.errors_met(m.error_rate):
        return False, missed[0]
    if m.generator_bound:
        return False, "the load generator was CPU-bound"
    if m.p95_ms is None:
        return False, "no successful request"
    if missed:
        return False, missed[0]
    return True, ""


def level_estimate(level: Level) -> Estimate:
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


def valid_windows(measure: Callable[[int], Measured], users: int, max_invalid: int, where: str
                  ) -> Iterator[Measured]:
    """Valid windows at `users`, one per `next()`: an invalid one (a generator worker died) is measured again, at
    most `max_invalid` times in all, then the search is aborted (`where` says which level)."""
    invalid = 0
    while True:
        m = measure(users)
        if m.valid:
            yield m
            continue
        invalid += 1
        if invalid > max_invalid:
            raise SearchAborted(f"{invalid} invalid windows {where}")


def measure_level(measure: Callable[[int], Measured], users: int, slo: Slo, p: SearchParams,
                  decisive: Callable[[Measured], bool] | None = None,
                  windows: list[Measured] | None = None) -> Level:
    """Windows at one level until its goodput is precise (`settled`), at most max_windows valid ones.

    A first window whose verdict cannot flip on a 10% wobble (`decisive`) needs no second one: confirming a
    level that doubled the throughput, or that rejects half its requests, only costs time. `windows` holds
    the level's earlier windows (it is extended): a level whose figure is reported is topped up later.
    """
    windows = [] if windows is None else windows
    stable = bool(windows) and settled(combine_windows([window_estimate(w) for w in windows]), windows, p) \
        and not latency_miss_alone(windows, slo)
    if len(windows) == 1 and decisive is not None and not windows[0].generator_bound and decisive(windows[0]):
        stable = True  # a window measured earlier (a warm start's) that is decisive here too: no loop
    fresh = valid_windows(measure, users, p.max_invalid, f"at {users} users")
    while not stable and len(windows) < p.max_windows:
        m = next(fresh)
        windows.append(m)
        if len(windows) == 1 and decisive is not None and not m.generator_bound and decisive(m):
            break
        if settled(combine_windows([window_estimate(w) for w in windows]), windows, p) \
                and not latency_miss_alone(windows, slo):
            stable = True
            break
    estimate = combine_windows([window_estimate(w) for w in windows])
    stable = settled(estimate, windows, p)  # a decisive window may be precise already
    last = windows[-1]
    p95, errors = level_of((w.p95_ms for w in windows), (w.error_rate for w in windows))  # the level, not a window
    good, why = judge(Point(users, estimate.mean, p95, errors, last.generator_bound), slo)
    bound = last.generator_bound and slo.errors_met(errors)  # see judge: errors name the target
    if not bound and any(w.generator_bound for w in windows) and slo.errors_met(errors):
        # one starved window makes the level untrustworthy: its rps would enter the average below
        bound, good, why = True, False, "the load generator was CPU-bound in a window at this level"
    return Level(users, estimate.mean, p95, errors, len(windows), stable, good, bound, why,
                 rps_halfwidth=estimate.half_width, batches=estimate.n)


def latency_miss_alone(windows: Sequence[Measured], slo: Slo) -> bool:
    """One window that misses the SLO on its p95 alone (its errors within the limit) is no verdict yet: a stall of
    a few hundred ms lifts one window's p95, and a level that fails can end a search there. bench/consistency
    12-05 09:32: a 0.5-CPU tune candidate read p95 410 ms at 1 user, where 30 other first windows of that pod
    read 49-57 ms, and tune dropped the candidate on that one window. A second window decides (unless `decisive`
    already did: far over the SLO is out at once)."""
    if len(windows) != 1:
        return False
    m = windows[0]
    return not m.generator_bound and slo.errors_met(m.error_rate) and not slo.p95_met(m.p95_ms)


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


class LevelBook:
    """The levels measured in one search, each with its windows: a level is measured once, topped up later when a
    figure is reported from it, and a fallback search starts from the windows already measured (`known`)."""

    def __init__(self, measure: Callable[[int], Measured], slo: Slo, p: SearchParams,
                 known: Mapping[int, Sequence[Measured]] | None = None) -> None:
        self.measure, self.slo, self.p = measure, slo, p
        self.known = known or {}
        self.levels: dict[int, Level] = {}
        self.windows: dict[int, list[Measured]] = {}
        self.order: list[int] = []

    def at(self, users: int, decisive: Callable[[Measured], bool] | None = None) -> Level:
        if users not in self.levels:
            self.windows[users] = list(self.known.get(users, ()))
            self.order.append(users)
            self.levels[users] = measure_level(self.measure, users, self.slo, self.p, decisive, self.windows[users])
        return self.levels[users]

    def top_up(self, users: int) -> Level:
        """More windows until the level's goodput is within the precision (a figure is reported from it)."""
        lv = self.levels[users]
        if not lv.stable and not lv.generator_bound and len(self.windows[users]) < self.p.max_windows:
            lv = self.levels[users] = measure_level(self.measure, users, self.slo, self.p, None, self.windows[users])
        return lv

    def settle(self, pick: Callable[[], Level | None]) -> None:
        """Top up the level a figure is reported from until precise; a clear verdict skipped that for speed.

        More windows can move the figure (or turn the level bad), so the pick is re-made after each top-up;
        every top-up adds a window to a level below max_windows, which bounds the loop.
        """
        while (lv := pick()) is not None and not lv.stable and not lv.generator_bound \
                and len(self.windows[lv.users]) < self.p.max_windows:
            self.top_up(lv.users)

    def good(self) -> list[Level]:
        """The good levels, by users."""
        return sorted((lv for lv in self.levels.values() if lv.good), key=lambda lv: lv.users)

    @property
    def generator_bound(self) -> bool:
        return any(lv.generator_bound for lv in self.levels.values())

    @property
    def count(self) -> int:
        return sum(len(w) for w in self.windows.values())
