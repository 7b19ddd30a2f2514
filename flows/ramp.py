"""Single-client and multi-client ramps: one pod, one number.

A ramp that meets a pod no stage has confirmed yet searches its knee and confirms it on fresh windows (the
figure). A ramp that meets a confirmed pod verifies it instead: single_client at the knee, then on to the SLO
capacity; multi_client in windows that alternate one generator and several, whose ratio says whether one
client was the bottleneck. The operating rate (headroom × the figure) is then checked open loop, once per figure.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.paired import good_rps, multi_client_gain
from nightcap.analysis.pod_capacity import PodFigure
from nightcap.analysis.saturation import p95_at_rate
from nightcap.search.confirm import Confirmation
from nightcap.results.plots import plot_ramp
from nightcap.results.report import operating_line
from nightcap.results.stages import RampResult
from nightcap.run.context import RunContext, StageRun
from nightcap.search.levels import SearchResult
from nightcap.search.saturation import extend_to_slo
from tasks.measure import (Side, confirm_pod, ensure_operating_check, measure_window, meet_pod, move_figure_up,
                           paired_windows, run_warm_search, search_params, slo_of)


def _ramp(ctx: RunContext, stage: str, workers: int) -> RampResult:
    logger = get_run_logger()
    ctx.results.run_pod = ctx.pod_key()
    # only this pod on these replicas is verified: tune's figure on tune.replicas is not this stage's to verify
    fig = ctx.results.pods.get(ctx.results.run_pod)
    warm = confirmation = check = ratio = None
    if fig is not None and stage == "multi_client" and workers != fig.workers:
        ref, mine = paired_windows(ctx, stage, Side(fig.users, fig.workers), Side(fig.users, workers),
                                   ctx.config.search.pairs)
        check = multi_client_gain(fig, stage, workers, ref, mine)
        ratio = check.ratio
        result = _verified(fig.users, mine, f"verified {fig.stage}'s confirmed knee in {len(mine)} pair(s)")
        logger.info("%s: %s", stage, check.note)
    elif fig is not None:
        met = meet_pod(ctx, stage, workers)
        assert met is not None
        _, check, rows = met
        with ctx.measuring(stage, workers) as runner:
            result = extend_to_slo(lambda users: measure_window(runner, stage, users), slo_of(ctx),
                                   search_params(ctx), fig.users, rows,
                                   f"verified {fig.stage}'s confirmed knee ({check.outcome})")
        confirmation = move_figure_up(ctx, stage, workers, fig, result)  # the walk found the pod faster further in
    else:
        result, warm = run_warm_search(ctx, stage, workers, search_params(ctx))
        confirmation = confirm_pod(ctx, stage, workers, result)
        if warm.from_run:
            logger.info("%s: warm start %s in %d window(s): %s", stage, "accepted" if warm.accepted else "refused",
                        warm.windows, warm.reason)
    ramp = RampResult(stage=stage, workers=workers, replicas=ctx.platform.replicas if ctx.platform else 1,
                      search=result, operating_p95_ms=p95_at_rate(result.levels, result.operating_rps),
                      generator_bound_steps=sum(1 for s in ctx.stage_steps(stage) if s.generator_bound),
                      warm_start=warm, confirmation=confirmation, check=check, ratio=ratio)
    _operating_point(ctx, ramp)
    fig = ctx.results.figure()
    point = {"users": fig.users, "rps": fig.planning.mean} if fig else {"users": result.saturation_users,
                                                                         "rps": result.saturation_rps}
    ramp.plot = plot_ramp([s for s in ctx.stage_steps(stage) if s.load != "open"], ctx.out / f"{stage}.png",
                          f"{ctx.config.target.name}: {stage.replace('_', '-')} ramp ({workers} generator(s))",
                          slo_of(ctx), point)
    if fig is not None:
        e = fig.planning
        logger.info("%s: one pod's figure %.1f rps at %d users (%s, %d fresh window(s)); SLO capacity %s users",
                    stage, e.mean, fig.users, fig.status, len(fig.windows), result.slo_users)
    else:
        logger.warning("%s: no confirmed saturation point (%s)", stage, _why_none(result, confirmation))
    return ramp


def _verified(users: int, rows: list, stop_reason: str) -> SearchResult:
    """The search result of a stage that measured only at the confirmed knee (no levels of its own chosen)."""
    rps = good_rps(rows)
    return SearchResult(users, rps, None, None, None, None, stop_reason=stop_reason, found=rps is not None,
                        windows=len(rows))


def _why_none(result: SearchResult, c: Confirmation | None) -> str:
    if c is not None and not c.good:
        return f"the knee at {c.users} users did not hold on fresh windows: {c.why_bad or 'generator-bound'}"
    return result.stop_reason or "no level met the SLO"


def _operating_point(ctx: RunContext, ramp: RampResult) -> None:
    """Offer headroom x the figure open loop (once per figure: a stage that left it as confirmed does not check
    again); the operating point's latency is then the one measured at that rate."""
    check = ensure_operating_check(ctx, ramp.stage, ramp.workers)
    ramp.operating_check = check
    run_check = ctx.results.operating
    if run_check is not None and run_check.verified.p95_ms is not None:
        ramp.operating_p95_ms = run_check.verified.p95_ms
    if check is not None:
        get_run_logger().info("%s: operating point %.1f rps open loop: %s", ramp.stage, check.verified.rate_rps,
                              operating_line(ramp))


@flow(name="single-client-ramp", flow_run_name="single-client {run.run_id}")
def single_client(run: StageRun) -> RampResult:
    """One generator process: verify the pod's confirmed figure and walk to the SLO capacity, or search and
    confirm the knee when no stage has."""
    ctx = run.context
    ctx.results.single_client = _ramp(ctx, "single_client", 1)
    return ctx.results.single_client


@flow(name="multi-client-ramp", flow_run_name="multi-client {run.run_id}")
def multi_client(run: StageRun) -> RampResult:
    """Several generators whose results the master merges, in windows paired with one generator's: the ratio
    says when one client was the bottleneck."""
    ctx = run.context
    ctx.results.multi_client = _ramp(ctx, "multi_client", ctx.config.load.workers)
    return ctx.results.multi_client
