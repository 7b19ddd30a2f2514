"""Retention keeps the newest nights and the young ones, removes the rest, and never a run in progress."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from nightcap.config import validate
from nightcap.config_history import Keep
from nightcap.results.retention import apply_retention, expired, prune_reports, report_folders
from nightcap.steps import StepRow
from nightcap.results.store import HistoryStore

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)


def night(n: int) -> datetime:
    return NOW - timedelta(days=n)


@pytest.mark.parametrize("keep,gone", [
    (Keep(), []),                                   # nothing set: kept forever
    (Keep(nights=3), [3, 4, 5, 6]),                 # the newest three stay
    (Keep(days=4.5), [5, 6]),                       # younger than 4.5 days stay
    (Keep(nights=2, days=4.5), [5, 6]),             # removed only beyond both limits
    (Keep(nights=6, days=1), [6]),
])
def test_expired_is_beyond_the_newest_nights_and_older_than_the_days(keep, gone):
    items = [(n, night(n)) for n in (3, 0, 6, 1, 5, 2, 4)]  # any order
    assert sorted(expired(items, keep, NOW)) == gone


def folder(root, target, n, suffix="abc123"):
    path = root / f"{target}-{night(n):%Y%m%d-%H%M%S}-{suffix}"
    path.mkdir(parents=True)
    (path / "summary.json").write_text("{}")
    return path


def test_report_folders_of_the_target_only_and_never_the_running_one(tmp_path):
    root = tmp_path / "reports"
    mine = [folder(root, "ref", n) for n in range(5)]
    other = folder(root, "ref-big", 9)  # another target whose name starts the same way
    custom = root / "ref-my-own-folder"
    custom.mkdir()
    running = folder(root, "ref", 8, suffix="fff000")
    assert len(report_folders(root, "ref")) == 6
    removed = prune_reports(root, "ref", Keep(nights=2), protect=[running.name[len("ref-"):]], now=NOW)
    assert sorted(removed) == sorted(str(p) for p in mine[2:])
    assert all(p.exists() for p in (*mine[:2], other, custom, running))
    assert prune_reports(tmp_path / "missing", "ref", Keep(nights=1)) == []


def test_steps_of_old_runs_go_their_headline_figures_stay(tmp_path):
    cfg = validate({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 1000},
                    "retention": {"reports_dir": str(tmp_path / "reports"), "steps": {"nights": 2},
                                  "reports": {"nights": 1}, "artifacts": {"nights": 2}}})
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    for n in range(4):
        run_id = f"run-{n}"
        store.start_run(run_id, cfg, {}, flow_run_id=f"flow-{n}")
        store.add_step(run_id, StepRow(stage="single_client", step=1, replicas=1, cpu=1.0, memory=None,
                                       concurrency=1, users=1, rps=10.0))
        store.add_step(run_id, StepRow(stage="single_client", step=2, replicas=1, cpu=1.0, memory=None,
                                       concurrency=1, users=2, rps=20.0))
        store.finish_run(run_id, "completed", {"saturation_rps": 100.0 + n}, {})
        with store.engine.begin() as conn:  # their nights, oldest first
            conn.exec_driver_sql("update runs set started_at = ? where run_id = ?",
                                 (night(10 - n).replace(tzinfo=None), run_id))
    store.start_run("tonight", cfg, {})  # running: never touched
    store.add_step("tonight", StepRow(stage="single_client", step=1, replicas=1, cpu=1.0, memory=None,
                                      concurrency=1, users=1, rps=10.0))
    for n in range(3):
        folder(tmp_path / "reports", "ref", 10 - n)
    asked: list[list[str]] = []

    def delete(flow_runs: list[str]) -> int:
        asked.append(sorted(flow_runs))
        return 3 * len(flow_runs)

    done = apply_retention(cfg, store, protect=["tonight"], delete_artifacts=delete, now=NOW)
    assert (done.runs_pruned, done.steps_deleted, done.artifacts_deleted, len(done.reports)) == (2, 4, 6, 2)
    assert asked == [["flow-0", "flow-1"]]
    assert [len(store.steps_of(f"run-{n}")) for n in range(4)] == [0, 0, 2, 2]
    assert len(store.steps_of("tonight")) == 1
    frame = store.history(target="ref", last=10)
    assert list(frame["saturation_rps"][:4]) == [100.0, 101.0, 102.0, 103.0]  # the trend keeps every night
    assert list(frame["steps_pruned"][:4]) == [2, 2, 0, 0]
    assert any("removed 4 step row(s) of 2 older run(s)" in line for line in done.lines())
    again = apply_retention(cfg, store, protect=["tonight"], delete_artifacts=delete, now=NOW)
    assert (again.steps_deleted, again.artifacts_deleted, again.reports) == (0, 0, [])
    assert len(asked) == 1, "a run's artifacts are removed once"


def test_a_failing_part_is_reported_not_raised(tmp_path):
    cfg = validate({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 1000},
                    "retention": {"reports_dir": str(tmp_path / "reports"), "artifacts": {"nights": 1}}})
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    for n in range(2):
        store.start_run(f"r{n}", cfg, {}, flow_run_id=f"f{n}")
        store.finish_run(f"r{n}", "completed", {}, {})

    def api_gone(_ids: list[str]) -> int:
        raise ConnectionError("Prefect API unreachable")

    done = apply_retention(cfg, store, delete_artifacts=api_gone)
    assert done.problems == ["Prefect artifacts not pruned: Prefect API unreachable"]


def test_nightcap_cleanup_applies_a_configs_retention(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nightcap.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # no Prefect API here: artifacts are left alone
    config = tmp_path / "c.yaml"
    config.write_text("target: {name: ref, kind: reference}\nslo: {p95_ms: 500}\n"
                      f"store: {{url: 'sqlite:///{tmp_path}/h.db'}}\n")
    for n in range(4):
        folder(tmp_path / "reports", "ref", n)
    result = CliRunner().invoke(app, ["cleanup", "--config", str(config), "--set", "retention.reports.nights=1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("retention: removed report folder") == 3
    assert len(report_folders(tmp_path / "reports", "ref")) == 1
    again = CliRunner().invoke(app, ["cleanup", "--config", str(config), "--set", "retention.reports.nights=1"])
    assert "retention: nothing to remove for target 'ref'" in again.output


def test_tonights_finished_run_counts_among_the_newest_nights(tmp_path):
    """At the end of a run its own row is finished and protected: it is one of the `nights` kept (as its report
    folder is), so a steady installation keeps exactly `nights` nights of steps, not one more."""
    cfg = validate({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 1000},
                    "retention": {"reports_dir": str(tmp_path / "reports"), "steps": {"nights": 2}}})
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    for n in range(3):
        store.start_run(f"run-{n}", cfg, {})
        store.add_step(f"run-{n}", StepRow(stage="single_client", step=1, replicas=1, cpu=1.0, memory=None,
                                           concurrency=1, users=1, rps=10.0))
        store.finish_run(f"run-{n}", "completed", {}, {})
        with store.engine.begin() as conn:
            conn.exec_driver_sql("update runs set started_at = ? where run_id = ?",
                                 (night(5 - n).replace(tzinfo=None), f"run-{n}"))
    done = apply_retention(cfg, store, protect=["run-2"], now=NOW)  # run-2 is tonight, just finished
    assert (done.runs_pruned, done.steps_deleted) == (1, 1)
    assert [len(store.steps_of(f"run-{n}")) for n in range(3)] == [0, 1, 1]
