"""Which pod size the fine-tune stage measures next, without walking the whole grid.

The planner rests on three assumptions, stated so a reader can judge them:
  1. more memory never lowers throughput, so the smallest memory that neither OOMs nor loses throughput
     against the largest can be found by bisection at one (CPU, concurrency) point;
  2. more CPU never lowers throughput at the same concurrency, so a measurement at a larger CPU bounds
     the rps per core every smaller CPU can reach at that concurrency (candidates whose bound cannot
     reach the best so far are pruned);
  3. past the point where throughput stops growing, the SLO fails, memory runs out or CPU is pegged,
     more concurrency only adds queueing, so the climb for that CPU stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generator, Iterable, Sequence

from nightcap.analysis.tuning import PEGGED_PCT, TIE, Candidate, CandidateResult, eligible, spelled_times, tied_within
from nightcap.quantities import format_memory

_Plan = Generator[Candidate, CandidateResult, None]


@dataclass
class TunePlanner:
    """Says which candidate to measure next; the flow measures it and passes every result back.

    Use: `while (c := planner.next_candidate(results)) is not None: results.append(measure(c))`.
    Never asks for a candidate twice (nor one already in `results`), and asks for at most the grid size.
    `notes` records each decision (memory settled, candidates pruned, climbs stopped) for the report.
    """

    cpus: Sequence[float]
    memories: Sequence[int]
    concurrencies: Sequence[int]
    min_gain: float = 0.05  # keep climbing concurrency while throughput grows at least this much
    memory_loss: float = 0.05  # a smaller memory may lose this much throughput (noise) against the largest
    tie: float = TIE  # as in `choose`: a pruned candidate must not even be able to tie
    noise: float = 0.05  # measurements may be this much off when bounding a candidate
    pegged_pct: float = PEGGED_PCT
    notes: list[str] = field(default_factory=list)
    memory: int | None = None  # settled memory (after phase 1)
    asked: list[Candidate] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cpus or not self.memories or not self.concurrencies:
            raise ValueError("the tune grid needs at least one cpu, memory and concurrency value")
        self.cpus = sorted(set(float(c) for c in self.cpus))
        self.memories = sorted(set(int(m) for m in self.memories))
        self.concurrencies = sorted(set(int(c) for c in self.concurrencies))
        self._known: dict[Candidate, CandidateResult] = {}
        self._plan: _Plan = self._steps()
        self._pending: Candidate | None = None
        self._done = False

    @classmethod
    def from_config(cls, tune: object, **kw: float) -> "TunePlanner":
        """From a `TuneConfig` (cpu, memory, concurrency lists)."""
        return cls(tune.cpu, tune.memory, tune.concurrency, **kw)  # type: ignore[attr-defined]

    @property
    def grid_size(self) -> int:
        return len(self.cpus) * len(self.memories) * len(self.concurrencies)

    @property
    def measured(self) -> int:
        """Candidates this planner asked for (what the summary reports against `grid_size`)."""
        return len(self.asked)

    def next_candidate(self, results_so_far: Iterable[CandidateResult]) -> Candidate | None:
        """The next candidate to measure, or None when the search is over.

        Raises ValueError when the candidate asked for last has no result in `results_so_far`:
        a flow that could not measure it should still pass a result (e.g. 0 rps, meets_slo False).
        """
        for result in results_so_far:
            self._known.setdefault(result.candidate, result)
        if self._done:
            return None
        try:
            if self._pending is None:
                nxt = next(self._plan)
            else:
                if self._pending not in self._known:
                    raise ValueError(f"no result for {self._pending.label()} yet: measure it and pass its CandidateResult")
                nxt = self._plan.send(self._known[self._pending])
        except StopIteration:
            self._done, self._pending = True, None
            return None
        self._pending = nxt
        self.asked.append(nxt)
        return nxt

    # the plan, as a generator that yields what it needs measured and receives the result

    def _get(self, c: Candidate) -> Generator[Candidate, CandidateResult, CandidateResult]:
        if c in self._known:
            return self._known[c]
        result = yield c
        return result

    def _steps(self) -> _Plan:
        cmax = self.cpus[-1]
        cmid = self.concurrencies[len(self.concurrencies) // 2]
        mems = self.memories
        ref = yield from self._reference(cmid)
        cmax = ref.candidate.cpu
        mems = [m for m in mems if m <= ref.candidate.memory]
        if ref.unschedulable:
            self.memory = mems[-1]
            self.notes.append("no pod size of the grid found room on the nodes")
        elif len(mems) == 1:
            self.memory = mems[0]
        elif ref.oom_kills or ref.restarts:
            self.memory = mems[-1]
            self.notes.append(f"even the largest memory was OOM-killed or restarted at {ref.candidate.label()}: "
                              "memory settled at the largest; add a larger memory value to the tune grid")
        else:
            lo, hi = 0, len(mems) - 1  # mems[hi] is known good
            while lo < hi:
                mid = (lo + hi) // 2
                r = yield from self._get(Candidate(cmax, mems[mid], cmid))
                if r.oom_kills == 0 and r.restarts == 0 and not self._lost_throughput(r, ref):
                    hi = mid
                else:
                    lo = mid + 1
                    why = (f"OOM-killed {spelled_times(r.oom_kills)}" if r.oom_kills else
                           f"restarted {spelled_times(r.restarts)}" if r.restarts else
                           f"{r.saturation_rps:.0f} rps against {ref.saturation_rps:.0f} with the largest")
                    self.notes.append(f"memory {format_memory(mems[mid])} ruled out: {why}")
            self.memory = mems[hi]
        self.notes.append(f"memory settled at {format_memory(self.memory)} "
                          f"(measured at cpu={cmax:g}, concurrency={cmid})")

        best = max((r.rps_per_core for r in self._known.values() if eligible(r)), default=None)
        for cpu in reversed(self.cpus):
            prev: CandidateResult | None = None
            for conc in self.concurrencies:
                c = Candidate(cpu, self.memory, conc)
                bigger = self._no_room(c)
                if c not in self._known and bigger is not None:
                    self.notes.append(f"cpu={cpu:g}: skipped, no room on the nodes for {bigger.label()}, a pod "
                                      "at most as large")
                    break
                if c not in self._known and best is not None:
                    bound = self._bound(c)
                    if bound is not None and bound * (1 + self.noise) < best * (1 - self.tie):
                        self.notes.append(f"{c.label()} pruned: at most {bound:.0f} rps per core "
                                          f"(a larger CPU at this concurrency), below the best {best:.0f}")
                        continue
                r = yield from self._get(c)
                if eligible(r):
                    best = r.rps_per_core if best is None else max(best, r.rps_per_core)
                stop = self._stop(r, prev)
                if stop:
                    self.notes.append(f"cpu={cpu:g}: stopped climbing at concurrency {conc}: {stop}")
                    break
                prev = r

    def _lost_throughput(self, r: CandidateResult, ref: CandidateResult) -> bool:
        """Whether the smaller memory `r` lost throughput against the largest, `ref`: by more than `memory_loss`
        and more than the two figures' combined 95% noise. A fixed 5% alone ruled out a memory on noise in one
        of five identical runs of the bundled model (bench/consistency), and tune then chose a larger pod."""
        return r.saturation_rps < (1 - tied_within(r, ref, self.memory_loss)) * ref.saturation_rps

    def _reference(self, conc: int) -> Generator[Candidate, CandidateResult, CandidateResult]:
        """The largest pod size the nodes have room for (largest memory first, then the largest CPU): memory
        is judged there. Sizes at least as large as one that found no room are not tried."""
        ref: CandidateResult | None = None
        for mem in reversed(self.memories):
            for cpu in reversed(self.cpus):
                c = Candidate(cpu, mem, conc)
                if c not in self._known and self._no_room(c) is not None:
                    continue
                ref = yield from self._get(c)
                if not ref.unschedulable:
                    return ref
                self.notes.append(f"{c.label()}: no room on the nodes for this pod size")
        assert ref is not None  # the smallest size is never skipped unless it was measured
        return ref

    def _no_room(self, c: Candidate) -> Candidate | None:
        """A known unschedulable pod size no larger than `c`'s (then `c` cannot fit either); concurrency does
        not change a pod's size."""
        return next((k for k, r in self._known.items()
                     if r.unschedulable and k.cpu <= c.cpu and k.memory <= c.memory), None)

    def _bound(self, c: Candidate) -> float | None:
        """Upper bound on rps per core of `c`: the throughput some CPU ≥ c.cpu reached at this concurrency.

        rps per core of that result × its cpu / c.cpu is its throughput spread over c's smaller cores.
        """
        bounds = [r.rps_per_core * k.cpu / c.cpu for k, r in self._known.items()
                  if k.concurrency == c.concurrency and k.cpu >= c.cpu and k.memory >= c.memory and r.oom_kills == 0]
        return min(bounds) if bounds else None

    def _stop(self, r: CandidateResult, prev: CandidateResult | None) -> str:
        if r.unschedulable:
            return "no room on the nodes for this pod size (more concurrency needs the same room)"
        if r.oom_kills:
            return f"OOM-killed {spelled_times(r.oom_kills)} at {format_memory(r.candidate.memory)}"
        if not r.meets_slo:
            return "the SLO no longer holds"
        if prev is not None and r.saturation_rps < prev.saturation_rps * (1 + self.min_gain):
            return (f"throughput grew {r.saturation_rps / prev.saturation_rps - 1:+.0%} "
                    f"(less than {self.min_gain:.0%})" if prev.saturation_rps > 0 else "no throughput")
        if r.cpu_use_pct is not None and r.cpu_use_pct >= self.pegged_pct:
            room = _cpu_room(r, self._known.values())
            if room is None or room < self.tie:  # the CPU left could not even carry a tie
                return f"CPU pegged at {r.cpu_use_pct:.0f}%: more concurrency only queues" + (
                    "" if room is None else f" (room for {room:.0%} more throughput)")
        return ""


def _cpu_room(r: CandidateResult, known: Iterable[CandidateResult]) -> float | None:
    """How much more throughput the CPU left over in `r`'s pod could carry; None when it cannot be told.

    A pod's CPU is a fixed part (runtime, probes) plus a cost per request, the same for every pod size, so
    one pegged reading does not say how far throughput can still grow: at 0.25 CPU with 0.05 of it fixed,
    96% use leaves 5.7% more throughput, not 4%. Every measured candidate is a point on that line
    (cores used against rps per pod); with two distinct points it gives both parts.
    """
    points = [(k.rps_per_core * k.candidate.cpu, k.cpu_use_pct / 100.0 * k.candidate.cpu) for k in known
              if k.cpu_use_pct is not None and not k.oom_kills and k.saturation_rps > 0]
    if r.cpu_use_pct is None or r.saturation_rps <= 0 or len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread <= 1e-12 * max(mean_x * mean_x, 1.0):
        return None
    per_rps = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    if per_rps <= 0:
        return None
    fixed = mean_y - per_rps * mean_x
    pod_rps = r.rps_per_core * r.candidate.cpu
    return max(0.0, (r.candidate.cpu - fixed) / per_rps / pod_rps - 1.0)

