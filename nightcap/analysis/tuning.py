"""The pure half of the fine-tune stage: judge each pod size from its measured windows, and choose one.

A pod size is a `Candidate` (CPU limit, memory limit, server concurrency). The flow measures a candidate
(saturation search on a few replicas); `measured` turns its windows into a `CandidateResult`, and `choose`
picks the winner with a reason. Which candidate to measure next: `nightcap.analysis.tune_planner`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from nightcap.quantities import format_memory
from nightcap.steps import StepRow

PEGGED_PCT = 85.0  # per-pod CPU use (% of its limit) above which CPU is the limit
TIE = 0.03  # rps per core within this share of another's is as good (choose, the planner's pruning, tune_pairs)
IDLE_PCT = 60.0  # below this the pod waits on something else: its concurrency


@dataclass(frozen=True, order=True)
class Candidate:
    """One pod size to try: CPU limit in cores, memory limit in bytes, server concurrency (workers/slots)."""

    cpu: float
    memory: int
    concurrency: int

    def label(self) -> str:
        return f"cpu={self.cpu:g} memory={format_memory(self.memory)} concurrency={self.concurrency}"


@dataclass(frozen=True)
class CandidateResult:
    """What one candidate did; `rps_per_core` is saturation rps / (cpu × replicas measured)."""

    candidate: Candidate
    saturation_rps: float
    rps_per_core: float
    p95_ms: float | None  # at the operating point
    cpu_use_pct: float | None  # per-pod mean CPU use, % of its limit
    memory_peak_pct: float | None  # per-pod peak memory, % of its limit
    oom_kills: int
    restarts: int
    meets_slo: bool
    verdict: str
    unschedulable: bool = False  # no node had room for pods of this size: not measured, never chosen
    rps_halfwidth: float | None = None  # 95% half-width of saturation_rps (None: not measured in sub-windows)

    @property
    def relative_noise(self) -> float:
        """The half-width as a share of the figure (0 when unknown)."""
        if not self.rps_halfwidth or self.saturation_rps <= 0:
            return 0.0
        return self.rps_halfwidth / self.saturation_rps

    def to_dict(self) -> dict[str, object]:
        """Flat row for summary.json `tuning.candidates` and the candidates table."""
        return {
            "cpu": self.candidate.cpu,
            "memory": self.candidate.memory,
            "memory_label": format_memory(self.candidate.memory),
            "concurrency": self.candidate.concurrency,
            "saturation_rps": self.saturation_rps,
            "rps_per_core": self.rps_per_core,
            "p95_ms": self.p95_ms,
            "cpu_use_pct": self.cpu_use_pct,
            "memory_peak_pct": self.memory_peak_pct,
            "oom_kills": self.oom_kills,
            "restarts": self.restarts,
            "meets_slo": self.meets_slo,
            "verdict": self.verdict,
            "unschedulable": self.unschedulable,
            "rps_halfwidth": self.rps_halfwidth,
        }


def spelled_times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def verdict(
    cpu_use_pct: float | None,
    memory_peak_pct: float | None = None,
    oom_kills: int = 0,
    restarts: int = 0,
    meets_slo: bool = True,
    *,
    pegged_pct: float = PEGGED_PCT,
    idle_pct: float = IDLE_PCT,
) -> str:
    """What limited this pod, in the words an engineer would use when watching it by hand.

    Memory trouble first (it invalidates the rest), then CPU pegged or idle; an SLO miss is appended.
    """
    if oom_kills > 0:
        text = f"memory too small (OOM-killed {spelled_times(oom_kills)})"
    elif restarts > 0:
        text = f"unstable (restarted {spelled_times(restarts)} without an OOM kill)"
    elif cpu_use_pct is None:
        text = "CPU use not measured"
    elif cpu_use_pct >= pegged_pct:
        text = f"CPU-bound (pegged at {cpu_use_pct:.0f}% of its limit)"
    elif memory_peak_pct is not None and memory_peak_pct >= 90:
        text = f"memory nearly full (peak {memory_peak_pct:.0f}% of its limit)"
    elif cpu_use_pct < idle_pct:
        text = f"under-used (CPU {cpu_use_pct:.0f}%): concurrency is the limit"
    else:
        text = f"balanced (CPU {cpu_use_pct:.0f}%)"
    if not meets_slo:
        text += "; misses the SLO"
    return text


def evaluate(
    candidate: Candidate,
    *,
    replicas: int,
    saturation_rps: float,
    p95_ms: float | None,
    cpu_use_pct: float | None,
    memory_peak_pct: float | None,
    oom_kills: int = 0,
    restarts: int = 0,
    meets_slo: bool,
    rps_halfwidth: float | None = None,
) -> CandidateResult:
    """Build a result from the flow's measurements: rps per core over all replicas, and the verdict."""
    if replicas < 1:
        raise ValueError(f"replicas must be ≥ 1, got {replicas}")
    cores = candidate.cpu * replicas
    return CandidateResult(
        candidate=candidate,
        saturation_rps=saturation_rps,
        rps_per_core=saturation_rps / cores if cores > 0 else 0.0,
        p95_ms=p95_ms,
        cpu_use_pct=cpu_use_pct,
        memory_peak_pct=memory_peak_pct,
        oom_kills=oom_kills,
        restarts=restarts,
        meets_slo=meets_slo,
        verdict=verdict(cpu_use_pct, memory_peak_pct, oom_kills, restarts, meets_slo),
        rps_halfwidth=rps_halfwidth,
    )


