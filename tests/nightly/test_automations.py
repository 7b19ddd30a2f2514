"""Alerts end to end against a real Prefect server: the automations in deployments/, loaded with the commands
docs/nightly.md gives, a regressed `nightcap run` that notifies a webhook on 127.0.0.1, and the proactive
"did not run" automation firing when no completed run follows (its 26 h window shortened to 10 s).

~45 s on 2 shared cores (plus ~12 s for the server when this module starts the session's): automations
~5 s, one short run on the reference target ~20-30 s, the proactive window 10 s plus up to 5 s of Prefect's
proactive evaluation period. The server is shared with tests/nightly/test_prefect_deployment.py, so the automations
are deleted at the end.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from prefect_cli import REPO, WebhookReceiver, cli, prefect_env

pytestmark = [pytest.mark.slow, pytest.mark.quiet, pytest.mark.timeout(240)]

TARGET = "reference-alerts"  # its own identity, run lock and history, apart from other tests
NIGHTCAP = str(Path(sys.executable).with_name("nightcap"))


def overrides(store_url: str) -> list[str]:
    return [
        f"target.name={TARGET}",
        "load.window_s=1", "load.verify_s=0",
        "load.warmup_s=0.5",
        "search.max_users=16",
        "search.max_windows=1",
        "search.refine_steps=1",
        f"store.url={store_url}",
        'stages=["single_client", "regression"]',
        "canary.enabled=false",  # the platform canary is tested in test_regression_flow.py; here it only costs time
    ]


# measured as tonight's run measures them (confirmed figures, Poisson-verified operating point): a night measured
# another way would start a new baseline rather than be compared
TONIGHT = {"saturation": {"status": "confirmed"}, "operating_point": {"load": "open", "arrivals": "poisson"}}


def seed_history(store_url: str, nights: list[float]) -> None:
    """Earlier completed nights of the same comparison key (4 slots x 20 ms: 200 rps on 1 CPU)."""
    from nightcap.config import load_config
    from nightcap.results.store import HistoryStore

    cfg = load_config(REPO / "configs" / "reference.yaml", overrides(store_url))
    with HistoryStore(store_url) as store:
        for i, rps in enumerate(nights):
            store.start_run(f"seeded-{i}", cfg, {"service_ms": 20.0})
            store.finish_run(f"seeded-{i}", "completed", {"saturation_rps": rps, "rps_per_core": rps}, TONIGHT)


def events(server: dict[str, str], name: str) -> list[dict]:
    """The events of that name the server has stored (its events API)."""
    response = httpx.post(f"{server['api_url']}/events/filter",
                          json={"filter": {"event": {"name": [name]}}, "limit": 50}, timeout=10)
    response.raise_for_status()
    return response.json()["events"]


def artifact(server: dict[str, str], key: str) -> dict:
    """The latest version of a keyed artifact (its artifacts API)."""
    response = httpx.post(f"{server['api_url']}/artifacts/latest/filter",
                          json={"artifacts": {"key": {"any_": [key]}}}, timeout=10)
    response.raise_for_status()
    (found,) = response.json()
    return found


@pytest.fixture
def server(prefect_server_process):
    """The session's `prefect server start` (tests/conftest.py), shared with tests/nightly/test_prefect_deployment.py."""
    return prefect_server_process


def delete_automations(server: dict[str, str]) -> None:
    """Leave the shared server without automations that would react to other tests' runs."""
    found = httpx.post(f"{server['api_url']}/automations/filter", json={}, timeout=10).json()
    for automation in found:
        if automation["name"].startswith("nightcap: "):
            httpx.delete(f"{server['api_url']}/automations/{automation['id']}", timeout=10).raise_for_status()


def test_regressed_run_notifies_the_webhook_and_a_missing_run_fires_the_proactive_automation(server, tmp_path):
    timings: dict[str, float] = {}
    env = prefect_env(Path(server["home"]), server["api_url"])
    with WebhookReceiver() as receiver:
        try:
            check_alerts(server, env, receiver, tmp_path, timings)
        finally:
            delete_automations(server)
    print(f"timings: {timings}")
    print("\n\n".join(f"{b['json'].get('subject')}\n{b['json'].get('body')}" for b in receiver.received))


