"""From measured per-pod rates to a budget: pods, cores, nodes and cost for a number of users or rps.

The model a platform engineer checks by hand:

- one pod sustains `per-pod rate = min(headroom x its saturation rps, the highest rate verified open-loop
  under the SLO)`; pods for a target rate = ceil(target / per-pod rate);
- a user target becomes a rate through its think time and the MEAN latency measured at the per-pod rate:
  each user sends one request per (think time + latency);
- Little's law (in flight = rate x mean latency) says how many requests the pods must hold at once. It
  binds only where that exceeds what the tuned pods were measured to hold within the SLO (closed-loop
  users under the SLO per pod); then pods = ceil(in flight / held per pod).

Every row names the constraint that bound it and says why in one sentence with the numbers, because
"why 8 pods and not 6" is the first question a budget gets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping

import numpy as np
import pandas as pd

from nightcap.analysis.figures import rate_text
from nightcap.analysis.saturation import usable_mask
from nightcap.analysis.slo import Slo, level_of

if TYPE_CHECKING:
    from nightcap.config_sections import SizingConfig

RATE = "per-pod rate"
CONCURRENCY = "concurrency (Little's law)"


def _ceil(x: float) -> int:
    """ceil that ignores float dust: 0.7 x 10 / 0.7 is 10, not 11."""
    return math.ceil(x - 1e-9 * max(1.0, abs(x)))


def _floor(x: float) -> int:
    return math.floor(x + 1e-9 * max(1.0, abs(x)))


@dataclass(frozen=True)
class SizingInputs:
    """What one pod of the chosen size was measured to do: the sizing model's only inputs."""

    saturation_rps: float  # closed-loop saturation of one pod
    headroom: float  # share of saturation to operate at (0.7)
    mean_latency_s: float  # open-loop mean latency measured at the per-pod rate
    slo_rate_rps: float | None = None  # highest rate one pod met the SLO at, open loop (None: not searched)
    in_flight_held: float | None = None  # requests one pod held at once within the SLO (closed-loop users)
    verified_rate_rps: float | None = None  # the rate per pod the open-loop check passed at (None: not checked)

    def __post_init__(self) -> None:
        if not self.saturation_rps > 0 or not math.isfinite(self.saturation_rps):
            raise ValueError(f"per-pod saturation rps must be > 0, got {self.saturation_rps}")
        if not 0 < self.headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {self.headroom}")
        if not self.mean_latency_s > 0 or not math.isfinite(self.mean_latency_s):
            raise ValueError(f"mean latency must be a positive number of seconds, got {self.mean_latency_s}")
        if self.slo_rate_rps is not None and self.slo_rate_rps <= 0:
            raise ValueError(f"SLO rate per pod must be > 0, got {self.slo_rate_rps}: no rate met the SLO")
        if self.in_flight_held is not None and self.in_flight_held <= 0:
            raise ValueError(f"in flight held per pod must be > 0, got {self.in_flight_held}")
        if self.verified_rate_rps is not None and self.verified_rate_rps <= 0:
            raise ValueError(f"verified rate per pod must be > 0, got {self.verified_rate_rps}")

    @property
    def rate_rps(self) -> float:
        """The rate one pod sustains: the rate verified open loop under the SLO (never above headroom x
        saturation); unverified, headroom x saturation, or less where the SLO held only below it."""
        if self.verified_rate_rps is not None:
            return min(self.verified_rate_rps, self.headroom * self.saturation_rps)
        return min(self.headroom * self.saturation_rps, self.slo_rate_rps or math.inf)

    @property
    def rate_from(self) -> str:
        if self.verified_rate_rps is not None:
            if self.verified_rate_rps > self.headroom * self.saturation_rps:
                return (f"{self.headroom:.0%} of the {rate_text(self.saturation_rps)} rps one pod saturates at "
                        f"(the SLO was verified open loop at {rate_text(self.verified_rate_rps)} rps, above it)")
            return f"verified open loop: the SLO held at {rate_text(self.verified_rate_rps)} rps per pod"
        if self.slo_rate_rps is not None and self.slo_rate_rps < self.headroom * self.saturation_rps:
            return f"the SLO held up to {rate_text(self.slo_rate_rps)} rps, below {self.headroom:.0%} of saturation"
        return f"{self.headroom:.0%} of the {rate_text(self.saturation_rps)} rps one pod saturates at"


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
    reason: str  # the arithmetic in words
    rps: float  # the arrival rate the target implies
    think_time_s: float
    mean_latency_s: float
    per_pod_rate_rps: float
    per_pod_rate_from: str
    per_pod_saturation_rps: float
    per_pod_slo_rate_rps: float | None
    headroom: float
    pods_by_rate: int
    in_flight: float  # rps x mean latency (Little's law)
    in_flight_per_pod: float  # at pods_by_rate pods
    per_pod_in_flight_held: float | None
    pods_by_concurrency: int | None  # None when nothing was measured to hold
    cpu_per_pod: float
    node_allocatable_cpu: float
    pods_per_node: int
    node_type: str = "custom"
    node_allocatable_memory: int | None = None
    memory_per_pod: int | None = None
    node_price_per_hour: float | None = None  # cost_per_hour = nodes x this
    packing: str = ""  # how many pods a node holds, and which resource decided it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _g(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


