"""Fine-tune stage logic against a synthetic reference server whose best pod size is known from its formula."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightcap.analysis.tune_planner import TunePlanner
from nightcap.analysis.tuning import (
    Candidate,
    CandidateResult,
    choose,
    evaluate,
    failed,
    measured,
    no_room,
    operating_p95,
    verdict,
)
from nightcap.config import TuneConfig
from nightcap.quantities import format_memory
from nightcap.steps import StepRow

MI = 1 << 20


def run_planner(planner: TunePlanner, measure: Callable[[Candidate], CandidateResult],
                results: Sequence[CandidateResult] = ()) -> list[CandidateResult]:
    """Drive the planner as flows/tune.py does, without Prefect."""
    out = list(results)
    while (c := planner.next_candidate(out)) is not None:
        out.append(measure(c))
    return out
CPUS = [0.5, 1.0, 2.0]
MEMS = [256 * MI, 512 * MI, 1024 * MI]
CONCS = [1, 2, 4, 8]


@dataclass
class ReferenceServer:
    """The reference target per pod: min(slots × 1000 / service_ms, (cpu − overhead) × 1000 / cpu_ms) rps.

    `overhead` is CPU the server burns whatever the load (runtime, health checks): it makes larger pods
    more efficient per core, so the best answer is not simply the smallest CPU. Below `working_set_mb`
    (+ `per_slot_mb` per concurrent request) a pod is OOM-killed twice per window and loses half its rps.
    """

    service_ms: float = 20.0
    cpu_ms: float = 10.0
    overhead: float = 0.0
    working_set_mb: float = 300.0
    per_slot_mb: float = 0.0
    replicas: int = 2
    slo_p95_ms: float = 100.0

    def capacity(self, c: Candidate) -> float:
        return min(c.concurrency * 1000 / self.service_ms, max(0.0, c.cpu - self.overhead) * 1000 / self.cpu_ms)

    def measure(self, c: Candidate) -> CandidateResult:
        per_pod = self.capacity(c)
        need = (self.working_set_mb + self.per_slot_mb * c.concurrency) * MI
        oom = 2 if c.memory < need else 0
        if oom:
            per_pod *= 0.5
        use = min(100.0, (per_pod * self.cpu_ms / 1000 + self.overhead) / c.cpu * 100)
        p95 = self.service_ms + self.cpu_ms / min(c.cpu, 1.0) + 2.0 * c.concurrency
        return evaluate(c, replicas=self.replicas, saturation_rps=per_pod * self.replicas, p95_ms=p95,
                        cpu_use_pct=use, memory_peak_pct=min(100.0, need / c.memory * 100), oom_kills=oom,
                        meets_slo=p95 < self.slo_p95_ms)


def full_grid(server: ReferenceServer, cpus=CPUS, mems=MEMS, concs=CONCS) -> list[CandidateResult]:
    return [server.measure(Candidate(*k)) for k in itertools.product(cpus, mems, concs)]


def test_verdicts_in_words() -> None:
    assert verdict(97.2) == "CPU-bound (pegged at 97% of its limit)"
    assert verdict(35.0) == "under-used (CPU 35%): concurrency is the limit"
    assert verdict(99.0, oom_kills=2) == "memory too small (OOM-killed twice)"
    assert verdict(50.0, oom_kills=1) == "memory too small (OOM-killed once)"
    assert verdict(70.0, restarts=3) == "unstable (restarted 3 times without an OOM kill)"
    assert verdict(70.0) == "balanced (CPU 70%)"
    assert verdict(70.0, memory_peak_pct=95) == "memory nearly full (peak 95% of its limit)"
    assert verdict(None) == "CPU use not measured"
    assert verdict(97.0, meets_slo=False).endswith("; misses the SLO")


def test_verdicts_name_cpu_where_cpu_limits_and_concurrency_where_slots_do() -> None:
    server = ReferenceServer()
    slots_bound = server.measure(Candidate(2.0, 512 * MI, 1))  # 50 rps per pod on 2 cores: 25% busy
    cpu_bound = server.measure(Candidate(0.5, 512 * MI, 8))  # 400 rps of slots, 50 rps of CPU
    assert slots_bound.verdict == "under-used (CPU 25%): concurrency is the limit"
    assert cpu_bound.verdict == "CPU-bound (pegged at 100% of its limit)"
    assert slots_bound.rps_per_core == pytest.approx(25.0) and cpu_bound.rps_per_core == pytest.approx(100.0)


def test_choose_prefers_rps_per_core_then_less_memory_then_less_cpu() -> None:
    def res(cpu: float, mem: int, conc: int, rpc: float, slo: bool = True, oom: int = 0) -> CandidateResult:
        return evaluate(Candidate(cpu, mem * MI, conc), replicas=1, saturation_rps=rpc * cpu, p95_ms=10,
                        cpu_use_pct=90, memory_peak_pct=50, oom_kills=oom, meets_slo=slo)

    results = [
        res(2, 1024, 4, 100.0),
        res(1, 1024, 4, 98.5),  # within 3%, less CPU
        res(2, 512, 4, 97.5),  # within 3%, less memory: wins
        res(0.5, 256, 1, 150.0, slo=False),  # best, but misses the SLO
        res(0.5, 128, 1, 140.0, oom=1),  # OOM-killed: never chosen
        res(1, 256, 2, 90.0),  # cheaper but 10% worse
    ]
    choice = choose(results)
    assert choice.candidate == Candidate(2, 512 * MI, 4)
    assert "within 3% of the best" in choice.reason and "cpu=2 memory=1Gi concurrency=4" in choice.reason
    assert "cpu=2 memory=512Mi concurrency=4" in choice.reason
    none = choose([results[3], results[4]])
    assert none.result is None and "1 were OOM-killed, 1 missed the SLO" in none.reason


def test_candidates_within_their_noise_of_the_best_tie_and_the_smaller_pod_wins() -> None:
    """Two pods the measurement cannot tell apart (10% apart, each ± 8%) tie whichever measured higher tonight,
    so the choice does not follow the noise; told apart (± 2%), the better one wins."""
    def res(cpu: float, rpc: float, half: float | None) -> CandidateResult:
        return evaluate(Candidate(cpu, 768 * MI, 1), replicas=1, saturation_rps=rpc * cpu, p95_ms=10,
                        cpu_use_pct=90, memory_peak_pct=50, meets_slo=True,
                        rps_halfwidth=None if half is None else half * rpc * cpu)

    for big, small in ((150.0, 136.0), (136.0, 150.0)):  # either measured higher
        noisy = choose([res(1.0, big, 0.08), res(0.5, small, 0.08)])
        assert noisy.candidate == Candidate(0.5, 768 * MI, 1), noisy.reason
    precise = choose([res(1.0, 150.0, 0.02), res(0.5, 136.0, 0.02)])
    assert precise.candidate == Candidate(1.0, 768 * MI, 1)
    unknown = choose([res(1.0, 150.0, None), res(0.5, 136.0, None)])  # no half-widths: the fixed 3%
    assert unknown.candidate == Candidate(1.0, 768 * MI, 1)


def test_concurrencies_tied_within_noise_go_to_the_lower_whichever_measured_higher() -> None:
    """Concurrency 1 and 2 of one pod size traded places on noise in bench/consistency; tied, the lower wins."""
    def res(conc: int, rpc: float, half: float) -> CandidateResult:
        return evaluate(Candidate(1.0, 768 * MI, conc), replicas=1, saturation_rps=rpc, p95_ms=10,
                        cpu_use_pct=90, memory_peak_pct=50, meets_slo=True, rps_halfwidth=half * rpc)

    for one, two in ((150.0, 138.0), (138.0, 150.0)):
        assert choose([res(1, one, 0.08), res(2, two, 0.08)]).candidate.concurrency == 1
    assert choose([res(1, 138.0, 0.02), res(2, 150.0, 0.02)]).candidate.concurrency == 2  # told apart


def _noisy(server: ReferenceServer, memory_factor: dict[int, float], half: float) -> Callable[[Candidate], CandidateResult]:
    """`server.measure` with the rps of some memories scaled (tonight's noise) and a 95% half-width of `half`."""
    def measure(c: Candidate) -> CandidateResult:
        r = server.measure(c)
        rps = r.saturation_rps * memory_factor.get(c.memory, 1.0)
        return evaluate(c, replicas=server.replicas, saturation_rps=rps, p95_ms=r.p95_ms, cpu_use_pct=r.cpu_use_pct,
                        memory_peak_pct=r.memory_peak_pct, oom_kills=r.oom_kills, meets_slo=r.meets_slo,
                        rps_halfwidth=half * rps)
    return measure


def test_a_smaller_memory_is_ruled_out_only_by_a_loss_beyond_the_noise() -> None:
    """512Mi read 12% under 1Gi: with ± 10% on each figure that is noise (the smaller memory stays); with ± 2%
    it is a loss (ruled out). The fixed 5% alone ruled out a memory on noise in bench/consistency."""
    low = {512 * MI: 0.88}  # (256Mi is below the 300 MB working set: OOM-killed either way)
    noisy = TunePlanner(CPUS, MEMS, CONCS)
    run_planner(noisy, _noisy(ReferenceServer(), low, 0.10))
    assert noisy.memory == 512 * MI, noisy.notes
    precise = TunePlanner(CPUS, MEMS, CONCS)
    run_planner(precise, _noisy(ReferenceServer(), low, 0.02))
    assert precise.memory == 1024 * MI and any("512Mi ruled out" in n for n in precise.notes), precise.notes


@pytest.mark.parametrize(
    "server,expected,best_rpc",
    [
        # plain reference: every CPU reaches 100 rps per core once slots ≥ 2 × cpu; the smallest CPU wins
        (ReferenceServer(), Candidate(0.5, 512 * MI, 1), 100.0),
        # 0.1 core of overhead: 80 / 90 / 95 rps per core for 0.5 / 1 / 2 CPU; 2 CPU needs 4 slots (190 rps)
        (ReferenceServer(overhead=0.1), Candidate(2.0, 512 * MI, 4), 95.0),
    ],
)
def test_planner_finds_the_known_best_with_fewer_measurements(
    server: ReferenceServer, expected: Candidate, best_rpc: float
) -> None:
    planner = TunePlanner(CPUS, MEMS, CONCS)
    results = run_planner(planner, server.measure)
    choice = choose(results)
    assert choice.candidate == expected
    assert choice.result is not None and choice.result.rps_per_core == pytest.approx(best_rpc)
    assert choose(full_grid(server)).candidate == expected  # the brute force agrees
    assert planner.grid_size == 36 and planner.measured == len(results) <= 8
    assert planner.memory == 512 * MI
    assert any("pruned" in n for n in planner.notes)


def test_memory_below_the_working_set_is_detected_and_never_chosen() -> None:
    server = ReferenceServer(working_set_mb=600)  # 256Mi and 512Mi are both too small
    planner = TunePlanner(CPUS, MEMS, CONCS)
    results = run_planner(planner, server.measure)
    assert planner.memory == 1024 * MI
    ooms = [r for r in results if r.oom_kills]
    assert ooms and all(r.verdict == "memory too small (OOM-killed twice)" for r in ooms)
    assert any("ruled out: OOM-killed twice" in n for n in planner.notes)
    assert choose(results).candidate.memory == 1024 * MI
    assert choose(full_grid(server)).candidate.memory == 1024 * MI


def test_memory_that_only_fits_low_concurrency_stops_the_climb() -> None:
    # 100 MiB + 150 MiB per in-flight request: 1Gi (settled at concurrency 4) holds 4 but not 8
    server = ReferenceServer(cpu_ms=2.0, working_set_mb=100, per_slot_mb=150)
    planner = TunePlanner(CPUS, MEMS, CONCS)
    results = run_planner(planner, server.measure)
    assert planner.memory == 1024 * MI
    assert any("stopped climbing at concurrency 8: OOM-killed twice at 1Gi" in n for n in planner.notes)
    choice = choose(results)
    assert choice.result is not None and choice.result.oom_kills == 0 and choice.candidate.concurrency < 8


def test_planner_never_measures_a_known_candidate_and_insists_on_results() -> None:
    server = ReferenceServer()
    already = [server.measure(Candidate(2.0, 1024 * MI, 4))]  # e.g. measured by an earlier, interrupted run
    planner = TunePlanner.from_config(TuneConfig(cpu=CPUS, memory=["256Mi", "512Mi", "1Gi"], concurrency=CONCS))
    first = planner.next_candidate(already)
    assert first is not None and first != already[0].candidate
    with pytest.raises(ValueError, match="no result for"):
        planner.next_candidate(already)  # the result for `first` was not passed back
    results = run_planner(planner, server.measure, already + [server.measure(first)])
    assert len({r.candidate for r in results}) == len(results)
    assert planner.next_candidate(results) is None  # finished stays finished


def test_single_value_grid() -> None:
    planner = TunePlanner([1.0], [512 * MI], [4])
    results = run_planner(planner, ReferenceServer().measure)
    assert planner.grid_size == 1 and planner.measured == 1 and len(results) == 1


def test_format_memory() -> None:
    assert [format_memory(m) for m in (256 * MI, 1024 * MI, 1536 * MI, None)] == ["256Mi", "1Gi", "1536Mi", "unlimited"]


grids = dict(
    cpus=st.lists(st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 4.0]), min_size=1, max_size=4, unique=True),
    mems=st.lists(st.sampled_from([128, 256, 384, 512, 1024, 2048]), min_size=1, max_size=4, unique=True),
    concs=st.lists(st.sampled_from([1, 2, 3, 4, 8, 16, 32]), min_size=1, max_size=5, unique=True),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), **grids)
