"""The events a run emits and the automations that react to them, checked without a server (fast)."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from nightcap.analysis.regression import check_regression
from nightcap.results.events import CAPACITY_IMPROVED, CAPACITY_REGRESSED, RUN_COMPLETED, RUN_FAILED, run_events

REPO = Path(__file__).resolve().parents[2]
HISTORY = [{"run_id": f"night-{i}", "saturation_rps": v, "rps_per_core": v}
           for i, v in enumerate([201.0, 199.0, 203.0, 200.0, 202.0, 198.0])]  # five nights before an alarm
LEVEL = statistics.geometric_mean(run["saturation_rps"] for run in HISTORY)  # what the alarm compares with


def summary_with(tonight: dict, status_of_stage: str = "completed") -> dict:
    result = check_regression(dict(tonight, run_id="tonight"), HISTORY[::-1])
    return {
        "run_id": "tonight",
        "target": {"name": "reference", "kind": "reference"},
        "platform": {"kind": "local"},
        "config_hash": "abc123",
        "stages": {"single_client": {"status": status_of_stage}, "regression": {"status": "completed"}},
        "regression": result.to_dict(),
        "answer": "reference saturates at ...",
    }


def test_a_regressed_night_is_completed_and_regressed_with_figures_baseline_and_change_point():
    tonight = {"saturation_rps": 100.0, "rps_per_core": 100.0}
    events = run_events(summary_with(tonight), "completed", tonight, report="/tmp/r")
    assert [e.event for e in events] == [RUN_COMPLETED, CAPACITY_REGRESSED]
    done, regressed = events
    assert done.resource["prefect.resource.id"] == "nightcap.target.reference"
    assert all(isinstance(v, str) for v in done.resource.values())
    assert done.payload["figures"] == tonight and done.payload["regression"] == "regressed"
    figures = {f["figure"]: f for f in regressed.payload["figures"]}
    assert set(figures) == {"saturation_rps", "rps_per_core"}
    assert figures["saturation_rps"]["tonight"] == 100.0
    assert figures["saturation_rps"]["baseline"] == pytest.approx(LEVEL)
    assert regressed.payload["baseline"]["run_ids"] == [f"night-{i}" for i in range(5, -1, -1)]
    assert f"saturation_rps fell 50% ({LEVEL:.1f} → 100.0 rps)" in regressed.payload["message"]
    (point, _) = regressed.payload["change_points"]
    assert point["figure"] == "saturation_rps" and point["tonight"] and point["night"] == 7
    json.dumps([e.payload for e in events], allow_nan=False)


def test_an_improved_night_and_a_failed_run():
    tonight = {"saturation_rps": 300.0, "rps_per_core": 300.0}
    assert [e.event for e in run_events(summary_with(tonight), "completed", tonight)] == [
        RUN_COMPLETED, CAPACITY_IMPROVED]
    summary = summary_with({}, status_of_stage="failed")
    summary["stages"]["single_client"]["error"] = "load.max_rps exceeded"
    events = run_events(summary, "cancelled", {"saturation_rps": float("nan")})
    assert [e.event for e in events] == [RUN_FAILED]
    assert events[0].payload["status"] == "cancelled"
    assert events[0].payload["errors"] == {"single_client": "load.max_rps exceeded"}
    assert events[0].payload["figures"] == {"saturation_rps": None}


def load_script():
    spec = importlib.util.spec_from_file_location("automations", REPO / "deployments" / "automations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_automations_template_renders_into_valid_prefect_automations():
    script = load_script()
    data = script.render("00000000-0000-0000-0000-000000000001", 60)
    by_name = {a["name"]: a for a in data["automations"]}
    regressed, missing = by_name["nightcap: capacity regressed"], by_name["nightcap: nightly check did not run"]
    assert regressed["trigger"]["expect"] == [CAPACITY_REGRESSED]
    assert missing["trigger"]["posture"] == "Proactive" and missing["trigger"]["within"] == 60
    assert missing["trigger"]["after"] == missing["trigger"]["expect"] == [RUN_COMPLETED]
    assert missing["trigger"]["for_each"] == ["prefect.resource.id"]
    for automation in data["automations"]:
        (action,) = automation["actions"]
        assert action["block_document_id"] == "00000000-0000-0000-0000-000000000001"
    assert script.render("00000000-0000-0000-0000-000000000001", 93600)["automations"][1]["trigger"]["within"] == 93600


def test_the_script_refuses_bad_arguments_before_touching_a_server(capsys):
    script = load_script()
    with pytest.raises(SystemExit):
        script.main(["--webhook-url", "hooks.example.com", "--out", "/tmp/x.yaml"])
    assert "--webhook-url must be an http(s) URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--webhook-url", "http://127.0.0.1:1/x", "--out", "/tmp/x.yaml", "--missing-after-s", "5"])
    assert "at least 10" in capsys.readouterr().err
