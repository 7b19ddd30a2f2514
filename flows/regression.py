"""Regression check, the last stage: tonight's headline figures against comparable nights, one alarm decision."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.canary import FIGURE as CANARY, canary_value
from nightcap.analysis.regression import check_regression, version_change
from nightcap.analysis.regression_nights import figure_intervals
from nightcap.results.meanings import figure_meanings, renewal_sentences
from nightcap.results.stages import RegressionOutcome
from nightcap.results.store import model_label
from nightcap.results.summary import headline, headline_figures
from nightcap.run.context import RunContext, StageRun


@flow(name="regression-check", flow_run_name="regression {run.run_id}")
def regression(run: StageRun) -> RegressionOutcome:
    """Same target.name, platform and load settings make a run comparable; the model version does not."""
    ctx = run.context
    logger = get_run_logger()
    cfg = ctx.config.regression
    if ctx.store is None:
        ctx.results.regression = RegressionOutcome(None, note="no history store")
        return ctx.results.regression
    head = headline(ctx)
    tonight = headline_figures(head)
    # a figure an earlier night measured another way (closed- vs open-loop p95) starts a new baseline there
    history = ctx.store.comparable_runs(ctx.config.config_hash(), cfg.nights, exclude_run_id=ctx.run_id,
                                        meanings=figure_meanings(head))
    tonight["run_id"] = ctx.run_id
    tonight["intervals"] = figure_intervals(head)
    with_canary(ctx, tonight, history)
    stage = head["saturation"].get("stage")
    result = check_regression(tonight, history, **cfg.alarm_settings(),
                              tonight_status=ctx.stages.get(stage, {}).get("status") if stage else None)
    changed = version_change(model_label(ctx.info.get("target", {}).get("version")),
                             [model_label(run.get("target_version")) for run in history])
    if changed:  # "capacity dropped 20% ... (when wine v3 replaced wine v2)"
        result.message += f" (when {changed})" if result.regressed else f"; {changed}"
    renewed = renewal_sentences([run.get("meaning_changed", {}) for run in history])
    if renewed:
        result.message += "; " + "; ".join(renewed)
    ctx.results.regression = RegressionOutcome(result, baseline_runs=len(result.baseline_run_ids),
                                               nights=len(history) + 1, version_change=changed)
    (logger.error if result.regressed else logger.info)("regression: %s", result.message)
    return ctx.results.regression


def with_canary(ctx: RunContext, tonight: dict, history: list[dict]) -> None:
    """Tonight's canary figure and each earlier night's (only nights whose canary ran with tonight's settings),
    so the check can tell a platform that moved from a model that did."""
    canary = ctx.results.canary
    if canary is None or canary.figure is None:
        return
    tonight[CANARY] = canary.figure.rps_per_core
    if canary.figure.ci:
        tonight["intervals"][CANARY] = canary.figure.ci
    for run in history:
        run[CANARY] = canary_value(run, canary.settings)