def test_planner_terminates_within_the_grid_on_arbitrary_measurements(
    seed: int, cpus: list[float], mems: list[int], concs: list[int]
) -> None:
    """Whatever the measurements say (even nonsense), the planner asks only grid candidates, each once."""
    import random

    rng = random.Random(seed)

    def measure(c: Candidate) -> CandidateResult:
        return evaluate(c, replicas=rng.randint(1, 3), saturation_rps=rng.choice([0.0, rng.uniform(0, 1000)]),
                        p95_ms=rng.uniform(1, 500), cpu_use_pct=rng.uniform(0, 100), memory_peak_pct=rng.uniform(0, 100),
                        oom_kills=rng.choice([0, 0, 0, 1, 2]), restarts=rng.choice([0, 0, 1]),
                        meets_slo=rng.random() < 0.7)

    planner = TunePlanner(cpus, [m * MI for m in mems], concs)
    results = run_planner(planner, measure)
    asked = [r.candidate for r in results]
    grid = set(itertools.product(planner.cpus, planner.memories, planner.concurrencies))
    assert len(asked) == len(set(asked)) == planner.measured <= planner.grid_size
    assert all((c.cpu, c.memory, c.concurrency) in grid for c in asked)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(
    service_ms=st.floats(1, 200), cpu_ms=st.floats(0.5, 100), overhead=st.sampled_from([0.0, 0.05, 0.1]),
    working_set=st.sampled_from([100, 300, 700, 3000]), **grids,
)
def test_planner_matches_brute_force_on_reference_servers(
    service_ms: float, cpu_ms: float, overhead: float, working_set: int,
    cpus: list[float], mems: list[int], concs: list[int],
) -> None:
    """Where the assumptions hold (the reference formula), skipping candidates loses at most the tie band twice.

    The choice takes the smallest pod within 3% of the best it measured, and the planner stops climbing a
    pegged CPU once the CPU left could carry under 3% more: so the pick is within (1 - 3%) / (1 + 3%) of
    the full grid's best. (The flat "within 3%" this test first claimed was falsified by Hypothesis twice.)
    Derandomized so CI runs the examples that ran here; 4000 random examples more ran before the change.
    """
    server = ReferenceServer(service_ms=service_ms, cpu_ms=cpu_ms, overhead=overhead, working_set_mb=working_set,
                             slo_p95_ms=1e9)
    planner = TunePlanner(cpus, [m * MI for m in mems], concs)
    planned = choose(run_planner(planner, server.measure))
    brute = choose(full_grid(server, cpus, [m * MI for m in mems], concs))
    if brute.result is None:
        assert planned.result is None
        return
    assert planned.result is not None
    assert planned.result.rps_per_core >= brute.result.rps_per_core * (1 - 0.03) / (1 + 0.03) - 1e-9


