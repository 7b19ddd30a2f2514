"""What a run tells the world: Prefect event names, resources and payloads, built from summary.json.

Automations (deployments/automations.yaml) react to these: a regressed night sends a notification, and a
target whose `nightcap.run.completed` stops arriving fires "the nightly check did not run". The resource
is the target, `nightcap.target.<target.name>`, so an automation can follow each target on its own.

Pure: plain dicts in, plain dicts out; `tasks/events.py` hands them to `prefect.events.emit_event`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

RUN_COMPLETED = "nightcap.run.completed"
RUN_FAILED = "nightcap.run.failed"
CAPACITY_REGRESSED = "nightcap.capacity.regressed"
CAPACITY_IMPROVED = "nightcap.capacity.improved"
RESOURCE_PREFIX = "nightcap.target."


@dataclass(frozen=True)
class RunEvent:
    """One event as `prefect.events.emit_event` takes it."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict)


def target_resource(summary: Mapping[str, Any]) -> dict[str, str]:
    """The target as a Prefect resource; labels are strings, as the events API requires."""
    target = summary.get("target") or {}
    name = str(target.get("name") or "unknown")
    platform = summary.get("platform") or {}
    return {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{name}",
        "prefect.resource.name": name,
        "nightcap.target.kind": str(target.get("kind") or ""),
        "nightcap.platform": str(platform.get("kind") or ""),
        "nightcap.config-hash": str(summary.get("config_hash") or ""),
    }


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinity become None, everything nested is walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def run_events(summary: Mapping[str, Any], status: str, figures: Mapping[str, Any],
               report: str | None = None) -> list[RunEvent]:
    """The events of one finished run: completed or failed, then regressed and/or improved.

    A night that regressed still ran to the end and measured, so it is `completed` (the proactive "did not
    run" automation must stay quiet) and additionally `nightcap.capacity.regressed`. A cancelled run is
    `failed` with `status: cancelled` in the payload.
    """
    resource = target_resource(summary)
    regression = summary.get("regression") or {}
    common = {
        "run_id": summary.get("run_id"),
        "target": resource["prefect.resource.name"],
        "report": report,
    }
    stages = {name: (info or {}).get("status") for name, info in (summary.get("stages") or {}).items()}
    run_payload = {
        **common,
        "status": status,
        "answer": summary.get("answer"),
        "figures": dict(figures),
        "stages": stages,
        "regression": regression.get("verdict"),
    }
    errors = {name: (info or {}).get("error") for name, info in (summary.get("stages") or {}).items()
              if (info or {}).get("error")}
    if errors or summary.get("error"):
        run_payload["errors"] = {**errors, **({"run": summary["error"]} if summary.get("error") else {})}
    events = [RunEvent(RUN_COMPLETED if status == "completed" else RUN_FAILED, resource, _clean(run_payload))]
    rows = list(regression.get("figures") or [])
    if regression.get("platform_moved"):  # the raw figures moved with the platform: the normalised ones judge
        rows += regression.get("normalised") or []
    for verdict, name in (("regressed", CAPACITY_REGRESSED), ("improved", CAPACITY_IMPROVED)):
        changed = [_figure(row) for row in rows if row.get("verdict") == verdict]
        if not changed:
            continue
        payload = {
            **common,
            "message": "; ".join(row.get("message", "") for row in rows if row.get("verdict") == verdict),
            "figures": changed,
            "cause": regression.get("cause"),
            "baseline": {
                "run_ids": regression.get("baseline_run_ids") or [],
                "threshold": regression.get("threshold"),
                "false_alarm_rate": regression.get("false_alarm_rate"),
            },
            "change_points": [row["change_point"] | {"figure": row["figure"]} for row in rows
                              if row.get("verdict") == verdict and row.get("change_point")],
        }
        events.append(RunEvent(name, resource, _clean(payload)))
    return events


def _figure(row: Mapping[str, Any]) -> dict[str, Any]:
    """A changed figure as the payload carries it: tonight against its baseline, and where its level moved."""
    return {
        "figure": row.get("figure"),
        "unit": row.get("unit"),
        "tonight": row.get("tonight"),
        "baseline": row.get("baseline_mean", row.get("baseline_median")),
        "baseline_nights": row.get("baseline"),
        "change_pct": row.get("change_pct"),
        "noise_pct": row.get("noise_pct"),
        "change_point": row.get("change_point"),
        "message": row.get("message"),
    }