@dataclass(frozen=True)
class Node:
    """A node type pods are packed onto (allocatable CPU and memory) and its hourly price."""

    allocatable_cpu: float
    allocatable_memory: int | None = None
    price_per_hour: float | None = None
    type: str = "custom"


def pack(cpu_per_pod: float, memory_per_pod: int | None, node: Node) -> tuple[int, str]:
    """Pods per node: as many as its allocatable CPU and (when both are known) memory hold, and why in words."""
    if cpu_per_pod <= 0 or node.allocatable_cpu <= 0:
        raise ValueError(f"cpu per pod ({cpu_per_pod}) and node allocatable CPU ({node.allocatable_cpu}) must be > 0")
    by_cpu = _floor(node.allocatable_cpu / cpu_per_pod)
    words = f"{node.type}: {node.allocatable_cpu:g} allocatable CPU / {cpu_per_pod:g} = {by_cpu} pod(s)"
    fits = by_cpu
    if memory_per_pod and node.allocatable_memory:
        by_mem = _floor(node.allocatable_memory / memory_per_pod)
        words += (f", {node.allocatable_memory / 2**30:.3g} GiB allocatable memory / {memory_per_pod / 2**30:.3g} GiB = "
                  f"{by_mem} pod(s)")
        fits = min(by_cpu, by_mem)
        words += f": {fits} per node ({'memory' if by_mem < by_cpu else 'CPU'} decides)"
    if fits < 1:
        raise ValueError(f"a pod of {cpu_per_pod:g} CPU"
                         + (f" and {memory_per_pod / 2**30:.3g} GiB" if memory_per_pod else "")
                         + f" does not fit on a {node.type} node ({words}); set sizing.node to a larger node type "
                         "or tune for smaller pods")
    return fits, words


def _size(kind: Literal["users", "rps"], value: float, rps: float, think_time_s: float, pod: SizingInputs,
          cpu_per_pod: float, node_allocatable_cpu: float, price_per_core_hour: float | None,
          rate_words: str, node: Node | None = None, memory_per_pod: int | None = None) -> SizingRow:
    if node is None:  # the per-core settings: a CPU-only node priced as its cores
        node = Node(node_allocatable_cpu, None,
                    None if price_per_core_hour is None else price_per_core_hour * node_allocatable_cpu)
    pods_per_node, packing = pack(cpu_per_pod, memory_per_pod, node)
    per_pod = pod.rate_rps
    by_rate = max(1, _ceil(rps / per_pod))
    latency = pod.mean_latency_s
    in_flight = rps * latency
    per_pod_in_flight = in_flight / by_rate
    by_conc = None if pod.in_flight_held is None else max(1, _ceil(in_flight / pod.in_flight_held))
    binds_conc = by_conc is not None and by_conc > by_rate
    pods = by_conc if binds_conc else by_rate
    assert pods is not None
    words = (f"{rate_words}{_g(rps)} rps / {rate_text(per_pod)} rps per pod ({pod.rate_from}) = {rps / per_pod:.2f} "
             f"-> {by_rate} pod(s). In flight: {_g(rps)} rps x {1000 * latency:.3g} ms mean latency = "
             f"{_g(in_flight)} requests, {_g(per_pod_in_flight)} per pod")
    if pod.in_flight_held is None:
        words += "; no measurement of what a pod holds under the SLO, so concurrency was not checked."
    elif binds_conc:
        words += (f", more than the {_g(pod.in_flight_held)} a pod held within the SLO: "
                  f"{_g(in_flight)} / {_g(pod.in_flight_held)} -> {by_conc} pods (concurrency binds).")
    else:
        words += f", within the {_g(pod.in_flight_held)} a pod held within the SLO (concurrency does not bind)."
    cores = pods * float(cpu_per_pod)
    nodes = _ceil(pods / pods_per_node)
    words += f" Nodes: {pods} pod(s) / {pods_per_node} per node ({packing}) -> {nodes} node(s)"
    words += (f", {nodes} x ${node.price_per_hour:.4g}/h = ${nodes * node.price_per_hour:.2f}/h."
              if node.price_per_hour is not None else ".")
    return SizingRow(
        target=f"{value:g} {kind}", target_kind=kind, target_value=float(value), pods=pods, cores=cores,
        nodes=nodes, cost_per_hour=None if node.price_per_hour is None else nodes * node.price_per_hour,
        binding_constraint=CONCURRENCY if binds_conc else RATE, reason=words, rps=rps, think_time_s=think_time_s,
        mean_latency_s=latency, per_pod_rate_rps=per_pod, per_pod_rate_from=pod.rate_from,
        per_pod_saturation_rps=pod.saturation_rps, per_pod_slo_rate_rps=pod.slo_rate_rps, headroom=pod.headroom,
        pods_by_rate=by_rate, in_flight=in_flight, in_flight_per_pod=per_pod_in_flight,
        per_pod_in_flight_held=pod.in_flight_held, pods_by_concurrency=by_conc, cpu_per_pod=cpu_per_pod,
        node_allocatable_cpu=node.allocatable_cpu, pods_per_node=pods_per_node, node_type=node.type,
        node_allocatable_memory=node.allocatable_memory, memory_per_pod=memory_per_pod,
        node_price_per_hour=node.price_per_hour, packing=packing,
    )


