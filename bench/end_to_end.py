"""End to end: `nightcap run configs/local.yaml`, as `make run` runs it, timed by stage, with the CPU the
pipeline itself uses.

The run is one process tree. Every 0.25 s each process in it is classed by the child of the run process
it descends from: Locust processes are the generator, MLflow's scoring server (and anything else the
platform starts as a replica) is the target, the Prefect server and the local proxy are the pipeline, as is
the flow process itself (metrics sampling, Prefect client, analysis, report). The pipeline's CPU seconds over
the run's wall time is its share of one core. A process's CPU in its last 0.25 s before it exits is missed;
the pipeline's processes live for the whole run, so that only touches the target and generator columns.

The run gets its own report folder and results store (a temporary SQLite file), so a benchmark run does not
enter the team's nightly history; the regression stage then finds no earlier night and is quick.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.common import Table, fmt
from nightcap.processes.registry import kill_process_tree

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local.yaml"
TIMEOUT_S = 600.0  # `make run` takes ~3-4 min here; a hung run is stopped, not waited on


def _class_of(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if "locust" in text:
        return "generator"
    if "nightcap.platforms.proxy" in text:
        return "proxy"
    if "prefect" in text and "server" in text:
        return "prefect_server"
    return "target"  # replicas: MLflow's scoring server (uvicorn) and its workers


class TreeSampler:
    """CPU seconds per class of process under one root, sampled while the root runs."""

    def __init__(self, root: int, interval_s: float = 0.25):
        self.root = root
        self.interval_s = interval_s
        self.last: dict[tuple[int, float], tuple[str, float]] = {}  # (pid, create_time) -> (class, cpu s)
        self.classes: dict[tuple[int, float], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            tree = [root] + root.children(recursive=True)
        except psutil.Error:
            return
        for p in tree:
            try:
                key = (p.pid, p.create_time())
                if key not in self.classes:
                    self.classes[key] = self._classify(p)
                t = p.cpu_times()
                self.last[key] = (self.classes[key], t.user + t.system)
            except psutil.Error:
                continue

    def _classify(self, p: psutil.Process) -> str:
        if p.pid == self.root:
            return "flow"
        chain = [p]
        with contextlib.suppress(psutil.Error):
            chain += p.parents()
        for q in chain:  # the ancestor that is a direct child of the run process decides
            with contextlib.suppress(psutil.Error):
                if q.ppid() == self.root:
                    return _class_of(q.cmdline())
        return "target"

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for cls, cpu in self.last.values():
            out[cls] = out.get(cls, 0.0) + cpu
        return out


def run() -> Table:
    table = Table("end_to_end", "End to end: `nightcap run configs/local.yaml` (make run)",
                  ["part", "wall_s", "share_of_run_pct", "status", "cpu_s", "cpu_share_of_one_core_pct"])
    work = Path(tempfile.mkdtemp(prefix="nightcap-bench-e2e-"))
    out = work / "report"
    exe = Path(sys.executable).with_name("nightcap")
    argv = [str(exe), "run", str(CONFIG), "--out", str(out), "--set", f"store.url=sqlite:///{work / 'history.db'}"]
    env = {**os.environ, "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(ROOT / ".prefect"))}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    log = (work / "run.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    log.close()
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        table.notes.append(f"the run did not end within {TIMEOUT_S:.0f}s and was stopped")
    finally:
        sampler.stop()
        if proc.poll() is None:
            kill_process_tree(proc.pid, grace_s=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    wall = time.monotonic() - started
    summary_path = out / "summary.json"
    if not summary_path.exists():
        tail = (work / "run.log").read_text(errors="replace").splitlines()[-8:]
        table.notes.append(f"no summary.json (exit {proc.returncode}); last lines: " + " | ".join(tail))
        table.add("total", fmt(wall), 100.0, f"exit {proc.returncode}", None, None)
        return table
    summary = json.loads(summary_path.read_text())
    cpu = sampler.totals()
    pipeline = cpu.get("flow", 0.0) + cpu.get("prefect_server", 0.0) + cpu.get("proxy", 0.0)

    def share(x: float) -> float:
        return round(100.0 * x / wall, 1)

    deploy = float(summary.get("deploy_s") or 0.0)
    table.add("deploy", fmt(deploy), share(deploy), "completed", None, None)
    staged = deploy
    for name, block in (summary.get("stages") or {}).items():
        d = float(block.get("duration_s") or 0.0)
        staged += d
        table.add(f"stage {name}", fmt(d), share(d), block.get("status"), None, None)
    other = max(wall - staged, 0.0)
    table.add("other (Prefect server start, flow setup, report, teardown)", fmt(other), share(other), "", None, None)
    table.add("total (exit %d)" % proc.returncode, fmt(wall), 100.0, summary.get("status", ""),
              fmt(sum(cpu.values())), share(sum(cpu.values())))
    table.add("CPU: flow process (Prefect client, metrics sampling, analysis, report)", None, None, "",
              fmt(cpu.get("flow", 0.0), 2), share(cpu.get("flow", 0.0)))
    table.add("CPU: Prefect server", None, None, "", fmt(cpu.get("prefect_server", 0.0), 2),
              share(cpu.get("prefect_server", 0.0)))
    table.add("CPU: local proxy", None, None, "", fmt(cpu.get("proxy", 0.0), 2), share(cpu.get("proxy", 0.0)))
    table.add("CPU: pipeline = flow + Prefect server + proxy", None, None, "", fmt(pipeline, 2), share(pipeline))
    table.add("CPU: target (replicas)", None, None, "", fmt(cpu.get("target", 0.0), 2), share(cpu.get("target", 0.0)))
    table.add("CPU: generator (Locust)", None, None, "", fmt(cpu.get("generator", 0.0), 2),
              share(cpu.get("generator", 0.0)))
    sat = summary.get("saturation") or {}
    table.notes.append(f"answer: {summary.get('answer', '')}".strip())
    table.notes.append(f"saturation {sat.get('rps')} rps at {sat.get('users')} users; run status "
                       f"{summary.get('status')}; exit {proc.returncode}")
    table.notes.append("pipeline CPU is the flow process + the Prefect server it starts + the local proxy, "
                       "sampled every 0.25 s; shares are of one core over the run's wall time")
    return table


if __name__ == "__main__":
    from bench.run_all import show

    show(run())
