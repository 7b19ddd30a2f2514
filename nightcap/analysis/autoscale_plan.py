"""What the autoscale stage can ask of the platform it runs on, and what it should then see.

Two questions, both pure arithmetic on figures the run already measured:

- **Fit.** The pods the HPA may add must fit the CPUs reserved for replicas (the local platform pins replicas to
  their own CPUs; a cluster has nodes and says nothing here). When the tuned pod does not fit `max_replicas`
  times, the stage runs with fewer replicas (if at least one pod can still be added) or with the largest pod shape
  of the tune grid that leaves room for one more pod, at that shape's own measured rate. When the max shrinks, the
  overload shrinks with it to what the max can take at the operating point, so that "the HPA restored the SLO"
  is a possible answer. On 2 cores (1 CPU for replicas) a tuned pod of 1 CPU "scaled" to pods that never fit.
- **Backlog arithmetic.** With a per-pod rate r, an overload of L × r, the HPA target t and CPU capped at the
  limit, the HPA adds pods in steps n → ceil(min(n, L) / t); each step takes a sync period, a pod's start under
  load and the readiness delay. Meanwhile each ready pod receives L·r/n and queues what it cannot serve, up to
  the per-pod bound (the server's own queue where known, else the generator's in-flight bound); time-outs do not
  shorten that queue (the server still works for callers who left). Once N pods are ready, the first pod's queue
  drains at r − λ/N, where λ is the offered rate then. The phases are sized from these times, and the report
  compares them with what was measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Sequence

START_UNDER_LOAD = 1.5  # a pod starting beside an overloaded one (shared disk, page cache, CPU): measured 1.25x
SETTLE_SAMPLES = 3  # samples after an expected event, to see it in the timeline


@dataclass(frozen=True)
class Shape:
    """A pod shape with one pod's saturation rate, measured for that shape (`source` says where)."""

    cpu: float | None
    memory: int | None
    concurrency: int
    rps: float
    source: str
    rps_low: float | None = None  # the lower end of the rate's 95% interval (None: not known)

    def label(self) -> str:
        cpu = "no CPU limit" if self.cpu is None else f"{self.cpu:g} CPU"
        return f"{cpu}, concurrency {self.concurrency}"


@dataclass(frozen=True)
class AutoscaleFit:
    """The pod shape, replica bound and overload the stage uses (summary.json `autoscale.fit`)."""

    shape: Shape
    max_replicas: int
    overload: float
    replica_cpus: float | None  # CPUs reserved for replicas (None: the platform does not bound them here)
    change: str = "none"  # "none", "fewer replicas" or "smaller pod"
    reason: str = ""  # which change and why, one sentence ("" when none)
    no_room: str | None = None  # why the stage cannot run at all (no shape leaves room to add a pod)
    held: float | None = None  # the share of its figure the shape's open-loop check held the SLO at, below headroom

    @staticmethod
    def keys() -> list[str]:
        """The keys of `to_dict` (summary.json has them all, None when the stage had no fit)."""
        return ["cpu", "memory", "concurrency", "one_pod_rps", "rate_from", "max_replicas", "overload",
                "replica_cpus", "change", "reason"]

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.shape.cpu, "memory": self.shape.memory, "concurrency": self.shape.concurrency,
                "one_pod_rps": self.shape.rps, "rate_from": self.shape.source, "max_replicas": self.max_replicas,
                "overload": self.overload, "replica_cpus": self.replica_cpus, "change": self.change,
                "reason": self.reason or None}


@dataclass(frozen=True)
class Share:
    """What one pod takes within the SLO, as a share of its figure: the operating point's headroom, or (`held`)
    the lower rate the open-loop check backed off to."""

    value: float
    held: bool = False

    def words(self) -> str:
        if self.held:
            return f"at {self.value:.0%} of one pod's figure, the rate its open-loop check held the SLO at"
        return f"at the {self.value:.0%} operating point"


