"""Measuring tasks: one Prefect task per load window, so every step shows in the UI as it happens.

The search chooses a knee (`run_search`, `run_warm_search`); fresh windows at it make the pod's one figure
(`confirm_pod`); later stages that meet the same pod verify it (`meet_pod`), and ratios come from windows that
alternate between two configurations (`paired_windows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nightcap.search import warm_start
from nightcap.analysis.paired import pair_order
from nightcap.analysis.operating_point import OperatingPointCheck, RateWindow, check_operating_point
from nightcap.analysis.pod_capacity import (POD_STAGES, Check, FigureWindow, PodFigure, levels_above, move_up, settle,
                                           verify)
from nightcap.analysis.slo import Slo
from nightcap.search.knee import knee_of
from nightcap.search.confirm import ConfirmParams, Confirmation, confirm_knee, measure_fresh, settle_ceiling
from nightcap.load.runner import StepRunner
from nightcap.platforms.base import PodSpec
from nightcap.steps import StepRow
from nightcap.run.context import RunContext
from nightcap.run.platform import resize, set_replicas
from nightcap.search.levels import Measured, SearchAborted, SearchParams, SearchResult
from nightcap.search.saturation import find_saturation


@task(name="measure-window", task_run_name="{stage}: {users} users", cache_policy=NO_CACHE, persist_result=False)
def measure_window(runner: StepRunner, stage: str, users: int) -> StepRow:
    row = runner.measure(users)
    logger = get_run_logger()
    flag = " GENERATOR-BOUND" if row.generator_bound else ""
    flag += "" if row.valid else f" INVALID ({row.note})"
    logger.info("%s %3d users x %d replica(s): %7.1f rps  p50 %s ms  p95 %s ms  errors %.1f%%  generator CPU %.0f%%"
                "  [%s]%s", stage, users, row.replicas, row.rps, row.p50_ms, row.p95_ms, 100 * row.error_rate,
                row.generator_cpu_pct, row.purpose, flag)
    return row


def slo_of(ctx: RunContext) -> Slo:
    """The run's SLO as the one rule every judgement uses (nightcap.analysis.slo)."""
    return Slo.of(ctx.config.slo)


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


def confirm_params(ctx: RunContext, stage: str) -> ConfirmParams:
    """search.confirm_windows fresh windows, more (up to confirm_max_windows) until the precision is met, unless two
    or more later stages will meet the pod: their agreeing windows join the figure (`PodFigure.join`, 12 in make
    run) and give it more precision, over more of the run, than three more windows here."""
    s = ctx.config.search
    most = max(s.confirm_max_windows, s.confirm_windows)
    if len(later_pod_stages(ctx.config.stages, stage)) >= 2:
        most = s.confirm_windows
    return ConfirmParams(min_windows=s.confirm_windows, max_windows=most, precision=s.precision)


def later_pod_stages(stages: Sequence[str], stage: str) -> list[str]:
    """The stages after `stage` that meet the run's pod again (and verify its figure)."""
    after = list(stages)[list(stages).index(stage) + 1:] if stage in stages else []
    return [s for s in after if s in POD_STAGES]


def run_search(ctx: RunContext, stage: str, workers: int, params: SearchParams) -> SearchResult:
    """The cold saturation search with the run's generator."""
    with ctx.measuring(stage, workers) as runner:
        return find_saturation(lambda users: measure_window(runner, stage, users), slo_of(ctx), params)


def run_warm_search(ctx: RunContext, stage: str, workers: int, params: SearchParams
                    ) -> tuple[SearchResult, warm_start.WarmStart]:
    """The saturation search, verifying the last comparable night's knee first when there is one (search.warm_start).

    Looked up before any load: the newest completed night with the same comparison key whose `stage` ran on
    tonight's pod configuration. Every figure is still measured tonight; the record says what was skipped."""
    prior, why = warm_start.prior_from_history(ctx.store, ctx.config, ctx.spec, ctx.run_id, stage)
    if prior is not None:
        get_run_logger().info("%s: warm start from run %s (knee at %d users)", stage, prior.run_id,
                              prior.saturation_users)
    with ctx.measuring(stage, workers) as runner:
        return warm_start.search(lambda users: measure_window(runner, stage, users), slo_of(ctx), params, prior, why)


