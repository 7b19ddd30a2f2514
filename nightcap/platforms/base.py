"""The `Platform` seam: what every stage needs from where the model runs (local processes or Kubernetes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PodSpec:
    """The size of one replica: CPU cores and memory bytes (None = unlimited) and server concurrency."""

    cpu: float | None
    memory: int | None
    concurrency: int


@dataclass(frozen=True)
class HpaSpec:
    """A HorizontalPodAutoscaler on CPU utilization relative to the CPU request/limit."""

    target_cpu_pct: float = 80.0
    min_replicas: int = 1
    max_replicas: int = 12
    sync_period_s: float = 15.0
    stabilization_s: float = 300.0
    tolerance: float = 0.1
    readiness_delay_s: float = 30.0


@dataclass
class ReplicaSample:
    name: str
    ready: bool
    phase: str  # Running, Pending, Starting, Failed
    cpu_cores: float | None = None  # measured use, cores
    cpu_limit: float | None = None
    memory_bytes: int | None = None
    memory_limit: int | None = None
    restarts: int = 0
    oom_kills: int = 0
    # (start, end) epoch seconds `cpu_cores` covers when the source says (metrics-server); None: since the
    # platform's previous look (local counters)
    cpu_window: tuple[float, float] | None = None


@dataclass
class Observation:
    """One look at the deployment: per-replica use, Pending replicas, nodes, events since the last look."""

    at: float = field(default_factory=time.time)
    replicas: list[ReplicaSample] = field(default_factory=list)
    pending: int = 0
    nodes: dict[str, int] = field(default_factory=dict)  # node pool -> node count
    events: list[str] = field(default_factory=list)
    metrics_available: bool = True
    cpu_source: str = ""  # where per-replica CPU comes from, and its resolution (steps.csv says it per row)

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas if r.ready)

    @property
    def restarts(self) -> int:
        return sum(r.restarts for r in self.replicas)

    @property
    def oom_kills(self) -> int:
        return sum(r.oom_kills for r in self.replicas)


@dataclass
class AutoscaleStatus:
    current_replicas: int
    desired_replicas: int
    ready_replicas: int
    pending: int = 0
    nodes: int | None = None
    last_scale_time: float | None = None
    conditions: list[str] = field(default_factory=list)


@runtime_checkable
class Platform(Protocol):
    """Where the model runs. Every call blocks until the change is ready or raises with the cause."""

    kind: str
    limits_enforced: bool
    limits_note: str

    @property
    def service_url(self) -> str:
        """The stable address in front of all replicas (what load is sent to)."""

    @property
    def replicas(self) -> int: ...

    def deploy(self, spec: PodSpec, replicas: int) -> None: ...

    def scale(self, replicas: int) -> None: ...

    def set_resources(self, spec: PodSpec) -> None: ...

    def observe(self) -> Observation: ...

    def enable_autoscaling(self, hpa: HpaSpec) -> None: ...

    def autoscaling_status(self) -> AutoscaleStatus: ...

    def disable_autoscaling(self) -> None: ...

    def teardown(self) -> None: ...


class PlatformError(RuntimeError):
    """A platform operation failed; the message names the object and what to change."""


class NoRoomForPods(PlatformError):
    """Pods of this size stay Pending: no node has room for them (FailedScheduling).

    A statement about the pod size and the cluster, not about the model: the tune stage records such a
    candidate as "no room for this pod size" instead of scoring it 0 rps. `reason` is the scheduler's word
    (e.g. "0/3 nodes are available: 3 Insufficient cpu")."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message