def test_a_pod_size_the_nodes_have_no_room_for_is_not_a_bad_candidate() -> None:
    """Nodes with room for at most 1 CPU and 512Mi per pod: larger pods stay Pending (FailedScheduling)."""
    server = ReferenceServer()
    room = "0/3 nodes are available: 3 Insufficient cpu"

    def measure(c: Candidate) -> CandidateResult:
        return no_room(c, room) if c.cpu > 1.0 or c.memory > 512 * MI else server.measure(c)

    planner = TunePlanner(CPUS, MEMS, CONCS)
    results = run_planner(planner, measure)
    full = [r for r in results if r.unschedulable]
    assert full and all(r.verdict == f"no room for this pod size ({room})" and r.saturation_rps == 0 for r in full)
    # the largest size that fits is the memory reference; a size at least as large as one that did not fit is
    # never tried (concurrency does not change a pod's size)
    assert planner.memory == 512 * MI
    for i, r in enumerate(results):
        assert not any(k.unschedulable and k.candidate.cpu <= r.candidate.cpu and k.candidate.memory <= r.candidate.memory
                       for k in results[:i])
    assert any("no room on the nodes" in n for n in planner.notes)
    choice = choose(results)
    fits = [r for r in full_grid(server) if r.candidate.cpu <= 1.0 and r.candidate.memory <= 512 * MI]
    assert choice.candidate == choose(fits).candidate  # the best of what fits, as brute force over it says
    assert not choice.result.unschedulable and choice.result.to_dict()["unschedulable"] is False


