"""Trend plot of the headline figures over the last nights: a drift is easier to see than to read, and a
level change (nightcap.results.level_changes) easier still when it is marked.

Uses matplotlib's object API with the Agg canvas, so it never touches the global backend and works in
a worker with no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from nightcap.results.level_changes import LevelChange

if TYPE_CHECKING:
    import pandas as pd

TREND_FIGURES: tuple[tuple[str, str], ...] = (
    ("saturation_rps", "saturation (rps)"),
    ("rps_per_core", "rps per core"),
    ("p95_at_operating_ms", "p95 at operating point (ms, lower is better)"),
    ("slo_users", "users within the SLO"),
)


def trend_plot(history_df: "pd.DataFrame", path: str | Path, title: str | None = None,
               changes: Mapping[str, list[LevelChange]] | None = None) -> Path:
    """Write a PNG with one panel per headline figure; completed runs joined, others marked apart, level
    changes as a dashed line at their night with the change written beside it."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8, 2.2 * len(TREND_FIGURES)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(TREND_FIGURES), 1, sharex=True, squeeze=False)[:, 0]
    frame = history_df.copy() if history_df is not None else pd.DataFrame()
    if not frame.empty and "started_at" in frame:
        frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
        frame = frame.sort_values("started_at")
    status = frame["status"] if "status" in frame else pd.Series("completed", index=frame.index)
    for ax, (column, label) in zip(axes, TREND_FIGURES):
        ax.set_title(label, fontsize=9, loc="left")
        ax.grid(True, alpha=0.3)
        if frame.empty or column not in frame:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        done = (status == "completed") & values.notna()
        other = (status != "completed") & values.notna()
        if done.any():
            ax.plot(frame.loc[done, "started_at"], values[done], marker="o", color="tab:blue", label="completed")
        if other.any():
            ax.plot(frame.loc[other, "started_at"], values[other], "x", color="tab:red", label="failed / cancelled")
        for run_id, found in (changes or {}).items():
            for change in found:
                if change.figure != column or "run_id" not in frame:
                    continue
                at = frame.loc[frame["run_id"] == run_id, "started_at"]
                if at.empty:
                    continue
                colour = "tab:red" if change.worse else "tab:green"
                ax.axvline(at.iloc[0], color=colour, linestyle="--", linewidth=1)
                ax.annotate(f"{'+' if change.change_pct > 0 else '−'}{abs(change.change_pct):.0f}% (p={change.pvalue:.1g})",
                            (at.iloc[0], 1), xycoords=("data", "axes fraction"), xytext=(3, -10),
                            textcoords="offset points", fontsize=7, color=colour)
        if not values.notna().any():
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif other.any():
            ax.legend(fontsize=7, loc="best")
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.suptitle(title or "nightcap: headline figures, night after night", fontsize=11)
    fig.savefig(path, format="png", dpi=100)
    return path