def confirm_pod(ctx: RunContext, stage: str, workers: int, result: SearchResult) -> Confirmation | None:
    """Fresh windows at the knee the search chose; a confirmation that met the SLO becomes the pod's figure on
    the replicas measured now (`ctx.results.pods`). None when the search found no knee."""
    params = confirm_params(ctx, stage)
    with ctx.measuring(stage, workers, purpose="confirm") as runner:
        c = confirm_knee(lambda users: measure_window(runner, stage, users), result, slo_of(ctx), params)
    logger = get_run_logger()
    if c is None:
        return None
    if settle_ceiling(result, c, search_params(ctx)):
        logger.info("%s: %s", stage, result.stop_reason)
    e = c.estimate
    if c.good and not c.generator_bound:
        key = ctx.pod_key()
        ctx.results.pods[key] = PodFigure(key, c.users, stage, workers,
                                          [FigureWindow.of(w, stage, "confirm", workers) for w in c.windows],
                                          window_s=ctx.config.load.window_s,
                                          spread_from=params.min_windows,
                                          knee_users=result.saturation_users)
        logger.info("%s: confirmed %.1f rps (95%% interval %s) at %d users on %d fresh window(s)%s", stage, e.mean,
                    _interval(e), c.users, len(c.windows),
                    f" (the knee at {c.fell_back_from} users failed its fresh windows)" if c.fell_back_from else "")
    else:
        logger.warning("%s: the knee at %d users did not hold on fresh windows: %s", stage, c.users,
                       c.why_bad or "generator-bound")
    return c


def _interval(e: Any) -> str:
    return "n/a" if e.low is None else f"{e.low:.1f}-{e.high:.1f}"


def fresh_rows(runner: StepRunner, stage: str, users: int, count: int, max_invalid: int = 3) -> list[StepRow]:
    """`count` valid windows at `users` that a figure can use (an invalid or generator-bound one is measured
    again, at most `max_invalid` times in all)."""
    rows: list[StepRow] = []
    bad = 0
    while len(rows) < count:
        row = measure_window(runner, stage, users)
        if row.valid and not row.generator_bound:
            rows.append(row)
            continue
        bad += 1
        if bad > max_invalid:
            raise SearchAborted(f"{bad} invalid or generator-bound windows at {users} users in {stage}: "
                                f"{row.note or 'the load generator was CPU-bound'}; add load.workers")
    return rows


@dataclass(frozen=True)
class Side:
    """One configuration of paired windows: users held by `workers` generators on `replicas` pods."""

    users: int
    workers: int
    replicas: int | None = None  # scale the platform to this first (None: as it is)
    spec: PodSpec | None = None  # give the pods this size first (None: as they are)


def side_windows(ctx: RunContext, stage: str, side: Side, purpose: str, count: int = 1) -> list[StepRow]:
    """`count` consecutive windows of one side: the platform switched to it once, its users warmed up once."""
    assert ctx.platform is not None
    if side.spec is not None:
        ctx.spec = side.spec  # the windows' rows carry the size they were measured at
        resize(ctx.platform, side.spec)
    if side.replicas is not None:
        set_replicas(ctx.platform, side.replicas)
    with ctx.measuring(stage, side.workers, purpose) as runner:
        return fresh_rows(runner, stage, side.users, count)


