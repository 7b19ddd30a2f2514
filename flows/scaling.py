"""Manual scaling: saturation at 1, 2, … pods of the tuned size; efficiency, SLO capacity per core count, USL."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.saturation import steps_frame
from nightcap.analysis.sizing import max_replicas, slo_capacity_by_cores
from nightcap.analysis.usl import fit_usl_steps
from nightcap.results.plots import plot_p95_by_cores, usl_plot
from nightcap.results.stages import ScalingResult, ScalingRow
from nightcap.run.context import RunContext
from tasks.measure import run_search, search_params


@flow(name="manual-scaling", flow_run_name="scaling {run_id}")
def scaling(run_id: str) -> ScalingResult:
    """Saturation at 1, 2, ... pods of the tuned size: per-pod throughput, efficiency, USL fit, SLO users by cores."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    assert ctx.platform is not None
    top = max_replicas(ctx.config.scaling.max_replicas, ctx.spec.cpu if ctx.spec else None,
                       getattr(ctx.platform, "allocatable_cpu", None))
    if top < ctx.config.scaling.max_replicas:
        ctx.warn(f"scaling stopped at {top} replica(s): {getattr(ctx.platform, 'allocatable_cpu', '?')} allocatable "
                 f"cores / {ctx.spec.cpu if ctx.spec else '?'} CPU per pod (scaling.max_replicas is "
                 f"{ctx.config.scaling.max_replicas})")
    rows: list[ScalingRow] = []
    try:
        for n in range(1, top + 1):
            ctx.platform.scale(n)
            result = run_search(ctx, "scaling", ctx.config.load.workers, search_params(ctx, max_windows=1))
            sat = result.saturation_rps or 0.0
            base = rows[0].saturation_rps if rows else sat
            rows.append(ScalingRow(replicas=n, saturation_rps=sat, saturation_users=result.saturation_users,
                                   rps_per_pod=sat / n, efficiency=sat / (n * base) if base else None,
                                   slo_users=result.slo_users, stop_reason=result.stop_reason,
                                   rps_halfwidth=result.saturation_halfwidth,
                                   batches=knee.batches if (knee := result.level(result.saturation_users or 0)) else 0))
            logger.info("scaling: %d replica(s) -> %.1f rps (%.0f%% efficiency)", n, sat,
                        100 * (rows[-1].efficiency or 0))
    finally:
        ctx.platform.scale(ctx.config.platform.replicas)
    steps = ctx.stage_steps("scaling")
    frame = steps_frame(steps)
    one_pod = frame[frame["replicas"] == 1] if not frame.empty else frame
    fit = fit_usl_steps(frame, ctx.config.slo, by="replicas")
    by_cores = slo_capacity_by_cores(frame, ctx.config.slo)
    result = ScalingResult(rows=rows, usl=fit, usl_users_one_pod=fit_usl_steps(one_pod, ctx.config.slo, by="users"),
                           one_pod_max_users=int(one_pod["users"].max()) if len(one_pod) else 0,
                           by_cores=by_cores.to_dict(orient="records") if len(by_cores) else [])
    plots = [usl_plot(fit, [r.__dict__ for r in rows], ctx.out / "scaling_usl.png"),
             plot_p95_by_cores(steps, ctx.out / "p95_by_cores.png", ctx.config.slo.p95_ms)]
    result.plots = [p for p in plots if p]
    ctx.results.scaling = result
    return result
