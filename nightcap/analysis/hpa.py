"""The Kubernetes HorizontalPodAutoscaler algorithm, so the local platform scales the way a cluster would.

Follows https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details
and the controller it describes (pkg/controller/podautoscaler: replica_calculator.go, horizontal.go):

- desired = ceil(current × utilization / target), skipped when |ratio − 1| ≤ tolerance (0.1);
- pods without metrics and (for CPU) pods not yet ready are set aside; the ratio is computed over the
  rest, then recomputed with missing pods at 100% of target (scale-down) or 0% (scale-up) and, on a
  scale-up, not-ready pods at 0%; if that reverses the direction or lands within tolerance, no change;
- scale-down stabilization: the highest recommendation over the window (300 s) is used;
- rate limits (behavior policies): by default scale-up at most max(4 pods, 100%) per 15 s and
  scale-down at most 100% per 15 s, counted from the replicas at the start of each policy period;
- the result is clamped to [min, max]. Zero current replicas means autoscaling is off (as in Kubernetes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence


@dataclass(frozen=True)
class ScalingPolicy:
    """One HPA behavior policy: change by `value` pods or percent within any `period_s` window."""

    kind: Literal["Pods", "Percent"]
    value: float
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    """HPA `behavior.scaleUp` / `scaleDown`: a stabilization window and policies; `select` Max = most change."""

    stabilization_s: float
    policies: tuple[ScalingPolicy, ...]
    select: Literal["Max", "Min", "Disabled"] = "Max"


DEFAULT_SCALE_UP = ScalingRules(0.0, (ScalingPolicy("Pods", 4, 15.0), ScalingPolicy("Percent", 100, 15.0)))
DEFAULT_SCALE_DOWN = ScalingRules(300.0, (ScalingPolicy("Percent", 100, 15.0),))


@dataclass(frozen=True)
class Recommendation:
    """What the metrics alone ask for, before stabilization and rate limits, and why."""

    replicas: int
    utilization: float | None  # mean over ready pods with metrics (what `kubectl get hpa` shows)
    ratio: float | None  # utilization / target, after the missing/not-ready adjustment
    reason: str


def replica_recommendation(
    current_replicas: int,
    pod_utilizations: Sequence[float | None],
    ready: Sequence[bool],
    target_pct: float,
    tolerance: float = 0.1,
) -> Recommendation:
    """The metric-based replica count for CPU utilization (% of request/limit per pod, None = no metric).

    `pod_utilizations` and `ready` describe the pods that exist, Pending ones included (not ready, None).
    """
    if len(pod_utilizations) != len(ready):
        raise ValueError(f"{len(pod_utilizations)} utilizations but {len(ready)} readiness flags: one of each per pod")
    if target_pct <= 0:
        raise ValueError(f"target utilization must be > 0, got {target_pct}")
    missing = sum(1 for u in pod_utilizations if u is None)
    measured = [(u, r) for u, r in zip(pod_utilizations, ready) if u is not None]
    ready_values = [u for u, r in measured if r]
    unready = sum(1 for _, r in measured if not r)
    if not ready_values:
        return Recommendation(current_replicas, None, None, "no ready pod has metrics: no change")
    utilization = sum(ready_values) / len(ready_values)
    ratio = utilization / target_pct
    scale_up_with_unready = unready > 0 and ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if abs(1.0 - ratio) <= tolerance + 1e-9:  # the boundary is within, without float dust
            return Recommendation(current_replicas, utilization, ratio, f"ratio {ratio:.2f} within tolerance")
        return Recommendation(math.ceil(ratio * len(ready_values) - 1e-9), utilization, ratio,
                              f"utilization {utilization:.0f}% against target {target_pct:.0f}%")
    values = list(ready_values)
    if missing:
        if ratio != 1.0:  # scale-down: 100% of the request (or the target if higher); scale-up: 0%
            values += [max(100.0, target_pct) if ratio < 1.0 else 0.0] * missing
    if scale_up_with_unready:
        values += [0.0] * unready
    new_ratio = (sum(values) / len(values)) / target_pct
    if abs(1.0 - new_ratio) <= tolerance + 1e-9 or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return Recommendation(current_replicas, utilization, new_ratio,
                              f"ratio {ratio:.2f} becomes {new_ratio:.2f} counting missing/not-ready pods: no change")
    replicas = math.ceil(new_ratio * len(values) - 1e-9)
    if (new_ratio < 1.0 and replicas > current_replicas) or (new_ratio > 1.0 and replicas < current_replicas):
        return Recommendation(current_replicas, utilization, new_ratio, "pod count would reverse the direction: no change")
    return Recommendation(replicas, utilization, new_ratio,
                          f"ratio {new_ratio:.2f} over {len(values)} pods (missing/not-ready pods counted conservatively)")


def desired_replicas(
    current_replicas: int,
    pod_utilizations: Sequence[float | None],
    ready: Sequence[bool],
    target_pct: float,
    tolerance: float = 0.1,
) -> int:
    """ceil(current × utilization / target) with the documented tolerance and missing/not-ready handling."""
    return replica_recommendation(current_replicas, pod_utilizations, ready, target_pct, tolerance).replicas


def _change_in(events: list[tuple[float, int]], now: float, period_s: float) -> int:
    return sum(delta for t, delta in events if t > now - period_s)


def scale_up_limit(current: int, ups: list[tuple[float, int]], downs: list[tuple[float, int]],
                   rules: ScalingRules, now: float) -> int:
    """Most replicas the scale-up policies allow now, counted from each period's starting replicas."""
    if rules.select == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = current - _change_in(ups, now, p.period_s) + _change_in(downs, now, p.period_s)
        proposals.append(start + int(p.value) if p.kind == "Pods" else math.ceil(start * (1 + p.value / 100) - 1e-9))
    return (min if rules.select == "Min" else max)(proposals)


