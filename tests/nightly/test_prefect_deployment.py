"""End to end through Prefect as people use it: a real `prefect server start`, `prefect deploy` of
deployments/prefect.yaml, a process worker, `prefect deployment run ... --param ...`, and the run's state
and artifacts read back through the Prefect API.

Every process here is started in its own session and stopped by pid (its whole tree) in a finally.
Costs ~45 s on 2 shared cores: server ~12 s (once per session, tests/conftest.py), deploy ~3 s, the run ~25 s.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from prefect_cli import PREFECT, REPO, cli, prefect_env, run_artifacts, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

POOL = "nightcap-local"


def short_overrides(tmp: Path) -> list[str]:
    """A bounded run on the reference target (200 rps per replica): 1 s windows, at most 16 users."""
    return [
        "load.window_s=1", "load.verify_s=0",
        "load.warmup_s=0.5",
        "search.max_users=16",
        "search.max_windows=1",
        f"store.url=sqlite:///{tmp / 'h.db'}",
        'stages=["single_client"]',
    ]


@pytest.fixture
def server(prefect_server_process) -> dict[str, str]:
    """The session's `prefect server start` (tests/conftest.py), shared with tests/nightly/test_automations.py."""
    return prefect_server_process


def api_client(server: dict[str, str]):
    """A sync Prefect client on this test's server, whatever server the session's settings name."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server["api_url"]}):
        return get_client(sync_client=True)


def test_deploy_then_run_on_demand_through_a_process_worker(server, tmp_path):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    t0 = time.monotonic()
    cli(server, "work-pool", "create", POOL, "--type", "process")
    out = cli(server, "deploy", "--prefect-file", "deployments/prefect.yaml", "--all", "--no-prompt")
    assert "capacity-check/nightly" in out and "capacity-check/on-demand" in out, out
    timings = {"deploy_s": round(time.monotonic() - t0, 1)}

    with api_client(server) as client:
        nightly = client.read_deployment_by_name("capacity-check/nightly")
        (schedule,) = nightly.schedules
        assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
        assert nightly.work_pool_name == POOL and nightly.entrypoint == "flows/capacity_check.py:capacity_check"
        assert nightly.pull_steps and "prefect.deployments.steps.set_working_directory" in nightly.pull_steps[0]
        # the run-once worker takes any run due now; keep a nightly that falls due mid-test out of its way
        client.pause_deployment(nightly.id)
        on_demand = client.read_deployment_by_name("capacity-check/on-demand")
        assert not on_demand.schedules

    report = tmp_path / "report"
    out = cli(server, "deployment", "run", "capacity-check/on-demand",
              "--param", "config=configs/reference.yaml",
              "--param", "overrides=" + json.dumps(short_overrides(tmp_path)),
              "--param", f"out={report}")
    flow_run_id = next(line.split("UUID:")[1].strip() for line in out.splitlines() if "UUID:" in line)

    worker_log = tmp_path / "worker.log"
    env = prefect_env(Path(server["home"]), server["api_url"])
    env["NIGHTCAP_HOME"] = str(REPO)  # the deployments' pull step changes into it
    nights = {datetime.now().astimezone().date().isoformat()}  # the run starts tonight (or after midnight)
    t1 = time.monotonic()
    with worker_log.open("wb") as log:
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL, "--run-once"], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path,
                                  start_new_session=True)
    try:
        with api_client(server) as client:
            deadline = time.monotonic() + 150
            while True:
                flow_run = client.read_flow_run(flow_run_id)
                if flow_run.state is not None and flow_run.state.is_final():
                    break
                assert time.monotonic() < deadline, (f"flow run still {flow_run.state_name} after 150 s:\n"
                                                     f"{worker_log.read_text()[-4000:]}")
                time.sleep(1)
            timings["run_s"] = round(time.monotonic() - t1, 1)
            assert flow_run.state.is_completed(), (f"{flow_run.state.type}: {flow_run.state.message}\n"
                                                   f"{worker_log.read_text()[-4000:]}")
            assert flow_run.parameters["overrides"] == short_overrides(tmp_path)
            # the runs list names the target and the night, not the random name the deployment run was created with
            nights.add(datetime.now().astimezone().date().isoformat())
            assert flow_run.name in {f"reference {night}" for night in nights}, flow_run.name

            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
        worker.wait(timeout=30)  # --run-once: the worker exits once the run is over
    finally:
        stop(worker)

    by_key = {a.key: a for a in artifacts if a.key}
    assert {"reference-summary", "reference-steps", "reference-report-folder",
            "reference-progress"} <= set(by_key), sorted(by_key)
    assert all(key.startswith("reference-") for key in by_key)
    summary = by_key["reference-summary"]
    assert summary.type == "markdown" and "saturates at" in summary.data and "rps" in summary.data
    steps = by_key["reference-steps"]
    rows = json.loads(steps.data) if isinstance(steps.data, str) else steps.data
    assert steps.type == "table" and rows and {r["stage"] for r in rows} == {"single_client"}
    assert report.resolve().as_uri() in by_key["reference-report-folder"].data  # a link artifact renders as markdown
    assert by_key["reference-progress"].type == "progress" and float(by_key["reference-progress"].data) == 100.0
    # the run's first artifact is the answer, under its own key (created as the run opened, written as it ended)
    listed = run_artifacts(server["api_url"], flow_run_id)
    assert [a["key"] for a in listed][:2] == ["reference-answer", "reference-progress"], [a["key"] for a in listed]

    written = json.loads((report / "summary.json").read_text())
    assert written["stages"]["single_client"]["status"] == "completed"
    (done,) = run_events(server, "nightcap.run.completed", written["run_id"])  # what "did not run" alerts wait for
    assert done["resource"]["prefect.resource.id"] == "nightcap.target.reference"
    assert done["payload"]["figures"]["saturation_rps"] == written["saturation"]["rps"]
    assert 150 <= written["saturation"]["rps"] <= 240  # 4 slots x 20 ms = 200 rps on one replica
    answer = listed[0]["data"]
    per_pod = written["capacity"]["per_pod"]
    assert answer.startswith("### reference: completed\n"), answer
    assert f"**One pod (1.00 CPU, concurrency 4): {per_pod['rps']:,.1f} rps**" in answer, answer
    assert "**not verified** at that rate" in answer and "not checked tonight" in answer, answer  # verify_s 0
    print(f"timings: {timings}")


def run_events(server: dict[str, str], name: str, run_id: str, timeout_s: float = 15) -> list[dict]:
    """The events of that name about one nightcap run, once the server has them (sent in the background)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.post(f"{server['api_url']}/events/filter",
                              json={"filter": {"event": {"name": [name]}}, "limit": 50}, timeout=10)
        response.raise_for_status()
        found = [e for e in response.json()["events"] if (e.get("payload") or {}).get("run_id") == run_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _run_processes(run_id: str) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("NIGHTCAP_RUN_ID") == run_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


def test_cancelling_from_prefect_stops_everything_and_keeps_the_steps(server, tmp_path):
    """Cancel in the UI/API -> the worker sends SIGTERM -> teardown runs; steps stay in steps.csv and the history."""
    import sqlite3

    from prefect.states import Cancelling

    subprocess.run([PREFECT, "work-pool", "create", POOL, "--type", "process"], cwd=REPO, capture_output=True,
                   env=prefect_env(Path(server["home"]), server["api_url"]), timeout=60)  # may exist already
    cli(server, "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "on-demand", "--no-prompt")
    report = tmp_path / "report"
    long_run = [o for o in short_overrides(tmp_path) if not o.startswith(("search.max_users", "stages"))]
    long_run += ["search.max_users=64", 'stages=["single_client", "multi_client"]']
    out = cli(server, "deployment", "run", "capacity-check/on-demand", "--param", "config=configs/reference.yaml",
              "--param", "overrides=" + json.dumps(long_run), "--param", f"out={report}")
    flow_run_id = next(line.split("UUID:")[1].strip() for line in out.splitlines() if "UUID:" in line)
    env = prefect_env(Path(server["home"]), server["api_url"])
    env["NIGHTCAP_HOME"] = str(REPO)
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL], stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, cwd=tmp_path, start_new_session=True)
    try:
        steps_csv = report / "steps.csv"
        deadline = time.monotonic() + 120
        while not (steps_csv.exists() and len(steps_csv.read_text().splitlines()) >= 3):  # header + 2 steps
            assert time.monotonic() < deadline, f"no steps after 120 s:\n{worker_log.read_text()[-4000:]}"
            time.sleep(0.5)
        with api_client(server) as client:
            client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
            deadline = time.monotonic() + 90
            while True:
                flow_run = client.read_flow_run(flow_run_id)
                if flow_run.state is not None and flow_run.state.is_final():
                    break
                assert time.monotonic() < deadline, f"still {flow_run.state_name}:\n{worker_log.read_text()[-4000:]}"
                time.sleep(1)
        assert flow_run.state.is_cancelled(), flow_run.state
        summary = json.loads((report / "summary.json").read_text())
        run_id = summary["run_id"]
        time.sleep(1)
        assert _run_processes(run_id) == [], "processes of the cancelled run are still alive"
        from nightcap.platforms.cgroups import detect, leftover_groups

        assert not [g for g in leftover_groups(detect()) if run_id in g.name]
        kept = steps_csv.read_text().splitlines()[1:]
        assert len(kept) >= 2
        with sqlite3.connect(tmp_path / "h.db") as db:
            status, = db.execute("select status from runs where run_id = ?", (run_id,)).fetchone()
            stored, = db.execute("select count(*) from steps where run_id = ?", (run_id,)).fetchone()
        assert status == "cancelled" and stored == len(kept)
        (failed,) = run_events(server, "nightcap.run.failed", run_id)
        assert failed["payload"]["status"] == "cancelled"
    finally:
        stop(worker)