def pods_that_fit(cpu: float | None, replica_cpus: float | None, asked: int) -> int:
    """How many pods of `cpu` fit in `replica_cpus` (all `asked` when either is unknown)."""
    if replica_cpus is None or not cpu:
        return asked
    return int(replica_cpus / cpu + 1e-9)


def fit_to_platform(tuned: Shape, grid: Sequence[Shape], replica_cpus: float | None, min_replicas: int,
                    max_replicas: int, overload: float, headroom: float, phases_given: bool = False,
                    held: float | None = None) -> AutoscaleFit:
    """The tuned pod when `max_replicas` of it fit; else fewer replicas, else a smaller measured shape (see above).

    `phases_given`: autoscale.phases were configured: their loads are offered as written (`overload` is their
    largest), never lowered to what fewer replicas take. `held`: the share of the tuned pod's figure its open-loop
    check held the SLO at, when that is below `headroom` (the check backed off): fewer pods then take only that
    much each, so an overload capped at `headroom` per pod would miss the SLO however fast the HPA was. A smaller
    grid shape was never checked open loop: its cap stays at `headroom`."""
    plain = Share(math.inf if phases_given else headroom)  # configured phases: offered as written
    share = plain if phases_given or held is None or held >= headroom else Share(held, True)
    kept = share.value if share.held else None
    n = pods_that_fit(tuned.cpu, replica_cpus, max_replicas)
    if n >= max_replicas:
        return AutoscaleFit(tuned, max_replicas, overload, replica_cpus, held=kept)
    room = f"the {replica_cpus:g} CPU(s) reserved for replicas"
    if n > min_replicas:
        return _capped(AutoscaleFit(
            tuned, n, overload, replica_cpus, "fewer replicas",
            f"autoscale.max_replicas {max_replicas} lowered to {n}: {n} pods of {tuned.cpu:g} CPU fit in {room}",
            held=kept), share)
    smaller = [s for s in grid if s.cpu and s.rps > 0 and pods_that_fit(s.cpu, replica_cpus, max_replicas) > min_replicas]
    if not smaller:
        return AutoscaleFit(tuned, n, overload, replica_cpus, no_room=(
            f"no pod shape with a measured rate leaves room to add a pod to {min_replicas} in {room} (the tuned pod "
            f"has {tuned.cpu:g} CPU): add a smaller tune.cpu, lower autoscale.min_replicas, or give the replicas "
            "more CPUs"))
    pick = max(smaller, key=lambda s: (s.cpu, s.rps / (s.cpu or 1.0)))
    fit = pods_that_fit(pick.cpu, replica_cpus, max_replicas)
    bound = min(max_replicas, fit)
    return _capped(AutoscaleFit(
        pick, bound, overload, replica_cpus, "smaller pod",
        f"the tuned pod ({tuned.cpu:g} CPU) fits {n} time(s) in {room}, leaving no room to add one: the stage uses "
        f"the tune grid's {pick.label()} pod ({pick.rps:.1f} rps, {pick.source}), {bound} of which fit"), plain)


def _capped(fit: AutoscaleFit, share: Share) -> AutoscaleFit:
    if math.isinf(share.value):
        return fit
    cap = round(fit.max_replicas * share.value, 2)
    if fit.overload <= cap:
        return fit
    return replace(fit, overload=cap, reason=f"{fit.reason}; the overload is {cap:g}x one pod (not "
                                             f"{fit.overload:g}x), what {fit.max_replicas} pods take {share.words()}")


@dataclass(frozen=True)
class HpaSteps:
    """The scale-ups the HPA makes under an overload of `load` x one pod (CPU at most 100% of the limit)."""

    pods: list[int] = field(default_factory=list)  # ready pods before each step, then the final count

    @property
    def final(self) -> int:
        return self.pods[-1]

    @property
    def steps(self) -> int:
        return len(self.pods) - 1