def scale_down_limit(current: int, ups: list[tuple[float, int]], downs: list[tuple[float, int]],
                     rules: ScalingRules, now: float) -> int:
    """Fewest replicas the scale-down policies allow now (Max selects the policy allowing most change)."""
    if rules.select == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = current - _change_in(ups, now, p.period_s) + _change_in(downs, now, p.period_s)
        proposals.append(start - int(p.value) if p.kind == "Pods" else int(start * (1 - p.value / 100) + 1e-9))
    return (max if rules.select == "Min" else min)(proposals)


@dataclass
class HpaController:
    """One HPA: call `decide` every sync period (15 s by default) with the pods' CPU use; it returns replicas.

    Keeps what the real controller keeps between syncs: past recommendations (for stabilization) and
    past scale events (for the rate-limit policies). `stabilization_s` is the scale-down window.
    """

    min_replicas: int = 1
    max_replicas: int = 12
    target_pct: float = 80.0
    tolerance: float = 0.1
    stabilization_s: float = 300.0
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down_policies: tuple[ScalingPolicy, ...] = DEFAULT_SCALE_DOWN.policies
    last: Recommendation | None = None
    last_reason: str = ""
    _recommendations: list[tuple[float, int]] = field(default_factory=list, repr=False)
    _ups: list[tuple[float, int]] = field(default_factory=list, repr=False)
    _downs: list[tuple[float, int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 1 ≤ min_replicas ({self.min_replicas}) ≤ max_replicas ({self.max_replicas})")

    @classmethod
    def from_config(cls, autoscale: object) -> "HpaController":
        """From an `AutoscaleConfig` (or the platform's `HpaSpec`): target, bounds, tolerance, window."""
        a = autoscale
        return cls(min_replicas=a.min_replicas, max_replicas=a.max_replicas,  # type: ignore[attr-defined]
                   target_pct=a.target_cpu_pct, tolerance=a.tolerance,  # type: ignore[attr-defined]
                   stabilization_s=a.stabilization_s)  # type: ignore[attr-defined]

    @property
    def scale_down(self) -> ScalingRules:
        return ScalingRules(self.stabilization_s, self.scale_down_policies)

    def decide(self, now: float, current_replicas: int, pod_utilizations: Sequence[float | None],
               ready: Sequence[bool]) -> int:
        """Replicas to run after this sync (now in seconds, any monotonic clock)."""
        self.last = None
        if current_replicas == 0:
            self.last_reason = "scaled to zero by hand: autoscaling is off"
            return 0
        if current_replicas > self.max_replicas:
            return self._record(now, current_replicas, self.max_replicas, "above max_replicas")
        if current_replicas < self.min_replicas:
            return self._record(now, current_replicas, self.min_replicas, "below min_replicas")
        rec = replica_recommendation(current_replicas, pod_utilizations, ready, self.target_pct, self.tolerance)
        self.last = rec
        if rec.utilization is None:  # no metrics: the real controller reports an error and does not scale
            self.last_reason = rec.reason
            return current_replicas
        desired = self._stabilize(now, current_replicas, rec.replicas)
        limited = self._rate_limit(now, current_replicas, desired)
        reason = rec.reason
        if desired != rec.replicas:
            reason += f"; stabilized to {desired} (highest recommendation in the last {self.stabilization_s:g} s)"
        if limited != desired:
            reason += f"; limited to {limited} by the scaling policy or min/max"
        return self._record(now, current_replicas, limited, reason)

    def _stabilize(self, now: float, current: int, desired: int) -> int:
        if not self._recommendations and self.scale_down.stabilization_s > 0:
            self._recommendations.append((now, current))  # as the controller: no scale-down right after start
        up_cut, down_cut = now - self.scale_up.stabilization_s, now - self.scale_down.stabilization_s
        up_rec = down_rec = desired
        for t, r in self._recommendations:
            if t > up_cut:
                up_rec = min(up_rec, r)
            if t > down_cut:
                down_rec = max(down_rec, r)
        longest = max(self.scale_up.stabilization_s, self.scale_down.stabilization_s)
        self._recommendations = [(t, r) for t, r in self._recommendations if t > now - longest]
        self._recommendations.append((now, desired))
        return min(max(current, up_rec), down_rec)

    def _rate_limit(self, now: float, current: int, desired: int) -> int:
        if desired > current:
            limit = max(current, scale_up_limit(current, self._ups, self._downs, self.scale_up, now))
            return min(desired, self.max_replicas, limit)
        if desired < current:
            limit = min(current, scale_down_limit(current, self._ups, self._downs, self.scale_down, now))
            return max(desired, self.min_replicas, limit)
        return desired

    def _record(self, now: float, current: int, new: int, reason: str) -> int:
        if new > current:
            self._ups.append((now, new - current))
        elif new < current:
            self._downs.append((now, current - new))
        longest = max([p.period_s for p in self.scale_up.policies + self.scale_down.policies], default=0.0)
        self._ups = [(t, d) for t, d in self._ups if t > now - longest]
        self._downs = [(t, d) for t, d in self._downs if t > now - longest]
        self.last_reason = reason
        return new
