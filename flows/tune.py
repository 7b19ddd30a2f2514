"""Fine-tune with a low pod count: the smallest CPU, memory and concurrency with the best rps per core.

The planner settles memory first, then climbs concurrency per CPU value while throughput grows, so it
measures far fewer candidates than the grid. With a comparable night in the history (search.warm_start), last
night's choice and its grid neighbours are measured first, and the planner runs (reusing them) only if the
choice moved. Every later stage uses the chosen pod size.
"""

from __future__ import annotations

from typing import Callable

from prefect import flow, get_run_logger

from nightcap.analysis.pod_capacity import FigureWindow
from nightcap.analysis.tune_pairs import CpuPairs, choice_reason, cpu_rival, settle_cpu
from nightcap.analysis.tune_planner import TunePlanner
from nightcap.analysis.tuning import Candidate, CandidateResult, choose, failed, measured, no_room, operating_p95
from nightcap.platforms.base import NoRoomForPods, PlatformError, PodSpec
from nightcap.run.platform import initial_spec, resize
from nightcap.results.plots import heatmap
from nightcap.results.stages import TuneResult
from nightcap.run.context import RunContext, StageRun
from nightcap.search.confirm import Confirmation
from nightcap.search.levels import SearchAborted, SearchResult
from nightcap.search.warm_start import WarmStart, disabled
from nightcap.search.warm_start_tune import tune_choice_holds, tune_prior_from_history
from tasks.measure import Side, confirm_pod, paired_windows, run_search, search_params


def spec_of(c: Candidate) -> PodSpec:
    """The pods a candidate describes (tuning is pure and knows no platform)."""
    return PodSpec(cpu=c.cpu, memory=c.memory, concurrency=c.concurrency)


def measure_candidate(ctx: RunContext, c: Candidate) -> tuple[CandidateResult, SearchResult | None]:
    """Apply the candidate on `tune.replicas` pods, run a cheap saturation search, read how the pods fared.

    Returns the candidate's result and its search (None when the candidate never got to serve)."""
    assert ctx.platform is not None
    logger = get_run_logger()
    replicas = ctx.config.tune.replicas
    ctx.spec = spec_of(c)
    first_step = len(ctx.steps)
    ctx.generator_for(1)  # before the candidate: a generator that fails (GeneratorError) is not its answer
    try:
        resize(ctx.platform, ctx.spec)
        if ctx.platform.replicas != replicas:
            ctx.platform.scale(replicas)
        result = run_search(ctx, "tune", 1, search_params(ctx, cheap=True))
    except NoRoomForPods as exc:  # the nodes are full for this size: nothing was measured, nothing is scored
        logger.warning("candidate %s: no room on the nodes: %s", c.label(), exc)
        return no_room(c, exc.reason), None
    except (PlatformError, SearchAborted) as exc:
        # an OOM crash loop or a server that never gets ready is a measured answer for this candidate
        obs = ctx.platform.observe()
        logger.warning("candidate %s failed: %s", c.label(), exc)
        return failed(c, replicas=replicas, error=str(exc), oom_kills=obs.oom_kills, restarts=obs.restarts), None
    steps = [s for s in ctx.steps[first_step:] if s.stage == "tune"]
    return measured(c, replicas=replicas, steps=steps, saturation_users=result.saturation_users,
                    saturation_rps=result.saturation_rps, rps_halfwidth=result.saturation_halfwidth,
                    p95_ms=operating_p95(result.levels, result.operating_users)), result


