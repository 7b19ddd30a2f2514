"""The local platform's changes that start no process: a CPU limit changed under running replicas, and replicas
parked out of the Service between the scaling stage's switches.

Why: a replica's start is mostly the model server importing its libraries under the pod's CPU quota (the MLflow
scoring server: 2.6 s at 1 CPU, 5-8 s at 0.5), and the stages that switch one configuration for another (tune's
CPU sizes, scaling's 1 and N pods in alternating windows) would spend most of their time waiting for starts that
measure nothing they report. The autoscale stage, which measures starts, always gets cold ones.

A mixin of `LocalPlatform` (which holds the state it uses: `_lock`, `_replicas`, `_pending`, `_parked`, `_spec`).
"""

from __future__ import annotations

import threading
import time

import httpx

from nightcap.config import Config
from nightcap.platforms.base import PodSpec
from nightcap.platforms.cgroups import CgroupSupport
from nightcap.platforms.local_replicas import Replica
from nightcap.platforms.proxy import REFRESH_S


class WarmChanges:
    """`resize_cpu_in_place` and `park`; `scale` takes parked replicas back (`_unpark`)."""

    _lock: threading.RLock
    _replicas: list[Replica]
    _pending: list[Replica]
    _parked: list[Replica]
    _spec: PodSpec | None
    support: CgroupSupport
    allocatable_cpu: float
    config: Config

    def resize_cpu_in_place(self, spec: PodSpec) -> bool:
        """Give the running replicas `spec`'s CPU limit without a restart, when only the CPU differs: the cgroup's
        quota changes under the process, as Kubernetes' in-place resize does for CPU (resizePolicy NotRequired).
        False, with nothing changed, when limits are not enforced, a replica is not running and ready, or the new
        limits would not fit the allocatable CPUs: `set_resources` restarts the replicas then."""
        with self._lock:
            now = self._spec
            running = self._replicas
            if (now is None or not self.support.enforced or self._pending or not running or spec.cpu is None
                    or (spec.memory, spec.concurrency) != (now.memory, now.concurrency)
                    or any(r.cgroup is None or not r.ready for r in running)
                    or spec.cpu * len(running) > self.allocatable_cpu + 1e-9):
                return False
            for r in running:
                assert r.cgroup is not None
                r.cgroup.set_cpu(spec.cpu)
                r.spec = spec
                r.restart_cpu_rate()  # a rate across the change would mix two limits
                self._event(f"{r.name}: CPU limit {'none' if now.cpu is None else f'{now.cpu:g}'} -> {spec.cpu:g} "
                            "in place, the process kept running")
            self._spec = spec
            self._publish()
        return True

    def park(self, replicas: int) -> None:
        """Scale down to `replicas`, keeping the removed replicas running outside the Service (the proxy no longer
        sends them anything; idle, they use no CPU): the next scale-up of the same size takes them back at once.
        A new size, a plain `scale` down, autoscaling and teardown stop them."""
        with self._lock:
            before = len(self._parked)
            while self._pending and len(self._replicas) + len(self._pending) > replicas:
                self._stop_replica(self._pending.pop())  # never started: nothing to keep
            while len(self._replicas) > replicas:
                r = self._replicas.pop()
                r.ready = False
                r.phase = "Parked"
                self._parked.append(r)
                self._event(f"{r.name}: out of the Service, kept running for the next scale-up")
            self._publish()
            cut = len(self._parked) > before
        if cut:
            time.sleep(3 * REFRESH_S)  # the proxy reads the change and breaks the parked replicas' open connections

    def _unpark(self, spec: PodSpec) -> Replica | None:
        """A parked replica of `spec` still running, back in the Service (its readiness probed again)."""
        while self._parked:
            r = self._parked.pop()
            if r.spec == spec and r.proc is not None and r.proc.poll() is None and self._answers(r):
                r.ready, r.phase = True, "Running"  # no start: nothing joins the starts autoscale plans on
                r.restart_cpu_rate()  # its last CPU reading is from before it was parked
                self._event(f"{r.name}: back in the Service (was kept running)")
                return r
            self._stop_replica(r)
        return None

    def _answers(self, r: Replica) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{r.port}{self.config.target.ready_path}", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _drop_parked(self) -> None:
        for r in self._parked:
            self._stop_replica(r)
        self._parked = []

    # provided by LocalPlatform
    def _publish(self) -> None: ...
    def _event(self, text: str) -> None: ...
    def _stop_replica(self, replica: Replica) -> None: ...
