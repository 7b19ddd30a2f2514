"""Level changes in the stored history: marked in `nightcap history`, the trend table and the trend plot."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from nightcap.config import validate
from nightcap.results.history_cli import history_command
from nightcap.results.level_changes import level_changes, trend_rows, with_tonight
from nightcap.results.store import HistoryStore
from nightcap.results.plots import trend_plot
from test_change_points import nights


def config(window_s: float = 3.0):
    return validate({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 1000},
                     "load": {"window_s": window_s}})


def night(store: HistoryStore, run_id: str, rps: float, *, status: str = "completed", window_s: float = 3.0) -> None:
    store.start_run(run_id, config(window_s), {"service_ms": 20.0})
    store.finish_run(run_id, status, {"saturation_rps": rps, "rps_per_core": rps / 2, "p95_at_operating_ms": 40.0,
                                      "slo_users": 16}, {})


@pytest.fixture
def store(tmp_path):
    """14 nights with a 20% drop at night 9, a failed night between, then two nights of another config."""
    with HistoryStore(f"sqlite:///{tmp_path / 'h.db'}") as store:
        for i, rps in enumerate(nights(drop_at=9)):
            night(store, f"night-{i + 1:02d}", rps)
            if i == 10:
                night(store, "failed-one", 20.0, status="failed")  # never part of a series
        for i in range(2):
            night(store, f"other-config-{i}", 400.0, window_s=1.0)  # another comparison key, another level
        yield store


def test_the_night_a_level_changed_is_marked_per_figure_and_comparison_key(store):
    changes = level_changes(store.history(target="ref", last=60))
    assert sorted(changes) == ["night-09"]
    marked = {c.figure: c for c in changes["night-09"]}
    assert set(marked) == {"saturation_rps", "rps_per_core"}  # p95 and SLO users did not move
    assert marked["saturation_rps"].worse and -25 < marked["saturation_rps"].change_pct < -15
    assert marked["saturation_rps"].label.startswith("sat. rps −2")


def test_history_marks_the_change_even_when_the_nights_before_it_are_not_shown(store):
    console = Console(record=True, width=220)
    history_command(store.url, "ref", 9, console=console)
    lines = console.export_text().splitlines()
    marked = [line for line in lines if "sat. rps −2" in line]
    assert len(marked) == 1 and "rps/core −2" in marked[0], lines
    notes = [line.strip() for line in lines if line.strip().startswith("run ")]
    assert [n.split(":")[0] for n in notes] == ["run night-09"] * 2, lines
    assert notes[0].startswith("run night-09: saturation_rps 2") and "p=" in notes[0]
    assert sum("completed" in line for line in lines) == 9  # nine nights shown, fourteen analysed


def test_the_trend_table_and_plot_include_tonight_before_it_is_stored(store, tmp_path):
    store.start_run("tonight", config(), {"service_ms": 20.0})  # still 'running' in the store
    frame = store.history(target="ref", last=30)
    assert frame.loc[frame["run_id"] == "tonight", "status"].item() == "running"
    frame = with_tonight(frame, "tonight", "completed", {"saturation_rps": 80.0, "rps_per_core": 40.0,
                                                         "p95_at_operating_ms": math.nan}, "regressed")
    changes = level_changes(frame)
    assert "tonight" in changes and "night-09" in changes  # a second, larger drop starts tonight
    rows = trend_rows(frame, changes)
    assert [r["run"] for r in rows][-1] == "tonight"
    assert rows[-1]["status"] == "completed, regressed" and rows[-1]["sat. rps"] == 80.0
    assert rows[-1]["p95 at op"] is None
    assert rows[[r["run"] for r in rows].index("failed-one")]["level change"] == ""
    assert "sat. rps" in rows[[r["run"] for r in rows].index("night-09")]["level change"]
    assert trend_plot(frame, tmp_path / "trend.png", changes=changes) == "trend.png"
    assert (tmp_path / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
