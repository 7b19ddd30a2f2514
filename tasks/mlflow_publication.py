"""The night's answer on the model's MLflow version and in its experiment, once the report folder is complete.
Called by flows/capacity_check.py's `finish`; the writing is `nightcap/results/publish_mlflow.py`.

A publication that fails is a warning in summary.json and report.md (rewritten here), never a failed night: the
history row is already written and stays the source of truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from nightcap.results.mlflow_fields import publishes
from nightcap.results.publish_mlflow import publish_night
from nightcap.results.report import write_markdown
from nightcap.results.summary import build_summary, write_summary
from nightcap.run.context import RunContext


def publish_to_mlflow(ctx: RunContext, summary: dict[str, Any], plots: list[Path]) -> dict[str, Any]:
    """Publish when `target.model_uri` is on a tracking server and `publish.mlflow` is on; returns the summary
    (with the warning when the publication failed). A cancelled night publishes nothing: it was stopped on purpose
    and has no answer to give."""
    if not publishes(ctx.config) or ctx.info.get("status") == "cancelled":
        return summary
    model = getattr(ctx.plan, "model", None)  # None: a plan made without resolving a model URI
    if model is None:
        return summary
    logger = get_run_logger()
    try:
        done = publish_night(ctx.config, summary, ctx.out, model, redact=[ctx.api_key] if ctx.api_key else [])
        said = done.warnings
        for line in done.lines():
            logger.info("%s", line)
    except Exception as exc:  # noqa: BLE001 - publish_night returns its failures; this is a bug, still no failed night
        said = [f"MLflow publication failed: {type(exc).__name__}: {exc}"]
    if not said:
        return summary
    for text in said:
        logger.warning("%s", text)
        ctx.warn(text)
    try:
        summary = write_summary(ctx)
        write_markdown(summary, ctx.out, plots)
    except OSError as exc:  # the report folder was lost before: report_lost said so already
        logger.warning("the MLflow warning is not in the report folder: %s", exc)
        summary = build_summary(ctx)
    return summary
