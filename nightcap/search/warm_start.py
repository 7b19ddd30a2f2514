"""Warm start: verify last night's answer with a few levels around it instead of searching from one user.

A nightly check measures the same model night after night, and most nights its knee has not moved. So when
a comparable night (same comparison key, same pod configuration) found a knee at K users, tonight first
measures a level below K, K itself and a level above it:

- rising below (the level below is more than `min_gain` under K's goodput),
- K still the knee (within `min_gain` of the peak of the three), flat above it (no gain over `min_gain`),
- and every verdict (within the SLO or not) as it was that night.

Then K is tonight's knee: its goodput, interval and operating point are measured tonight at K (topped up to
`search.precision`), and last night's SLO capacity is verified the same way (its level good, the level that
failed then failing now). Otherwise the full search runs, reusing the windows already measured, and the
reason says what moved. A warm start only skips the levels that *locate* the knee; every figure it reports
is measured tonight.

The fine-tune stage does the same with pod sizes (`nightcap.search.warm_start_tune`): last night's choice and its grid
neighbours, and the full planner only if the choice moved.

Pure: the search takes a `measure(users)` callable; nothing here imports Prefect, Locust or Kubernetes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

from nightcap.analysis.slo import Slo
from nightcap.search.knee import plateau_users, reaches
from nightcap.search.levels import (Level, LevelBook, Measured, SearchParams, SearchResult, clearly_in_or_out,
                                    decisive_errors, judge, rising_or_failing)
from nightcap.search.saturation import find_saturation, walk_slo_capacity


@dataclass(frozen=True)
class PriorLevel:
    """One level an earlier night measured: its users, goodput and verdict."""

    users: int
    rps: float
    good: bool


@dataclass(frozen=True)
class PriorSearch:
    """What a comparable earlier night's search found, read from its summary.json block."""

    run_id: str
    saturation_users: int
    saturation_rps: float | None = None
    slo_users: int | None = None
    levels: tuple[PriorLevel, ...] = ()

    @classmethod
    def from_block(cls, run_id: str, block: Mapping[str, Any] | None) -> "PriorSearch | None":
        """From a stage block (`single_client`, `multi_client`): None when that night found no saturation."""
        if not isinstance(block, Mapping):
            return None
        sat = block.get("saturation") or {}
        users = sat.get("users") if isinstance(sat, Mapping) else None
        if not isinstance(users, int) or isinstance(users, bool) or users < 1 or sat.get("found") is False:
            return None
        slo = block.get("slo_capacity") or {}
        levels = []
        for lv in block.get("levels") or []:
            try:
                levels.append(PriorLevel(int(lv["users"]), float(lv["rps"]), bool(lv["good"])))
            except (KeyError, TypeError, ValueError):
                continue
        slo_users = slo.get("users") if isinstance(slo, Mapping) else None
        return cls(run_id, users, _float(sat.get("rps")), slo_users if isinstance(slo_users, int) else None,
                   tuple(sorted(levels, key=lambda lv: lv.users)))

    def level(self, users: int) -> PriorLevel | None:
        return next((lv for lv in self.levels if lv.users == users), None)


@dataclass
class WarmStart:
    """What the warm start did for one search (summary.json `warm_start`)."""

    from_run: str | None
    accepted: bool
    # measured tonight to verify, in order: users (a search), or pod sizes' labels (tune's candidates)
    levels: list[Any] = field(default_factory=list)
    windows: int = 0  # windows those levels took
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def disabled(reason: str) -> WarmStart:
    """No warm start tonight, and why (turned off, no comparable night, another pod size)."""
    return WarmStart(None, False, reason=reason)


# --------------------------------------------------------------------------------------- the search


def verify_levels(prior: PriorSearch, p: SearchParams) -> tuple[int | None, int, int | None]:
    """(below, at, above): the users counts that verify `prior`'s knee, from the levels that night measured.

    Below: the largest good level under the knee that was clearly rising then (2 x min_gain under the knee's
    goodput), so noise cannot make it look flat; none when the knee was at the first level. Above: the
    first measured level at least 3 x min_gain past the knee in users, so a knee that moved up shows a gain
    beyond min_gain there. Without such levels, 15% either side.
    """
    at = min(prior.saturation_users, p.max_users)
    knee_rps = prior.level(at).rps if prior.level(at) else prior.saturation_rps
    below: int | None = None
    if at > max(1, p.start_users):
        under = [lv for lv in prior.levels if lv.good and lv.users < at]
        clear = [lv for lv in under if knee_rps and lv.rps <= knee_rps * (1 - 2 * p.min_gain)]
        if clear or under:
            below = (clear or under)[-1].users
        else:
            below = max(1, min(at - 1, math.floor(at * (1 - 3 * p.min_gain))))
    above: int | None = None
    if at < p.max_users:
        wanted = at * (1 + 3 * p.min_gain)
        over = [lv.users for lv in prior.levels if lv.users > at and lv.users <= p.max_users]
        far = [u for u in over if u >= wanted]
        above = far[0] if far else (over[-1] if over else min(p.max_users, max(at + 1, math.ceil(wanted))))
    return below, at, above