def test_when_nothing_fits_the_reason_says_make_room() -> None:
    planner = TunePlanner(CPUS, MEMS, CONCS)
    results = run_planner(planner, lambda c: no_room(c, "0/1 nodes are available: 1 Insufficient memory"))
    # memory changes a pod's size too: each (cpu, memory) is tried once, at one concurrency, largest first
    assert [(r.candidate.memory, r.candidate.cpu) for r in results] == sorted(itertools.product(MEMS, CPUS))[::-1]
    assert {r.candidate.concurrency for r in results} == {4}
    choice = choose(results)
    assert choice.result is None
    assert "9 found no room on the nodes" in choice.reason and "make room in the node pool" in choice.reason


def _row(users: int, cpu: list[float], mem_mb: list[float], valid: bool = True, oom: int = 0) -> StepRow:
    return StepRow("tune", users, replicas=2, cpu=0.5, memory=256 * MI, concurrency=2, users=users, rps=10.0 * users,
                   replica_cpu_pct=cpu, replica_memory_mb=mem_mb, valid=valid, oom_kills=oom)


def test_a_candidate_is_judged_at_its_knee_with_its_peak_memory() -> None:
    c = Candidate(0.5, 256 * MI, 2)
    steps = [_row(2, [40.0, 50.0], [100.0, 120.0]), _row(4, [90.0, 80.0], [128.0, 110.0]),
             _row(4, [70.0, 70.0], [90.0], valid=False), _row(8, [99.0, 99.0], [64.0], oom=1)]
    r = measured(c, replicas=2, steps=steps, saturation_users=4, saturation_rps=40.0, p95_ms=120.0)
    assert r.cpu_use_pct == 85.0  # the busiest valid window at the knee, mean over its replicas
    assert r.memory_peak_pct == 50.0 and r.oom_kills == 1 and r.rps_per_core == 40.0 and r.meets_slo
    none = measured(c, replicas=2, steps=steps[:1], saturation_users=None, saturation_rps=None, p95_ms=None)
    assert none.cpu_use_pct == 45.0 and not none.meets_slo and none.saturation_rps == 0.0  # no knee: every window


def test_a_failed_candidate_counts_an_oom_the_platform_named() -> None:
    c = Candidate(0.5, 128 * MI, 2)
    assert failed(c, replicas=2, error="pods OOMKilled in a crash loop", oom_kills=0, restarts=3).oom_kills == 1
    r = failed(c, replicas=2, error="never ready", oom_kills=0, restarts=0)
    assert r.oom_kills == 0 and r.saturation_rps == 0.0 and not r.meets_slo


def test_the_operating_p95_is_read_at_its_level_or_the_good_one_below() -> None:
    lv = lambda users, good, p95: SimpleNamespace(users=users, good=good, p95_ms=p95)  # noqa: E731
    levels = [lv(2, True, 50.0), lv(4, True, 80.0), lv(8, False, 900.0)]
    assert operating_p95(levels, 4) == 80.0
    assert operating_p95(levels, 6) == 80.0 and operating_p95(levels, 1) is None and operating_p95([], None) is None
