"""`nightcap history`: the results history as a table, for a person asking "what happened lately?"."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nightcap.analysis.change_points import MAX_PVALUE
from nightcap.config import RegressionConfig
from nightcap.results.level_changes import LevelChange, level_changes
from nightcap.results.meanings import changed_figures, renewals
from nightcap.results.redact import safe_url
from nightcap.results.store import DEFAULT_URL, HistoryStore, StoreError

if TYPE_CHECKING:
    import pandas as pd

CHANGE_POINT_NIGHTS = 60  # nights read to find level changes, however few are shown
MIN_CHANGE = RegressionConfig.model_fields["threshold"].default  # the regression check's default threshold
_STATUS_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}


def _figure(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def sqlite_file_missing(url: str) -> bool:
    """Reading must not create an empty database where the user mistyped a path."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - HistoryStore reports a bad URL with a better message
        return False
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return False
    from pathlib import Path

    return not Path(database).expanduser().exists()


def history_command(store_url: str | None, target: str | None, last: int, console: Console | None = None) -> None:
    """Print the last `last` runs (oldest first) with their headline figures and what was measured."""
    console = console or Console()
    url = store_url or DEFAULT_URL
    if sqlite_file_missing(url):
        console.print(f"No history yet at {safe_url(url)}: run `nightcap run CONFIG` first, or pass --store URL.")
        return
    try:
        store = HistoryStore(url)
    except StoreError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        sys.exit(2)
    try:
        # change points need the nights before the ones shown: a level change is a comparison
        analysed = store.history(target=target, last=max(1, last, CHANGE_POINT_NIGHTS))
    finally:
        store.close()
    # a figure measured another way than its target's newest night is not a level of it (a new baseline starts)
    changes = level_changes(same_method(analysed), max_pvalue=MAX_PVALUE, min_change=MIN_CHANGE)
    method_changes = method_change_labels(analysed)
    frame = analysed.tail(max(1, last))
    scope = f" for target {target!r}" if target else ""
    if frame.empty:
        console.print(f"No runs{scope} in {store.display_url}.")
        return
    console.print(_history_table(frame, scope, store.display_url, changes, method_changes))
    _print_footnotes(console, frame, changes)


