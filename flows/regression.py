"""Regression check, the last stage: tonight's headline figures against the median of comparable nights."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.regression import check_regression
from nightcap.run.context import RunContext
from nightcap.results.summary import headline_figures, summarize_run


@flow(name="regression-check", flow_run_name="regression {run_id}")
def regression(run_id: str) -> dict:
    """Same target.name, platform and load settings make a run comparable; the model version does not."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    cfg = ctx.config.regression
    if ctx.store is None:
        ctx.summary["regression"] = {"verdict": "insufficient history", "message": "no history store"}
        return ctx.summary["regression"]
    summarize_run(ctx)
    tonight = headline_figures(ctx)
    baseline = ctx.store.comparable_runs(ctx.config.config_hash(), cfg.last_n, exclude_run_id=ctx.run_id)
    result = check_regression(tonight, baseline, threshold=cfg.threshold, noise_k=cfg.noise_k, min_runs=cfg.min_runs)
    block = result.to_dict()
    ctx.summary["regression"] = block
    ctx.summary["regression_line"] = f"regression check against {len(baseline)} earlier night(s): {result.message}"
    ctx.summary.setdefault("sections", []).append({
        "title": "Change since the baseline",
        "text": result.message,
        "rows": block.get("figures", []),
    })
    (logger.error if result.regressed else logger.info)("regression: %s", result.message)
    _trend(ctx)
    return block


def _trend(ctx: RunContext) -> None:
    """A trend plot of the headline figures over the last nights, tonight included."""
    try:
        from nightcap.results.plots import trend_plot

        frame = ctx.store.history(target=ctx.config.target.name, last=30)
        if len(frame) >= 2:
            trend_plot(frame, ctx.out / "trend.png", title=f"{ctx.config.target.name}: last {len(frame)} runs")
            ctx.summary.setdefault("plots", []).append("trend.png")
    except Exception as exc:
        ctx.warn(f"trend plot skipped: {exc}")
