"""The end of a run: every row of the night recorded (history, report folder) or the night failed, loudly;
then retention. Called by flows/capacity_check.py's `finish`.

A night missing from the history can never raise an alarm, so the history is checked on fresh connections and
what it lost is written again; if it still cannot be written, or the report folder cannot (a full disk), the
night is failed with the reason (and `ctx.info` says which, for the parent flow to raise).
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.context import get_run_context

from nightcap.results.summary import build_summary, headline_figures
from nightcap.run.context import RunContext


def save_history_steps(ctx: RunContext, status: str) -> str:
    """Every measured step checked in the history on fresh connections, the missing ones written now (the
    database restarted, or its file was replaced); a history that still refuses them fails the night."""
    if ctx.store is None:
        return status
    try:
        flow_run = get_run_context().flow_run  # type: ignore[union-attr]
        written = ctx.store.ensure_steps(ctx.run_id, ctx.steps, ctx.config, ctx.plan.version,
                                         str(flow_run.id) if flow_run else None)
        if written:
            get_run_logger().warning("history: %d step(s) the history had lost were written again", written)
        return status
    except Exception as exc:
        return history_lost(ctx, f"the measured steps could not be written to the history: {exc}")


def store_run(ctx: RunContext, status: str, summary: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The run's row with its status and figures; if it cannot be written the night is failed, loudly."""
    if ctx.store is None:
        return status, summary
    try:
        ctx.store.finish_run(ctx.run_id, status, headline_figures(summary), summary)
        return status, summary
    except Exception as exc:
        status = history_lost(ctx, f"the run's row could not be written to the history: {exc}")
        return status, build_summary(ctx)


def report_lost(ctx: RunContext, exc: OSError) -> str:
    """The report folder could not be written: the night is failed, and its history row says why."""
    text = (f"the report folder {ctx.out} could not be written ({exc.strerror or exc}); the measured steps are in "
            "the history (and in steps.csv as far as it was written): free the disk, then `nightcap history`")
    _failed(ctx, "report_error", text)
    if ctx.store is not None:
        try:
            summary = build_summary(ctx)
            ctx.store.finish_run(ctx.run_id, "failed", headline_figures(summary), summary, note=text)
        except Exception as store_exc:  # noqa: BLE001 - already failing loudly
            get_run_logger().error("history: could not mark the run failed: %s", store_exc)
    return "failed"


def history_lost(ctx: RunContext, reason: str) -> str:
    """Mark the night failed because its history is incomplete (steps.csv and the report folder keep all)."""
    _failed(ctx, "history_error", f"{reason}; every measured step is in {ctx.out / 'steps.csv'}, but the night is "
                                  "failed: a night missing from the history can never raise an alarm")
    return "failed"


def _failed(ctx: RunContext, key: str, text: str) -> None:
    """The night is failed with `text` first in its report; `key` tells the parent flow what to raise."""
    get_run_logger().error("%s", text)
    ctx.info[key] = text
    ctx.info.setdefault("failure", text)
    ctx.info["status"] = "failed"


def retain(ctx: RunContext) -> None:
    """Apply `retention` for this target: older report folders, history steps and Prefect artifacts."""
    from nightcap.results.retention import apply_retention
    from nightcap.run.cleanup import delete_prefect_artifacts

    try:
        done = apply_retention(ctx.config, ctx.store, protect=[ctx.run_id], delete_artifacts=delete_prefect_artifacts)
        for line in done.lines():
            get_run_logger().info("%s", line)
    except Exception as exc:  # noqa: BLE001 - keeping too much is never a reason to fail a night
        get_run_logger().warning("retention not applied: %s", exc)