def _history_table(frame: "pd.DataFrame", scope: str, display_url: str, changes: dict[str, list[LevelChange]],
                   method_changes: dict[str, str]) -> Table:
    """One row a run, oldest first: its figures, the model version (marked the night it changed), level changes."""
    table = Table(
        title=f"nightcap history{scope}",
        caption=f"last {len(frame)} run(s) in {display_url}",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    table.add_column("date (UTC)", min_width=11)
    table.add_column("target", overflow="fold", min_width=6)
    table.add_column("status", no_wrap=True)
    table.add_column("sat. rps", justify="right", no_wrap=True)
    table.add_column("rps/core", justify="right", no_wrap=True)
    table.add_column("p95 at op ms", justify="right", min_width=6)
    table.add_column("SLO users", justify="right", min_width=5)
    canary = bool(frame["canary"].notna().any())  # a column only when some night measured the platform canary
    if canary:
        table.add_column("canary rps/core", justify="right", no_wrap=True)
    table.add_column("version", overflow="fold", min_width=8)
    table.add_column("level change", overflow="fold", min_width=13)
    previous: dict[str, str] = {}  # the last version seen per target, oldest run first
    for row in frame.itertuples(index=False):
        version = str(row.version or "")
        before = previous.get(str(row.target_name))
        previous[str(row.target_name)] = version or before or ""
        if version and before and version != before:  # the night the model changed: say so where people look
            version = f"[bold yellow]{escape(version)}[/bold yellow] (was {escape(before)})"
        else:
            version = escape(version)
        started = row.started_at.strftime("%Y-%m-%d %H:%M") if row.started_at is not None and not _isnat(row.started_at) else "?"
        cells = [
            started,
            str(row.target_name or ""),
            _status(row.status, getattr(row, "regression", None), getattr(row, "verdict", None)),
            _figure(row.saturation_rps),
            _figure(row.rps_per_core),
            _figure(row.p95_at_operating_ms),
            _figure(row.slo_users, 0),
            *([_figure(row.canary)] if canary else []),
            version,
            ", ".join(filter(None, [_changes(changes.get(str(row.run_id), [])),
                                    method_changes.get(str(row.run_id), "")])),
        ]
        table.add_row(*cells)
    return table


def _print_footnotes(console: Console, frame: "pd.DataFrame", changes: dict[str, list[LevelChange]]) -> None:
    """What "inconclusive" means, when a night shown is, and each level change shown with its figures."""
    if "verdict" in frame and (frame["verdict"] == "inconclusive").any():
        console.print("inconclusive: a stage ran without answering its question (report.md says which and why); "
                      "when it was the headline's stage, its figures are not recorded (–) nor compared")
    shown = [c for run_id in frame["run_id"].astype(str) for c in changes.get(run_id, [])]
    if shown:
        console.print("level change: the first night of a new level of that figure (change points: E-divisive means, "
                      f"p < {MAX_PVALUE:g}, at least {MIN_CHANGE:.0%}, over the completed nights of one comparison "
                      "key):")
        for c in shown:
            console.print(f"  run {c.run_id}: {c.figure} {c.mean_before:,.1f} → {c.mean_after:,.1f} "
                          f"({c.label.split()[-1]}, p={c.pvalue:.2g})", highlight=False)


SHORT = {"p95_at_operating_ms": "p95"}


def method_change_labels(frame: "pd.DataFrame") -> dict[str, str]:
    """{run_id: "p95 now open-loop (new baseline)"} for the first night of each target a figure changed method, or
    its figures another pod ("pod now 1 CPU, concurrency 2 (new baseline)")."""
    seen: dict[str, dict[str, str]] = {}
    out: dict[str, str] = {}
    for row in frame.itertuples(index=False):
        meanings = row.figure_meanings or {}
        methods, pods = renewals(changed_figures(meanings, seen.get(str(row.target_name), {})))
        seen[str(row.target_name)] = meanings
        labels = [f"[yellow]{SHORT.get(figure, figure)} now {new} (new baseline)[/yellow]"
                  for figure, (_, new) in methods.items()]
        labels += [f"[yellow]pod now {new} (new baseline)[/yellow]" for _, new in sorted(pods)]
        if labels:
            out[str(row.run_id)] = ", ".join(labels)
    return out


def same_method(frame: "pd.DataFrame") -> "pd.DataFrame":
    """The frame with each figure blanked on nights that measured it another way, or on another pod, than its
    target's newest."""
    frame = frame.copy()
    if frame.empty or "figure_meanings" not in frame:
        return frame
    for target, group in frame.groupby("target_name", dropna=False):
        newest = group.iloc[-1]["figure_meanings"] or {}
        for figure, meaning in newest.items():
            other = [i for i, m in zip(group.index, group["figure_meanings"])
                     if figure in changed_figures({figure: meaning}, m or {})]
            if figure in frame and other:
                frame.loc[other, figure] = float("nan")
    return frame


def _changes(found: list[LevelChange]) -> str:
    return ", ".join(f"[{'red' if c.worse else 'green'}]{c.label}[/]" for c in found)


def _status(status: str, regression: str | None, verdict: str | None = None) -> str:
    """The run's status, "regressed" when the regression stage failed the night on its figures, and
    "inconclusive" when a stage ran without answering (an inconclusive headline stage stores no figures: –)."""
    if regression == "regressed":
        return f"[red]{status}, regressed[/red]"
    if verdict == "inconclusive":
        return f"[yellow]{status}, inconclusive[/yellow]"
    style = _STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else str(status)


def _isnat(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
