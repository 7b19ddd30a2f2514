"""Retention: what a long-lived installation keeps of old nights, so reports, history steps and Prefect
artifacts stop growing while the trend keeps every night.

Per target, an item is removed when it is beyond the newest `nights` *and* older than `days` (an unset limit
does not hold anything back; both unset keeps everything). Removed: report folders under `reports_dir`
named `<target>-<run id>`, the step rows of older runs in the history (the run row with its headline
figures and summary stays: the trend, `nightcap history` and the regression check read only those), and
the Prefect artifacts of older runs (through a callable, so this module never imports Prefect).
A running run's folder and rows are never touched.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, TypeVar

import sqlalchemy as sa

from nightcap.results.history_schema import runs, steps

if TYPE_CHECKING:
    from nightcap.config import Config
    from nightcap.config_history import Keep
    from nightcap.results.store import HistoryStore

K = TypeVar("K")
RUN_ID = re.compile(r"(?P<stamp>\d{8}-\d{6})-[0-9a-f]{6}$")


@dataclass
class RetentionReport:
    """What one pass removed, and what it could not."""

    reports: list[str] = field(default_factory=list)
    steps_deleted: int = 0
    runs_pruned: int = 0
    artifacts_deleted: int = 0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"retention: removed report folder {p}" for p in self.reports]
        if self.steps_deleted:
            out.append(f"retention: removed {self.steps_deleted} step row(s) of {self.runs_pruned} older run(s) "
                       "from the history (their headline figures stay)")
        if self.artifacts_deleted:
            out.append(f"retention: removed {self.artifacts_deleted} Prefect artifact(s) of older runs")
        return out + [f"retention: {p}" for p in self.problems]


def expired(items: Sequence[tuple[K, datetime]], keep: "Keep", now: datetime | None = None) -> list[K]:
    """The keys of `items` (any order) beyond the newest `keep.nights` and older than `keep.days`."""
    if keep.nights is None and keep.days is None:
        return []
    now = now or datetime.now(timezone.utc)
    ordered = sorted(items, key=lambda kv: kv[1], reverse=True)
    cutoff = now - timedelta(days=keep.days) if keep.days is not None else None
    out = []
    for index, (key, when) in enumerate(ordered):
        beyond_count = keep.nights is None or index >= keep.nights
        too_old = cutoff is None or _utc(when) < cutoff
        if beyond_count and too_old:
            out.append(key)
    return out


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def report_folders(root: Path, target: str) -> list[tuple[Path, datetime]]:
    """`root/<target>-<run id>` folders (the default report folder names) with the time in their run id."""
    found = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        if not path.is_dir() or not path.name.startswith(f"{target}-"):
            continue
        match = RUN_ID.fullmatch(path.name[len(target) + 1:])
        if match:
            stamp = datetime.strptime(match["stamp"], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
            found.append((path, stamp))
    return found


def prune_reports(root: Path, target: str, keep: "Keep", protect: Iterable[str] = (),
                  now: datetime | None = None) -> list[str]:
    """Remove expired report folders of `target` (never one whose name holds a protected run id)."""
    protected = [p for p in protect if p]
    removed = []
    for path in expired(report_folders(root, target), keep, now):
        if any(run_id in path.name for run_id in protected):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def _finished_runs(store: "HistoryStore", target: str) -> list[dict]:
    query = (sa.select(runs.c.run_id, runs.c.started_at, runs.c.flow_run_id, runs.c.steps_pruned,
                       runs.c.artifacts_pruned)
             .where(runs.c.target_name == target, runs.c.status != "running"))
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def prune_steps(store: "HistoryStore", target: str, keep: "Keep", protect: Iterable[str] = (),
                now: datetime | None = None) -> tuple[int, int]:
    """Delete the step rows of expired runs of `target`; returns (runs pruned, rows deleted)."""
    # tonight's run (finished by now, protected) counts among the newest nights, as its report folder does
    rows = [r for r in _finished_runs(store, target) if r["started_at"] is not None]
    old = [run_id for run_id in expired([(r["run_id"], r["started_at"]) for r in rows], keep, now)
           if run_id not in set(protect)]
    if not old:
        return 0, 0

    def write(conn: sa.Connection) -> tuple[int, int]:
        counts = dict(conn.execute(sa.select(steps.c.run_id, sa.func.count()).where(steps.c.run_id.in_(old))
                                   .group_by(steps.c.run_id)).all())
        if not counts:
            return 0, 0
        conn.execute(steps.delete().where(steps.c.run_id.in_(list(counts))))
        for run_id, count in counts.items():
            conn.execute(runs.update().where(runs.c.run_id == run_id)
                         .values(steps_pruned=sa.func.coalesce(runs.c.steps_pruned, 0) + count))
        return len(counts), sum(counts.values())

    return store.transaction(write)


def prune_artifacts(store: "HistoryStore", target: str, keep: "Keep", delete: Callable[[list[str]], int],
                    protect: Iterable[str] = (), now: datetime | None = None) -> int:
    """Delete the Prefect artifacts of expired runs (by their flow run ids); each run is done once."""
    rows = [r for r in _finished_runs(store, target) if r["started_at"] is not None]
    done = {r["run_id"] for r in rows if r["artifacts_pruned"] or not r["flow_run_id"]}
    old = [run_id for run_id in expired([(r["run_id"], r["started_at"]) for r in rows], keep, now)
           if run_id not in set(protect) and run_id not in done]
    if not old:
        return 0
    flow_runs = [r["flow_run_id"] for r in rows if r["run_id"] in set(old)]
    deleted = delete(flow_runs)
    store.transaction(lambda conn: conn.execute(runs.update().where(runs.c.run_id.in_(old)).values(artifacts_pruned=True)))
    return deleted


def apply_retention(cfg: "Config", store: "HistoryStore | None", protect: Iterable[str] = (),
                    delete_artifacts: Callable[[list[str]], int] | None = None,
                    now: datetime | None = None) -> RetentionReport:
    """One pass for `cfg.target.name`; a part that fails is reported, never a reason to fail the night."""
    keep, target, protect = cfg.retention, cfg.target.name, list(protect)
    report = RetentionReport()
    try:
        report.reports = prune_reports(Path(keep.reports_dir), target, keep.reports, protect, now)
    except OSError as exc:
        report.problems.append(f"report folders under {keep.reports_dir} not pruned: {exc}")
    if store is None:
        return report
    try:
        report.runs_pruned, report.steps_deleted = prune_steps(store, target, keep.steps, protect, now)
    except Exception as exc:  # noqa: BLE001 - a StoreError already says what to change
        report.problems.append(f"history steps not pruned: {exc}")
    if delete_artifacts is not None:
        try:
            report.artifacts_deleted = prune_artifacts(store, target, keep.artifacts, delete_artifacts, protect, now)
        except Exception as exc:  # noqa: BLE001 - the Prefect API may be gone; next night tries again
            report.problems.append(f"Prefect artifacts not pruned: {exc}")
    return report
