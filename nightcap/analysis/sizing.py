"""From measured per-pod numbers to a budget: pods, cores, nodes and cost for a number of users or rps.

The first answer is Little's law: requests in flight = rps × latency, and each pod holds
`per_pod_concurrency` of them, run at `headroom` (70%) so bursts fit. That formula knows nothing
about what the pod really sustained, so every row is cross-checked against measured per-pod capacity
(saturation rps per pod, users per pod under the SLO) and the largest pod count wins; the row names
the constraint that bound it, because "why 9 pods and not 6" is the first question a budget gets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from nightcap.analysis.saturation import usable_mask

LATENCY = "latency (Little's law)"
THROUGHPUT = "throughput per pod"
SLO_USERS = "SLO users per pod"


def _ceil(x: float) -> int:
    """ceil that ignores float dust: 0.7 × 10 / 0.7 is 10, not 11."""
    return math.ceil(x - 1e-9 * max(1.0, abs(x)))


def _floor(x: float) -> int:
    return math.floor(x + 1e-9 * max(1.0, abs(x)))


@dataclass(frozen=True)
class SizingRow:
    """One sizing answer and every number that went into it (summary.json `sizing.rows`)."""

    target: str  # "120 users" or "500 rps"
    target_kind: Literal["users", "rps"]
    target_value: float
    pods: int
    cores: float
    nodes: int
    cost_per_hour: float | None
    binding_constraint: str
    # inputs and the intermediate figures
    rps: float  # arrival rate the target implies
    in_flight: float  # rps × latency (Little's law)
    latency_s: float
    per_pod_concurrency: int
    headroom: float
    cpu_per_pod: float
    node_allocatable_cpu: float
    pods_per_node: int
    pods_by_latency: int
    pods_by_throughput: int | None  # None when no per-pod saturation rps was given
    pods_by_slo_users: int | None  # None when no per-pod SLO users were given
    per_pod_rps: float | None
    per_pod_slo_users: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size(
    kind: Literal["users", "rps"],
    value: float,
    rps: float,
    users: float,
    latency_s: float,
    per_pod_concurrency: int,
    cpu_per_pod: float,
    node_allocatable_cpu: float,
    headroom: float,
    price_per_core_hour: float | None,
    per_pod_rps: float | None,
    per_pod_slo_users: float | None,
    slo_headroom: float,
) -> SizingRow:
    if latency_s <= 0 or not math.isfinite(latency_s):
        raise ValueError(f"latency must be a positive number of seconds, got {latency_s}")
    if per_pod_concurrency < 1:
        raise ValueError(f"per-pod concurrency must be ≥ 1, got {per_pod_concurrency}")
    if not 0 < headroom <= 1 or not 0 < slo_headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom} / {slo_headroom}")
    if cpu_per_pod <= 0 or node_allocatable_cpu <= 0:
        raise ValueError(f"cpu per pod ({cpu_per_pod}) and node allocatable CPU ({node_allocatable_cpu}) must be > 0")
    pods_per_node = _floor(node_allocatable_cpu / cpu_per_pod)
    if pods_per_node < 1:
        raise ValueError(
            f"a pod of {cpu_per_pod:g} CPU does not fit on a node with {node_allocatable_cpu:g} allocatable CPU; "
            "raise sizing.node_allocatable_cpu or tune for smaller pods"
        )
    in_flight = rps * latency_s
    candidates: list[tuple[int, str]] = [(max(1, _ceil(in_flight / per_pod_concurrency / headroom)), LATENCY)]
    by_tp = by_slo = None
    if per_pod_rps is not None:
        if per_pod_rps <= 0:
            raise ValueError(f"measured saturation rps per pod must be > 0, got {per_pod_rps}")
        by_tp = max(1, _ceil(rps / (per_pod_rps * headroom)))
        candidates.append((by_tp, THROUGHPUT))
    if per_pod_slo_users is not None:
        if per_pod_slo_users <= 0:
            raise ValueError(
                f"measured users per pod under the SLO must be > 0, got {per_pod_slo_users}: no step met the SLO"
            )
        by_slo = max(1, _ceil(users / (per_pod_slo_users * slo_headroom)))
        candidates.append((by_slo, SLO_USERS))
    pods = max(p for p, _ in candidates)
    binding = " and ".join(name for p, name in candidates if p == pods)
    cores = pods * float(cpu_per_pod)
    nodes = max(_ceil(pods / pods_per_node), _ceil(cores / node_allocatable_cpu))
    cost = cores * price_per_core_hour if price_per_core_hour is not None else None
    label = f"{value:g} {kind}"
    return SizingRow(
        target=label,
        target_kind=kind,
        target_value=float(value),
        pods=pods,
        cores=cores,
        nodes=nodes,
        cost_per_hour=cost,
        binding_constraint=binding,
        rps=rps,
        in_flight=in_flight,
        latency_s=latency_s,
        per_pod_concurrency=per_pod_concurrency,
        headroom=headroom,
        cpu_per_pod=cpu_per_pod,
        node_allocatable_cpu=node_allocatable_cpu,
        pods_per_node=pods_per_node,
        pods_by_latency=candidates[0][0],
        pods_by_throughput=by_tp,
        pods_by_slo_users=by_slo,
        per_pod_rps=per_pod_rps,
        per_pod_slo_users=per_pod_slo_users,
    )


def size_for_users(
    users: int,
    latency_s: float,
    per_pod_concurrency: int,
    *,
    cpu_per_pod: float,
    node_allocatable_cpu: float,
    headroom: float = 0.7,
    price_per_core_hour: float | None = None,
    think_time_s: float = 0.0,
    per_pod_rps: float | None = None,
    per_pod_slo_users: float | None = None,
    slo_headroom: float = 1.0,
) -> SizingRow:
    """Size for `users` simultaneous closed-loop users, each waiting `think_time_s` between requests.

    Each user sends one request per (latency + think time), so rps = users / (latency + think) and
    in flight = rps × latency (= users with no think time). `latency_s` is the per-request latency at the
    operating point (the SLO p95 is a safe upper bound). Per-pod SLO users already sit at the SLO's
    edge, so no extra headroom is applied to them unless `slo_headroom` < 1.
    """
    if users <= 0:
        raise ValueError(f"users must be > 0, got {users}")
    if think_time_s < 0:
        raise ValueError(f"think time must be ≥ 0, got {think_time_s}")
    rps = users / (latency_s + think_time_s) if latency_s > 0 else math.inf
    return _size("users", users, rps, float(users), latency_s, per_pod_concurrency, cpu_per_pod,
                 node_allocatable_cpu, headroom, price_per_core_hour, per_pod_rps, per_pod_slo_users, slo_headroom)


def size_for_rps(
    rps: float,
    latency_s: float,
    per_pod_concurrency: int,
    *,
    cpu_per_pod: float,
    node_allocatable_cpu: float,
    headroom: float = 0.7,
    price_per_core_hour: float | None = None,
    think_time_s: float = 0.0,
    per_pod_rps: float | None = None,
    per_pod_slo_users: float | None = None,
    slo_headroom: float = 1.0,
) -> SizingRow:
    """Size for an arrival rate of `rps`: pods = ceil(rps × latency / per-pod concurrency / headroom).

    For the SLO-users cross-check the rate is turned into users with the same closed-loop model:
    users = rps × (latency + think time).
    """
    if rps <= 0:
        raise ValueError(f"rps must be > 0, got {rps}")
    if think_time_s < 0:
        raise ValueError(f"think time must be ≥ 0, got {think_time_s}")
    users = rps * (latency_s + think_time_s)
    return _size("rps", rps, float(rps), users, latency_s, per_pod_concurrency, cpu_per_pod,
                 node_allocatable_cpu, headroom, price_per_core_hour, per_pod_rps, per_pod_slo_users, slo_headroom)


class _SizingLike(Protocol):
    users: list[int]
    rps: list[float]
    node_allocatable_cpu: float
    price_per_core_hour: float | None
    headroom: float


def size_rows(
    sizing: _SizingLike,
    *,
    latency_s: float,
    per_pod_concurrency: int,
    cpu_per_pod: float,
    per_pod_rps: float | None = None,
    per_pod_slo_users: float | None = None,
    think_time_s: float = 0.0,
) -> list[SizingRow]:
    """Every target of a `SizingConfig` (users first, then rps), sized with the same measured inputs."""
    common: dict[str, Any] = dict(
        cpu_per_pod=cpu_per_pod,
        node_allocatable_cpu=sizing.node_allocatable_cpu,
        headroom=sizing.headroom,
        price_per_core_hour=sizing.price_per_core_hour,
        think_time_s=think_time_s,
        per_pod_rps=per_pod_rps,
        per_pod_slo_users=per_pod_slo_users,
    )
    rows = [size_for_users(u, latency_s, per_pod_concurrency, **common) for u in sizing.users]
    rows += [size_for_rps(r, latency_s, per_pod_concurrency, **common) for r in sizing.rps]
    return rows


class _SloLike(Protocol):
    p95_ms: float
    max_error_rate: float


SLO_CAPACITY_COLUMNS = ["replicas", "cpu", "cores", "slo_users", "slo_rps", "p95_ms", "error_rate",
                        "users_per_pod", "steps"]


def slo_capacity_by_cores(steps: pd.DataFrame, slo: _SloLike) -> pd.DataFrame:
    """For each (replicas, cpu) pod layout: the largest users with p95 < SLO and error rate ≤ the max.

    Only usable steps count (valid, not generator-bound); a step without a p95 does not pass. `cores`
    is replicas × cpu, or replicas when CPU was unlimited (cpu empty). A layout where no step passed
    gets 0 users. When several steps passed at the largest users (repeated windows) their rps is
    averaged and the worst p95 kept. Filter `steps` by stage first if only one stage should count.
    """
    if steps.empty:
        return pd.DataFrame(columns=SLO_CAPACITY_COLUMNS)
    frame = steps.loc[usable_mask(steps)].copy()
    if frame.empty:
        return pd.DataFrame(columns=SLO_CAPACITY_COLUMNS)
    frame["cpu"] = pd.to_numeric(frame.get("cpu"), errors="coerce")
    p95 = pd.to_numeric(frame["p95_ms"], errors="coerce")
    errors = pd.to_numeric(frame["error_rate"], errors="coerce").fillna(1.0)
    frame["_pass"] = (p95 < slo.p95_ms) & (errors <= slo.max_error_rate)
    out = []
    for (replicas, cpu), group in frame.groupby(["replicas", "cpu"], dropna=False, sort=True):
        cores = replicas * cpu if pd.notna(cpu) else float(replicas)
        passing = group[group["_pass"]]
        if passing.empty:
            users, rps, worst_p95, err = 0, 0.0, np.nan, np.nan
        else:
            users = int(passing["users"].max())
            top = passing[passing["users"] == users]
            rps = float(pd.to_numeric(top["rps"]).mean())
            worst_p95 = float(pd.to_numeric(top["p95_ms"]).max())
            err = float(pd.to_numeric(top["error_rate"]).max())
        out.append({
            "replicas": int(replicas), "cpu": None if pd.isna(cpu) else float(cpu), "cores": float(cores),
            "slo_users": users, "slo_rps": rps, "p95_ms": worst_p95, "error_rate": err,
            "users_per_pod": users / replicas, "steps": int(len(group)),
        })
    return pd.DataFrame(out, columns=SLO_CAPACITY_COLUMNS).sort_values(["cores", "replicas"]).reset_index(drop=True)


def max_replicas(wanted: int, cpu_per_pod: float | None, allocatable_cpu: float | None) -> int:
    """How many pods the scaling stage can run: `wanted`, bounded by allocatable cores / CPU per pod.

    At least 1; unbounded (`wanted`) when either the pod's CPU or the allocatable cores is unknown.
    """
    if allocatable_cpu and cpu_per_pod:
        return max(1, min(wanted, int(math.floor(allocatable_cpu / cpu_per_pod + 1e-9))))
    return wanted


@dataclass(frozen=True)
class Capacity:
    """A saturation point as a stage measured it: on `replicas` pods (SLO users when the stage found them)."""

    rps: float | None
    users: int | None
    slo_users: int | None = None
    replicas: int = 1


@dataclass(frozen=True)
class PerPod:
    """What one pod of the chosen size does, and where that figure comes from."""

    rps: float
    users: int
    slo_users: float | None
    source: str


def per_pod_capacity(one_pod: Capacity | None, ramp: Capacity | None, ramp_stage: str = "ramp") -> PerPod | None:
    """One pod's saturation: measured on one pod (scaling) when there is such a point, else the ramp's
    figures divided by the pods it ran on (throughput and SLO users per pod; users rounded, at least 1).

    Sizing (rps and SLO users per pod) and autoscaling (the offered load) both take it from here.
    """
    if one_pod is not None and one_pod.rps and one_pod.users:
        return PerPod(one_pod.rps / one_pod.replicas, max(1, round(one_pod.users / one_pod.replicas)),
                      None if one_pod.slo_users is None else one_pod.slo_users / one_pod.replicas,
                      f"scaling at {one_pod.replicas} pod(s)")
    if ramp is not None and ramp.rps and ramp.users:
        n = ramp.replicas
        return PerPod(ramp.rps / n, max(1, round(ramp.users / n)),
                      None if ramp.slo_users is None else ramp.slo_users / n, f"{ramp_stage} / {n} pod(s)")
    return None
