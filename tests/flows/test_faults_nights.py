"""The faults a long-lived installation meets: the Prefect server dies, the history is locked or gone, the disk
fills while the report is written, the Locust master dies in an open-loop window, the MLflow tracking server
is unreachable. Each test injects the fault into a real (tiny) run on the local platform and asserts the clear
reason and the documented exit code / state, the steps kept in steps.csv and the history, nothing left
running (the `leftovers` fixture), and that the next run may start (the target's lock is free, no run is left
'running'). The fault suite's closing line counts them (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from nightcap.steps import read_steps_csv
from nightcap.run.lock import RunLock
from test_faults import run_flow, start_run, stop, summary_of, tiny_config, wait_for_steps
from test_kubernetes_flow import cluster, reference_server  # noqa: F401 - fixtures of the kmock fault

pytestmark = pytest.mark.slow


class Recorded:
    """Counts the steps a run measured (every row goes through RunContext.record_step) and fires `inject(ctx)`
    once, right after the `at`-th step."""

    def __init__(self, monkeypatch, at: int | None = None, inject=None):
        from nightcap.run.context import RunContext

        self.count, self.errors = 0, []
        original, hook = RunContext.record_step, self

        def record_step(ctx, row):
            original(ctx, row)
            hook.count += 1
            if inject is not None and hook.count == at:
                try:
                    inject(ctx)
                except BaseException as exc:  # surfaced by the test
                    hook.errors.append(exc)

        monkeypatch.setattr(RunContext, "record_step", record_step)


def next_run_may_start(root: Path, target: str = "faults") -> None:
    RunLock(target, root / ".nightcap" / "locks").check()  # the lock is free
    assert not list((root / ".nightcap" / "runs").glob("*.json")), "no run record left for cleanup"


def history_rows(db: Path) -> tuple[list[str], int]:
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("select status from runs")], con.execute("select count(*) from steps").fetchone()[0]


# --- the Prefect server dies mid-stage ----------------------------------------------------------------------


class ApiProxy:
    """The Prefect API behind a TCP relay on 127.0.0.1 that the test can kill: to the run, exactly a server that
    died (connections reset, then refused), without starting a second server (~20 s) for it."""

    def __init__(self, upstream: str):
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}{parts.path}"
        self.sockets: list[socket.socket] = []
        self.dead = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.dead.is_set():
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                return
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def kill(self) -> None:
        self.dead.set()
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_prefect_server_killed_mid_stage_ends_the_run_within_60_s(prefect_api, leftovers, tmp_path):
    """The run's Prefect API dies after three steps (the server killed): the run stops measuring, tears down,
    writes its report folder and exits 1 within 60 s, every step kept. Found by hand before: such a run was still
    alive 8 minutes later, flushing logs to a server that was gone."""
    config = tiny_config(tmp_path, search={"max_users": 64}, load={"max_users": 64},
                         stages=["single_client", "multi_client"])
    out = tmp_path / "out"
    proxy = ApiProxy(prefect_api)
    proc = start_run(config, out, leftovers, proxy.url, tmp_path)
    try:
        wait_for_steps(out, proc, count=3, timeout_s=150)
        proxy.kill()
        killed = time.monotonic()
        leftovers.fault("Prefect server gone mid-stage")
        text, _ = proc.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        proxy.kill()
        stop(proc)
    assert proc.returncode == 1, text[-3000:]
    assert took < 60, f"the run took {took:.0f} s to exit after its Prefect server died:\n{text[-3000:]}"
    said = " ".join(text.split())
    assert "stopped answering for 10 s: the run was stopped" in said, text[-3000:]
    summary = summary_of(out)
    assert summary["status"] == "failed" and "the Prefect API" in summary["failure"], summary.get("failure")
    rows = read_steps_csv(out / "steps.csv")
    assert len(rows) >= 3
    assert history_rows(tmp_path / "history.db") == (["failed"], len(rows))
    next_run_may_start(tmp_path)
    print(f"exited {took:.1f} s after its Prefect API died")


# --- the history is locked, then gone --------------------------------------------------------------------------


def test_history_locked_then_gone_mid_run_fails_the_night_loudly(prefect_api, leftovers, tmp_path, monkeypatch):
    """A writer holds the SQLite history locked for 2 s (the step being written waits), then its
    folder disappears (a lost mount): the night ends failed with the reason; steps.csv has every step."""
    folder = tmp_path / "mount"
    db = folder / "history.db"
    config = tiny_config(tmp_path, store={"url": f"sqlite:///{db}", "retry_s": 2}, search={"max_users": 8})

    def lock(_ctx):
        holder = sqlite3.connect(db, timeout=1, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        threading.Timer(2.0, lambda: (holder.rollback(), holder.close())).start()
        leftovers.fault("history locked by another writer")

    def gone(_ctx):
        folder.rename(tmp_path / "mount-lost")
        leftovers.fault("history folder gone")

    Recorded(monkeypatch, at=1, inject=lock)
    hook = Recorded(monkeypatch, at=3, inject=gone)
    out = tmp_path / "out"
    state = run_flow(config, out)
    assert not hook.errors and state.is_failed()
    summary = summary_of(out)
    assert summary["status"] == "failed", summary["status"]
    assert summary["failure"].startswith("the measured steps could not be written to the history: store.url sqlite:///")
    assert "unable to open database file" in summary["failure"] and "steps.csv" in summary["failure"]
    assert len(read_steps_csv(out / "steps.csv")) == hook.count >= 3
    # what reached the file before it went is intact (the run stays 'running' there: marked abandoned later)
    statuses, stored = history_rows(tmp_path / "mount-lost" / "history.db")
    assert statuses == ["running"] and 1 <= stored <= hook.count
    next_run_may_start(tmp_path)


# --- the disk fills while the report is written ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs for the report folder (root only; skipped elsewhere, saying why)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): the disk-full fault needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_disk_full_while_the_report_is_written(prefect_api, leftovers, tmp_path, monkeypatch, small_disk):
    def fill(ctx):
        with (small_disk / "filler").open("wb", buffering=0) as handle:  # every byte left on the disk
            try:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
            except OSError:
                pass
        leftovers.fault("disk full before the report")

    config = tiny_config(tmp_path, search={"max_users": 4, "refine_steps": 0})
    hook = Recorded(monkeypatch)
    out = small_disk / "out"
    from flows import capacity_check as parent

    real_finish = parent.finish

    def finish(ctx, status):  # the fault lands after the last step, as the report is about to be written
        fill(ctx)
        return real_finish(ctx, status)

    monkeypatch.setattr(parent, "finish", finish)
    state = run_flow(config, out)
    assert state.is_failed()
    assert hook.count >= 2 and len(read_steps_csv(out / "steps.csv")) == hook.count
    statuses, stored = history_rows(tmp_path / "history.db")
    assert statuses == ["failed"] and stored == hook.count
    with sqlite3.connect(tmp_path / "history.db") as con:
        (note,) = con.execute("select note from runs").fetchone()
    assert "could not be written (No space left on device)" in note and str(out) in note
    next_run_may_start(tmp_path)


# --- the Locust master dies in an open-loop window -----------------------------------------------------------------


def test_locust_master_killed_during_an_open_loop_window(prefect_api, leftovers, tmp_path, monkeypatch):
    from nightcap.load.runner import StepRunner

    original, killed = StepRunner.measure_rate, []

    def measure_rate(runner, rate_rps, window_s=None):
        if not killed:
            pid = runner.generator.master.pid
            threading.Timer(runner.config.load.warmup_s + 0.4, lambda: os.kill(pid, signal.SIGKILL)).start()
            killed.append(pid)
            leftovers.fault("Locust master SIGKILL in an open-loop window")
        return original(runner, rate_rps, window_s)

    monkeypatch.setattr(StepRunner, "measure_rate", measure_rate)
    hook = Recorded(monkeypatch)
    config = tiny_config(tmp_path, search={"max_users": 8, "refine_steps": 0}, load={"verify_s": 1})
    out = tmp_path / "out"
    state = run_flow(config, out)
    assert killed and state.is_failed()
    summary = summary_of(out)
    stage = summary["stages"]["single_client"]
    assert stage["status"] == "failed" and "the Locust master stopped answering" in stage["error"], stage
    assert hook.count >= 1 and leftovers.steps_lost(hook.count, out) == 0
    assert history_rows(tmp_path / "history.db")[0] == ["failed"]
    next_run_may_start(tmp_path)


# --- the MLflow tracking server is unreachable when a models:/ URI is resolved ---------------------------------------


def test_unreachable_tracking_server_stops_the_night_before_anything_starts(leftovers, tmp_path):
    from typer.testing import CliRunner

    from nightcap.cli import app
    from nightcap.processes.ports import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    config = tiny_config(tmp_path, target={"kind": "mlflow", "model_uri": "models:/wine/1", "tracking_uri": dead})
    started = time.monotonic()
    done = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out")])
    leftovers.fault("MLflow tracking server unreachable")
    said = " ".join(done.output.split())
    assert done.exit_code == 2, said
    assert f"tried: tracking store {dead} (target.tracking_uri)" in said and "Traceback" not in said
    assert not (tmp_path / "out").exists() and not (tmp_path / "history.db").exists()
    assert time.monotonic() - started < 60
    next_run_may_start(tmp_path)


# --- SIGTERM during the autoscaling stage (Kubernetes, kmock) -------------------------------------------------------


def test_sigterm_during_autoscale_restores_the_cluster(prefect_api, cluster, reference_server, leftovers, tmp_path,
                                                       monkeypatch):
    """A cancelled flow run (the worker's SIGTERM) while the HPA scales the model out: the run unwinds, its HPA,
    Deployment and Service are deleted, every step is kept, and the run is recorded cancelled."""
    import yaml

    from flows.capacity_check import capacity_check
    from nightcap.kube import platform as kube_mod
    from test_kubernetes_flow import _config

    monkeypatch.setattr("nightcap.kube.client.api_client_for", lambda platform: cluster.api)
    monkeypatch.setattr(kube_mod.KubernetesPlatform, "poll_s", 0.2)
    monkeypatch.setattr(kube_mod.KubernetesPlatform, "_open_pod_socket",
                        lambda self, pod, port: socket.create_connection(("127.0.0.1", reference_server), timeout=10))
    from flows.autoscale import Timeline

    original, signalled = Timeline._sample, []

    def sample(timeline, phase, window, raw):
        if not signalled:  # the first sample of the first phase: the HPA exists, the load is on
            signalled.append(True)
            threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
            leftovers.fault("SIGTERM during the autoscale stage")
        return original(timeline, phase, window, raw)

    monkeypatch.setattr(Timeline, "_sample", sample)
    hook = Recorded(monkeypatch)
    path = _config(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["autoscale"]["phases"][0]["duration_s"] = 5
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt):
        capacity_check(config=str(path), out=str(out))
    assert signalled
    summary = summary_of(out)
    assert summary["status"] == "cancelled" and summary["stages"]["autoscale"]["status"] == "cancelled"
    assert any(r.data.get("kind") == "HorizontalPodAutoscaler" for r in cluster.requests("POST")
               if r.params.get("dryRun") != "All"), "the fault landed after the HPA was created"
    for kind in ("horizontalpodautoscalers", "deployments", "services"):
        assert cluster.run(lambda: cluster.live(kind)) == {}, kind
    assert hook.count >= 1 and leftovers.steps_lost(hook.count, out) == 0
    assert history_rows(tmp_path / "history.db")[0] == ["cancelled"]
    next_run_may_start(tmp_path, "k8s-e2e")


# --- the webhook receiver is down when the alarm fires ---------------------------------------------------------------


EMIT_REGRESSED = """
import sys
from tasks.events import emit_run_events
from prefect.events.worker import EventsWorker
row = {"figure": "saturation_rps", "verdict": "regressed", "unit": "rps", "baseline_median": 200.0, "tonight": 100.0,
       "change_pct": -50.0, "message": "saturation_rps fell 50%"}
summary = {"run_id": sys.argv[1], "target": {"name": "webhook-down"}, "stages": {"regression": {"status": "completed"}},
           "regression": {"verdict": "regressed", "figures": [row], "baseline_run_ids": ["a", "b"]}}
emit_run_events(summary, "completed", {"saturation_rps": 100.0}, "/tmp/report")
EventsWorker.drain_all(timeout=20)
print("emitted", flush=True)
"""


def test_webhook_down_when_the_alarm_fires(prefect_server_process, leftovers, tmp_path):
    """The run's part ends when its events reach Prefect: the night's verdict is in its history and summary.json
    whatever the receiver does. With the receiver down, Prefect 3.8 retries the notification 3 times, then
    moves it to its dead-letter folder (PREFECT_HOME/dlq on the server), where the lost alarm can be found;
    no event says so (a refused connection is not the action's "failed")."""
    import sys

    from prefect_cli import REPO, cli, prefect_env
    from test_automations import delete_automations, events

    server = prefect_server_process
    env = prefect_env(Path(server["home"]), server["api_url"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"  # nothing listens once it is closed
    automations = tmp_path / "automations.yaml"
    made = subprocess.run([sys.executable, "deployments/automations.py", "--webhook-url", dead, "--out",
                           str(automations)], cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert made.returncode == 0, made.stdout + made.stderr
    try:
        cli(server, "automation", "create", "--from-file", str(automations))
        started = time.monotonic()
        emitted = subprocess.run([sys.executable, "-c", EMIT_REGRESSED, "webhook-down-1"], cwd=REPO,
                                 env=leftovers.env(**env), capture_output=True, text=True, timeout=60)
        leftovers.fault("webhook receiver down when the alarm fires")
        assert emitted.returncode == 0 and "emitted" in emitted.stdout, emitted.stderr[-2000:]
        assert time.monotonic() - started < 30, "sending the events never waits on the receiver"
        deadline = time.monotonic() + 30
        while not [e for e in events(server, "nightcap.capacity.regressed") if e["payload"]["run_id"] == "webhook-down-1"]:
            assert time.monotonic() < deadline, "the alarm's event never reached Prefect"
            time.sleep(0.5)
        dlq, deadline = Path(server["home"]) / "dlq", time.monotonic() + 60
        while not (lost := [p for p in dlq.glob("*") if b"webhook-down-1" in p.read_bytes()] if dlq.exists() else []):
            assert time.monotonic() < deadline, "the failed notification is neither sent nor dead-lettered"
            time.sleep(1)
        assert b"capacity regressed" in lost[0].read_bytes()
    finally:
        delete_automations(server)
