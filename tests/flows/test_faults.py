"""The fault suite: inject each fault into a real (tiny) run on the local platform and check what is left.

Every run here targets 127.0.0.1, holds at most 16 users for 1 s windows and stops by itself. Flows run
in-process against the session's Prefect harness, or as `nightcap run` subprocesses (sharing the same
API) where a signal must reach the process. After each test the `leftovers` fixture checks that no
process, cgroup or run record of the test's runs is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import yaml

from nightcap.steps import read_steps_csv

pytestmark = pytest.mark.slow

NIGHTCAP = str(Path(sys.executable).with_name("nightcap"))


def tiny_config(tmp_path: Path, name: str = "faults", **sections: dict) -> Path:
    cfg = {
        "target": {"name": name, "kind": "reference", "slots": 4, "service_ms": 20, "queue": 64},
        "platform": {"kind": "local", "replicas": 1, "cpu": 1, "memory": "256Mi"},
        "load": {"workers": 1, "warmup_s": 0.5, "window_s": 1, "verify_s": 0},
        "search": {"max_users": 16, "max_windows": 1, "refine_steps": 1, "slo_capacity": False},
        "slo": {"p95_ms": 500},
        "store": {"url": f"sqlite:///{tmp_path / 'history.db'}"},
        "stages": ["single_client"],
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class StepHook:
    """Wraps StepRunner.measure: counts steps, and runs `inject(runner)` part-way into the Nth window."""

    def __init__(self, monkeypatch, at_step: int | None = None, inject=None, into_window_s: float = 0.4):
        from nightcap.load.runner import StepRunner

        self.measured = 0
        self.injected_at: int | None = None
        self.errors: list[BaseException] = []
        original = StepRunner.measure
        hook = self

        def measure(runner, users):
            call = hook.measured + 1
            if inject is not None and call == at_step:
                delay = (runner.config.load.warmup_s if users != runner._users else 0) + into_window_s

                def fire():
                    try:
                        inject(runner)
                        hook.injected_at = call
                    except BaseException as exc:  # surfaced by the test
                        hook.errors.append(exc)

                threading.Timer(delay, fire).start()
            row = original(runner, users)
            hook.measured += 1
            return row

        monkeypatch.setattr(StepRunner, "measure", measure)


def run_flow(config: Path, out: Path):
    from flows.capacity_check import capacity_check

    return capacity_check(config=str(config), overrides=[], out=str(out), return_state=True)


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# --- a replica killed mid-step -------------------------------------------------------------------


def test_replica_killed_mid_step_is_restarted_and_recorded(prefect_api, leftovers, tmp_path, monkeypatch):
    killed: list[int] = []

    def kill_replica(runner):
        pid = runner.platform.replica_pids()[0]
        env = psutil.Process(pid).environ()
        assert env.get("NIGHTCAP_RUN_ID"), "replicas carry their run id"
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    hook = StepHook(monkeypatch, at_step=2, inject=kill_replica)
    config = tiny_config(tmp_path)
    out = tmp_path / "out"
    state = run_flow(config, out)
    leftovers.fault("replica SIGKILL mid-step")
    assert not hook.errors and killed
    rows = read_steps_csv(out / "steps.csv")
    assert sum(r.restarts for r in rows) >= 1, [(r.step, r.restarts, r.events) for r in rows]
    hit = next(r for r in rows if r.restarts)
    assert any("restart" in e for e in hit.events)
    assert hit.oom_kills == 0, "a SIGKILL from outside is not an OOM kill"
    summary = summary_of(out)
    assert summary["status"] == "completed" and not state.is_failed(), summary.get("stages")
    assert leftovers.steps_lost(hook.measured, out) == 0


# --- a Locust worker killed mid-step -------------------------------------------------------------


def test_locust_worker_killed_mid_step_is_invalid_and_remeasured(prefect_api, leftovers, tmp_path, monkeypatch):
    def kill_worker(runner):
        os.kill(runner.generator.worker_procs[0].pid, signal.SIGKILL)

    hook = StepHook(monkeypatch, at_step=2, inject=kill_worker)
    config = tiny_config(tmp_path, search={"max_users": 4, "refine_steps": 0})
    out = tmp_path / "out"
    state = run_flow(config, out)
    leftovers.fault("Locust worker SIGKILL mid-step")
    assert not hook.errors and hook.injected_at == 2
    rows = read_steps_csv(out / "steps.csv")
    bad = [r for r in rows if not r.valid]
    assert len(bad) == 1 and "worker" in bad[0].note, [(r.step, r.users, r.valid, r.note) for r in rows]
    again = [r for r in rows if r.users == bad[0].users and r.valid]
    assert again and again[0].step > bad[0].step, "the step is measured again"
    summary = summary_of(out)
    level = next(lv for lv in summary["single_client"]["levels"] if lv["users"] == bad[0].users)
    assert level["windows"] == 1 and level["rps"] == pytest.approx(again[0].rps), "never averaged with the bad window"
    assert not state.is_failed(), summary["stages"]
    assert leftovers.steps_lost(hook.measured, out) == 0


# --- targets that hang or fail -------------------------------------------------------------------


class HangingServer:
    """Answers the first request (the smoke request after deploy), then accepts connections and never answers
    (bounded: at most 256 sockets held): a target that stalls under load, not one that never worked."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.answered = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if not self.answered:
                self.answered = True
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                except OSError:
                    pass
                conn.close()
                continue
            self.held.append(conn)
            if len(self.held) > 256:
                self.held.pop(0).close()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=2)
        for conn in self.held:
            conn.close()
        self.sock.close()