@flow(name="fine-tune", flow_run_name="tune {run.run_id}")
def tune(run: StageRun) -> TuneResult:
    """Measure pod sizes on `tune.replicas` pods (the planner picks which) and keep the best rps per core."""
    ctx = run.context
    logger = get_run_logger()
    planner = TunePlanner.from_config(ctx.config.tune)
    results: list[CandidateResult] = []
    searches: dict[Candidate, SearchResult | None] = {}

    def measure(candidate: Candidate, of: str) -> None:
        logger.info("tune: measuring %s (%s)", candidate.label(), of)
        result, searches[candidate] = measure_candidate(ctx, candidate)
        logger.info("tune: %s -> %.1f rps, %.1f rps/core, %s", candidate.label(), result.saturation_rps,
                    result.rps_per_core, result.verdict)
        results.append(result)

    warm = warm_tune(ctx, measure, results)
    if not warm.accepted:  # the planner reuses what the warm start measured
        while (candidate := planner.next_candidate(results)) is not None:
            measure(candidate, f"{planner.measured} of at most {planner.grid_size}")
    choice = choose(results)
    best, reason = choice.result, choice.reason
    assert ctx.platform is not None
    pairs = pair_cpu_sizes(ctx, best, results, searches) if best is not None else None
    if pairs is not None:
        best = next(r for r in results if r.candidate == pairs.chosen)
        reason = choice_reason(choice, best, pairs)
        logger.info("tune: %s", pairs.reason)
    confirmation = None
    if best is not None:
        ctx.spec = spec_of(best.candidate)
        confirmation = confirm_choice(ctx, searches.get(best.candidate))
    else:
        ctx.spec = initial_spec(ctx.config, ctx.plan)
    resize(ctx.platform, ctx.spec)  # a restart costs a pod start: only when the size changes, and not for CPU alone
    ctx.platform.scale(ctx.config.platform.replicas)
    ctx.results.run_pod = ctx.pod_key()
    ctx.results.tune = TuneResult(
        candidates=results, candidates_measured=len(results), grid_size=planner.grid_size,
        replicas=ctx.config.tune.replicas, planner_notes=list(planner.notes), reason=reason,
        limits_enforced=bool(ctx.platform.limits_enforced), best=best,
        best_search=searches.get(best.candidate) if best else None, headroom=ctx.config.search.headroom,
        plot=heatmap(results, ctx.out / "tuning_heatmap.png",
                     planner.memory or (best.candidate.memory if best else None)),  # warm: the chosen memory
        warm_start=warm, confirmation=confirmation, cpu_pairs=pairs)
    if best is None:
        raise RuntimeError(choice.reason)
    return ctx.results.tune


def pair_cpu_sizes(ctx: RunContext, best: CandidateResult, results: list[CandidateResult],
                   searches: dict[Candidate, SearchResult | None]) -> CpuPairs | None:
    """The chosen pod against the other CPU size of its memory and concurrency, in alternating windows at their
    knees (`analysis.tune_pairs`). Only where the pods' CPU limit changes in place (the local platform's cgroups):
    elsewhere each switch would replace the pods. None when there is nothing to pair."""
    rival = cpu_rival(best, results)
    if rival is None or not ctx.platform or not ctx.platform.limits_enforced \
            or not hasattr(ctx.platform, "resize_cpu_in_place"):
        return None
    sides = []
    for r in (best, rival):
        s = searches.get(r.candidate)
        users = s and (s.plateau_users or s.saturation_users)
        if not users:
            return None
        sides.append(Side(users, 1, ctx.config.tune.replicas, spec_of(r.candidate)))
    rows_best, rows_rival = paired_windows(ctx, "tune", sides[0], sides[1], ctx.config.search.pairs)
    return settle_cpu(best.candidate, rival.candidate,
                      [FigureWindow.of(w, "tune", "pair", 1).estimate for w in rows_best],
                      [FigureWindow.of(w, "tune", "pair", 1).estimate for w in rows_rival])


def confirm_choice(ctx: RunContext, search: SearchResult | None) -> Confirmation | None:
    """The chosen candidate's knee on fresh windows, on `tune.replicas` pods: its figure (the candidates were
    compared on their searches; the winner's search figure carries the pick's upward bias)."""
    if search is None or not search.saturation_users:
        return None
    assert ctx.platform is not None and ctx.spec is not None
    resize(ctx.platform, ctx.spec)
    if ctx.platform.replicas != ctx.config.tune.replicas:
        ctx.platform.scale(ctx.config.tune.replicas)
    return confirm_pod(ctx, "tune", 1, search)


def warm_tune(ctx: RunContext, measure: Callable[[Candidate, str], None], results: list[CandidateResult]) -> WarmStart:
    """Last night's choice and its grid neighbours, measured tonight; accepted when `choose` still picks it."""
    chosen, near, from_run, why = tune_prior_from_history(ctx.store, ctx.config, ctx.run_id)
    if chosen is None:
        record = disabled(why)
        record.from_run = from_run
        return record
    before = len(ctx.stage_steps("tune"))
    for i, candidate in enumerate(near, 1):
        measure(candidate, f"warm start from run {from_run}: {i} of {len(near)}")
    holds, reason = tune_choice_holds(chosen, results)
    windows = len(ctx.stage_steps("tune")) - before
    return WarmStart(from_run, holds, [c.label() for c in near], windows,
                     reason if holds else f"the full planner ran: {reason}")
