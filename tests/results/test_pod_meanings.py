"""Nights that measured another pod are not tonight's baseline: tune's choice of CPU size is not a regression."""

from __future__ import annotations

import json
import sqlite3

from rich.console import Console

from nightcap.analysis.regression import check_regression
from nightcap.config import validate
from nightcap.results.history_cli import history_command
from nightcap.results.meanings import (FRESH, OPEN_POISSON, POD_FIGURES, changed_figures, figure_meanings,
                                       renewal_sentences, stored_meanings)
from nightcap.results.store import HistoryStore

REF = validate({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 1000}})
OPEN = {"load": "open", "arrivals": "poisson", "p95_ms": 40.0}


def summary(cpu: float | None, concurrency: int | None = 2, memory: int = 1 << 30, rps: float = 200.0) -> dict:
    platform = {"kind": "local", "replicas": 1, "memory": memory}
    if cpu is not None or concurrency is not None:
        platform.update(cpu=cpu, concurrency=concurrency)
    return {"platform": platform, "saturation": {"status": "confirmed", "rps": rps}, "operating_point": OPEN}


def figures(rps: float, cpu: float) -> dict:
    return {"saturation_rps": rps, "rps_per_core": rps / cpu, "p95_at_operating_ms": 40.0, "slo_users": 12}


def nights(store: HistoryStore, cpu: float, rps: list[float], day: int = 1, **pod) -> None:
    for i, value in enumerate(rps):
        run_id = f"202612{day:02d}-0{i}0000-abcdef"
        store.start_run(run_id, REF, {"service_ms": 20})
        store.finish_run(run_id, "completed", figures(value, cpu), summary(cpu, rps=value, **pod))


def test_a_night_on_another_pod_starts_a_new_baseline_instead_of_a_false_alarm(tmp_path):
    """Six nights tune chose 1 CPU (~200 rps); tonight it chose 0.5 CPU (~100 rps, the same per core)."""
    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    nights(store, 1.0, [198.0, 202.0, 200.0, 199.0, 201.0, 200.0])
    tonight = figures(100.0, 0.5)
    meanings = figure_meanings(summary(0.5, rps=100.0))
    assert meanings["saturation_rps"] == f"{FRESH}, on pods of 0.5 CPU, concurrency 2"
    blind = store.comparable_runs(REF.config_hash(), 7)
    assert check_regression(tonight, blind).verdict == "regressed"  # what comparing across pods would say
    history = store.comparable_runs(REF.config_hash(), 7, meanings=meanings)
    assert all(r["saturation_rps"] is None and r["slo_users"] is None for r in history)
    result = check_regression(tonight, history)
    assert result.verdict == "insufficient history" and not result.regressed, result.message
    assert "6 comparable completed night(s), but no figure was measured as tonight's on 5 of them" in result.message
    sentences = renewal_sentences([r["meaning_changed"] for r in history])
    assert sentences == ["tonight's figures are of pods of 0.5 CPU, concurrency 2 (earlier nights: 1 CPU, "
                         "concurrency 2): a new baseline starts for them"]
    # nights of tonight's pod are its baseline again, and a real drop on them still alarms
    same = store.comparable_runs(REF.config_hash(), 7, meanings=figure_meanings(summary(1.0)))
    assert [r["saturation_rps"] for r in same][:2] == [200.0, 201.0] and not any(r["meaning_changed"] for r in same)
    assert check_regression(figures(150.0, 1.0), same).verdict == "regressed"
    store.close()


def test_another_memory_limit_is_the_same_pod_and_an_unknown_pod_compares_on_the_method():
    """Tune's memory choice moves between runs of one pod; a night whose summary does not name its pod is compared
    on how the figure was measured only."""
    tonight = figure_meanings(summary(0.5, memory=768 << 20))
    assert changed_figures(tonight, figure_meanings(summary(0.5, memory=1 << 30))) == {}
    assert changed_figures(tonight, figure_meanings(summary(None, None))) == {}
    other = changed_figures(tonight, figure_meanings(summary(0.5, concurrency=1)))
    assert set(other) == set(POD_FIGURES)
    assert "no CPU limit" in figure_meanings(summary(None, 4))["slo_users"]


def test_rows_stored_before_the_pod_was_in_a_meaning_get_it_from_their_summary(tmp_path):
    """An installation's history written by the previous version keeps its baseline when the pod is the same."""
    path = tmp_path / "history.db"
    store = HistoryStore(f"sqlite:///{path}")
    nights(store, 0.5, [100.0, 101.0, 99.0, 100.0, 100.0])
    store.close()
    with sqlite3.connect(path) as con:  # as the previous version stored them: the method only
        con.execute("update runs set figure_meanings = ?", (json.dumps(
            {"p95_at_operating_ms": OPEN_POISSON, "saturation_rps": FRESH, "rps_per_core": FRESH}),))
    store = HistoryStore(f"sqlite:///{path}")
    run = store.comparable_runs(REF.config_hash(), 7)[0]
    assert stored_meanings(run)["saturation_rps"] == f"{FRESH}, on pods of 0.5 CPU, concurrency 2"
    history = store.comparable_runs(REF.config_hash(), 7, meanings=figure_meanings(summary(0.5)))
    assert [r["saturation_rps"] for r in history] == [100.0, 100.0, 99.0, 101.0, 100.0]
    assert check_regression(figures(80.0, 0.5), history).verdict == "regressed"
    # the trend marks the night the pod changed, once
    store.start_run("20261209-010000-abcdef", REF, {"service_ms": 20})
    store.finish_run("20261209-010000-abcdef", "completed", figures(200.0, 1.0), summary(1.0, rps=200.0))
    store.close()
    console = Console(record=True, width=400)
    history_command(f"sqlite:///{path}", "ref", 30, console=console)
    text = console.export_text()
    assert text.count("pod now 1 CPU, concurrency 2 (new baseline)") == 1 and "now fresh" not in text, text