def hpa_steps(load: float, start: int, max_replicas: int, target_pct: float, tolerance: float) -> HpaSteps:
    """n -> ceil(n x min(1, load / n) / target) while that differs beyond the tolerance, within max_replicas."""
    pods, n = [start], start
    for _ in range(64):
        utilization = min(1.0, load / n)
        ratio = utilization / (target_pct / 100.0)
        if abs(ratio - 1.0) <= tolerance or ratio < 1.0:
            break
        nxt = min(max_replicas, math.ceil(n * ratio - 1e-9))
        if nxt <= n:
            break
        pods.append(nxt)
        n = nxt
    return HpaSteps(pods)


@dataclass(frozen=True)
class Expectation:
    """The backlog arithmetic behind the default phases (summary.json `autoscale.expected`); times in seconds."""

    start_s: float | None  # one pod's start (process to ready probe) as measured by the platform; None: unknown
    step_s: float  # one HPA step: a sync period, a start under load (x START_UNDER_LOAD), the readiness delay
    pods: list[int]  # ready pods through the scale-up, the last is the final count
    ready_s: float  # after the load step: the last added pod ready
    backlog: float  # requests queued at the first pod by then
    backlog_bound: float | None  # the most one pod holds (the server's queue, or the generator's in-flight bound)
    drain_overload_s: float | None  # from ready_s, that backlog served at the overload rate (None: it never is)
    drain_recovery_s: float | None  # what is left at the step down, served at the recovery rate (None: never)
    overload_s: float = 0.0  # the overload phase these figures were planned with
    recovery_s: float = 0.0

    @property
    def recover_in_overload_s(self) -> float | None:
        """p95 back under the SLO during the overload, after the step (None: not before the step down)."""
        if self.drain_overload_s is None or self.ready_s + self.drain_overload_s > self.overload_s:
            return None
        return self.ready_s + self.drain_overload_s

    @staticmethod
    def keys() -> list[str]:
        return [f.name for f in fields(Expectation)] + ["recover_in_overload_s"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recover_in_overload_s": self.recover_in_overload_s}


def _drain(backlog: float, rate: float, offered: float, pods: int) -> float | None:
    spare = rate - offered / pods  # what the backlogged pod serves beyond its share of new arrivals
    return None if spare <= 1e-9 else backlog / spare


def expect(rate: float, overload: float, recovery: float, *, min_replicas: int, max_replicas: int,
           target_pct: float, tolerance: float, sync_s: float, readiness_s: float, sample_s: float,
           start_s: float | None, backlog_bound: float | None, stabilization_s: float) -> Expectation:
    """The arithmetic of the module docstring, and the phase lengths it asks for: the overload until the last
    pod is ready (and, when it drains within as long again, until the backlog is gone), plus a few samples; the
    recovery until what is left drains, at least the scale-down stabilization plus 4 sync periods."""
    steps = hpa_steps(overload, min_replicas, max_replicas, target_pct, tolerance)
    step_s = sync_s + START_UNDER_LOAD * (start_s or 0.0) + readiness_s
    backlog = sum(max(overload * rate / n - rate, 0.0) * step_s for n in steps.pods[:-1])
    if backlog_bound is not None:
        backlog = min(backlog, backlog_bound)
    ready_s = steps.steps * step_s
    drain_o = _drain(backlog, rate, overload * rate, steps.final)
    settle = SETTLE_SAMPLES * sample_s
    overload_s = max(8 * sync_s, ready_s + settle)
    if drain_o is not None and drain_o <= max(ready_s, settle):
        overload_s = max(overload_s, ready_s + drain_o + settle)
    left = backlog if drain_o is None else max(backlog - (overload_s - ready_s) * (rate - overload * rate / steps.final), 0.0)
    drain_r = _drain(left, rate, recovery * rate, steps.final)
    recovery_s = max(stabilization_s + 4 * sync_s, (drain_r or 0.0) + settle)
    return Expectation(start_s, round(step_s, 2), steps.pods, round(ready_s, 2), round(backlog, 1), backlog_bound,
                       None if drain_o is None else round(drain_o, 2), None if drain_r is None else round(drain_r, 2),
                       round(overload_s, 1), round(recovery_s, 1))
