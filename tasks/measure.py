"""Measuring tasks: one Prefect task per load window, so every step shows in the UI as it happens."""

from __future__ import annotations

from typing import Any, Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nightcap.analysis.operating_point import OperatingPointCheck, RateCheck, check_operating_point, rate_check
from nightcap.run.context import RunContext
from nightcap.load.runner import StepRunner
from nightcap.search import Measured, SearchParams, SearchResult, Slo, find_saturation
from nightcap.results.steps import StepRow
from nightcap import warm_start


@task(name="measure-window", task_run_name="{stage}: {users} users", cache_policy=NO_CACHE, persist_result=False)
def measure_window(runner: StepRunner, stage: str, users: int) -> StepRow:
    row = runner.measure(users)
    logger = get_run_logger()
    flag = " GENERATOR-BOUND" if row.generator_bound else ""
    flag += "" if row.valid else f" INVALID ({row.note})"
    logger.info("%s %3d users x %d replica(s): %7.1f rps  p50 %s ms  p95 %s ms  errors %.1f%%  generator CPU %.0f%%%s",
                stage, users, row.replicas, row.rps, row.p50_ms, row.p95_ms, 100 * row.error_rate,
                row.generator_cpu_pct, flag)
    return row


def search_params(ctx: RunContext, cheap: bool = False, **overrides: Any) -> SearchParams:
    s = ctx.config.search
    params = SearchParams(start_users=s.start_users, max_users=s.max_users, min_gain=s.min_gain,
                          precision=s.precision, stable_within=s.stable_within, max_windows=s.max_windows, refine_steps=s.refine_steps,
                          headroom=s.headroom, slo_capacity=s.slo_capacity)
    if cheap:  # tuning compares candidates' rps: one window per level, no SLO extension, no knee placement
        params.max_windows, params.slo_capacity, params.refine_steps = 1, False, min(s.refine_steps, 2)
        params.refine_knee = False
    for key, value in overrides.items():
        setattr(params, key, value)
    return params


def run_search(ctx: RunContext, stage: str, workers: int, params: SearchParams) -> SearchResult:
    """The cold saturation search with the run's generator (see `_searching`)."""
    return _searching(ctx, stage, workers, lambda measure, slo: find_saturation(measure, slo, params))


def run_warm_search(ctx: RunContext, stage: str, workers: int, params: SearchParams
                    ) -> tuple[SearchResult, warm_start.WarmStart]:
    """The saturation search, verifying the last comparable night's knee first when there is one (search.warm_start).

    Looked up before any load: the newest completed night with the same comparison key whose `stage` ran on
    tonight's pod configuration. Every figure is still measured tonight; the record says what was skipped."""
    prior, why = warm_prior(ctx, stage)
    if prior is not None:
        get_run_logger().info("%s: warm start from run %s (knee at %d users)", stage, prior.run_id,
                              prior.saturation_users)
    return _searching(ctx, stage, workers, lambda measure, slo: warm_start.search(measure, slo, params, prior, why))


def warm_prior(ctx: RunContext, stage: str) -> tuple[warm_start.PriorSearch | None, str]:
    """The night to start `stage`'s search from, or None and why not (turned off, no store, no such night)."""
    return warm_start.prior_from_history(ctx.store, ctx.config, ctx.spec, ctx.run_id, stage)


def _searching(ctx: RunContext, stage: str, workers: int,
               search: Callable[[Callable[[int], Measured], Slo], Any]) -> Any:
    """Run `search` with the run's generator; it is left idle for the next search, or stopped if the search
    failed. Teardown stops it at the end of the run, so nothing is left running whatever happens.
    """
    assert ctx.platform is not None
    gen = ctx.generator_for(workers)
    try:
        runner = StepRunner(ctx.config, ctx.platform, gen, stage, ctx.record_step, ctx.deadline, ctx.spec,
                            ctx.next_step)
        slo = Slo(ctx.config.slo.p95_ms, ctx.config.slo.max_error_rate)
        result = search(lambda users: measure_window(runner, stage, users), slo)
    except BaseException:
        ctx.release_generator()  # it may be what failed; the next search starts a fresh one
        raise
    ctx.idle_generator()
    return result


@task(name="measure-rate-window", task_run_name="{stage}: {rate_rps:.1f} rps open loop", cache_policy=NO_CACHE,
      persist_result=False)
def measure_rate_window(runner: StepRunner, stage: str, rate_rps: float, window_s: float) -> RateCheck:
    """One open-loop window at `rate_rps`, judged against the SLO (the row lands in steps.csv as load "open")."""
    row, window = runner.measure_rate(rate_rps, window_s)
    load = runner.config.load
    verdict = window.verdict(row.generator_cpu_pct, load.generator_bound_pct)
    check = rate_check(rate_rps, window, verdict, runner.config.slo, row.valid, row.note)
    get_run_logger().info(
        "%s open loop at %.1f rps: offered %.1f, goodput %.1f rps, p50 %s / p95 %s / p99 %s ms, mean %s ms, "
        "errors %.1f%%, %d late, %d dropped: %s", stage, rate_rps, window.offered_rps, window.goodput_rps,
        window.p50_ms, window.p95_ms, window.p99_ms, None if window.mean_ms is None else round(window.mean_ms, 1),
        100 * window.error_rate, window.late, window.dropped, "meets the SLO" if check.meets_slo else check.why)
    return check


def verify_operating_point(ctx: RunContext, stage: str, workers: int, rate_rps: float) -> OperatingPointCheck:
    """Offer the operating rate open loop for load.verify_s; on a miss, bisect down (search.backoff_windows
    more windows of the same length) to the highest rate that meets the SLO. The generator is left idle."""
    assert ctx.platform is not None
    load = ctx.config.load
    gen = ctx.generator_for(workers)
    try:
        runner = StepRunner(ctx.config, ctx.platform, gen, stage, ctx.record_step, ctx.deadline, ctx.spec,
                            ctx.next_step)
        check = check_operating_point(lambda rate: measure_rate_window(runner, stage, rate, load.verify_window_s),
                                      rate_rps, ctx.config.search.backoff_windows)
    except BaseException:
        ctx.release_generator()
        raise
    ctx.idle_generator()
    return check
