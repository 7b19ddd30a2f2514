"""An API key given by environment variable reaches the load generators and nothing else: not a file of
the report, not the history DB, not a log, not a Prefect log or artifact, not a command line."""

from __future__ import annotations

import os
import secrets

import psutil
import pytest

from test_faults import StepHook, run_flow, tiny_config

pytestmark = pytest.mark.slow


def test_api_key_appears_in_no_output(prefect_api, leftovers, tmp_path, monkeypatch, capfd):
    key = "nck-" + secrets.token_urlsafe(24)
    monkeypatch.setenv("NIGHTCAP_TEST_KEY", key)
    seen: dict[str, list] = {"cmdlines": [], "generators_with_key": [], "masters_with_key": [], "replicas_with_key": []}

    def look(runner):
        for proc in psutil.process_iter():
            try:
                cmd = " ".join(proc.cmdline())
                env = proc.environ()
            except psutil.Error:
                continue
            if key in cmd:
                seen["cmdlines"].append(cmd)
            if env.get("NIGHTCAP_TEST_TOKEN") != leftovers.token or proc.pid == os.getpid():
                continue
            has_key = key in env.values()
            if "locust" in cmd and "--worker" in cmd and has_key:
                seen["generators_with_key"].append(proc.pid)
            if "locust" in cmd and "--master" in cmd.split() and has_key:  # not --master-host (a worker's)
                seen["masters_with_key"].append(proc.pid)
            if "reference_server" in cmd and has_key:
                seen["replicas_with_key"].append(proc.pid)

    hook = StepHook(monkeypatch, at_step=1, inject=look)
    config = tiny_config(tmp_path, target={"api_key_env": "NIGHTCAP_TEST_KEY"}, search={"max_users": 4})
    out = tmp_path / "out"
    state = run_flow(config, out)
    assert not state.is_failed() and not hook.errors
    assert seen["generators_with_key"], "the key must reach the load generators (their environment only)"
    assert not seen["cmdlines"], seen["cmdlines"]
    assert not seen["masters_with_key"], "the Locust master sends no request: it must not hold the key"
    assert not seen["replicas_with_key"], "the measured server has no business with the client's key"

    captured = capfd.readouterr()
    found = [name for name, text in (("stdout", captured.out), ("stderr", captured.err)) if key in text]
    needle = key.encode()
    for path in list(out.rglob("*")) + list(tmp_path.glob("history.db*")) + list(tmp_path.rglob(".nightcap/**/*")):
        if path.is_file() and needle in path.read_bytes():
            found.append(str(path))
    found += prefect_leaks(key)
    assert not found, f"the key leaked into: {found}"
    assert any(p.name == "steps.csv" for p in out.iterdir()) and (tmp_path / "history.db").exists()
    assert leftovers.steps_lost(hook.measured, out) == 0


def prefect_leaks(key: str) -> list[str]:
    """Every log, artifact and flow-run parameter the session's Prefect API holds, searched for the key."""
    from prefect.client.orchestration import get_client

    leaks: list[str] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            logs = client.read_logs(limit=200, offset=offset)
            leaks += [f"prefect log {log.id}" for log in logs if key in log.message]
            if len(logs) < 200:
                break
            offset += 200
        artifacts = client.read_artifacts(limit=200)
        leaks += [f"prefect artifact {a.key}" for a in artifacts
                  if key in str(a.data) or key in str(a.description or "")]
        runs = client.read_flow_runs(limit=200)
        leaks += [f"flow run {r.name} parameters" for r in runs if key in str(r.parameters)]
    assert logs is not None and artifacts, "the run published artifacts to search"
    return leaks
