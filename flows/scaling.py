"""Manual scaling: 1, 2, … pods of the tuned size; efficiency from paired windows, SLO capacity per core count, USL.

One pod's figure is the run's (confirmed once; confirmed here on one pod if no stage did). At N pods windows
alternate between one pod at its figure's users and N pods at N times as many (1, N, N, 1, 1, N, ...), with no
search first (`n_pod_users`), and the efficiency at N is the mean of the pairs' N-pod / (N × one-pod) ratios: a
drift of the machine moves both windows of a pair alike and cancels. The one-pod windows also verify the pod's
figure (and join it when they agree).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.paired import n_pod_users, scaling_efficiency, under_knee_note
from nightcap.analysis.pod_capacity import FigureWindow, PodFigure, pod_steps
from nightcap.analysis.saturation import steps_frame
from nightcap.analysis.sizing import max_replicas, slo_capacity_by_cores
from nightcap.analysis.usl import fit_usl, fit_usl_steps
from nightcap.results.plots import plot_p95_by_cores, usl_plot
from nightcap.results.stages import ScalingResult, ScalingRow
from nightcap.run.context import RunContext, StageRun
from nightcap.run.platform import set_replicas
from tasks.measure import (Side, confirm_pod, ensure_operating_check, paired_windows, run_search, search_params,
                           settle_figure, slo_of)


@flow(name="manual-scaling", flow_run_name="scaling {run.run_id}")
def scaling(run: StageRun) -> ScalingResult:
    """One pod's figure, then N pods' knee and their efficiency against one pod from paired windows; USL fit,
    SLO users by cores."""
    ctx = run.context
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
            for n in range(2, top + 1):
                rows.append(scale_to(ctx, one, n, workers))
                logger.info("scaling: %d replica(s) -> %.1f rps, efficiency %.0f%% (95%% interval %s)", n,
                            rows[-1].saturation_rps, 100 * (rows[-1].efficiency or 0), rows[-1].efficiency_ci)
            e = one.planning  # after the one-pod windows above joined it: the figure every other line gives
            rows.insert(0, ScalingRow(1, e.mean, one.users, e.mean, 1.0, None, f"capacity.per_pod ({one.status})",
                                      e.half_width, len(one.windows), [1.0, 1.0], 0))
    finally:
        ctx.platform.scale(ctx.config.platform.replicas)
    ensure_operating_check(ctx, "scaling", workers)  # only when a check here moved the figure it plans on
    steps = pod_steps(ctx.steps, ctx.pod_key())
    fit = fit_usl([r.replicas for r in rows], [r.saturation_rps for r in rows]) if rows else fit_usl([], [])
    one_pod_steps = steps_frame(s for s in steps if s.replicas == 1 and s.stage in ("single_client", "scaling"))
    by_cores = slo_capacity_by_cores(steps_frame(steps), slo_of(ctx))
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
    """N pods: pairs of windows (one pod, N pods), N pods at as many users per pod as one pod's figure
    (`n_pod_users`)."""
    assert ctx.platform is not None
    ctx.platform.scale(n)
    users = n_pod_users(one.users, n, ctx.config.search.max_users)
    rows_a, rows_b = paired_windows(ctx, "scaling", Side(one.users, workers, 1), Side(users, workers, n),
                                    ctx.config.search.pairs)
    set_replicas(ctx.platform, 1)  # verify the one-pod figure with the one-pod windows (again if they disagree)
    ones = [FigureWindow.of(r, "scaling", "pair", workers) for r in rows_a]
    settle_figure(ctx, "scaling", one, ones)
    eff = scaling_efficiency(ones, [FigureWindow.of(r, "scaling", "pair", workers) for r in rows_b], n)
    b = eff.n_pods
    note = (f"{eff.pairs} window(s) of {n} pods at {users} users paired with one pod at {one.users}"
            f"{under_knee_note(users, n, one.knee_users or one.users)}")
    return ScalingRow(n, b.mean, users, b.mean / n, eff.ratio.mean, None, note, b.half_width, eff.pairs, eff.ci,
                      eff.pairs, paired_one_pod_rps=round(eff.one_pod.mean, 2))