def _verdict(lv: Level) -> str:
    return "within the SLO" if lv.good else f"bad ({lv.why_bad})"


def _shape(levels: LevelBook, prior: PriorSearch, below: int | None, at: int, above: int | None,
           p: SearchParams) -> str:
    """Why tonight's levels do not show last night's knee at `at` users ("; "-joined), or "" when they do."""
    knee = levels.levels[at]
    if knee.generator_bound:
        return f"the load generator was CPU-bound at {at} users"
    if not knee.good:
        return f"the knee level {at} users is now {_verdict(knee)}"
    why: list[str] = []
    for users in (below, above):
        if users is None:
            continue
        lv = levels.levels[users]
        if lv.generator_bound:
            return f"the load generator was CPU-bound at {users} users"
        then = prior.level(users)
        if then is None and users < at:
            then = PriorLevel(users, 0.0, True)  # below the knee is good by definition of the knee
        if then is not None and then.good != lv.good:
            why.append(f"{users} users was {'within the SLO' if then.good else 'bad'} on run {prior.run_id} and "
                       f"is {_verdict(lv)} tonight")
    good = sorted((levels.levels[u] for u in (below, at, above) if u is not None and levels.levels[u].good),
                  key=lambda lv: lv.users)
    peak = max(lv.rps for lv in good)
    now = next(lv for lv in good if reaches(lv, good, p))  # tonight's knee among these levels (the search's rule)
    if now.users > at:
        why.append(f"throughput still rises past {at} users: {now.users} users give {now.rps:.1f} rps against "
                   f"{knee.rps:.1f} at {at} (more than {p.min_gain:.0%}): the knee moved up")
    if now.users < at:
        why.append(f"{now.users} users already reach {now.rps:.1f} rps, within {p.min_gain:.0%} of the peak "
                   f"{peak:.1f} (rising expected below {at} users): the knee moved down")
    return "; ".join(why)


def warm_search(measure: Callable[[int], Measured], slo: Slo, params: SearchParams | None,
                prior: PriorSearch) -> tuple[SearchResult, WarmStart]:
    """Verify `prior`'s knee with a level below, at and above it; the full search only if it moved.

    The knee level is measured first (to the precision: its goodput is the reported figure), then the level
    below (one window when it is clearly under the knee), then the level above (one window when it clearly
    gains or fails). Accepted: the SLO capacity is verified at last night's last good level and the level
    that failed above it, else searched from the levels known. Refused: `find_saturation` runs with the
    windows already measured, and the record says why.
    """
    p = params or SearchParams()
    levels = LevelBook(measure, slo, p)
    below, at, above = verify_levels(prior, p)
    knee = levels.at(at)
    reason = ""
    if knee.good and not knee.generator_bound:
        if below is not None:
            levels.at(below, _clearly_below(slo, p, knee.rps))
        if above is not None:
            levels.at(above, rising_or_failing(slo, p, knee))
        reason = _shape(levels, prior, below, at, above, p)
    else:
        reason = _shape(levels, prior, None, at, None, p)
    record = WarmStart(prior.run_id, not reason, list(levels.order), levels.count)
    if reason:
        record.reason = f"fell back to the full search: {reason}"
        result = find_saturation(measure, slo, p, known=levels.windows)
        return result, record
    knee = levels.top_up(at)
    if not knee.good:  # the top-up windows turned it: a knee that does not hold is no knee
        record.accepted, record.levels, record.windows = False, list(levels.order), levels.count
        record.reason = f"fell back to the full search: the knee level {at} users turned {_verdict(knee)}"
        return find_saturation(measure, slo, p, known=levels.windows), record
    parts = [f"{u} users {levels.levels[u].rps:.1f} rps" for u in (below, at, above) if u is not None]
    record.reason = (f"run {prior.run_id}'s knee at {at} users holds: " + ", ".join(parts)
                     + (f" (rising below, flat within {p.min_gain:.0%} above, verdicts as then)"))
    slo_note = ""
    if p.slo_capacity:
        slo_note = _verify_slo_capacity(levels, prior, slo, p)
    record.levels, record.windows = list(levels.order), levels.count
    record.reason += slo_note
    return _result(levels, at, slo, p, f"warm start: {record.reason}"), record


def _clearly_below(slo: Slo, p: SearchParams, knee_rps: float) -> Callable[[Measured], bool]:
    """One window settles the level below the knee when it fails clearly or is far under the knee's goodput."""
    def decisive(m: Measured) -> bool:
        if decisive_errors(m, slo):
            return True
        good, _ = judge(m, slo)
        return good and m.rps < knee_rps * (1 - 3 * p.min_gain)
    return decisive


