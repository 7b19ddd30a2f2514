"""Fine-tune with a low pod count: the smallest CPU, memory and concurrency with the best rps per core.

The planner settles memory first, then climbs concurrency per CPU value while throughput grows, so it
measures far fewer candidates than the grid. With a comparable night in the history (search.warm_start), last
night's choice and its grid neighbours are measured first, and the planner runs (reusing them) only if the
choice moved. Every later stage uses the chosen pod size.
"""

from __future__ import annotations

import statistics
from typing import Callable

from prefect import flow, get_run_logger

from nightcap.analysis.tuning import Candidate, CandidateResult, TunePlanner, choose, evaluate, no_room
from nightcap.platforms.base import NoRoomForPods, PlatformError, PodSpec
from nightcap.platforms.factory import initial_spec
from nightcap.results.plots import heatmap
from nightcap.results.stages import TuneResult
from nightcap.run.context import RunContext
from nightcap.search import SearchAborted, SearchResult
from nightcap.warm_start import WarmStart, disabled
from nightcap.warm_start_tune import tune_choice_holds, tune_prior_from_history
from nightcap.confirm import Confirmation
from tasks.measure import confirm_pod, run_search, search_params


def measure_candidate(ctx: RunContext, c: Candidate) -> tuple[CandidateResult, SearchResult | None]:
    """Apply the candidate on `tune.replicas` pods, run a cheap saturation search, read how the pods fared.

    Returns the candidate's result and its search (None when the candidate never got to serve)."""
    assert ctx.platform is not None
    logger = get_run_logger()
    replicas = ctx.config.tune.replicas
    ctx.spec = PodSpec(cpu=c.cpu, memory=c.memory, concurrency=c.concurrency)
    first_step = len(ctx.steps)
    ctx.generator_for(1)  # before the candidate: a generator that fails (GeneratorError) is not its answer
    try:
        ctx.platform.set_resources(ctx.spec)
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
        return evaluate(c, replicas=replicas, saturation_rps=0.0, p95_ms=None, cpu_use_pct=None,
                        memory_peak_pct=None, oom_kills=max(obs.oom_kills, 1 if "OOM" in str(exc) else 0),
                        restarts=obs.restarts, meets_slo=False), None
    steps = [s for s in ctx.steps[first_step:] if s.stage == "tune"]
    at_sat = [s for s in steps if s.users == result.saturation_users and s.valid] or steps
    cpu_use = [statistics.fmean(s.replica_cpu_pct) for s in at_sat if s.replica_cpu_pct]
    mem_peak = max((max(s.replica_memory_mb) for s in steps if s.replica_memory_mb), default=None)
    level = result.level(result.operating_users or 0)
    below = [lv for lv in result.levels if lv.good and lv.users <= (result.operating_users or 0)]
    p95 = level.p95_ms if level else (below[-1].p95_ms if below else None)
    return evaluate(
        c, replicas=replicas, saturation_rps=result.saturation_rps or 0.0, p95_ms=p95,
        cpu_use_pct=max(cpu_use) if cpu_use else None,
        memory_peak_pct=100.0 * mem_peak * 2**20 / c.memory if mem_peak and c.memory else None,
        oom_kills=sum(s.oom_kills for s in steps), restarts=sum(s.restarts for s in steps),
        meets_slo=result.saturation_rps is not None,
    ), result


@flow(name="fine-tune", flow_run_name="tune {run_id}")
def tune(run_id: str) -> TuneResult:
    """Measure pod sizes on `tune.replicas` pods (the planner picks which) and keep the best rps per core."""
    ctx = RunContext.get(run_id)
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
    best = choice.result
    assert ctx.platform is not None
    confirmation = None
    if best is not None:
        ctx.spec = PodSpec(cpu=best.candidate.cpu, memory=best.candidate.memory, concurrency=best.candidate.concurrency)
        confirmation = confirm_choice(ctx, searches.get(best.candidate))
    else:
        ctx.spec = initial_spec(ctx.config, ctx.plan)
    if getattr(ctx.platform, "spec", None) != ctx.spec:  # a restart costs a pod start: only when the size changes
        ctx.platform.set_resources(ctx.spec)
    ctx.platform.scale(ctx.config.platform.replicas)
    ctx.results.run_pod = ctx.pod_key()
    ctx.results.tune = TuneResult(
        candidates=results, candidates_measured=len(results), grid_size=planner.grid_size,
        replicas=ctx.config.tune.replicas, planner_notes=list(planner.notes), reason=choice.reason,
        limits_enforced=bool(ctx.platform.limits_enforced), best=best,
        best_search=searches.get(best.candidate) if best else None, headroom=ctx.config.search.headroom,
        plot=heatmap(results, ctx.out / "tuning_heatmap.png",
                     planner.memory or (best.candidate.memory if best else None)),  # warm: the chosen memory
        warm_start=warm, confirmation=confirmation)
    if best is None:
        raise RuntimeError(choice.reason)
    return ctx.results.tune


def confirm_choice(ctx: RunContext, search: SearchResult | None) -> Confirmation | None:
    """The chosen candidate's knee on fresh windows, on `tune.replicas` pods: its figure (the candidates were
    compared on their searches; the winner's search figure carries the pick's upward bias)."""
    if search is None or not search.saturation_users:
        return None
    assert ctx.platform is not None and ctx.spec is not None
    if getattr(ctx.platform, "spec", None) != ctx.spec:
        ctx.platform.set_resources(ctx.spec)
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
