"""Regression check, the last stage: tonight's headline figures against the median of comparable nights."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.regression import check_regression
from nightcap.results.plots import trend_plot
from nightcap.results.stages import RegressionOutcome
from nightcap.results.summary import headline, headline_figures
from nightcap.run.context import RunContext


@flow(name="regression-check", flow_run_name="regression {run_id}")
def regression(run_id: str) -> RegressionOutcome:
    """Same target.name, platform and load settings make a run comparable; the model version does not."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    cfg = ctx.config.regression
    if ctx.store is None:
        ctx.results.regression = RegressionOutcome(None, note="no history store")
        return ctx.results.regression
    tonight = headline_figures(headline(ctx))
    baseline = ctx.store.comparable_runs(ctx.config.config_hash(), cfg.last_n, exclude_run_id=ctx.run_id)
    result = check_regression(tonight, baseline, threshold=cfg.threshold, noise_k=cfg.noise_k, min_runs=cfg.min_runs)
    outcome = ctx.results.regression = RegressionOutcome(result, baseline_runs=len(baseline))
    (logger.error if result.regressed else logger.info)("regression: %s", result.message)
    outcome.plot = _trend(ctx)
    return outcome


def _trend(ctx: RunContext) -> str | None:
    """A trend plot of the headline figures over the last nights, tonight included."""
    try:
        frame = ctx.store.history(target=ctx.config.target.name, last=30)
        if len(frame) >= 2:
            return trend_plot(frame, ctx.out / "trend.png", title=f"{ctx.config.target.name}: last {len(frame)} runs")
    except Exception as exc:
        ctx.warn(f"trend plot skipped: {exc}")
    return None
