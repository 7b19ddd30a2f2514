"""Push tonight's figures to a Prometheus Pushgateway (`publish.pushgateway`) at the end of a run, so dashboards
and alerts see the night without reading the history. Called once by flows/capacity_check.py's `finish`, after the
history row is written (the status pushed is the night's final one) and before summary.json (a failed push is a
warning in it). A push that fails never fails the night: the history has the figures (`nightcap metrics`)."""

from __future__ import annotations

from typing import Any, Mapping

from prefect import get_run_logger

from nightcap.results.metrics_samples import night_samples, tonight
from nightcap.results.openmetrics import PushFailed, push
from nightcap.results.redact import without_password
from nightcap.results.summary import headline_figures
from nightcap.run.context import RunContext


def push_night_metrics(ctx: RunContext, status: str, summary: Mapping[str, Any]) -> bool:
    """Push the night's samples (job `nightcap`, grouping key `target`); False, with a warning in the report, when
    the Pushgateway refused or could not be reached. Nothing to do (True) without `publish.pushgateway`."""
    cfg = ctx.config
    url = cfg.publish.pushgateway
    if not url:
        return True
    logger = get_run_logger()
    try:
        night = tonight(cfg.target.name, cfg.platform.kind, status, summary, headline_figures(dict(summary)))
        push(url, cfg.target.name, night_samples(night))
    except PushFailed as exc:
        ctx.warn(str(exc))
        logger.warning("%s", exc)
        return False
    except Exception as exc:  # noqa: BLE001 - a publication never fails the night it describes
        text = f"metrics not pushed to publish.pushgateway {without_password(url)}: {type(exc).__name__}: {exc}"
        ctx.warn(text)
        logger.warning("%s", text)
        return False
    logger.info("metrics pushed to %s (job nightcap, target %s)", without_password(url), cfg.target.name)
    return True
