"""Single-client and multi-client ramps: the saturation search with one, then several, load generators."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.saturation import p95_at_rate
from nightcap.results.plots import plot_ramp
from nightcap.results.report import operating_line
from nightcap.results.stages import RampResult
from nightcap.run.context import RunContext
from tasks.measure import run_warm_search, search_params, verify_operating_point


def _ramp(ctx: RunContext, stage: str, workers: int) -> RampResult:
    logger = get_run_logger()
    result, warm = run_warm_search(ctx, stage, workers, search_params(ctx))
    ramp = RampResult(stage=stage, workers=workers, replicas=ctx.config.platform.replicas, search=result,
                      operating_p95_ms=p95_at_rate(result.levels, result.operating_rps),
                      generator_bound_steps=sum(1 for s in ctx.stage_steps(stage) if s.generator_bound),
                      warm_start=warm)
    ramp.plot = plot_ramp(ctx.stage_steps(stage), ctx.out / f"{stage}.png",
                          f"{ctx.config.target.name}: {stage.replace('_', '-')} ramp ({workers} generator(s))",
                          ctx.config.slo.p95_ms, {"users": result.saturation_users, "rps": result.saturation_rps},
                          ctx.config.slo.max_error_rate)
    logger.info("%s: saturation %s rps at %s users (%s); SLO capacity %s users", stage,
                _r(result.saturation_rps), result.saturation_users, result.stop_reason, result.slo_users)
    if warm.from_run:
        logger.info("%s: warm start %s in %d window(s): %s", stage, "accepted" if warm.accepted else "refused",
                    warm.windows, warm.reason)
    _verify_operating_point(ctx, ramp)
    return ramp


def _verify_operating_point(ctx: RunContext, ramp: RampResult) -> None:
    """Offer headroom x saturation rps open loop: the operating point's latency is measured at its rate, and a
    miss backs off to the highest rate meeting the SLO (closed-loop users slow down with a stalling server)."""
    rate = ramp.search.operating_rps
    if not rate or ctx.config.load.verify_window_s <= 0:
        return
    check = verify_operating_point(ctx, ramp.stage, ramp.workers, rate)
    ramp.operating_check = check
    if check.verified.p95_ms is not None:  # measured at the rate, instead of interpolated along the ramp
        ramp.operating_p95_ms = check.verified.p95_ms
    get_run_logger().info("%s: operating point %.1f rps open loop: %s", ramp.stage, rate, operating_line(ramp))


def _r(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


@flow(name="single-client-ramp", flow_run_name="single-client {run_id}")
def single_client(run_id: str) -> RampResult:
    """One generator process; raise users until errors, SLO breach or no gain; refine; that is saturation."""
    ctx = RunContext.get(run_id)
    ctx.results.single_client = _ramp(ctx, "single_client", 1)
    return ctx.results.single_client


@flow(name="multi-client-ramp", flow_run_name="multi-client {run_id}")
def multi_client(run_id: str) -> RampResult:
    """Several generators whose results the master merges; says when one client was the bottleneck."""
    ctx = RunContext.get(run_id)
    ramp = _ramp(ctx, "multi_client", ctx.config.load.workers)
    single = ctx.results.single_client
    if single and single.search.saturation_rps and ramp.search.saturation_rps:
        ramp.vs_single_rps = single.search.saturation_rps
        gain = round(ramp.search.saturation_rps, 2) / round(single.search.saturation_rps, 2) - 1
        ramp.single_client_was_bottleneck = bool(gain > ctx.config.search.min_gain * 2 or single.generator_bound_steps)
    ctx.results.multi_client = ramp
    return ramp