def size_for_rps(rps: float, pod: SizingInputs, *, cpu_per_pod: float, node_allocatable_cpu: float = 0.0,
                 price_per_core_hour: float | None = None, node: Node | None = None,
                 memory_per_pod: int | None = None) -> SizingRow:
    """Pods for an arrival rate: ceil(rps / per-pod rate), unless Little's law needs more; nodes by packing."""
    if not rps > 0:
        raise ValueError(f"rps must be > 0, got {rps}")
    return _size("rps", rps, float(rps), 0.0, pod, cpu_per_pod, node_allocatable_cpu, price_per_core_hour, "",
                 node, memory_per_pod)


def size_for_users(users: int, pod: SizingInputs, *, think_time_s: float, cpu_per_pod: float,
                   node_allocatable_cpu: float = 0.0, price_per_core_hour: float | None = None,
                   node: Node | None = None, memory_per_pod: int | None = None) -> SizingRow:
    """Pods for `users` people who each wait `think_time_s` between requests.

    Each sends one request per (think time + mean latency at the per-pod rate), so the rate is
    users / (think + latency); with no think time every user is always in flight.
    """
    if users <= 0:
        raise ValueError(f"users must be > 0, got {users}")
    if think_time_s < 0:
        raise ValueError(f"think time must be >= 0, got {think_time_s}")
    cycle = think_time_s + pod.mean_latency_s
    rps = users / cycle
    words = (f"{users:g} users x 1 request per ({think_time_s:g} s think + {1000 * pod.mean_latency_s:.3g} ms mean "
             f"latency) = {_g(rps)} rps; ")
    return _size("users", users, rps, think_time_s, pod, cpu_per_pod, node_allocatable_cpu, price_per_core_hour,
                 words, node, memory_per_pod)


def size_rows(sizing: "SizingConfig", pod: SizingInputs, *, cpu_per_pod: float,
              memory_per_pod: int | None = None) -> list[SizingRow]:
    """Every target of a `SizingConfig` (users first, then rps), sized from the same measured pod, packed onto
    its node type (`sizing.node`)."""
    t = sizing.node_type
    node = Node(t.allocatable_cpu, t.allocatable_memory, t.price_per_hour, t.type)
    common: dict[str, Any] = dict(cpu_per_pod=cpu_per_pod, node=node, memory_per_pod=memory_per_pod)
    rows = [size_for_users(u, pod, think_time_s=sizing.think_time_s, **common) for u in sizing.users]
    rows += [size_for_rps(r, pod, **common) for r in sizing.rps]
    return rows


