"""Where the headline figures changed level, night by night: for `nightcap history` and the trend artifact.

The change points are E-divisive means (nightcap.analysis.change_points), found in hindsight over the completed
nights of one comparison key at a time, so a config change never looks like a change of the model. They
describe the history; the nightly alarm is the regression check's own decision (docs/regression.md). No matplotlib here: `nightcap history` imports this and should start fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from nightcap.analysis.change_points import MAX_PVALUE, find_change_points
from nightcap.analysis.figures import COMPARED_FIGURES

if TYPE_CHECKING:
    import pandas as pd


SHORT_NAMES = {"saturation_rps": "sat. rps", "rps_per_core": "rps/core", "p95_at_operating_ms": "p95 at op",
               "slo_users": "SLO users"}


@dataclass(frozen=True)
class LevelChange:
    """A headline figure whose level changed at a night (that night is the first of the new level)."""

    run_id: str
    figure: str
    mean_before: float
    mean_after: float
    change_pct: float
    pvalue: float
    worse: bool

    @property
    def label(self) -> str:
        sign = "+" if self.change_pct > 0 else "−"
        return f"{SHORT_NAMES.get(self.figure, self.figure)} {sign}{abs(self.change_pct):.0f}%"


def level_changes(frame: "pd.DataFrame", *, max_pvalue: float = MAX_PVALUE,
                  min_change: float = 0.10) -> dict[str, list[LevelChange]]:
    """Per run id, the figures whose level changed at that night; completed nights of one key at a time."""
    if frame is None or frame.empty or "status" not in frame:
        return {}
    done = frame[frame["status"] == "completed"].sort_values("started_at", kind="stable")
    keys = done["config_hash"] if "config_hash" in done else None
    found: dict[str, list[LevelChange]] = {}
    for _, group in done.groupby(keys if keys is not None else [0] * len(done), sort=False, dropna=False):
        for fig in COMPARED_FIGURES:
            if fig.name not in group:
                continue
            for point in find_change_points(group[fig.name].tolist(), max_pvalue=max_pvalue, min_change=min_change):
                run_id = str(group.iloc[point.index]["run_id"])
                found.setdefault(run_id, []).append(LevelChange(
                    run_id, fig.name, point.mean_before, point.mean_after, point.change_pct, point.pvalue,
                    worse=(point.change_pct < 0) == fig.higher_is_better))
    return found


def change_label(changes: list[LevelChange]) -> str:
    """"sat. rps −24% (worse), rps/core −24% (worse)": what the history table and the trend table print."""
    return ", ".join(f"{c.label} ({'worse' if c.worse else 'better'})" for c in changes)


def with_tonight(frame: "pd.DataFrame", run_id: str, status: str, figures: Mapping[str, Any],
                 regression: str | None = None) -> "pd.DataFrame":
    """The history as it will read once tonight is stored: tonight's row carries its figures and status.

    (The run is finished in the store after the report is written, so the store still says 'running'.)
    """
    import pandas as pd

    frame = frame.copy()
    values = {name: (float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan)
              for name, v in figures.items() if name in frame.columns}
    mine = frame["run_id"] == run_id if "run_id" in frame else pd.Series(False, index=frame.index)
    if mine.any():
        for name, value in values.items():
            frame.loc[mine, name] = value
        frame.loc[mine, "status"] = status
        if "regression" in frame:
            frame.loc[mine, "regression"] = regression
    return frame


def trend_rows(frame: "pd.DataFrame", changes: Mapping[str, list[LevelChange]]) -> list[dict[str, Any]]:
    """One row per night, oldest first: the table artifact (and the history command) show these."""
    rows = []
    for row in frame.itertuples(index=False):
        started = getattr(row, "started_at", None)
        status = str(row.status)
        if getattr(row, "regression", None) == "regressed":
            status += ", regressed"
        entry: dict[str, Any] = {
            "night (UTC)": started.strftime("%Y-%m-%d %H:%M") if started is not None and started == started else "?",
            "run": str(row.run_id),
            "status": status,
        }
        for fig in COMPARED_FIGURES:
            value = getattr(row, fig.name, None)
            entry[SHORT_NAMES[fig.name]] = (round(float(value), 1) if value is not None and value == value else None)
        entry["level change"] = change_label(changes.get(str(row.run_id), []))
        rows.append(entry)
    return rows
