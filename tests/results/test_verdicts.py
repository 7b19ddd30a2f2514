"""Stage verdicts (issue 23, item 2): completed, inconclusive or failed, and how the run ends for each.

Millisecond tests of the pure rules (`nightcap.results.verdicts`, each result's `inconclusive`), of the exit code
`nightcap run` gives an inconclusive run, and of `nightcap history` on such a night; one real run (slow, ~10 s)
holds the Prefect state, the report's first lines and a regression check that does not compare its figures.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from nightcap.analysis.usl import fit_usl
from nightcap.results.stages import (RampResult, RegressionOutcome, ScalingResult, ScalingRow, SizingResult,
                                     StageResults, TuneResult)
from nightcap.results.verdicts import (EXIT_INCONCLUSIVE, STATE_INCONCLUSIVE, close_stages, inconclusive_message,
                                       inconclusive_reason, run_verdict)
from test_layering import ROOT, impure_imports
from test_summary_keys import _search

REPO = Path(__file__).resolve().parents[2]


def test_each_stage_says_when_it_ran_without_answering() -> None:
    fit = fit_usl([1, 2], [100.0, 190.0])
    rows = [ScalingRow(1, 100.0, 4, 100.0, 1.0, 4, "flat"), ScalingRow(2, 190.0, 8, 95.0, 0.95, 8, "flat")]
    answered = StageResults(single_client=RampResult("single_client", 1, 1, _search(95.0, 2), 20.0, 0),
                            scaling=ScalingResult(rows, fit, fit, 8, []),  # no USL fit: the rows still answer
                            regression=RegressionOutcome(None, note="no history store"))
    assert inconclusive_reason(answered, "single_client") is None
    assert inconclusive_reason(answered, "scaling") is None
    assert inconclusive_reason(answered, "regression") == "nothing was compared: no history store"
    assert inconclusive_reason(answered, "tune") is None  # no result: not run, or failed (not this verdict)
    none_met = RampResult("single_client", 1, 1, _search(None, None), None, 0)
    assert inconclusive_reason(StageResults(single_client=none_met), "single_client") == (
        "no load level met the SLO (p95 80 ms over the SLO 50 ms at 1 users)")
    assert SizingResult([], None, None, 0.7, 2.0, 1.0).inconclusive == "no sizing row was computed"
    tune = TuneResult([], 0, 12, 1, [], "no candidate met the SLO", True, None, None, 0.7)
    assert tune.inconclusive == "no pod size was chosen: no candidate met the SLO"


def test_an_autoscale_result_that_carries_a_reason_is_read_like_the_others() -> None:
    """The autoscale stage sets its own `inconclusive` field (another engineer's): the same rule reads it."""
    results = StageResults()
    results.autoscale = SimpleNamespace(inconclusive="the added pods never became ready within the 32 s")  # type: ignore[assignment]
    assert inconclusive_reason(results, "autoscale") == "the added pods never became ready within the 32 s"
    results.autoscale = SimpleNamespace(inconclusive=None)  # type: ignore[assignment]
    assert inconclusive_reason(results, "autoscale") is None


def _stages(**status: str) -> dict[str, dict[str, Any]]:
    return {name: {"status": s, **({"reason": f"{name} could not tell"} if s == "inconclusive" else {})}
            for name, s in status.items()}


@pytest.mark.parametrize("flow_end, stages, history, verdict", [
    ("completed", _stages(tune="completed", scaling="completed"), "completed", "completed"),
    ("completed", _stages(tune="completed", autoscale="inconclusive"), "completed", "inconclusive"),
    ("completed", _stages(scaling="failed", autoscale="inconclusive"), "failed", "failed"),
    ("cancelled", _stages(tune="completed", scaling="running", sizing="pending"), "cancelled", "cancelled"),
])
def test_the_run_ends_failed_over_inconclusive_over_completed(flow_end, stages, history, verdict) -> None:
    assert close_stages(flow_end, stages) == history
    assert run_verdict(history, stages) == verdict
    if flow_end == "cancelled":
        assert [s["status"] for s in stages.values()] == ["completed", "failed", "skipped"]
    assert run_verdict(None, stages) is None  # summaries written mid-run have no verdict yet


def test_the_state_message_names_each_inconclusive_stage_and_its_reason() -> None:
    stages = _stages(tune="completed", scaling="inconclusive", autoscale="inconclusive")
    stages["autoscale"]["reason"] = "the added pods never became ready."
    assert inconclusive_message(stages) == ("inconclusive: scaling: scaling could not tell; autoscale: the added pods "
                                            "never became ready")


def test_verdicts_and_report_templates_import_nothing_impure() -> None:
    modules = ["results/verdicts.py", "results/report_lines.py", "results/report_sections.py", "results/report.py"]
    assert {m: impure_imports(ROOT / m) for m in modules if impure_imports(ROOT / m)} == {}


def test_nightcap_run_exits_3_when_a_stage_was_inconclusive(tmp_path, monkeypatch) -> None:
    """The documented exit code: 3 for a completed run whose state is named Inconclusive, with the reasons."""
    import flows.capacity_check
    from nightcap.cli import app

    message = "inconclusive: autoscale: the added pods never became ready within the 32 s of the experiment"
    state = SimpleNamespace(name=STATE_INCONCLUSIVE, message=message, is_failed=lambda: False,
                            result=lambda raise_on_failure=False: {"answer": "ref saturates at 200 rps."})
    monkeypatch.setattr(flows.capacity_check, "capacity_check", lambda **kwargs: state)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never called: the flow is replaced
    monkeypatch.setenv("NIGHTCAP_EXTERNAL_API", "1")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(REPO / "configs" / "reference.yaml")])
    assert result.exit_code == EXIT_INCONCLUSIVE == 3, result.output
    assert "ref saturates at 200 rps." in result.output and f"run {message}" in " ".join(result.output.split())
    state.name = "Completed"
    assert CliRunner().invoke(app, ["run", str(REPO / "configs" / "reference.yaml")]).exit_code == 0


