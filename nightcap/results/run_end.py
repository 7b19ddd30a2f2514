"""How a capacity-check run ends, once its stages stopped: its history status, and the error its flow run raises.

The table of outcomes is in `verdicts.py`; this applies it to what the parent flow knows at the end (the error that
stopped it, the Prefect API gone, the stages' verdicts, what could not be recorded). Pure: no Prefect here.
"""

from __future__ import annotations

from typing import Any, Callable

from nightcap.results.verdicts import CANCELLED, FAILED, close_stages, inconclusive_message, inconclusive_stages


class RegressionDetected(RuntimeError):
    """Tonight's capacity fell beyond the noise of earlier nights."""


class StagesFailed(RuntimeError):
    """One or more stages failed; what they measured is kept."""


class NoAnswer(RuntimeError):
    """The stages that look for a saturation point found none: a failed run, never a completed one."""


class NotRecorded(RuntimeError):
    """The night's rows could not all be written (history or report folder): failed, never completed."""


class PrefectApiGone(RuntimeError):
    """The Prefect API stopped answering mid-run: the run was stopped, torn down and its report written."""


def end_status(status: str, fatal: BaseException | None, cancelled: bool, api_gone: str | None,
               stages: dict[str, dict[str, Any]], info: dict[str, Any],
               no_answer: Callable[[], str | None]) -> tuple[str, BaseException | None]:
    """The history status and the error that stopped the run (`fatal`; `cancelled` when a person or the worker
    stopped it). A run stopped by the API watch failed, with the reason; a run that measured no saturation point
    failed too (`no_answer` says why, asked only when nothing else failed it): no answer is not success."""
    if fatal is not None:
        status = CANCELLED if cancelled else FAILED
    if api_gone:
        status, fatal = FAILED, PrefectApiGone(api_gone)
        info["failure"] = api_gone
    status = close_stages(status, stages)  # a failed stage fails the run: no baseline uses it
    if fatal is None and "failure" not in info:
        reason = no_answer()
        if reason:  # the reason goes first in the report
            info["failure"] = f"no saturation point was measured: {reason}"
            status = FAILED
    return status, fatal


def run_error(info: dict[str, Any], stages: dict[str, dict[str, Any]], fatal: BaseException | None,
              regression: Any, fail_on_regression: bool) -> BaseException | None:
    """The error the flow run ends with once the report is written; None when it completed (inconclusive too)."""
    failed = [n for n, s in stages.items() if s.get("status") == FAILED]
    if fatal is not None:
        return fatal
    if info.get("history_error") or info.get("report_error"):
        return NotRecorded(info.get("history_error") or info["report_error"])
    if info.get("failure") and not failed:
        return NoAnswer(info["failure"])
    if regression is not None and regression.regressed and fail_on_regression:
        return RegressionDetected(regression.result.message)
    if failed:
        unanswered = inconclusive_message(stages) if inconclusive_stages(stages) else ""
        return StagesFailed(f"stage(s) {', '.join(failed)} failed: "
                            + "; ".join(stages[n].get('error', '') for n in failed)
                            + (f" ({unanswered})" if unanswered else ""))
    return None
