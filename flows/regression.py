"""Regression check, the last stage: tonight's headline figures against comparable nights and their change points."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.regression import check_regression, version_change
from nightcap.run.context import RunContext
from nightcap.results.store import version_label
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
    history = ctx.store.comparable_runs(ctx.config.config_hash(), cfg.nights, exclude_run_id=ctx.run_id)
    tonight["run_id"] = ctx.run_id
    result = check_regression(tonight, history, threshold=cfg.threshold, noise_k=cfg.noise_k, min_runs=cfg.min_runs,
                              last_n=cfg.last_n, max_pvalue=cfg.max_pvalue)
    changed = version_change(_named(ctx.summary.get("target", {}).get("version")),
                             [_named(run.get("target_version")) for run in history])
    if changed:  # "capacity dropped 20% ... (when wine v3 replaced wine v2)"
        result.message += f" (when {changed})" if result.regressed else f"; {changed}"
    block = result.to_dict()
    block["version_change"] = changed
    ctx.summary["regression"] = block
    ctx.summary["regression_line"] = (f"regression check against {len(result.baseline_run_ids)} earlier night(s), "
                                      f"change points over {len(history) + 1}: {result.message}")
    ctx.summary.setdefault("sections", []).append({
        "title": "Change since the baseline",
        "text": result.message,
        "rows": result.table_rows(),
    })
    (logger.error if result.regressed else logger.info)("regression: %s", result.message)
    return block


def _named(target_version: dict | None) -> str | None:
    """A model's or image's version label; None for a reference server's timings (its settings, not a version)."""
    if not target_version or not any(target_version.get(k) for k in ("label", "version", "image")):
        return None
    return version_label(target_version)
