"""Prefect artifacts: a progress bar updated after every step, step tables, the summary in markdown, the trend
table (the last nights and where their level changed) and plot, and the answer at a glance.

Keys are stable per target (lowercase, digits, dashes) so artifacts version night after night in the UI.
The answer is the run's first artifact: created when the run opens and written when it ends (the run's Artifacts
tab orders by random ids, so creation order is what "first" can mean there: the run graph places it leftmost;
and `<target>-answer` sorts first among a target's keys on the Artifacts page).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate

from nightcap.results.glance import answer_description, answer_markdown, pending_markdown
from nightcap.results.level_changes import level_changes, trend_rows, with_tonight
from nightcap.results.report import embed_png, write_markdown
from nightcap.results.plots import trend_plot
from nightcap.steps import StepRow
from nightcap.results.summary import headline, headline_figures

if TYPE_CHECKING:
    from nightcap.run.context import RunContext


def artifact_key(target: str, what: str) -> str:
    key = re.sub(r"[^a-z0-9-]+", "-", f"{target}-{what}".lower()).strip("-")
    return key[:100] or "nightcap"


class Progress:
    """One progress artifact for the run: share of planned stages done, nudged forward by each step.

    Keyed per target, so the Artifacts page lists it next to the summary and shows last night's too.
    """

    def __init__(self, target: str, stages: list[str]):
        self.stages = stages
        self.done = 0
        self.steps_in_stage = 0
        self.id = create_progress_artifact(progress=0.0, key=artifact_key(target, "progress"),
                                           description=f"nightcap: {', '.join(stages)}")

    def _value(self) -> float:
        share = 100.0 / max(len(self.stages), 1)
        partial = share * (1 - 1 / (1 + self.steps_in_stage / 6))  # approaches the stage's share, never passes it
        return min(100.0, self.done * share + partial)

    def step(self, _row: StepRow | None = None) -> None:
        self.steps_in_stage += 1
        self._update()

    def stage_done(self) -> None:
        self.done += 1
        self.steps_in_stage = 0
        self._update()

    def _update(self) -> None:
        try:
            update_progress_artifact(self.id, progress=round(self._value(), 1))
        except Exception:
            pass  # progress is a courtesy; never fail a measurement over it


STEP_TABLE_COLUMNS = ["stage", "step", "replicas", "cpu", "concurrency", "users", "rps", "p50_ms", "p95_ms",
                      "p99_ms", "error_rate", "generator_cpu_pct", "generator_bound", "restarts", "oom_kills",
                      "pending", "valid", "note"]


def steps_table(target: str, steps: list[StepRow]) -> None:
    rows = [{c: getattr(s, c) for c in STEP_TABLE_COLUMNS} for s in steps]
    create_table_artifact(key=artifact_key(target, "steps"), table=rows,
                          description=f"{len(rows)} measured load steps (steps.csv)")


def lead_tables(summary: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The tables the Artifacts page leads with: what to buy (sizing), then the pod sizes tried."""
    return [("sizing", (summary.get("sizing") or {}).get("rows") or []),
            ("tuning-candidates", (summary.get("tuning") or {}).get("candidates") or [])]


def publish_summary(target: str, summary: dict[str, Any], out: Path, plots: list[Path]) -> None:
    """The answer first; the lead tables; plots embedded as data URIs (all from summary.json)."""
    for name, rows in lead_tables(summary):
        if rows:
            create_table_artifact(key=artifact_key(target, name), table=rows, description=f"{name} ({target})")
    create_markdown_artifact(key=artifact_key(target, "summary"), markdown=write_markdown(summary, out, plots, embed=True),
                             description=summary.get("answer", "")[:250])
    create_link_artifact(key=artifact_key(target, "report-folder"), link=out.resolve().as_uri(),
                         link_text=str(out), description="report folder: summary.json, steps.csv, report.md, plots")


def publish_trend(ctx: "RunContext", status: str) -> str | None:
    """The trend table artifact, `<target>-trend`, updated every run (its key versions it night after night):
    the last nights' headline figures and level changes, tonight included. Returns the trend plot's file
    name for the summary, or None with fewer than two nights."""
    cfg = ctx.config.regression
    target = ctx.config.target.name
    verdict = ctx.results.regression.result.verdict if ctx.results.regression and ctx.results.regression.result else None
    frame = with_tonight(ctx.store.history(target=target, last=cfg.nights), ctx.run_id, status,
                         headline_figures(headline(ctx)), verdict)
    changes = level_changes(frame, max_pvalue=cfg.max_pvalue, min_change=cfg.threshold)
    rows = trend_rows(frame, changes)
    marked = sum(1 for r in rows if r["level change"])
    create_table_artifact(key=artifact_key(target, "trend"), table=rows,
                          description=f"{target}: last {len(rows)} night(s), headline figures; "
                                      f"{marked} night(s) where a level changed")
    if len(frame) < 2:
        return None
    return trend_plot(frame, ctx.out / "trend.png", title=f"{target}: last {len(frame)} runs", changes=changes)


def publish_trend_plot(target: str, plot: Path) -> None:
    """The trend plot as its own artifact, `<target>-trend-plot`: the Artifacts page shows it night after night
    beside the trend table (the summary artifact embeds it too, with the comparison)."""
    markdown = (f"### {target}: headline figures over the last nights\n\nTonight is the last point; a dashed line "
                f"marks a night where a figure changed level (red worse, green better).\n\n"
                f"![trend]({embed_png(plot)})\n")
    create_markdown_artifact(key=artifact_key(target, "trend-plot"), markdown=markdown,
                             description=f"{target}: headline figures over the last nights")


def open_answer(target: str, run_id: str, stages: list[str]) -> Any:
    """The answer artifact, `<target>-answer`, created before any other so it is the run's first; returns its id
    (None when the API refused: the answer is then created at the end)."""
    try:
        return create_markdown_artifact(key=artifact_key(target, "answer"), description=f"{target}: running",
                                        markdown=pending_markdown(target, run_id, stages))
    except Exception:
        return None  # the answer is a courtesy here; never fail a measurement over it


def publish_answer(target: str, summary: dict[str, Any], artifact_id: Any = None) -> None:
    """Tonight's answer into the artifact `open_answer` created (keyed per target, so its page on the Artifacts
    tab is the answer night by night); a new one if there is none."""
    markdown = answer_markdown(summary, f"the `{artifact_key(target, 'summary')}` artifact and report.md")
    if artifact_id is None:
        create_markdown_artifact(key=artifact_key(target, "answer"), markdown=markdown,
                                 description=answer_description(summary))
        return
    with get_client(sync_client=True) as client:
        client.update_artifact(artifact_id, ArtifactUpdate(data=markdown, description=answer_description(summary)))
