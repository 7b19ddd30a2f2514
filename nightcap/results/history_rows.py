"""The values of a history row: what `store.py` writes for a run or a step, and how a stored row reads back.

Pure (no engine, no connection): kept apart from the store's transactions so what a row holds is decided in
one place, secrets redacted (`redact.py`) and texts bounded before anything reaches the database, and rows
written by an older nightcap or a foreign writer read back the same way.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from nightcap.analysis.change_points import finite
from nightcap.analysis.figures import HEADLINE_NAMES
from nightcap.results.history_schema import STEP_FIELDS
from nightcap.results.meanings import figure_meanings
from nightcap.results.redact import config_dump, sanitize
from nightcap.steps import StepRow

if TYPE_CHECKING:
    from nightcap.config import Config

MAX_TEXT = 4000  # characters of a note kept in the history


def utc_now() -> datetime:
    """Now in UTC, without a time zone (how the history stores times)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def run_values(config: "Config", target_version: Mapping[str, Any] | None, flow_run_id: str | None,
               redact: Iterable[str], now: datetime) -> dict[str, Any]:
    """A run's row as it starts (or starts again): 'running', its identity and its redacted config."""
    return {
        "flow_run_id": str(flow_run_id) if flow_run_id else None,
        "updated_at": now,
        "finished_at": None,
        "status": "running",
        "target_name": config.target.name,
        "platform": config.platform.kind,
        "config_hash": config.config_hash(),
        "target_version": sanitize(dict(target_version or {}), redact),
        "config": config_dump(config, redact),
    }


def step_values(row: StepRow, redact: Iterable[str]) -> dict[str, Any]:
    """A measured step's columns, redacted, its note bounded."""
    data = sanitize(
        {name: getattr(row, name) for name, _ in STEP_FIELDS}, redact
    )
    for name in ("note",):
        if isinstance(data.get(name), str):
            data[name] = data[name][:MAX_TEXT]
    return data


def finish_values(status: str, headline: Mapping[str, Any], summary: Mapping[str, Any] | None, note: str | None,
                  redact: Iterable[str], now: datetime) -> dict[str, Any]:
    """A run's row as it ends: its status, the known headline figures (finite or None), summary and note."""
    values: dict[str, Any] = {name: finite(headline.get(name)) for name in HEADLINE_NAMES if name in headline}
    values.update(status=status, updated_at=now, finished_at=None if status == "running" else now)
    if summary is not None:
        values["summary"] = sanitize(dict(summary), redact)
        values["figure_meanings"] = figure_meanings(summary)
    if note is not None:
        values["note"] = sanitize(note, redact)[:MAX_TEXT]
    return values


def step_row(row: Mapping[str, Any]) -> StepRow:
    """A stored step back as the StepRow that was measured."""
    data = {name: row[name] for name, _ in STEP_FIELDS}
    for name in ("replica_cpu_pct", "replica_memory_mb", "events"):
        data[name] = list(data[name] or [])
    return StepRow(**data)


def run_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run as a dict: times in UTC, JSON columns decoded (a foreign writer may have stored text)."""
    data = dict(row)
    for name in ("started_at", "updated_at", "finished_at"):
        data[name] = as_utc(data.get(name))
    for name in ("target_version", "config", "summary", "figure_meanings"):
        if isinstance(data.get(name), str):  # a foreign writer may have stored JSON text
            try:
                data[name] = json.loads(data[name])
            except ValueError:
                pass
    data.pop("id", None)
    return data