def test_history_shows_an_inconclusive_night_and_no_figures_from_its_headline_stage(tmp_path) -> None:
    from rich.console import Console

    from nightcap.config import validate
    from nightcap.results.history_cli import history_command
    from nightcap.results.store import HistoryStore
    from nightcap.results.summary import headline_figures

    url = f"sqlite:///{tmp_path}/history.db"
    config = validate({"target": {"name": "ref", "kind": "reference"}, "slo": {"p95_ms": 500}})
    store = HistoryStore(url)
    head = {"saturation": {"rps": 160.0, "users": 16, "inconclusive": "160.0 rps at 16 users is a lower bound"},
            "operating_point": {"rps": 112.0, "p95_ms": 30.0}, "slo_capacity": {"users": 16, "rps": 160.0},
            "rps_per_core": 160.0}
    store.start_run("night-1", config)
    store.finish_run("night-1", "completed", headline_figures(head), {**head, "verdict": "inconclusive"})
    frame = store.history()
    assert frame["verdict"].tolist() == ["inconclusive"] and frame["saturation_rps"].isna().all()
    assert store.comparable_runs(config.config_hash())[0]["saturation_rps"] is None  # no baseline figure
    store.close()
    console = Console(record=True, width=160)
    history_command(url, None, 5, console=console)
    text = console.export_text()
    assert "completed, inconclusive" in text and "160.0" not in text
    assert "its figures are not recorded (–) nor compared" in " ".join(text.split())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_ramp_that_stops_before_its_knee_ends_inconclusive_and_is_not_compared(prefect_api, leftovers, tmp_path):
    """A real run (~10 s): the reference target's knee is at 4 users, the search may go to 2, so single_client
    measures a lower bound. Three earlier nights at twice tonight's rate would make it a regression if its
    figures were compared: they are not. The flow ends Completed under the name Inconclusive, with the reason
    in the state message and in report.md's first lines; the history keeps the night without its figures."""
    from flows.capacity_check import capacity_check
    from nightcap.config import load_config
    from nightcap.results.store import HistoryStore

    config = str(REPO / "configs" / "reference.yaml")
    overrides = ["target.name=reference-inconclusive", "search.max_users=2", "search.max_windows=1",
                 "load.window_s=1", "load.warmup_s=0.5", "load.verify_s=0", "canary.enabled=false",
                 f"store.url=sqlite:///{tmp_path}/history.db", 'stages=["single_client", "regression"]']
    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    for night in range(3):  # earlier, comparable nights: twice what two users can send to a 4-slot server
        store.start_run(f"earlier-{night}", load_config(config, overrides))
        store.finish_run(f"earlier-{night}", "completed", {"saturation_rps": 400.0, "rps_per_core": 400.0,
                                                           "p95_at_operating_ms": 20.0, "slo_users": 16}, {})
    out = tmp_path / "out"
    state = capacity_check(config=config, overrides=overrides, out=str(out), return_state=True)
    assert state.is_completed() and state.name == "Inconclusive", (state.name, state.message)
    assert state.message.startswith("inconclusive: single_client: no saturation point was found (reached "
                                    "search.max_users (2) while throughput still grew)")
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["verdict"] == "inconclusive"
    assert summary["stages"]["single_client"]["status"] == "inconclusive"
    assert summary["stages"]["regression"]["status"] == "completed"
    assert summary["regression"]["verdict"] != "regressed", summary["regression"]  # tonight was not compared
    assert 50 <= summary["saturation"]["rps"] <= 110  # two users of 20 ms: ~100 rps, kept in summary.json
    lines = (out / "report.md").read_text().splitlines()
    assert lines[2].startswith("How sure: ") and lines[4].startswith("**Inconclusive**: single_client: ")
    tonight = store.get_run(summary["run_id"])
    assert tonight["status"] == "completed" and tonight["saturation_rps"] is None
    store.close()