class FailingServer:
    """Answers the first request (the smoke request after deploy) with 200, every later one with 503."""

    def __init__(self):
        answered = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _fail(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                ok = not answered.is_set()
                answered.set()
                body = b"{}" if ok else b"overloaded"
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _fail

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_hanging_target_times_out_and_steps_end_on_time(prefect_api, leftovers, tmp_path, monkeypatch):
    server = HangingServer()
    try:
        hook = StepHook(monkeypatch)
        config = tiny_config(tmp_path, target={"kind": "url", "url": f"http://127.0.0.1:{server.port}",
                                               "request_timeout_s": 1})
        out = tmp_path / "out"
        started = time.monotonic()
        run_flow(config, out)
        leftovers.fault("target hangs")
    finally:
        server.close()
    rows = read_steps_csv(out / "steps.csv")
    assert rows
    for row in rows:
        assert row.duration_s <= 0.5 + 1 + 3, f"step {row.step} took {row.duration_s}s"
    assert all(r.failures > 0 and r.error_rate == 1.0 for r in rows if r.valid), [(r.failures, r.note) for r in rows]
    assert any("timeout" in r.note.lower() or "timed out" in r.note.lower() for r in rows), [r.note for r in rows]
    sat = summary_of(out)["single_client"]["saturation"]
    assert sat["found"] is False and sat["rps"] is None
    assert time.monotonic() - started < 60
    assert leftovers.steps_lost(hook.measured, out) == 0


def test_target_answering_5xx_has_errors_and_a_clear_stop_reason(prefect_api, leftovers, tmp_path, monkeypatch):
    server = FailingServer()
    try:
        hook = StepHook(monkeypatch)
        config = tiny_config(tmp_path, target={"kind": "url", "url": f"http://127.0.0.1:{server.port}"})
        out = tmp_path / "out"
        run_flow(config, out)
        leftovers.fault("target answers 503")
    finally:
        server.close()
    rows = read_steps_csv(out / "steps.csv")
    assert rows and all(r.error_rate == 1.0 and r.failures > 0 for r in rows)
    assert any("503" in r.note for r in rows), [r.note for r in rows]
    summary = summary_of(out)
    sat = summary["single_client"]["saturation"]
    assert sat["found"] is False and sat["rps"] is None
    assert "error rate" in sat["stop_reason"], sat
    assert leftovers.steps_lost(hook.measured, out) == 0


# --- signals to `nightcap run` -------------------------------------------------------------------


def start_run(config: Path, out: Path, trace, api: str, cwd: Path) -> subprocess.Popen:
    env = trace.env(PREFECT_API_URL=api, NIGHTCAP_EXTERNAL_API="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([NIGHTCAP, "run", str(config), "--out", str(out)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_steps(out: Path, proc: subprocess.Popen, count: int = 1, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (out / "steps.csv").exists() and len(read_steps_csv(out / "steps.csv")) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}):\n{proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError("no step measured in time")


def stop(proc: subprocess.Popen) -> None:
    """If a test fails before its own signal, let the run tear down (SIGTERM) before killing it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measured_in_log(text: str) -> int:
    """Steps the run logged as measured (one log line per measured window)."""
    return sum(1 for line in text.splitlines() if "users x " in line and " rps " in line and "Task run" in line)


# SIGINT once is SIGINT-twice's first signal: the two cases below cover both signals and the repeat
@pytest.mark.parametrize("signum,twice", [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["SIGTERM", "SIGINT-twice"])
def test_signal_mid_run_stops_everything_and_keeps_steps(signum, twice, prefect_api, leftovers, tmp_path):
    config = tiny_config(tmp_path, search={"max_users": 64}, load={"max_users": 64})
    out = tmp_path / "out"
    proc = start_run(config, out, leftovers, prefect_api, tmp_path)
    try:
        wait_for_steps(out, proc)
        assert leftovers.processes(), "the run has started replicas and generators"
        if not twice:
            # a second run against the same target while this one runs is refused, and starts nothing
            second = subprocess.run([NIGHTCAP, "run", str(config), "--out", str(tmp_path / "out2")], cwd=tmp_path,
                                    env=leftovers.env(PREFECT_API_URL=prefect_api), capture_output=True, text=True,
                                    timeout=120)
            assert second.returncode == 2, second.stderr
            said = " ".join((second.stdout + second.stderr).split())
            assert "refused, nothing was started: another nightcap run against target 'faults' is in progress" in said
            assert not (tmp_path / "out2" / "steps.csv").exists()
            leftovers.fault("a second run against the same target")
        time.sleep(0.7)  # mid-step
        os.kill(proc.pid, signum)
        leftovers.fault(f"{signal.Signals(signum).name} to nightcap run")
        if twice:  # an impatient operator: the second Ctrl-C lands while the run tears down
            time.sleep(0.3)
            os.kill(proc.pid, signum)
            leftovers.fault("a second SIGINT during teardown")
        text, _ = proc.communicate(timeout=90)
    finally:
        stop(proc)
    assert proc.returncode == 130, text
    assert "interrupted" in text
    summary = summary_of(out)
    assert summary["status"] == "cancelled"
    with sqlite3.connect(tmp_path / "history.db") as con:
        assert [r[0] for r in con.execute("select status from runs")] == ["cancelled"]
    assert leftovers.steps_lost(measured_in_log(text), out) == 0
    assert measured_in_log(text) >= 1


def test_sigkill_then_cleanup_removes_exactly_what_the_run_left(prefect_api, leftovers, tmp_path):
    config = tiny_config(tmp_path, search={"max_users": 64}, load={"max_users": 64})
    out = tmp_path / "out"
    # an unrelated process that looks like a replica, started by the test itself
    unrelated = subprocess.Popen([sys.executable, "-m", "nightcap.targets.reference_server", "--port", "0", "--slots", "1",
                                  "--service-ms", "1"], env=leftovers.env(NIGHTCAP_RUN_ID="not-a-nightcap-run"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    leftovers.spared.add(unrelated.pid)
    proc = start_run(config, out, leftovers, prefect_api, tmp_path)
    try:
        wait_for_steps(out, proc)
        time.sleep(0.7)
        os.kill(proc.pid, signal.SIGKILL)
        leftovers.fault("SIGKILL to nightcap run")
        text, _ = proc.communicate(timeout=30)
        left = leftovers.processes()
        assert left, "SIGKILL leaves the run's processes behind (until cleanup)"
        assert leftovers.cgroups(), "and its cgroups"
        records = list((tmp_path / ".nightcap" / "runs").glob("*.json"))
        assert len(records) == 1
        registered = {p["pid"] for p in json.loads(records[0].read_text())["processes"]}
        assert {p.pid for p in left} <= registered | {c.pid for p in left for c in p.children(recursive=True)}
        done = subprocess.run([NIGHTCAP, "cleanup", "--stale-after-s", "0"], cwd=tmp_path, env=leftovers.env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "stopped" in done.stdout and "removed cgroup" in done.stdout
        assert unrelated.poll() is None, "cleanup must not touch a process that is not the dead run's"
        assert measured_in_log(text) >= 1, "the killed run had measured a step before SIGKILL"
        assert leftovers.steps_lost(measured_in_log(text), out) == 0
    finally:
        for p in (proc, unrelated):
            if p.poll() is None:
                p.kill()
                p.wait()
