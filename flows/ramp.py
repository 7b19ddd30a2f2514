"""Single-client and multi-client ramps: the saturation search with one, then several, load generators."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.saturation import p95_at_rate
from nightcap.results.plots import plot_ramp
from nightcap.run.context import RunContext
from tasks.measure import result_block, run_search, search_params


def _ramp(ctx: RunContext, stage: str, workers: int) -> dict:
    logger = get_run_logger()
    result = run_search(ctx, stage, workers, search_params(ctx))
    block = result_block(result, ctx.config.search.headroom)
    block["workers"] = workers
    block["operating_point"]["p95_ms"] = p95_at_rate(result.levels, result.operating_rps)
    block["generator_bound_steps"] = sum(1 for s in ctx.stage_steps(stage) if s.generator_bound)
    ctx.summary[stage] = block
    plot = plot_ramp(ctx.stage_steps(stage), ctx.out / f"{stage}.png",
                     f"{ctx.config.target.name}: {stage.replace('_', '-')} ramp ({workers} generator(s))",
                     ctx.config.slo.p95_ms, block["saturation"])
    ctx.summary.setdefault("plots", []).append(plot.name if plot else None)
    logger.info("%s: saturation %s rps at %s users (%s); SLO capacity %s users", stage,
                _r(result.saturation_rps), result.saturation_users, result.stop_reason, result.slo_users)
    return block


def _r(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


@flow(name="single-client-ramp", flow_run_name="single-client {run_id}")
def single_client(run_id: str) -> dict:
    """One generator process; raise users until errors, SLO breach or no gain; refine; that is saturation."""
    return _ramp(RunContext.get(run_id), "single_client", 1)


@flow(name="multi-client-ramp", flow_run_name="multi-client {run_id}")
def multi_client(run_id: str) -> dict:
    """Several generators whose results the master merges; says when one client was the bottleneck."""
    ctx = RunContext.get(run_id)
    block = _ramp(ctx, "multi_client", ctx.config.load.workers)
    single = ctx.summary.get("single_client", {}).get("saturation", {})
    multi = block["saturation"]
    if single.get("rps") and multi.get("rps"):
        gain = multi["rps"] / single["rps"] - 1
        block["vs_single_client"] = {"single_rps": single["rps"], "multi_rps": multi["rps"], "change": gain}
        bottleneck = gain > ctx.config.search.min_gain * 2 or ctx.summary["single_client"].get("generator_bound_steps")
        block["single_client_was_bottleneck"] = bool(bottleneck)
        ctx.summary["multi_client_line"] = (
            f"multi-client ({block['workers']} generators) saturation {multi['rps']:.1f} rps vs single-client "
            f"{single['rps']:.1f} rps ({gain:+.0%})"
            + ("; the single client was the bottleneck" if bottleneck else "; one client was enough")
        )
    return block