def paired_windows(ctx: RunContext, stage: str, a: Side, b: Side, pairs: int,
                   purpose: str = "pair") -> tuple[list[StepRow], list[StepRow]]:
    """`pairs` pairs of windows, A then B, then B then A, ... (each pair's windows neighbours in time, and the
    order alternating so a steady drift does not favour either side), with the fewest switches: the two
    windows of one side that meet between pairs run back to back on one swarm, warmed up once."""
    rows: tuple[list[StepRow], list[StepRow]] = ([], [])
    for side, count in pair_order(pairs):
        rows[side].extend(side_windows(ctx, stage, (a, b)[side], purpose, count))
    return rows


def meet_pod(ctx: RunContext, stage: str, workers: int) -> tuple[PodFigure, Check, list[StepRow]] | None:
    """A stage meeting the run's pod again: fresh windows at the confirmed knee verify the figure (`settle_figure`
    when they disagree). None when no figure of this pod on the replicas measured now exists (the stage searches
    instead). Also returns the verification windows' rows (the stage's own measurement at the knee)."""
    fig = ctx.results.pods.get(ctx.pod_key())
    if fig is None:
        return None
    k = ctx.config.search.confirm_windows
    with ctx.measuring(stage, workers, purpose="verify") as runner:
        rows = fresh_rows(runner, stage, fig.users, k)
    return fig, settle_figure(ctx, stage, fig, [FigureWindow.of(r, stage, "verify", workers) for r in rows]), rows


def move_figure_up(ctx: RunContext, stage: str, workers: int, fig: PodFigure, result: SearchResult
                   ) -> Confirmation | None:
    """A ramp's walk past the figure's users found good levels wholly above its interval (`levels_above`): the best
    of them measured on fresh windows, which become the pod's figure when they lie wholly above it too (`move_up`).
    The confirmation when it moved the figure; None when nothing was above or the fresh windows did not hold (the
    report's warning then still names the level above)."""
    above = levels_above(fig.estimate, result.levels) if fig.status == "confirmed" else []
    if not above:
        return None
    best = max(above, key=lambda lv: lv.rps)
    params = confirm_params(ctx, stage)
    logger = get_run_logger()
    logger.info("%s: %d users measured %.1f rps, above the figure %.1f rps %s confirmed at %d users: confirming it "
                "on fresh windows", stage, best.users, best.rps, fig.estimate.mean, fig.stage, fig.users)
    with ctx.measuring(stage, workers, purpose="confirm") as runner:
        c = measure_fresh(lambda users: measure_window(runner, stage, users), best.users, slo_of(ctx), params)
    if not c.good or c.generator_bound:
        logger.info("%s: the pod's figure kept: %d users did not hold on fresh windows (%s)", stage, best.users,
                    c.why_bad or "generator-bound")
        return None
    walked = knee_of({lv.users: lv for lv in result.levels if not lv.generator_bound}, search_params(ctx))
    knee = walked[0].users if walked else best.users  # the search's own rule over the levels the walk measured
    check = move_up(fig, [FigureWindow.of(w, stage, "confirm", workers) for w in c.windows], knee, params.min_windows)
    kept = f"kept: {len(c.windows)} fresh window(s) at {best.users} users read {c.rps:.1f} rps, not wholly above it"
    logger.info("%s: the pod's figure %s", stage, f"higher: {check.note}" if check else kept)
    return c if check else None


def settle_figure(ctx: RunContext, stage: str, fig: PodFigure, fresh: list[FigureWindow]) -> Check:
    """Verify `fig` with a stage's fresh windows; when they disagree, measure interleaved to decide: more windows
    of the same configuration, or pairs of the figure's generator count and the stage's."""
    check = verify(fig, fresh)
    if check is None:
        workers, k = fresh[0].workers, ctx.config.search.confirm_windows
        get_run_logger().warning("%s: %d window(s) at %d users disagree with the figure %s confirmed; measuring "
                                 "interleaved to decide", stage, len(fresh), fig.users, fig.stage)
        if workers == fig.workers:
            with ctx.measuring(stage, workers, purpose="recheck") as runner:
                more = [FigureWindow.of(r, stage, "recheck", workers) for r in fresh_rows(runner, stage, fig.users, k)]
            check = settle(fig, fresh, [], more)
        else:
            ref, mine = paired_windows(ctx, stage, Side(fig.users, fig.workers, fig.key.replicas),
                                       Side(fig.users, workers, fig.key.replicas), k)
            check = settle(fig, fresh, [FigureWindow.of(r, stage, "pair", fig.workers) for r in ref],
                           [FigureWindow.of(r, stage, "pair", workers) for r in mine])
    get_run_logger().info("%s: the pod's figure %s: %s", stage, check.outcome, check.note)
    return check