def no_room(candidate: Candidate, reason: str) -> CandidateResult:
    """A candidate whose pods could not be scheduled: a fact about the cluster's room, not a 0-rps model."""
    return CandidateResult(candidate=candidate, saturation_rps=0.0, rps_per_core=0.0, p95_ms=None, cpu_use_pct=None,
                           memory_peak_pct=None, oom_kills=0, restarts=0, meets_slo=False,
                           verdict=f"no room for this pod size ({reason})", unschedulable=True)


class SearchLevel(Protocol):
    """One user count of the candidate's search (`nightcap.search.Level`): what the p95 is read from."""

    users: int
    good: bool
    p95_ms: float | None


def operating_p95(levels: Sequence[SearchLevel], operating_users: int | None) -> float | None:
    """p95 at the operating point's level, else at the highest good level below it (the operating point may
    fall between levels)."""
    users = operating_users or 0
    at = next((lv for lv in levels if lv.users == users), None)
    if at is not None:
        return at.p95_ms
    below = [lv for lv in levels if lv.good and lv.users <= users]
    return below[-1].p95_ms if below else None


def measured(candidate: Candidate, *, replicas: int, steps: Sequence[StepRow], saturation_users: int | None,
             saturation_rps: float | None, p95_ms: float | None,
             rps_halfwidth: float | None = None) -> CandidateResult:
    """A searched candidate's result from its windows (`steps`, this candidate's only).

    CPU use is read at the knee, where the pod is busiest (the busiest replica's mean); memory is the peak over
    every window, as a share of the limit; a search that found no knee did not meet the SLO."""
    at_knee = [s for s in steps if s.users == saturation_users and s.valid] or list(steps)
    cpu_use = [statistics.fmean(s.replica_cpu_pct) for s in at_knee if s.replica_cpu_pct]
    mem_peak = max((max(s.replica_memory_mb) for s in steps if s.replica_memory_mb), default=None)
    return evaluate(
        candidate, replicas=replicas, saturation_rps=saturation_rps or 0.0, p95_ms=p95_ms,
        cpu_use_pct=max(cpu_use) if cpu_use else None,
        memory_peak_pct=100.0 * mem_peak * 2**20 / candidate.memory if mem_peak and candidate.memory else None,
        oom_kills=sum(s.oom_kills for s in steps), restarts=sum(s.restarts for s in steps),
        meets_slo=saturation_rps is not None, rps_halfwidth=rps_halfwidth)


