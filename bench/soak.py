"""Soak: twenty nights in a row through one long-lived Prefect process worker, as an installation runs them.

A real `prefect server start` (private PREFECT_HOME), `prefect deploy` of deployments/prefect.yaml's on-demand
deployment, one `prefect worker start` kept for every night, and N runs of it on the reference target (one
short single_client stage each, `retention` set to keep 5 nights). After each night it prints what would
show a leak: the worker's processes and threads (its whole tree), their open file descriptors, nightcap
cgroups, listening TCP sockets of everything the soak started, entries in the soak's TMPDIR, the history
and Prefect database sizes, history step rows, report folders kept, and the night's wall time.

    flock /tmp/nightcap-load.lock .venv/bin/python -m bench.soak --nights 20 --hold-nights 8

`--hold-nights K` takes the shared load lock itself (`--lock`) for K nights at a time and lets it go between
holds, so each hold stays under ~10 minutes while the worker lives on (run it *without* an outer flock
then). Everything goes to 127.0.0.1; every process is stopped by pid in `finally`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil

from bench.common import RESULTS, Table, machine_line, wait_http
from nightcap.processes.ports import free_port
from nightcap.processes.registry import kill_process_tree

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "nightcap-soak"
TOKEN_VAR = "NIGHTCAP_SOAK_TOKEN"
KEEP = 5  # retention: nights of report folders, history steps and artifacts


def overrides(work: Path) -> list[str]:
    """One short stage on the reference target (200 rps per replica): 1 s windows, at most 16 users."""
    return ["load.window_s=1", "load.verify_s=0", "load.warmup_s=0.5", "load.workers=1", "search.max_users=16",
            "search.max_windows=1", 'stages=["single_client"]', f"store.url=sqlite:///{work / 'history.db'}",
            f"retention.reports_dir={work / 'reports'}", f"retention.reports.nights={KEEP}",
            f"retention.steps.nights={KEEP}", "retention.steps.days=null", f"retention.artifacts.nights={KEEP}"]


def prefect_env(home: Path, api: str | None, token: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", NIGHTCAP_HOME=str(REPO), TMPDIR=str(tmp), **{TOKEN_VAR: token})
    if api:
        env["PREFECT_API_URL"] = api
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextmanager
def started(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_process_tree(proc.pid, grace_s=10)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def lock_hold(path: str | None) -> Iterator[None]:
    """Hold the shared load lock (if asked to) for one batch of nights."""
    if not path:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tagged(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(TOKEN_VAR) == token:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def sample(worker: subprocess.Popen, token: str, work: Path, home: Path, tmp: Path) -> dict[str, Any]:
    """What a leak would grow: the worker's tree, descriptors, cgroups, listeners, temp entries, databases."""
    from nightcap.platforms.cgroups import detect, leftover_groups

    tree = [psutil.Process(worker.pid)]
    tree += tree[0].children(recursive=True)
    threads = fds = 0
    for proc in tree:
        try:
            threads += proc.num_threads()
            fds += proc.num_fds()
        except psutil.Error:
            pass
    ours = {p.pid for p in tagged(token)}
    listening = 0
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in ours:
            listening += 1
    with sqlite3.connect(work / "history.db") as db:
        steps = db.execute("select count(*) from steps").fetchone()[0]
    size = lambda p: sum(f.stat().st_size for f in p.parent.glob(p.name + "*") if f.is_file())  # noqa: E731
    return {"processes": len(tree), "threads": threads, "fds": fds, "cgroups": len(list(leftover_groups(detect()))),
            "listening": listening, "tmp_entries": len(list(tmp.iterdir())),
            "history_kb": size(work / "history.db") // 1024, "prefect_db_kb": size(home / "prefect.db") // 1024,
            "history_steps": steps, "reports": len([p for p in (work / "reports").glob("*") if p.is_dir()])}