@dataclass(frozen=True)
class ValidationRow:
    """The model's throughput for N pods beside what the scaling stage measured at N pods."""

    replicas: int
    predicted_saturation_rps: float  # N x one pod's saturation: the model scales linearly
    measured_saturation_rps: float
    error: float  # predicted / measured - 1
    predicted_rate_rps: float  # N x the per-pod rate the sizing rows use
    # one pod in the windows paired with these N pods, and N pods' efficiency against it (with its 95% interval):
    # the prediction's pod figure was measured at other times, and a pod whose rate moves between them makes the
    # prediction look wrong where the scaling is not
    paired_one_pod_rps: float | None = None
    efficiency: float | None = None
    efficiency_ci: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_against_scaling(pod: SizingInputs, measured: dict[int, float],
                             paired: Mapping[int, tuple[float | None, float | None, list[float] | None]] | None = None,
                             ) -> list[ValidationRow]:
    """For each pod count scaling measured (replicas -> saturation rps), the model's figure and its error; `paired`
    (replicas -> one pod's rps in the same pairs, the efficiency, its interval) says what the pairs found."""
    rows = []
    for n, rps in sorted(measured.items()):
        if not rps or rps <= 0:
            continue
        predicted = n * pod.saturation_rps
        one, eff, ci = (paired or {}).get(n) or (None, None, None)
        rows.append(ValidationRow(n, predicted, rps, predicted / rps - 1, n * pod.rate_rps, one, eff, ci))
    return rows


SLO_CAPACITY_COLUMNS = ["replicas", "cpu", "cores", "slo_users", "slo_rps", "p95_ms", "error_rate",
                        "users_per_pod", "steps", "slo_exceeded"]


def slo_capacity_by_cores(steps: pd.DataFrame, slo: Slo) -> pd.DataFrame:
    """For each (replicas, cpu) pod layout: the most users whose level met the SLO.

    A users level is judged as the search judges it (`slo.level_of`): the median p95 and the mean error rate of
    all its usable windows (valid, not generator-bound), whichever stage measured them. Not the most users that
    passed in *any* window (the luckiest window: the table once said 16 users at p95 190 ms while the ramp beside
    it failed 16 users at 310 ms), nor in *every* window (the table then said 8 users where the headline, from the
    same windows, said 20 fit). A level whose windows have no p95 does not pass.
    `cores` is replicas × cpu, or replicas when CPU was unlimited (cpu empty); a layout where no level passed
    gets 0 users. `slo_exceeded` says whether a level with more users failed: when none did, the layout was
    simply not pushed further and `slo_users` is a lower bound, not its capacity. Filter `steps` by stage first
    if only one stage should count.
    """
    if steps.empty:
        return pd.DataFrame(columns=SLO_CAPACITY_COLUMNS)
    frame = steps.loc[usable_mask(steps)].copy()
    if frame.empty:
        return pd.DataFrame(columns=SLO_CAPACITY_COLUMNS)
    frame["cpu"] = pd.to_numeric(frame.get("cpu"), errors="coerce")
    out = []
    for (replicas, cpu), group in frame.groupby(["replicas", "cpu"], dropna=False, sort=True):
        cores = replicas * cpu if pd.notna(cpu) else float(replicas)
        judged = {int(users): level_of(pd.to_numeric(rows["p95_ms"], errors="coerce"),  # NaN: no p95
                                       pd.to_numeric(rows["error_rate"], errors="coerce").fillna(1.0))
                  for users, rows in group.groupby("users")}
        levels = pd.Series({u: slo.met(p95, err) for u, (p95, err) in judged.items()}, dtype=bool).sort_index()
        passed = levels[levels]
        users = int(passed.index.max()) if len(passed) else 0
        top = group[group["users"] == users]
        rps = float(pd.to_numeric(top["rps"]).mean()) if users else 0.0
        p95, err = judged[users] if users else (np.nan, np.nan)
        out.append({
            "replicas": int(replicas), "cpu": None if pd.isna(cpu) else float(cpu), "cores": float(cores),
            "slo_users": users, "slo_rps": rps, "p95_ms": p95, "error_rate": err,
            "users_per_pod": users / replicas, "steps": int(len(group)),
            "slo_exceeded": bool((~levels[levels.index > users]).any()),
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
class PerPod:
    """What one pod of the chosen size does, and where that figure comes from."""

    rps: float
    users: int
    slo_users: float | None
    source: str
    rps_low: float | None = None  # the lower end of the figure's 95% interval (None: not known)
    # the open-loop rate per pod the operating-point check met the SLO at (the operating rate, or the rate it
    # backed off to; None: no check, or no rate met it), and whether it backed off below the operating point
    slo_rate_rps: float | None = None
    backed_off: bool = False

    @property
    def held_share(self) -> float | None:
        """The share of the figure one pod held the SLO at open loop when the check backed off below the operating
        point (None when it did not: the operating point holds, or nothing is known)."""
        if not self.backed_off or self.slo_rate_rps is None or self.rps <= 0:
            return None
        return self.slo_rate_rps / self.rps
