"""Manual scaling: 1, 2, … pods of the tuned size; efficiency from paired windows, SLO capacity per core count, USL.

One pod's figure is the run's (confirmed once; confirmed here on one pod if no stage did). At N pods the knee is
searched from N × one pod's knee; then windows alternate between one pod at its knee and N pods at theirs
(1, N, N, 1, 1, N, ...), and the efficiency at N is the mean of the pairs' N-pod / (N × one-pod) ratios: a drift of
the machine moves both windows of a pair alike and cancels. The one-pod windows also verify the pod's figure.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.confidence import paired_ratio
from nightcap.analysis.pod_capacity import FigureWindow, PodFigure, estimate_of
from nightcap.analysis.saturation import steps_frame
from nightcap.analysis.sizing import max_replicas, slo_capacity_by_cores
from nightcap.analysis.usl import fit_usl, fit_usl_steps
from nightcap.results.plots import plot_p95_by_cores, usl_plot
from nightcap.results.stages import ScalingResult, ScalingRow
from nightcap.run.context import RunContext
from nightcap.warm_start import PriorSearch, warm_search
from tasks.measure import (Side, confirm_pod, ensure_operating_check, measure_window, paired_windows, run_search,
                           search_params, settle_figure, slo_of)


@flow(name="manual-scaling", flow_run_name="scaling {run_id}")
def scaling(run_id: str) -> ScalingResult:
    """One pod's figure, then N pods' knee and their efficiency against one pod from paired windows; USL fit,
    SLO users by cores."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    assert ctx.platform is not None
    if ctx.results.run_pod is None:  # no ramp or tune ran: the figure this stage confirms on one pod is the answer
        ctx.results.run_pod = ctx.pod_key()
    workers = ctx.config.load.workers
    top = max_replicas(ctx.config.scaling.max_replicas, ctx.spec.cpu if ctx.spec else None,
                       getattr(ctx.platform, "allocatable_cpu", None))
    if top < ctx.config.scaling.max_replicas:
        ctx.warn(f"scaling stopped at {top} replica(s): {getattr(ctx.platform, 'allocatable_cpu', '?')} allocatable "
                 f"cores / {ctx.spec.cpu if ctx.spec else '?'} CPU per pod (scaling.max_replicas is "
                 f"{ctx.config.scaling.max_replicas})")
    rows: list[ScalingRow] = []
    try:
        one = one_pod_figure(ctx, workers)
        if one is not None:
            e = one.planning
            rows.append(ScalingRow(1, e.mean, one.users, e.mean, 1.0, None, f"capacity.per_pod ({one.status})",
                                   e.half_width, len(one.windows), [1.0, 1.0], 0))
            for n in range(2, top + 1):
                rows.append(scale_to(ctx, one, n, workers))
                logger.info("scaling: %d replica(s) -> %.1f rps, efficiency %.0f%% (95%% interval %s)", n,
                            rows[-1].saturation_rps, 100 * (rows[-1].efficiency or 0), rows[-1].efficiency_ci)
    finally:
        ctx.platform.scale(ctx.config.platform.replicas)
    ensure_operating_check(ctx, "scaling", workers)  # only when a check here moved the figure it plans on
    steps = ctx.stage_steps("scaling")
    frame = steps_frame(steps)
    fit = fit_usl([r.replicas for r in rows], [r.saturation_rps for r in rows]) if rows else fit_usl([], [])
    one_pod_steps = steps_frame(s for s in ctx.steps if s.replicas == 1 and s.stage in ("single_client", "scaling")
                                and s.load != "open")
    by_cores = slo_capacity_by_cores(frame, slo_of(ctx))
    result = ScalingResult(rows=rows, usl=fit, usl_users_one_pod=fit_usl_steps(one_pod_steps, slo_of(ctx), by="users"),
                           one_pod_max_users=int(one_pod_steps["users"].max()) if len(one_pod_steps) else 0,
                           by_cores=by_cores.to_dict(orient="records") if len(by_cores) else [])
    plots = [usl_plot(fit, [r.__dict__ for r in rows], ctx.out / "scaling_usl.png"),
             plot_p95_by_cores(steps, ctx.out / "p95_by_cores.png", ctx.config.slo.p95_ms)]
    result.plots = [p for p in plots if p]
    ctx.results.scaling = result
    return result


def one_pod_figure(ctx: RunContext, workers: int) -> PodFigure | None:
    """The pod's figure on one replica: the run's when it runs one pod, else confirmed here (search + fresh
    windows on one pod). None when no knee could be confirmed."""
    assert ctx.platform is not None
    ctx.platform.scale(1)
    fig = ctx.results.pods.get(ctx.pod_key(1))
    if fig is None:
        result = run_search(ctx, "scaling", workers, search_params(ctx))
        confirm_pod(ctx, "scaling", workers, result)
        fig = ctx.results.pods.get(ctx.pod_key(1))
    return fig


def scale_to(ctx: RunContext, one: PodFigure, n: int, workers: int) -> ScalingRow:
    """N pods: their knee searched from N × one pod's, then pairs of windows (one pod, N pods) at the two knees."""
    assert ctx.platform is not None
    ctx.platform.scale(n)
    prior = PriorSearch(run_id=f"{n} x one pod", saturation_users=n * one.users)
    params = search_params(ctx, slo_capacity=False)
    with ctx.measuring("scaling", workers) as runner:
        result, _ = warm_search(lambda users: measure_window(runner, "scaling", users), slo_of(ctx), params, prior)
    knee = result.saturation_users
    if not knee:
        return ScalingRow(n, 0.0, None, 0.0, None, None, result.stop_reason or "no level met the SLO")
    rows_a, rows_b = paired_windows(ctx, "scaling", Side(one.users, workers, 1), Side(knee, workers, n),
                                    ctx.config.search.pairs)
    ctx.platform.scale(1)  # verify the one-pod figure with the one-pod windows (interleaved again if they disagree)
    settle_figure(ctx, "scaling", one, [FigureWindow.of(r, "scaling", "pair", workers) for r in rows_a])
    a = estimate_of([FigureWindow.of(r, "scaling", "pair", workers) for r in rows_a])
    b = estimate_of([FigureWindow.of(r, "scaling", "pair", workers) for r in rows_b])
    eff = paired_ratio([FigureWindow.of(r, "scaling", "pair", workers).estimate for r in rows_a],
                       [FigureWindow.of(r, "scaling", "pair", workers).estimate for r in rows_b], scale=n)
    ci = None if eff.low is None else [round(eff.low, 4), round(eff.high, 4)]
    return ScalingRow(n, b.mean, knee, b.mean / n, eff.mean, None,
                      f"{result.stop_reason}; {len(rows_b)} window(s) paired with one pod",
                      b.half_width, len(rows_b), ci, len(rows_b), paired_one_pod_rps=round(a.mean, 2))

