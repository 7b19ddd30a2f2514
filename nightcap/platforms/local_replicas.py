"""The local platform's replicas: what one is (a process, its cgroup, its state as a kubelet would see it) and what
can be read from it: CPU and memory use, the tail of its log, why it crashed. The lifecycle is in `local.py`
(its processes: `local_processes.py`)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from nightcap.platforms.base import PodSpec, ReplicaSample
from nightcap.platforms.cgroups import ReplicaCgroup

MIN_RATE_INTERVAL_S = 0.5


@dataclass
class Replica:
    """One replica process: its port, size, cgroup and the kubelet-like state the platform keeps for it."""

    name: str
    port: int
    spec: PodSpec
    proc: subprocess.Popen | None = None
    cgroup: ReplicaCgroup | None = None
    ready: bool = False
    phase: str = "Starting"
    restarts: int = 0
    oom_kills: int = 0
    started: float = 0.0
    ready_at: float | None = None
    stopping: bool = False
    log: Path | None = None
    _cpu_prev: tuple[float, float] | None = None
    _cpu_rate: float | None = None
    events: list[str] = field(default_factory=list)

    def restart_cpu_rate(self) -> None:
        """A new process: its CPU counters start again, so the rate does too (`sample_replica`)."""
        self._cpu_prev = self._cpu_rate = None


def sample_replica(r: Replica, now: float) -> ReplicaSample:
    """CPU cores (a rate over at least MIN_RATE_INTERVAL_S) and memory of the replica's process tree."""
    cores = memory = None
    proc = r.proc
    if proc is not None and proc.poll() is None:
        try:
            root = psutil.Process(proc.pid)
            tree = [root] + root.children(recursive=True)
            cpu_s, rss = 0.0, 0
            for p in tree:
                try:
                    t = p.cpu_times()
                    cpu_s += t.user + t.system + t.children_user + t.children_system
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            # Several observers (a step's sampler, the autoscaler) call this; CPU times tick every 10 ms, so a
            # rate over a few ms between two of them is noise. Keep the last rate until 0.5 s have passed.
            if r._cpu_prev is None:
                r._cpu_prev = (now, cpu_s)
            elif now - r._cpu_prev[0] >= MIN_RATE_INTERVAL_S:
                r._cpu_rate = max(cpu_s - r._cpu_prev[1], 0.0) / (now - r._cpu_prev[0])
                r._cpu_prev = (now, cpu_s)
            cores = r._cpu_rate
            memory = (r.cgroup.memory_bytes() if r.cgroup else None) or rss
        except psutil.Error:
            pass
    return ReplicaSample(name=r.name, ready=r.ready, phase=r.phase, cpu_cores=cores, cpu_limit=r.spec.cpu,
                         memory_bytes=memory, memory_limit=r.spec.memory, restarts=r.restarts,
                         oom_kills=r.oom_kills)


def log_tail(replica: Replica, lines: int = 5) -> str:
    """The last lines of the replica's log, for an error message (empty when there is none)."""
    try:
        tail = replica.log.read_text(errors="replace").splitlines()[-lines:] if replica.log else []
    except OSError:
        return ""
    return ("\n  last lines of " + str(replica.log) + ":\n    " + "\n    ".join(tail)) if tail else ""


def crash_message(replica: Replica) -> str:
    """Why a replica is in CrashLoopBackOff and what to change."""
    why = "OOM-killed" if replica.oom_kills else "crashed"
    fix = " raise the memory limit (platform.memory / tune.memory)" if replica.oom_kills else " check the command and its log"
    return f"{replica.name} {why} {replica.restarts} times (CrashLoopBackOff);{fix}.{log_tail(replica)}"