def run_night(env: dict[str, str], api: str, work: Path, timeout_s: float = 300) -> tuple[float, str, float]:
    """Trigger the on-demand deployment and wait for its final state; (wall s, state, flow run's own s)."""
    t0 = time.monotonic()
    out = cli(env, "deployment", "run", "capacity-check/on-demand", "--param", "config=configs/reference.yaml",
              "--param", "overrides=" + json.dumps(overrides(work)))
    flow_run_id = next(line.split("UUID:")[1].strip() for line in out.splitlines() if "UUID:" in line)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
        state = (run.get("state") or {}).get("type")
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return time.monotonic() - t0, state, float(run.get("total_run_time") or 0.0)
        time.sleep(0.5)
    raise RuntimeError(f"night {flow_run_id} not over after {timeout_s:.0f} s")


COLUMNS = ["night", "state", "wall_s", "flow_s", "processes", "threads", "fds", "cgroups", "listening",
           "tmp_entries", "history_kb", "prefect_db_kb", "history_steps", "reports"]


def soak(nights: int, hold_nights: int, lock: str | None, work: Path) -> Table:
    """Server, deployment and worker once; then `nights` nights, `hold_nights` per hold of the load lock."""
    work.mkdir(parents=True, exist_ok=True)
    home, tmp, token = work / "prefect-home", work / "tmp", uuid.uuid4().hex
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    table = Table("soak", f"{nights} nights through one Prefect process worker (reference target, single_client, "
                  f"retention {KEEP} nights)", COLUMNS)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home, api, token, tmp)
    server_argv = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    night = 0
    first_hold = lock_hold(lock)
    first_hold.__enter__()  # the server's and worker's start-up are load too: inside the first hold
    try:
        with started(server_argv, prefect_env(home, None, token, tmp), work / "server.log", work) as server:
            wait_http(f"{api}/health", server, timeout_s=180)
            subprocess.run([PREFECT, "work-pool", "create", POOL, "--type", "process"], cwd=REPO, env=env,
                           capture_output=True, timeout=120)
            cli(env, "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "on-demand", "--pool", POOL,
                "--no-prompt")
            with started([PREFECT, "worker", "start", "--pool", POOL], env, work / "worker.log", work) as worker:
                while night < nights:
                    hold = first_hold if first_hold is not None else lock_hold(lock)
                    if first_hold is None:
                        hold.__enter__()
                    first_hold = None
                    try:
                        for _ in range(min(hold_nights, nights - night)):
                            night += 1
                            wall, state, flow_s = run_night(env, api, work)
                            time.sleep(2)  # the flow-run process exits after its final state is reported
                            row = {"night": night, "state": state, "wall_s": round(wall, 1),
                                   "flow_s": round(flow_s, 1), **sample(worker, token, work, home, tmp)}
                            table.add(*[row[c] for c in COLUMNS])
                            print("  ".join(f"{c}={row[c]}" for c in COLUMNS), flush=True)
                    finally:
                        hold.__exit__(None, None, None)
    finally:
        if first_hold is not None:
            first_hold.__exit__(None, None, None)
    table.notes.append(machine_line())
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--hold-nights", type=int, default=10**6, help="nights per hold of --lock")
    parser.add_argument("--lock", default=None, help="take this lock file per hold (e.g. /tmp/nightcap-load.lock)")
    parser.add_argument("--work", type=Path, default=REPO / ".nightcap" / "soak", help="the soak's own folder")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what it started (the `finally`s) on SIGTERM
    if args.work.exists():
        import shutil

        shutil.rmtree(args.work)
    table = soak(args.nights, args.hold_nights, args.lock, args.work)
    from rich.console import Console
    from rich.table import Table as RichTable

    shown = RichTable(title=table.title)
    for column in table.columns:
        shown.add_column(column, justify="right")
    for row in table.rows:
        shown.add_row(*[str(v) for v in row])
    Console().print(shown)
    print(f"wrote {table.write_csv(RESULTS)}")


if __name__ == "__main__":
    main()