def check_alerts(server: dict[str, str], env: dict[str, str], receiver: WebhookReceiver, tmp_path: Path,
                 timings: dict[str, float]) -> None:
    t0 = time.monotonic()
    automations = tmp_path / "nightcap-automations.yaml"
    made = subprocess.run([sys.executable, "deployments/automations.py", "--webhook-url", receiver.url,
                           "--out", str(automations), "--missing-after-s", "10"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert made.returncode == 0, made.stdout + made.stderr
    out = cli(server, "automation", "create", "--from-file", str(automations))
    assert "Created 2 automation(s)" in out, out
    timings["automations_s"] = round(time.monotonic() - t0, 1)

    store_url = f"sqlite:///{tmp_path / 'h.db'}"
    seeded = [201.0, 198.5, 200.2, 199.4, 202.1]  # the alarm's five comparable nights (regression.min_runs)
    seed_history(store_url, seeded)
    report = tmp_path / "report"
    t1 = time.monotonic()
    run = subprocess.run([NIGHTCAP, "run", str(REPO / "configs" / "reference.yaml"),
                          *[arg for o in overrides(store_url) for arg in ("--set", o)],
                          "--set", "target.service_ms=40",  # tonight the model is twice as slow
                          "--out", str(report)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    finished = time.monotonic()
    timings["run_s"] = round(finished - t1, 1)
    assert run.returncode == 1, run.stdout + run.stderr[-4000:]  # a regression fails the run
    summary = json.loads((report / "summary.json").read_text())
    assert summary["regression"]["verdict"] == "regressed", summary["regression"]
    figure = next(f for f in summary["regression"]["figures"] if f["figure"] == "saturation_rps")
    assert figure["verdict"] == "regressed" and 80 <= figure["tonight"] <= 120  # 4 slots x 40 ms = 100 rps
    point = figure["change_point"]  # where the alarm's change began: tonight, against the five seeded nights
    assert point["tonight"] and point["new"] and point["night"] == 6 and point["pvalue"] < 0.005, point
    assert point["mean_before"] == pytest.approx(statistics.geometric_mean(seeded))

    # the trend table (every run, keyed per target) and the trend plot in the summary
    trend = artifact(server, f"{TARGET}-trend")
    assert trend["type"] == "table" and trend["flow_run_id"]
    rows = json.loads(trend["data"]) if isinstance(trend["data"], str) else trend["data"]
    assert [r["run"] for r in rows] == [f"seeded-{i}" for i in range(5)] + [summary["run_id"]]
    assert rows[-1]["status"] == "completed, regressed" and rows[-1]["sat. rps"] == round(figure["tonight"], 1)
    assert rows[-1]["level change"].startswith("sat. rps −")
    assert "![trend](data:image/png;base64," in artifact(server, f"{TARGET}-summary")["data"]
    # and on their own, where the Artifacts page keeps them night after night: the trend plot and the answer
    assert "![trend](data:image/png;base64," in artifact(server, f"{TARGET}-trend-plot")["data"]
    answer = artifact(server, f"{TARGET}-answer")["data"]
    assert answer.startswith(f"### {TARGET}: completed, regressed\n") and "saturation_rps −" in answer, answer

    posted = receiver.wait_for(lambda body: "capacity regressed" in body.get("subject", ""), timeout_s=60)
    timings["regressed_notified_after_run_s"] = round(posted["at"] - finished, 1)
    body = posted["json"]["body"]
    assert posted["json"]["subject"] == f"nightcap: {TARGET} capacity regressed"
    assert f"target {TARGET}" in body and f"run {summary['run_id']}" in body
    assert f"\n- saturation_rps: {figure['baseline_mean']} -> {figure['tonight']} rps (" in body, body
    assert "saturation_rps fell" in body and str(report) in body

    # no run follows: 10 s after the completed event, "did not run" fires for this target
    missing = receiver.wait_for(lambda body: "did not run" in body.get("subject", ""), timeout_s=60)
    timings["missing_fired_after_run_s"] = round(missing["at"] - finished, 1)
    assert missing["json"]["subject"] == f"nightcap: the nightly check did not run for {TARGET}"
    assert f"target {TARGET}:" in missing["json"]["body"]
    completed = [e for e in events(server, "nightcap.run.completed")
                 if e["resource"]["prefect.resource.id"] == f"nightcap.target.{TARGET}"]
    assert [e["payload"]["run_id"] for e in completed] == [summary["run_id"]]
    silent = missing["wall"] - datetime.fromisoformat(completed[0]["occurred"]).timestamp()
    timings["missing_fired_after_completed_event_s"] = round(silent, 1)
    assert silent >= 10, timings  # not before the window is over
    assert [b["json"]["subject"] for b in receiver.received].count(missing["json"]["subject"]) == 1
