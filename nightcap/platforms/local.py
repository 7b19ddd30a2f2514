"""The local platform: replicas are OS processes with cgroup limits behind a per-connection proxy.

It behaves like a small cluster on purpose: replicas restart when they die (with OOM kills counted),
become ready through an HTTP probe, stay Pending when the allocatable cores run out, and sit behind one
stable address. Everything it starts is registered, so teardown (and `nightcap cleanup` after a
SIGKILL) leaves no process and no cgroup behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import httpx

from nightcap.config import Config
from nightcap.platforms.base import AutoscaleStatus, HpaSpec, Observation, PlatformError, PodSpec, ReplicaSample
from nightcap.processes.ports import free_port
from nightcap.platforms.cgroups import PREFIX, CgroupSupport, ReplicaCgroup, detect
from nightcap.platforms.cpu_pinning import CpuPinning
from nightcap.platforms.local_autoscaler import LocalAutoscaler
from nightcap.platforms.local_processes import chain_preexec, release_cgroup, spawn, wait_listening, write_backends
from nightcap.platforms.local_warm import WarmChanges
from nightcap.platforms.local_replicas import MIN_RATE_INTERVAL_S, Replica, crash_message, log_tail, sample_replica
from nightcap.platforms.socket_queues import port_queues
from nightcap.processes.registry import RunRegistry, stop_process
from nightcap.targets.plan import TargetPlan

MAX_RESTARTS = 5


class LocalPlatform(WarmChanges):
    kind = "local"

    def __init__(self, config: Config, plan: TargetPlan, run_id: str, workdir: Path,
                 registry: RunRegistry | None = None, support: CgroupSupport | None = None):
        self.config = config
        self.plan = plan
        self.run_id = run_id
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.support = support or detect()
        self.limits_enforced = self.support.enforced
        self.limits_note = "" if self.support.enforced else f"limits not enforced: {self.support.note}"
        cpus = config.platform.allocatable_cpu or float(os.cpu_count() or 1)
        self.allocatable_cpu = cpus
        self._replicas: list[Replica] = []
        self._pending: list[Replica] = []
        self._parked: list[Replica] = []  # running, out of the Service (`park`)
        self._lock = threading.RLock()
        self._spec: PodSpec | None = None
        self._serial = 0
        self._events: list[str] = []
        self._backends = self.workdir / "backends.json"
        self._proxy: subprocess.Popen | None = None
        self._proxy_port = free_port()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._autoscaler = None
        self._starts: list[tuple[PodSpec, float]] = []  # each replica start: its size, process start to ready probe
        self.pinning = CpuPinning(run_id, enabled=config.platform.pin_cpus)
        if plan.command is None:
            raise PlatformError("the local platform needs a target it can start (reference, mlflow, command)")

    # --- the Platform interface --------------------------------------------------------------

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self._proxy_port}"

    @property
    def replicas(self) -> int:
        with self._lock:
            return len(self._replicas) + len(self._pending)

    @property
    def spec(self) -> PodSpec:
        assert self._spec is not None
        return self._spec

    @property
    def cpu_pinning(self) -> dict:
        """What was pinned to which CPUs, or why nothing was (summary.json `platform.cpu_pinning`)."""
        return self.pinning.report()

    def deploy(self, spec: PodSpec, replicas: int) -> None:
        self._spec = spec
        # before the proxy and the replicas start: what starts later inherits the run's CPUs or joins the replicas'
        self.pinning.start(register=self.registry.add_cgroup if self.registry else None)
        self._write_backends([])
        self._proxy = self._spawn([sys.executable, "-m", "nightcap.platforms.proxy", "--port", str(self._proxy_port),
                                   "--backends", str(self._backends)], "proxy", self.workdir / "proxy.log")
        self._monitor = threading.Thread(target=self._watch, name="nightcap-replicas", daemon=True)
        self._monitor.start()
        self.scale(replicas)
        # ready replicas behind a proxy still importing would refuse the first request
        wait_listening(self._proxy, self._proxy_port, self.config.platform.ready_timeout_s, self.workdir / "proxy.log")

    def scale(self, replicas: int, wait: bool = True) -> None:
        """Add or remove replicas; a scale-up takes parked ones back first (`park`); the rest are stopped."""
        with self._lock:
            while self.replicas < replicas:
                warm = self._unpark(self.spec)
                if warm is not None:
                    self._replicas.append(warm)
                else:
                    self._add_replica(self.spec)
            self._drop_parked()  # parked replicas wait for the next scale only
            while self.replicas > replicas:
                victim = self._pending.pop() if self._pending else self._replicas.pop()
                self._stop_replica(victim)
            self._publish()
        if wait:
            self.wait_ready()

    def set_resources(self, spec: PodSpec) -> None:
        """Replace every replica with one of the new size (a rolling update done all at once)."""
        with self._lock:
            count = self.replicas
            self._drop_parked()
            for replica in self._replicas + self._pending:
                self._stop_replica(replica)
            self._replicas, self._pending = [], []
            self._spec = spec
            self._publish()
        self.scale(count)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.config.platform.ready_timeout_s)
        while time.monotonic() < deadline:
            with self._lock:
                running = list(self._replicas)
            if all(r.ready for r in running):
                return
            crashed = [r for r in running if r.restarts >= MAX_RESTARTS]
            if crashed:
                raise PlatformError(crash_message(crashed[0]))
            time.sleep(0.1)
        with self._lock:
            slow = [r for r in self._replicas if not r.ready]
        hint = log_tail(slow[0]) if slow else ""
        raise PlatformError(
            f"{len(slow)} replica(s) not ready after {timeout_s or self.config.platform.ready_timeout_s:.0f}s "
            f"(probe GET {self.config.target.ready_path}); raise platform.ready_timeout_s or check the server.{hint}"
        )

    def observe(self) -> Observation:
        now = time.time()
        samples = []
        with self._lock:
            replicas = list(self._replicas)
            pending = len(self._pending)
            events, self._events = self._events, []
        for r in replicas:
            samples.append(sample_replica(r, now))
        samples += [ReplicaSample(name=p.name, ready=False, phase="Pending", cpu_limit=p.spec.cpu,
                                  memory_limit=p.spec.memory) for p in self._pending_snapshot()]
        return Observation(at=now, replicas=samples, pending=pending, nodes={"local": 1}, events=events,
                           cpu_source=f"process CPU counters, rates over >= {MIN_RATE_INTERVAL_S:g}s")

    def enable_autoscaling(self, hpa: HpaSpec) -> None:
        self.disable_autoscaling()
        with self._lock:
            self._drop_parked()  # the autoscaler's pods start cold, as on a cluster: their start is measured
        self._autoscaler = LocalAutoscaler(self, hpa, on_error=self._event)
        self._autoscaler.start()

    def autoscaling_status(self) -> AutoscaleStatus:
        with self._lock:
            ready = sum(1 for r in self._replicas if r.ready)
            current = self.replicas
            pending = len(self._pending)
        desired = self._autoscaler.desired if self._autoscaler else current
        last = self._autoscaler.last_scale_time if self._autoscaler else None
        return AutoscaleStatus(current_replicas=current, desired_replicas=desired, ready_replicas=ready,
                               pending=pending, nodes=None, last_scale_time=last)

    def disable_autoscaling(self) -> None:
        if self._autoscaler is not None:
            self._autoscaler.stop()
            self._autoscaler = None

    def teardown(self) -> None:
        """Stop everything this platform started; safe to call twice and from a signal path."""
        self._stop.set()
        self.disable_autoscaling()
        with self._lock:
            victims = self._replicas + self._pending + self._parked
            self._replicas, self._pending, self._parked = [], [], []
        for replica in victims:
            self._stop_replica(replica)
        if self._proxy is not None:
            self._kill(self._proxy)
            self._proxy = None
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=3)
        self._unpin()

    def _unpin(self) -> None:
        dirs = self.pinning.dirs()
        self.pinning.stop()
        for d in dirs:
            if self.registry:
                self.registry.remove_cgroup(d)

    # --- replicas ----------------------------------------------------------------------------

    def _cpu_committed(self) -> float:
        return sum(r.spec.cpu or 0.0 for r in self._replicas)

    def _add_replica(self, spec: PodSpec) -> None:
        self._serial += 1
        replica = Replica(name=f"replica-{self._serial}", port=free_port(), spec=spec)
        if spec.cpu and self._cpu_committed() + spec.cpu > self.allocatable_cpu + 1e-9:
            replica.phase = "Pending"
            self._pending.append(replica)
            self._event(f"{replica.name}: Pending (FailedScheduling: {self.allocatable_cpu:g} allocatable cores in use)")
            return
        self._replicas.append(replica)
        self._start(replica)

    def _pending_snapshot(self) -> list[Replica]:
        with self._lock:
            return list(self._pending)

    def _schedule_pending(self) -> None:
        while self._pending:
            nxt = self._pending[0]
            if nxt.spec.cpu and self._cpu_committed() + nxt.spec.cpu > self.allocatable_cpu + 1e-9:
                return
            self._pending.pop(0)
            self._replicas.append(nxt)
            self._start(nxt)

    def _start(self, replica: Replica) -> None:
        spec = replica.spec
        argv = [a.format(port=replica.port, concurrency=spec.concurrency) for a in self.plan.command or []]
        cgroup = None
        if self.support.enforced and (spec.cpu or spec.memory):
            cgroup = ReplicaCgroup(self.support, f"{PREFIX}{self.run_id}-{replica.name}")
            cgroup.create(spec.cpu, spec.memory)
            for d in cgroup.dirs:
                if self.registry:
                    self.registry.add_cgroup(d)
        replica.cgroup = cgroup
        replica.log = self.workdir / f"{replica.name}.log"
        if cgroup is not None:
            self.pinning.add_replica_group(cgroup.dirs[0])
        preexec = chain_preexec(cgroup.attach if cgroup else None, self.pinning.replica_preexec())
        replica.proc = self._spawn(argv, replica.name, replica.log, preexec, self.plan.env)
        replica.started = time.monotonic()
        replica.ready = False
        replica.phase = "Starting"
        replica.restart_cpu_rate()
        threading.Thread(target=self._probe, args=(replica, replica.proc), daemon=True).start()

    def _spawn(self, argv: list[str], what: str, log: Path, preexec: Callable[[], None] | None = None,
               env_extra: dict[str, str] | None = None) -> subprocess.Popen:
        proc = spawn(self.config, self.run_id, argv, log, preexec, env_extra)
        if self.registry:
            self.registry.add_process(proc.pid, what)
        return proc

    def _probe(self, replica: Replica, proc: subprocess.Popen) -> None:
        url = f"http://127.0.0.1:{replica.port}{self.config.target.ready_path}"
        while not self._stop.is_set() and proc.poll() is None and replica.proc is proc and not replica.stopping:
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    with self._lock:
                        replica.ready, replica.phase, replica.ready_at = True, "Running", time.monotonic()
                        self._starts.append((replica.spec, replica.ready_at - replica.started))
                        self._publish()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

    def _stop_replica(self, replica: Replica) -> None:
        replica.stopping = True
        replica.ready = False
        if replica.proc is not None:
            self._kill(replica.proc)
        release_cgroup(replica, self.registry.remove_cgroup if self.registry else None)

    def _kill(self, proc: subprocess.Popen) -> None:
        stop_process(proc, self.registry)

    def _watch(self) -> None:
        """Restart replicas that die, like a kubelet, and count OOM kills."""
        while not self._stop.wait(0.25):
            with self._lock:
                for replica in list(self._replicas):
                    proc = replica.proc
                    if replica.stopping or proc is None or proc.poll() is None:
                        continue
                    code = proc.returncode
                    ooms = replica.cgroup.oom_kills() if replica.cgroup else 0
                    # Trust the kernel's count; guess from SIGKILL + a memory limit only when it has none
                    # (a SIGKILL from outside, e.g. an operator or a fault test, is not an OOM kill).
                    oom = ooms > 0 if ooms is not None else (
                        code == -signal.SIGKILL and replica.spec.memory is not None and replica.cgroup is not None)
                    replica.restarts += 1
                    if oom:
                        replica.oom_kills += 1
                    reason = "OOMKilled" if oom else f"exited with {code}"
                    self._event(f"{replica.name}: {reason}; restart {replica.restarts}")
                    if self.registry:
                        self.registry.remove_process(proc.pid)
                    replica.ready = False
                    replica.phase = "CrashLoopBackOff" if replica.restarts >= MAX_RESTARTS else "Restarting"
                    release_cgroup(replica, self.registry.remove_cgroup if self.registry else None)
                    self._publish()
                    if replica.restarts < MAX_RESTARTS:
                        self._start(replica)
                self._schedule_pending()

    def _publish(self) -> None:
        self._write_backends([f"127.0.0.1:{r.port}" for r in self._replicas if r.ready])
        self._repin()

    def _repin(self) -> None:
        """Keep replicas on their CPUs only while their limits fit there (see cpu_pinning's policy)."""
        try:
            event = self.pinning.update([r.spec.cpu for r in self._replicas],
                                        [r.proc.pid for r in self._replicas if r.proc is not None])
        except OSError as exc:  # pinning is an aid to precision, never a reason to fail a run
            event = f"cpu pinning: could not change the layout ({exc}); it stays {self.pinning.mode}"
        if event:
            self._event(event)

    def _write_backends(self, items: list[str]) -> None:
        write_backends(self._backends, items)

    def _event(self, text: str) -> None:
        self._events.append(f"{time.strftime('%H:%M:%S')} {text}")

    def start_seconds(self, spec: PodSpec | None = None) -> float | None:
        """The longest start (process start to first ready probe) measured for pods of `spec` (default: the current
        size), or None before any: the autoscale stage plans its phases on it."""
        spec = spec or self._spec
        with self._lock:
            times = [t for s, t in self._starts if s == spec]
        return max(times) if times else None

    def replica_cpu_budget(self) -> float:
        """The CPUs replicas may use without squeezing each other: the ones pinning reserves for them (else the
        allocatable cores); pods beyond them either stay Pending or share CPUs with the load generator."""
        if self.pinning.active and self.pinning.layout is not None:
            return min(float(len(self.pinning.layout.replica_cpus)), self.allocatable_cpu)
        return self.allocatable_cpu

    def queues(self) -> dict[str, dict[str, int]]:
        """Connections waiting at the proxy and at each replica's port (see `socket_queues`): where an overload's
        backlog sits. Keys: "proxy" and the replica names."""
        with self._lock:
            ports = {"proxy": self._proxy_port, **{r.name: r.port for r in self._replicas}}
        counts = port_queues(ports.values())
        return {name: counts[port].to_dict() for name, port in ports.items()}

    # --- for tests and the autoscaler ---------------------------------------------------------

    def replica_pids(self) -> list[int]:
        with self._lock:
            return [r.proc.pid for r in self._replicas if r.proc is not None and r.proc.poll() is None]

    def ready_replicas(self) -> list[Replica]:
        with self._lock:
            return [r for r in self._replicas if r.ready]

    def all_replicas(self) -> list[Replica]:
        with self._lock:
            return list(self._replicas)
