"""Regression detection end to end, in-process: the parent flow on the reference target, night after night.

Stable nights build a history in one SQLite store; a night against a slower reference server (service_ms
20 → 40, so half the capacity) must end Failed naming saturation_rps and both values; a night within the
noise passes; a night whose stage fails keeps its measured steps in the store, marked failed. Each night is also
read back as the Prefect UI shows it: the run named by target and night, the answer its first artifact, under one
key, and from the second night the trend plot artifact.

Each run is short (1 s windows, at most 16 users, ~10 s, with a one-window platform canary before it; from the
second night on the ramp warm-starts from the night before); the whole module takes about two minutes.
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nightcap.results.glance import NO_EARLIER_NIGHT
from prefect_cli import run_artifacts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
REFERENCE = str(REPO / "configs" / "reference.yaml")  # absolute: the tests run in a scratch directory


@pytest.fixture(scope="module")
def night(prefect_api, tmp_path_factory):
    """Run the capacity-check flow once, like one night: same store and comparison key every time.

    `prefect_api` (tests/conftest.py) is the session's one prefect_test_harness.
    """
    from flows.capacity_check import capacity_check

    work = tmp_path_factory.mktemp("nights")
    store_url = f"sqlite:///{work / 'history.db'}"
    count = iter(range(1, 100))

    def run(*extra: str) -> tuple[Any, dict[str, Any], Path]:
        out = work / f"night-{next(count)}"
        overrides = [
            "target.name=reference-regression",  # its own identity and run lock, apart from other runs here
            "load.window_s=1", "load.verify_s=0",
            "load.warmup_s=0.5",
            "search.max_users=16",  # the knee is at 4 users (4 slots): 16 finds it (8 is a lower bound), and
            # from the second night on the warm start verifies it with a few levels instead of searching
            "search.max_windows=1",
            "search.refine_steps=1",
            f"store.url={store_url}",
            'stages=["single_client", "regression"]',
            # three nights, not the five a nightly needs: this test holds the wiring (store, canary, verdict,
            # failed flow run), bench/alarm.py holds the false-alarm rate; two or three nights know their noise
            # so badly (t on 1-2 degrees of freedom) that only a loose rate lets a halved capacity alarm here
            "regression.min_runs=2", "regression.window_nights=1", "regression.false_alarm_rate=0.2",
            "canary.windows=1",  # the platform canary runs every night: one short window keeps the nights short
            "canary.work_kb=256",
            "regression.canary_threshold=0.3",  # same machine every night: only a gross drift may move it here
            *extra,
        ]
        state = capacity_check(config=REFERENCE, overrides=overrides, out=str(out), return_state=True)
        return state, json.loads((out / "summary.json").read_text()), out

    mp = pytest.MonkeyPatch()
    mp.chdir(work)  # run locks, the run registry and default report folders stay in the scratch directory
    try:
        yield run, store_url
    finally:
        mp.undo()


def history(store_url: str):
    from nightcap.results.store import HistoryStore

    return HistoryStore(store_url)


@pytest.mark.quiet  # three nights of noise must not alarm
def test_slower_target_fails_the_flow_and_noise_does_not(night, prefect_api):
    run, store_url = night
    stable, run_ids = [], []
    for i in range(3):
        state, summary, _ = run()
        glance(prefect_api, state, summary, nights=i + 1)
        assert state.is_completed(), state.message
        assert summary["stages"]["regression"]["status"] == "completed"
        assert 170 <= summary["saturation"]["rps"] <= 240, summary["saturation"]  # 4 slots x 20 ms = 200 rps
        stable.append(summary["saturation"]["rps"])
        # the platform canary was measured before the model, every night, and is kept with the night
        assert summary["canary"]["rps_per_core"] > 0 and summary["canary"]["windows"] == 1, summary["canary"]
        warm = summary["single_client"]["warm_start"]
        if i == 0:
            assert warm["from_run"] is None and "no completed comparable night" in warm["reason"], warm
        else:  # the last night's knee is verified with a few levels around it, measured tonight
            assert warm["from_run"] == run_ids[-1] and warm["levels"] and warm["reason"], warm
            assert warm["windows"] == sum(lv["windows"] for lv in summary["single_client"]["levels"]
                                          if lv["users"] in warm["levels"]) or not warm["accepted"], warm
        run_ids.append(summary["run_id"])
    # the first nights have too little history to judge; the third has two comparable nights and, within
    # their noise, passes
    assert summary["regression"]["verdict"] == "ok", summary["regression"]
    assert len(summary["regression"]["baseline_run_ids"]) == 2, summary["regression"]
    assert summary["canary"]["change"]["baseline_runs"] == 2, summary["canary"]

    # tonight the model is twice as slow: half the capacity
    state, summary, out = run("target.service_ms=40")
    assert state.is_failed()
    assert summary["regression"]["verdict"] == "regressed"
    answer = glance(prefect_api, state, summary, nights=4)
    assert answer.startswith("### reference-regression: completed, regressed\n"), answer
    assert "saturation_rps −" in answer, answer
    tonight = summary["saturation"]["rps"]
    assert 80 <= tonight <= 120, summary["saturation"]  # 4 slots x 40 ms = 100 rps
    baseline = statistics.geometric_mean(stable)  # the level the alarm compares with: all three earlier nights
    message = state.message
    assert "RegressionDetected" in message and "saturation_rps fell" in message, message
    # the canary held (same machine, same canary): the model moved, not the platform
    assert summary["regression"]["cause"] == "model" and "the platform canary held" in message, message
    assert f"({baseline:.1f} → {tonight:.1f} rps)" in message, (message, stable, tonight)
    with pytest.raises(Exception, match="saturation_rps fell"):
        state.result()
    # the change is in summary.json and the report, and the slower server is recorded with the run
    figures = {row["figure"]: row for row in summary["regression"]["figures"]}
    assert figures["saturation_rps"]["verdict"] == "regressed"
    assert summary["target"]["version"]["service_ms"] == 40.0
    assert "saturation_rps fell" in (out / "report.md").read_text()

    # the slower night is one comparable run among the others, not a new identity
    with history(store_url) as store:
        frame = store.history(target="reference-regression", last=30)
        assert len(frame) == 4 and frame["config_hash"].nunique() == 1
        assert frame["canary"].gt(0).all(), frame["canary"]  # each night's platform canary, kept with the night
        assert list(frame["regression"]) == ["insufficient history"] * 2 + ["ok", "regressed"]
    # and `nightcap history` says so next to the status
    from rich.console import Console

    from nightcap.results.history_cli import history_command

    console = Console(record=True, width=200)
    history_command(store_url, "reference-regression", 10, console=console)
    lines = console.export_text().splitlines()
    assert sum("completed, regressed" in line for line in lines) == 1, lines
    assert any("canary rps/core" in line for line in lines), lines


def glance(api_url: str, state: Any, summary: dict[str, Any], nights: int) -> str:
    """What the Prefect UI shows of a night: its name in the runs list, the answer as its first artifact under one
    key (a version per night), and from the second night the trend plot. Returns the answer."""
    import httpx
    from prefect.client.orchestration import get_client

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(flow_run_id).name
    now = datetime.now().astimezone()  # the night the run started: today, or yesterday if it crossed midnight
    assert name in {f"reference-regression {d.date().isoformat()}" for d in (now, now - timedelta(hours=1))}, name
    listed = run_artifacts(api_url, str(flow_run_id))
    keys = [a["key"] for a in listed]
    assert keys[0] == "reference-regression-answer", keys
    answer = listed[0]["data"]  # written when the run ended, into the artifact created when it opened
    assert answer.startswith("### reference-regression: completed"), answer
    assert f"{summary['capacity']['per_pod']['rps']:,.1f} rps**" in answer, answer
    versions = httpx.post(f"{api_url}/artifacts/filter", timeout=10,
                          json={"artifacts": {"key": {"any_": ["reference-regression-answer"]}}}).json()
    assert len(versions) == nights, [v["flow_run_id"] for v in versions]
    (latest,) = httpx.post(f"{api_url}/artifacts/latest/filter", timeout=10,
                           json={"artifacts": {"key": {"any_": ["reference-regression-answer"]}}}).json()
    assert latest["data"] == answer  # the Artifacts page shows tonight's answer, not the "running" placeholder
    if nights == 1:  # nothing to compare, no trend to draw
        assert NO_EARLIER_NIGHT in answer and "reference-regression-trend-plot" not in keys, (answer, keys)
        return answer
    (plot,) = [a for a in listed if a["key"] == "reference-regression-trend-plot"]
    assert plot["type"] == "markdown" and "![trend](data:image/png;base64," in plot["data"]
    return answer


def test_a_failed_stage_keeps_its_steps_in_the_history(night):
    run, store_url = night
    # a safety limit below the target's capacity: the ramp stops with an error once it measures more
    # (with the warm start off, the ramp searches from one user as it did before; no canary: its 2,000 rps
    # would meet the safety limit first, and the canary reports that without failing the run)
    state, summary, _ = run("load.max_rps=120", "search.warm_start=false", "canary.enabled=false")
    assert state.is_failed()
    assert summary["stages"]["single_client"]["status"] == "failed"
    assert "load.max_rps" in summary["stages"]["single_client"]["error"]
    with history(store_url) as store:
        stored = store.get_run(summary["run_id"])
        assert stored["status"] == "failed"
        steps = store.steps_of(summary["run_id"])
        assert len(steps) == summary["stages"]["single_client"]["steps"] >= 2
        assert {s.stage for s in steps} == {"single_client"}
        assert steps[-1].rps > 120  # the step that crossed the limit is kept too
        # a failed night is history, never a baseline
        comparable = store.comparable_runs(stored["config_hash"], last_n=30)
        assert summary["run_id"] not in {r["run_id"] for r in comparable}
