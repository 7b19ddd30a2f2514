"""Stage verdicts and the run's end: completed, inconclusive (it ran, but the answer is not there) or failed.

A stage's typed result (`stages.py`) says it could not answer through its `inconclusive` reason: one sentence,
None when it answered. The parent flow (`flows/capacity_check.py`) records the verdict in `stages.<name>`
(`status`, and `reason` when inconclusive) and ends the run from these functions:

| run                                   | history status | Prefect state                   | `nightcap run` exit |
|---------------------------------------|----------------|---------------------------------|---------------------|
| every stage completed                 | completed      | Completed                       | 0                   |
| a stage inconclusive, none failed     | completed      | Completed, named "Inconclusive" | 3                   |
| a stage failed, or no answer at all   | failed         | Failed                          | 1                   |
| interrupted (Ctrl-C, SIGTERM)         | cancelled      | Crashed or Cancelled            | 130                 |

Inconclusive keeps the Completed type (the night ran and measured; its conclusive figures count) under its own
name, so the Prefect UI lists it as "Inconclusive" with the reasons as the state message. Pure: no Prefect here.
"""

from __future__ import annotations

from typing import Any, Mapping

COMPLETED, INCONCLUSIVE, FAILED, CANCELLED, SKIPPED = "completed", "inconclusive", "failed", "cancelled", "skipped"
STATE_INCONCLUSIVE = "Inconclusive"  # the Prefect state name of a completed run with an inconclusive stage
EXIT_INCONCLUSIVE = 3  # `nightcap run`: 0 done, 1 failed, 2 bad input, 3 inconclusive, 130 interrupted

# the attribute of StageResults that holds each stage's typed result
_RESULT_OF = {"tune": "tune", "single_client": "single_client", "multi_client": "multi_client",
              "scaling": "scaling", "sizing": "sizing", "autoscale": "autoscale", "regression": "regression"}


def inconclusive_reason(results: Any, stage: str) -> str | None:
    """Why `stage` ran without answering its question (its result's `inconclusive`), or None when it answered.

    A stage that stored no result answered nothing either, but that is a failure, not this: None here.
    """
    result = getattr(results, _RESULT_OF.get(stage, ""), None)
    reason = getattr(result, "inconclusive", None) if result is not None else None
    return reason or None


def close_stages(status: str, stages: dict[str, dict[str, Any]]) -> str:
    """The run's history status once its stages have ended (`status`: how the flow itself ended).

    A run that did not complete marks stages that never started `skipped` and the one running `failed`; a run
    that completed with a failed stage is failed (no baseline uses it). Inconclusive stages leave it completed.
    """
    if status != COMPLETED:
        for info in stages.values():
            if info.get("status") in ("pending", "running"):
                info["status"] = SKIPPED if info["status"] == "pending" else FAILED
        return status
    return FAILED if any(s.get("status") == FAILED for s in stages.values()) else COMPLETED


def inconclusive_stages(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """stage -> reason for every stage that ended inconclusive, in run order."""
    return {name: str(info.get("reason") or "no reason recorded")
            for name, info in stages.items() if (info or {}).get("status") == INCONCLUSIVE}


def run_verdict(status: str | None, stages: Mapping[str, Mapping[str, Any]]) -> str | None:
    """summary.json `verdict`: the history status, or "inconclusive" for a completed run with such a stage."""
    if status != COMPLETED:
        return status
    if any((info or {}).get("status") == FAILED for info in stages.values()):
        return FAILED
    return INCONCLUSIVE if inconclusive_stages(stages) else COMPLETED


def inconclusive_message(stages: Mapping[str, Mapping[str, Any]]) -> str:
    """The Prefect state message and the console's closing line: each inconclusive stage and its reason."""
    found = inconclusive_stages(stages)
    return "inconclusive: " + "; ".join(f"{name}: {reason.rstrip('.')}" for name, reason in found.items())
