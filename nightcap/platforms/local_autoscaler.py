"""A HorizontalPodAutoscaler for the local platform: the documented algorithm over measured replica CPU.

Every `sync_period_s` it reads each replica's CPU use relative to its CPU limit (the HPA's utilization of
the request), treats replicas that became ready less than `readiness_delay_s` ago as not ready, asks
`HpaController` for the replica count and scales without waiting, as the real controller does.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol, Sequence

from nightcap.analysis.hpa import HpaController
from nightcap.platforms.base import HpaSpec, Observation


class ReadySince(Protocol):
    name: str
    ready_at: float | None


class Scalable(Protocol):
    """What the autoscaler drives (LocalPlatform, which starts it)."""

    @property
    def replicas(self) -> int: ...

    def observe(self) -> Observation: ...

    def all_replicas(self) -> Sequence[ReadySince]: ...

    def scale(self, replicas: int, wait: bool = True) -> None: ...


class LocalAutoscaler:
    """`on_error` records a failed sync as the platform's event, as the real controller does."""

    def __init__(self, platform: Scalable, spec: HpaSpec, on_error: Callable[[str], None]):
        self.platform = platform
        self.spec = spec
        self.on_error = on_error
        self.controller = HpaController(min_replicas=spec.min_replicas, max_replicas=spec.max_replicas,
                                        target_pct=spec.target_cpu_pct, tolerance=spec.tolerance,
                                        stabilization_s=spec.stabilization_s)
        self.desired = platform.replicas
        self.last_scale_time: float | None = None
        self.decisions: list[tuple[float, int, int, str]] = []  # (time, current, desired, reason)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nightcap-hpa", daemon=True)

    def start(self) -> None:
        self.platform.observe()  # prime the CPU counters so the first sync has a rate
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def sync(self, now: float | None = None) -> int:
        """One controller sync; returns the replica count it asked for."""
        now = time.monotonic() if now is None else now
        obs = self.platform.observe()
        ready_at = {r.name: r.ready_at for r in self.platform.all_replicas()}
        utils: list[float | None] = []
        ready: list[bool] = []
        for sample in obs.replicas:
            if sample.phase == "Pending":
                continue  # Pending pods have no metrics and are not counted by the HPA's ratio
            became = ready_at.get(sample.name)
            settled = sample.ready and became is not None and now - became >= self.spec.readiness_delay_s
            ready.append(settled)
            if sample.cpu_cores is None or not sample.cpu_limit:
                utils.append(None)
            else:
                utils.append(100.0 * sample.cpu_cores / sample.cpu_limit)
        current = self.platform.replicas
        desired = self.controller.decide(now, current, utils, ready)
        self.desired = desired
        self.decisions.append((now, current, desired, self.controller.last_reason))
        if desired != current:
            self.platform.scale(desired, wait=False)
            self.last_scale_time = time.time()
        return desired

    def _loop(self) -> None:
        while not self._stop.wait(self.spec.sync_period_s):
            try:
                self.sync()
            except Exception as exc:  # a failed sync is an event, as in the real controller
                self.on_error(f"autoscaler sync failed: {exc}")
