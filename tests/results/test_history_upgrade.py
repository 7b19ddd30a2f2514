"""A history written by an older nightcap opens under this one with every row intact, and a figure whose
meaning changed (closed- to open-loop p95) starts a new baseline instead of alarming, marked in the history."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from nightcap.analysis.regression import check_regression
from nightcap.config import validate
from nightcap.results.history_cli import history_command
from nightcap.results.meanings import CLOSED, FRESH, OPEN, SEARCH, figure_meanings
from nightcap.results.store import SCHEMA_VERSION, HistoryStore

FIXTURE = Path(__file__).parents[1] / "fixtures" / "history-v1.db"  # written by schema 1 (make_history_v1.py)
REF = validate({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 1000}})


def rows(path: Path, table: str) -> list[dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"select * from {table} order by id")]
    finally:
        conn.close()


@pytest.fixture
def old_history(tmp_path) -> Path:
    path = tmp_path / "history.db"
    shutil.copy(FIXTURE, path)
    return path


def test_schema_1_history_opens_with_every_row_intact(old_history):
    runs_before, steps_before = rows(old_history, "runs"), rows(old_history, "steps")
    assert rows(old_history, "schema_version")[0]["version"] == 1 and len(runs_before) == 11 and len(steps_before) == 29
    store = HistoryStore(f"sqlite:///{old_history}")
    assert store.schema_version() == SCHEMA_VERSION == 2
    store.close()
    runs_after, steps_after = rows(old_history, "runs"), rows(old_history, "steps")
    assert [{k: r[k] for k in runs_before[0]} for r in runs_after] == runs_before  # every column of every row
    assert [{k: r[k] for k in steps_before[0]} for r in steps_after] == steps_before
    assert {"figure_meanings", "steps_pruned", "artifacts_pruned"} <= set(runs_after[0])
    again = HistoryStore(f"sqlite:///{old_history}")  # opening twice changes nothing
    assert len(again.history(last=100)) == 11 and len(again.steps_of("20260101-020000-000001")) == 3
    assert again.get_run("20260108-020000-000008")["status"] == "running"
    assert rows(old_history, "runs") == runs_after


def test_a_figure_measured_another_way_starts_a_new_baseline(old_history):
    """Five nights of closed-loop p95 ~100 ms; tonight open-loop says 160 ms: not a regression, a new baseline."""
    store = HistoryStore(f"sqlite:///{old_history}")
    tonight = {"saturation_rps": 211.0, "rps_per_core": 211.0, "p95_at_operating_ms": 160.0, "slo_users": 40}
    meanings = figure_meanings({"operating_point": {"load": "open"}})
    assert meanings["p95_at_operating_ms"] == OPEN and meanings["saturation_rps"] == SEARCH
    blind = store.comparable_runs(REF.config_hash(), 7)
    assert check_regression(tonight, blind).verdict == "regressed"  # what comparing across the change would say
    history = store.comparable_runs(REF.config_hash(), 7, meanings=meanings)
    assert [r["meaning_changed"] for r in history] == [{"p95_at_operating_ms": (CLOSED, OPEN)}] * 5
    assert all(r["p95_at_operating_ms"] is None and r["saturation_rps"] for r in history)
    result = check_regression(tonight, history)
    assert result.verdict == "ok", result.message
    by_name = {f.figure: f.verdict for f in result.figures}
    assert by_name["p95_at_operating_ms"] == "not enough history" and by_name["saturation_rps"] == "ok"
    # a night of the same method is still a baseline
    assert store.comparable_runs(REF.config_hash(), 7, meanings={"p95_at_operating_ms": CLOSED})[0][
        "p95_at_operating_ms"] == 102.0


def test_the_history_marks_the_night_a_figure_changed_meaning(old_history):
    store = HistoryStore(f"sqlite:///{old_history}")
    store.start_run("20261201-020000-abcdef", REF, {"service_ms": 20})
    store.finish_run("20261201-020000-abcdef", "completed", {"saturation_rps": 209.0, "p95_at_operating_ms": 160.0},
                     {"operating_point": {"load": "open", "p95_ms": 160.0}})
    frame = store.history(target="ref", last=30)
    assert frame.iloc[-1]["figure_meanings"]["p95_at_operating_ms"] == OPEN
    assert frame.iloc[0]["figure_meanings"]["p95_at_operating_ms"] == CLOSED  # derived for rows of schema 1
    store.close()
    console = Console(record=True, width=200)
    history_command(f"sqlite:///{old_history}", "ref", 30, console=console)
    text = console.export_text()
    assert text.count("p95 now open-loop (new baseline)") == 1  # on the night it changed, and only there


def test_confirmed_figures_and_poisson_arrivals_start_their_own_baselines(old_history):
    """This version reports saturation from fresh windows and checks p95 on Poisson arrivals: both are other
    quantities than the schema-1 nights measured, so they are not compared across the change (and the comparison
    key stays, so the nights are still one history)."""
    store = HistoryStore(f"sqlite:///{old_history}")
    meanings = figure_meanings({"operating_point": {"load": "open", "arrivals": "poisson"},
                                "saturation": {"status": "confirmed"}})
    assert meanings["saturation_rps"] == meanings["rps_per_core"] == FRESH
    history = store.comparable_runs(REF.config_hash(), 7, meanings=meanings)
    assert len(history) == 5 and all(r["saturation_rps"] is None and r["p95_at_operating_ms"] is None for r in history)
    store.close()