@task(name="measure-rate-window", task_run_name="{stage}: {rate_rps:.1f} rps open loop", cache_policy=NO_CACHE,
      persist_result=False)
def measure_rate_window(runner: StepRunner, stage: str, rate_rps: float, window_s: float) -> RateWindow:
    """One open-loop window at `rate_rps` (the row lands in steps.csv as load "open")."""
    row, window = runner.measure_rate(rate_rps, window_s)
    load = runner.config.load
    w = RateWindow.of(rate_rps, window, window.verdict(row.generator_cpu_pct, load.generator_bound_pct), row.valid,
                      row.note)
    get_run_logger().info(
        "%s open loop at %.1f rps: offered %.1f, goodput %.1f rps, p50 %s / p95 %s / p99 %s ms, mean %s ms, "
        "%d failed, %d late, %d dropped of %d planned (%s)", stage, rate_rps, window.offered_rps, window.goodput_rps,
        window.p50_ms, window.p95_ms, window.p99_ms, None if window.mean_ms is None else round(window.mean_ms, 1),
        window.failures, window.late, window.dropped, window.planned, w.verdict)
    return w


def verify_operating_point(ctx: RunContext, stage: str, workers: int, rate_rps: float) -> OperatingPointCheck:
    """Offer the operating rate open loop for load.verify_windows windows of load.verify_window_s; on a miss,
    bisect down (search.backoff_windows more rates, as many windows each) to the highest rate that meets the SLO.
    The result becomes the run's operating check (`ctx.results.operating`)."""
    load = ctx.config.load
    with ctx.measuring(stage, workers, purpose="operating") as runner:
        check = check_operating_point(lambda rate: measure_rate_window(runner, stage, rate, load.verify_window_s),
                                      rate_rps, slo_of(ctx), ctx.config.search.backoff_windows,
                                      windows=load.verify_windows)
    ctx.results.operating, ctx.results.operating_stage = check, stage
    return check


def operating_rate(ctx: RunContext) -> float | None:
    """headroom x the run's planning figure (None without a confirmed figure)."""
    fig = ctx.results.figure()
    return None if fig is None else ctx.config.search.headroom * fig.planning.mean


# The operating rate moved by more than this since the run's open-loop check: check again. Agreeing windows of later
# stages join the figure and move it within its interval (make run 12-05 03:02: 120.6 -> 124.6 rps, +3.3%, inside
# ± 7%); the operating point is then stated at the rate the check offered, with its share of the figure
# (`Saturation.of_figure`), so it reads 67-74% rather than costing another 8 s of open loop for a few percent.
RECHECK = 0.05


def ensure_operating_check(ctx: RunContext, stage: str, workers: int) -> OperatingPointCheck | None:
    """Check the operating rate open loop unless the run's check was made within RECHECK of it (an unstable or
    replaced figure moves it further: check again)."""
    rate = operating_rate(ctx)
    if rate is None or ctx.config.load.verify_window_s <= 0:
        return None
    done = ctx.results.operating
    if done is not None and abs(done.verified.rate_rps - rate) <= RECHECK * max(rate, 1.0):
        return None
    return verify_operating_point(ctx, stage, workers, rate)


Measure = Callable[[int], Measured]
