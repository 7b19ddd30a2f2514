"""What each run started, on disk, with a heartbeat: so a run killed with SIGKILL leaves nothing for long.

Every process group, cgroup, Kubernetes label and node-pool change a run makes is written here first.
The next run, and `nightcap cleanup`, remove what belongs to runs whose owner is gone, and only that.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import psutil

if TYPE_CHECKING:
    import subprocess

DEFAULT_DIR = Path(".nightcap/runs")
STALE_AFTER_S = 60.0
MIN_STALE_S = 15.0


@dataclass
class RunRecord:
    run_id: str
    owner_pid: int
    owner_started: float
    heartbeat: float
    processes: list[dict[str, Any]] = field(default_factory=list)  # {pid, create_time, what}
    cgroups: list[str] = field(default_factory=list)
    kubernetes: dict[str, Any] | None = None  # {namespace, run_id}
    node_pools: list[dict[str, Any]] = field(default_factory=list)  # original autoscaling settings
    locks: list[str] = field(default_factory=list)


class RunRegistry:
    """The live record of one run; thread-safe, rewritten atomically on every change."""

    def __init__(self, run_id: str, directory: Path = DEFAULT_DIR, heartbeat_s: float = 5.0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        me = psutil.Process()
        self.record = RunRecord(run_id, me.pid, me.create_time(), time.time())
        self.path = self.directory / f"{run_id}.json"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat_s = heartbeat_s
        self._write()
        self._thread = threading.Thread(target=self._beat, name="nightcap-heartbeat", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.record)))
        tmp.replace(self.path)

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            with self._lock:
                self.record.heartbeat = time.time()
                self._write()

    def update(self, change: Callable[[RunRecord], None]) -> None:
        with self._lock:
            change(self.record)
            self._write()

    def add_process(self, pid: int, what: str) -> None:
        try:
            created = psutil.Process(pid).create_time()
        except psutil.Error:
            return
        self.update(lambda r: r.processes.append({"pid": pid, "create_time": created, "what": what}))

    def remove_process(self, pid: int) -> None:
        self.update(lambda r: r.processes.__setitem__(slice(None), [p for p in r.processes if p["pid"] != pid]))

    def add_cgroup(self, path: Path) -> None:
        self.update(lambda r: r.cgroups.append(str(path)))

    def remove_cgroup(self, path: Path) -> None:
        self.update(lambda r: r.cgroups.remove(str(path)) if str(path) in r.cgroups else None)

    def close(self) -> None:
        """The run ended and cleaned up after itself: drop the record.

        If a registered process or cgroup outlived the run's teardown (cut short, or failed), the record
        is kept with just those, so the next run or `nightcap cleanup` still finds and removes them.
        """
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            left = [p for p in self.record.processes if _process_alive(p["pid"], p.get("create_time"))]
            groups = [g for g in self.record.cgroups if Path(g).exists()]
            if left or groups:
                self.record.processes, self.record.cgroups = left, groups
                self._write()
                return
            self.path.unlink(missing_ok=True)


def _process_alive(pid: int, create_time: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _owner_alive(record: RunRecord) -> bool:
    try:
        proc = psutil.Process(record.owner_pid)
        return abs(proc.create_time() - record.owner_started) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def dead_runs(directory: Path = DEFAULT_DIR, stale_after_s: float = STALE_AFTER_S) -> list[RunRecord]:
    """Runs whose owner process is gone, or whose heartbeat stopped (a lost machine, a frozen runner)."""
    out = []
    if not Path(directory).exists():
        return out
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = RunRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        # A live owner whose heartbeat is a few beats late is busy, not dead: never less than MIN_STALE_S.
        if not _owner_alive(record) or time.time() - record.heartbeat > max(stale_after_s, MIN_STALE_S):
            out.append(record)
    return out


def kill_process_tree(pid: int, create_time: float | None = None, grace_s: float = 3.0) -> bool:
    """SIGTERM a process group (then SIGKILL), only if the pid still names the process we started."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return False  # the pid was reused by something that is not ours
    except psutil.Error:
        return False
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        procs = [proc]
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    psutil.wait_procs(alive, timeout=grace_s)
    return True


def cleanup_dead(
    directory: Path = DEFAULT_DIR,
    stale_after_s: float = STALE_AFTER_S,
    kubernetes_cleanup: Callable[[dict[str, Any]], None] | None = None,
    node_pool_restore: Callable[[dict[str, Any]], None] | None = None,
    remove_cgroup: Callable[[Path], None] | None = None,
) -> list[str]:
    """Remove or restore what dead runs left; returns one line per thing done. The cgroups are removed with
    `remove_cgroup` (the local platform's `cgroups.remove_group`, passed in: this module sits below platforms);
    without it they are left to `nightcap cleanup`'s sweep of empty old groups."""
    done: list[str] = []
    for record in dead_runs(directory, stale_after_s):
        for proc in record.processes:
            if kill_process_tree(proc["pid"], proc.get("create_time")):
                done.append(f"run {record.run_id}: stopped {proc.get('what', 'process')} (pid {proc['pid']})")
        for group in record.cgroups:
            if remove_cgroup is not None and Path(group).exists():
                remove_cgroup(Path(group))
                done.append(f"run {record.run_id}: removed cgroup {group}")
        kept = RunRecord(record.run_id, record.owner_pid, record.owner_started, record.heartbeat)
        if record.kubernetes:
            where = (f"labelled nightcap.io/run-id={record.kubernetes.get('run_id', record.run_id)} in namespace "
                     f"{record.kubernetes.get('namespace')}")
            try:
                if not kubernetes_cleanup:
                    raise LookupError("no Kubernetes credentials here")
                kubernetes_cleanup(record.kubernetes)
                done.append(f"run {record.run_id}: deleted Kubernetes objects {where}")
            except Exception as exc:  # kept for the next `nightcap cleanup`
                kept.kubernetes = record.kubernetes
                if kubernetes_cleanup:
                    done.append(f"run {record.run_id}: could not delete Kubernetes objects {where}: {exc}")
        for pool in record.node_pools:
            try:
                if not node_pool_restore:
                    raise LookupError("no GKE credentials here")
                node_pool_restore(pool)
                done.append(f"run {record.run_id}: restored autoscaling of node pool {pool.get('name')}")
            except Exception as exc:
                kept.node_pools.append(pool)
                if node_pool_restore:
                    done.append(f"run {record.run_id}: could not restore node pool {pool.get('name')}: {exc}")
        for lock in record.locks:
            Path(lock).unlink(missing_ok=True)
        path = Path(directory) / f"{record.run_id}.json"
        if kept.kubernetes or kept.node_pools:
            # cluster state needs credentials this caller does not have: keep it for `nightcap cleanup`
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(kept)))
            tmp.replace(path)
            done.append(f"run {record.run_id}: left Kubernetes objects / node-pool settings behind; "
                        "run `nightcap cleanup` to remove and restore them")
        else:
            path.unlink(missing_ok=True)
    return done


def stop_process(proc: "subprocess.Popen", registry: "RunRegistry | None" = None, grace_s: float = 3.0) -> None:
    """Stop a process we started (its whole group), reap it, and drop it from the run's record."""
    import subprocess

    if proc.poll() is None:
        kill_process_tree(proc.pid, grace_s=grace_s)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if registry is not None:
        registry.remove_process(proc.pid)