def failed(candidate: Candidate, *, replicas: int, error: str, oom_kills: int, restarts: int) -> CandidateResult:
    """A candidate whose pods crashed or never got ready: a measured answer (0 rps), an OOM kill when the
    platform said so even if the pods' counters missed it."""
    return evaluate(candidate, replicas=replicas, saturation_rps=0.0, p95_ms=None, cpu_use_pct=None,
                    memory_peak_pct=None, oom_kills=max(oom_kills, 1 if "OOM" in error else 0), restarts=restarts,
                    meets_slo=False)


def eligible(result: CandidateResult) -> bool:
    """Can this candidate be chosen at all: it met the SLO, was never OOM-killed and served something."""
    return result.meets_slo and result.oom_kills == 0 and result.saturation_rps > 0


@dataclass(frozen=True)
class Choice:
    """The chosen candidate (None when nothing qualifies) and the sentence that explains it."""

    result: CandidateResult | None
    reason: str

    @property
    def candidate(self) -> Candidate | None:
        return self.result.candidate if self.result else None


def choose(results: Iterable[CandidateResult], tie: float = TIE) -> Choice:
    """Best rps per core among eligible candidates; among those tied with the best, less memory, then less CPU wins.

    Tied: within `tie` of the best, or within the two figures' combined 95% noise (`tied_within`): a candidate
    the measurement cannot tell from the best is not worse, and choosing between such by their noisy figures
    chose a different pod in four of five otherwise identical runs (bench/consistency). Smaller allocations pack
    more pods per node, so among equals the smaller pod wins, then the lower concurrency (less queueing; and
    concurrency 1 and 2 of one pod size traded places on noise in the same benchmark), then the higher rps per core.
    """
    results = list(results)
    ok = [r for r in results if eligible(r)]
    if not ok:
        oom = sum(1 for r in results if r.oom_kills)
        room = sum(1 for r in results if r.unschedulable)
        slo = sum(1 for r in results if not r.meets_slo and not r.unschedulable)
        fix = "add larger memory or CPU to the tune grid, or relax the SLO"
        if room:
            fix = ("make room in the node pool (more or larger nodes) or add smaller pod sizes to the tune grid; "
                   + fix)
        return Choice(None, f"no candidate of {len(results)} met the SLO without an OOM kill "
                            f"({oom} were OOM-killed, {slo} missed the SLO, {room} found no room on the nodes): "
                            + fix)
    top = max(ok, key=lambda r: r.rps_per_core)
    tied = [r for r in ok if r.rps_per_core >= top.rps_per_core * (1 - tied_within(r, top, tie))]
    pick = min(tied, key=lambda r: (r.candidate.memory, r.candidate.cpu, r.candidate.concurrency, -r.rps_per_core))
    reason = (f"{pick.candidate.label()}: {pick.rps_per_core:.0f} rps per core "
              f"({pick.saturation_rps:.0f} rps, {pick.verdict})")
    if pick.rps_per_core >= top.rps_per_core:
        reason += f", the best of {len(ok)} candidates that met the SLO without an OOM kill"
    else:
        reason += (f", within {tied_within(pick, top, tie):.0%} of the best ({top.candidate.label()} at "
                   f"{top.rps_per_core:.0f}) of {len(ok)} candidates that met the SLO without an OOM kill")
    if len(tied) > 1:
        reason += (f"; {len(tied) - 1} other(s) as good within the noise lost the tie-break (less memory, then less "
                   f"CPU, then lower concurrency wins)")
    return Choice(pick, reason)


def tied_within(r: CandidateResult, top: CandidateResult, tie: float) -> float:
    """How far under the best `r` may be and still tie: `tie`, or the two figures' combined relative 95%
    half-width when that is wider."""
    return max(tie, math.hypot(r.relative_noise, top.relative_noise))