def _verify_slo_capacity(levels: LevelBook, prior: PriorSearch, slo: Slo, p: SearchParams) -> str:
    """Last night's last good level still good and the level that failed above it still failing: the SLO
    capacity is that level, measured tonight. Otherwise search from what is known (as the cold search does)."""
    last_good = prior.slo_users
    failed = min((lv.users for lv in prior.levels if not lv.good and last_good is not None
                  and lv.users > last_good), default=None)
    in_or_out = clearly_in_or_out(slo)
    verified = last_good is not None and last_good <= p.max_users
    if verified:
        verified = levels.at(last_good, in_or_out).good
    if verified and failed is not None and failed <= p.max_users:
        verified = not levels.at(failed, in_or_out).good and not levels.levels[failed].generator_bound
    note = ""
    if verified:
        note = f"; SLO capacity {last_good} users as then"
    else:
        walk_slo_capacity(lambda u: levels.at(u, in_or_out), levels.levels, p)
        note = f"; SLO capacity searched again (run {prior.run_id} had {last_good} users)"
    top = max((lv for lv in levels.levels.values() if lv.good), key=lambda lv: lv.users)
    levels.top_up(top.users)
    return note


def _result(levels: LevelBook, at: int, slo: Slo, p: SearchParams, stop_reason: str) -> SearchResult:
    """The search result of an accepted warm start: the knee at `at`, the SLO capacity at the top good level
    (as `find_saturation` reports it)."""
    knee = levels.levels[at]
    good = sorted((lv for lv in levels.levels.values() if lv.good), key=lambda lv: lv.users)
    top = good[-1]
    result = SearchResult(
        saturation_users=knee.users, saturation_rps=knee.rps,
        operating_users=max(1, math.floor(knee.users * p.headroom)), operating_rps=knee.rps * p.headroom,
        slo_users=top.users, slo_rps=top.rps,
        levels=sorted(levels.levels.values(), key=lambda lv: lv.users), stop_reason=stop_reason, found=True,
        saturation_halfwidth=knee.rps_halfwidth,
        operating_halfwidth=None if knee.rps_halfwidth is None else knee.rps_halfwidth * p.headroom,
        slo_halfwidth=top.rps_halfwidth, plateau_users=plateau_users(good, knee.users, slo, p))
    result.windows = sum(lv.windows for lv in result.levels)
    return result


def search(measure: Callable[[int], Measured], slo: Slo, params: SearchParams | None,
           prior: PriorSearch | None, why_cold: str = "") -> tuple[SearchResult, WarmStart]:
    """The saturation search, warm when a prior is given, cold (saying why) when not."""
    if prior is None:
        return find_saturation(measure, slo, params), disabled(why_cold or "no comparable night to start from")
    return warm_search(measure, slo, params, prior)


# ------------------------------------------------------------------------------------ choosing the prior


def prior_from_history(store: Any, config: Any, spec: Any, run_id: str, stage: str
                       ) -> tuple[PriorSearch | None, str]:
    """The night to start tonight's `stage` search from (`prior_search` over the store's comparable nights, on
    tonight's pod `spec` and `config.platform.replicas`), or None and why not: turned off, no store, none."""
    if not config.search.warm_start:
        return None, "search.warm_start is false"
    if store is None:
        return None, "no history store"
    plat = config.platform
    pod = {"cpu": spec.cpu if spec else plat.cpu, "memory": spec.memory if spec else plat.memory,
           "concurrency": spec.concurrency if spec else plat.concurrency, "replicas": plat.replicas}
    try:
        runs = store.comparable_runs(config.config_hash(), config.regression.nights, exclude_run_id=run_id)
    except Exception as exc:  # the history informs the search; it must not cost it
        return None, f"history unavailable ({exc})"
    return prior_search(runs, stage, pod)


def pod_of(block: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The pod configuration a search ran on (cpu, memory, concurrency, replicas), as summary.json has it."""
    if not isinstance(block, Mapping):
        return None
    keys = ("cpu", "memory", "concurrency", "replicas")
    return {k: block.get(k) for k in keys}


def same_pod(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Same cpu, memory, concurrency and replicas (CPU compared to a millicore)."""
    if not a or not b:
        return False
    for key in ("cpu", "memory", "concurrency", "replicas"):
        x, y = a.get(key), b.get(key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if abs(float(x) - float(y)) > 5e-4:
                return False
        elif x != y:
            return False
    return True


def prior_search(runs: Iterable[Mapping[str, Any]], stage: str, pod: Mapping[str, Any]
                 ) -> tuple[PriorSearch | None, str]:
    """The newest comparable night (runs newest first, completed, same comparison key) whose `stage` search
    ran on the same pod configuration and found a knee; else None and why."""
    seen = 0
    other_pod = 0
    for run in runs:
        seen += 1
        summary = run.get("summary") or {}
        if not isinstance(summary, Mapping):
            continue
        block = summary.get(stage)
        if not isinstance(block, Mapping):
            continue
        if not same_pod(pod_of(summary.get("platform")), pod):
            other_pod += 1
            continue
        prior = PriorSearch.from_block(str(run.get("run_id")), block)
        if prior is not None:
            return prior, ""
    if not seen:
        return None, "no completed comparable night in the history"
    if other_pod:
        return None, (f"no comparable night ran {stage} on this pod configuration "
                      f"({other_pod} of {seen} ran another)")
    return None, f"no comparable night found a saturation point in {stage} ({seen} looked at)"


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
