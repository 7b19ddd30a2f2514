"""Warm start on simulated reference targets: last night's knee verified in a few levels, the full search when it
moved (milliseconds: the search takes a measure callable)."""

from __future__ import annotations

import random
from dataclasses import asdict

import pytest

from nightcap.analysis.tuning import Candidate, evaluate
from nightcap.analysis.slo import Slo
from nightcap.search.levels import Point, SearchParams
from nightcap.search.saturation import find_saturation
from nightcap.search.warm_start import (PriorLevel, PriorSearch, prior_from_history, prior_search, search, verify_levels,
                                 warm_search)
from nightcap.search.warm_start_tune import grid_neighbours, prior_choice, tune_choice_holds

SLO = Slo(p95_ms=250, max_error_rate=0.01)
# configs/local.yaml's search block (what make run uses), with room for knees up to 128 users
PARAMS = dict(start_users=1, max_users=256, max_windows=2, refine_steps=2)


def params(**kw) -> SearchParams:
    return SearchParams(**{**PARAMS, **kw})


def reference(slots: int, service_ms: float, queue: int, noise: float = 0.0, seed: int = 0):
    """Closed-loop users against `slots` x `service_ms` with `queue` places: rps min(users, slots)/service,
    latency by Little's law, 503s past slots + queue. Each window carries a half-width of ±2% (+ noise)."""
    rng = random.Random(seed)
    calls: list[int] = []

    def measure(users: int) -> Point:
        calls.append(users)
        capacity = slots * 1000.0 / service_ms
        rps = min(users, slots) * 1000.0 / service_ms * (1 + rng.uniform(-noise, noise))
        if users > slots + queue:
            return Point(users, rps, service_ms, (users - slots - queue) / users, rps_halfwidth=0.02 * rps,
                         batches=15)
        latency = max(service_ms, 1000.0 * users / capacity)
        return Point(users, rps, latency * 1.1, 0.0, rps_halfwidth=(0.02 + noise) * rps, batches=15)

    measure.calls = calls  # type: ignore[attr-defined]
    return measure


def night(slots: int, service_ms: float = 50.0, queue: int = 8, **kw) -> tuple:
    """A cold search as last night ran it, and its summary block (what the history keeps)."""
    result = find_saturation(reference(slots, service_ms, queue), SLO, params(**kw))
    block = {"saturation": {"users": result.saturation_users, "rps": result.saturation_rps, "found": result.found},
             "slo_capacity": {"users": result.slo_users, "rps": result.slo_rps},
             "levels": [asdict(lv) for lv in result.levels]}
    return result, PriorSearch.from_block("night-1", block)


@pytest.mark.parametrize("queue", [0, 8])
@pytest.mark.parametrize("slots", [4, 8, 16, 24, 32, 64, 128])
def test_an_unchanged_target_is_verified_in_a_few_levels_at_the_same_answer(slots: int, queue: int) -> None:
    cold, prior = night(slots, queue=queue)
    measure = reference(slots, 50.0, queue)
    warm, record = warm_search(measure, SLO, params(), prior)
    assert record.accepted, record.reason
    assert record.from_run == "night-1"
    assert warm.saturation_users == cold.saturation_users
    assert warm.saturation_rps == pytest.approx(slots * 20.0, rel=0.05)
    assert warm.slo_users == cold.slo_users
    assert warm.operating_rps == pytest.approx(0.7 * warm.saturation_rps)
    assert warm.saturation_halfwidth is not None and warm.found
    # below, at and above the knee, plus the SLO capacity's two levels at most
    assert 2 <= len(record.levels) <= 5 and record.windows == len(measure.calls)
    # half the cold search's windows or better, except at 4 users where the cold search itself takes 6-9
    assert warm.windows <= (cold.windows / 2 if slots >= 8 else 5), (warm.windows, cold.windows)
    assert "holds" in record.reason and "warm start" in warm.stop_reason


def test_the_knee_is_measured_tonight_not_copied_from_last_night() -> None:
    _, prior = night(16, 50.0)
    # same knee (16 slots) but every request now takes 100 ms: half the throughput at the same users
    warm, record = warm_search(reference(16, 100.0, 8), Slo(p95_ms=500, max_error_rate=0.01), params(), prior)
    assert record.accepted, record.reason
    assert warm.saturation_users == 16
    assert warm.saturation_rps == pytest.approx(160.0, rel=0.01)


@pytest.mark.parametrize("slots,factor", [(16, 0.5), (16, 2.0), (32, 0.5), (8, 2.0), (64, 0.5), (4, 2.0)])
def test_a_moved_knee_falls_back_to_the_full_search_and_says_why(slots: int, factor: float) -> None:
    _, prior = night(slots)
    now = int(slots * factor)
    measure = reference(now, 50.0, 8)
    warm, record = warm_search(measure, SLO, params(), prior)
    cold = find_saturation(reference(now, 50.0, 8), SLO, params())
    assert not record.accepted
    assert record.reason.startswith("fell back to the full search: ")
    said = ["moved down", "is now bad"] if factor < 1 else ["moved up", "is within the SLO tonight"]
    assert any(why in record.reason for why in said), record.reason
    assert warm.saturation_rps == pytest.approx(now * 20.0, rel=0.05)
    assert warm.saturation_users == cold.saturation_users and warm.slo_users == cold.slo_users
    # the fallback reuses the windows the verification measured: never more than a cold search plus them
    assert len(measure.calls) <= cold.windows + record.windows


def test_a_verdict_that_changed_falls_back() -> None:
    _, prior = night(4, 50.0, queue=0)  # 5 users get 503s: the level above the knee was bad
    below, at, above = verify_levels(prior, params())
    assert (below, at, above) == (2, 4, 5) and not prior.level(5).good
    # tonight the queue takes 4 more: 5 users are within the SLO and flat, a changed verdict
    warm, record = warm_search(reference(4, 50.0, 4), SLO, params(), prior)
    assert not record.accepted
    assert "5 users was bad on run night-1 and is within the SLO tonight" in record.reason
    assert warm.saturation_users == 4 and warm.slo_users == 8


def test_a_knee_over_the_slo_tonight_falls_back_at_once() -> None:
    _, prior = night(16)
    slow = reference(16, 50.0, 8)

    def measure(users: int) -> Point:
        row = slow(users)
        return Point(row.users, row.rps, row.p95_ms * (6 if users >= 16 else 1), row.error_rate,
                     rps_halfwidth=row.rps_halfwidth, batches=row.batches)

    warm, record = warm_search(measure, SLO, params(), prior)
    assert not record.accepted and record.levels == [16]
    assert "knee level 16 users is now bad (p95" in record.reason
    assert warm.saturation_users is not None and warm.saturation_users < 16


def test_a_knee_at_one_user_is_verified_without_a_level_below() -> None:
    def cpu_bound(users: int) -> Point:  # CPU-limited: 50 rps from the first user on
        return Point(users, 50.0, 20.0 * users, 0.0, rps_halfwidth=1.0, batches=15)

    cold = find_saturation(cpu_bound, SLO, params())
    block = {"saturation": {"users": cold.saturation_users, "rps": cold.saturation_rps},
             "slo_capacity": {"users": cold.slo_users}, "levels": [asdict(lv) for lv in cold.levels]}
    prior = PriorSearch.from_block("n", block)
    assert verify_levels(prior, params())[0] is None
    warm, record = warm_search(cpu_bound, SLO, params(), prior)
    assert record.accepted and warm.saturation_users == 1 and warm.slo_users == cold.slo_users


def test_noisy_nights_stay_within_five_percent_and_mostly_warm() -> None:
    accepted = 0
    for seed in range(40):
        slots = [8, 16, 32, 64][seed % 4]
        _, prior = night(slots)
        warm, record = warm_search(reference(slots, 50.0, 8, noise=0.03, seed=seed), SLO, params(), prior)
        assert warm.saturation_rps == pytest.approx(slots * 20.0, rel=0.05)
        accepted += record.accepted
    assert accepted >= 30, accepted


def test_without_a_prior_the_search_is_cold_and_says_why() -> None:
    result, record = search(reference(8, 50.0, 8), SLO, params(), None, "search.warm_start is false")
    assert not record.accepted and record.from_run is None and record.reason == "search.warm_start is false"
    assert result.saturation_users == 8


def test_prior_block_parsing_skips_nights_without_a_knee() -> None:
    assert PriorSearch.from_block("n", {"saturation": {"users": None}}) is None
    assert PriorSearch.from_block("n", {"saturation": {"users": 8, "found": False}}) is None
    prior = PriorSearch.from_block("n", {"saturation": {"users": 8, "rps": 160.0},
                                         "levels": [{"users": 8, "rps": 160.0, "good": True}, {"users": "x"}]})
    assert prior.levels == (PriorLevel(8, 160.0, True),)


def _run(run_id: str, cpu: float, block: dict | None, tuning: dict | None = None) -> dict:
    summary = {"platform": {"cpu": cpu, "memory": 2**30, "concurrency": 1, "replicas": 1}}
    if block is not None:
        summary["single_client"] = block
    if tuning is not None:
        summary["tuning"] = tuning
    return {"run_id": run_id, "summary": summary}


def test_the_prior_is_the_newest_night_on_the_same_pod() -> None:
    block = {"saturation": {"users": 8, "rps": 160.0}, "levels": []}
    pod = {"cpu": 1.0, "memory": 2**30, "concurrency": 1, "replicas": 1}
    runs = [_run("c", 0.5, block), _run("b", 1.0, {"saturation": {"users": None}}), _run("a", 1.0, block)]
    prior, why = prior_search(runs, "single_client", pod)
    assert prior is not None and prior.run_id == "a" and why == ""
    prior, why = prior_search(runs[:1], "single_client", pod)
    assert prior is None and "pod configuration" in why
    assert prior_search([], "single_client", pod)[1] == "no completed comparable night in the history"


def test_tune_neighbours_are_one_grid_step_along_each_axis() -> None:
    mi = 2**20
    chosen = Candidate(1.0, 768 * mi, 2)
    near = grid_neighbours(chosen, [0.5, 1.0, 2.0], [768 * mi, 1024 * mi], [1, 2, 4])
    assert near[0] == chosen
    assert set(near[1:]) == {Candidate(0.5, 768 * mi, 2), Candidate(2.0, 768 * mi, 2), Candidate(1.0, 1024 * mi, 2),
                             Candidate(1.0, 768 * mi, 1), Candidate(1.0, 768 * mi, 4)}
    assert grid_neighbours(Candidate(3.0, 768 * mi, 2), [0.5, 1.0], [768 * mi], [2]) == []


def test_tune_choice_holds_only_while_choose_still_picks_it() -> None:
    mi = 2**20

    def result(c: Candidate, rps: float):
        return evaluate(c, replicas=1, saturation_rps=rps, p95_ms=50.0, cpu_use_pct=70.0, memory_peak_pct=40.0,
                        meets_slo=True)

    chosen, other = Candidate(0.5, 768 * mi, 1), Candidate(1.0, 768 * mi, 1)
    holds, why = tune_choice_holds(chosen, [result(chosen, 100.0), result(other, 190.0)])
    assert holds and "still wins" in why
    holds, why = tune_choice_holds(chosen, [result(chosen, 100.0), result(other, 260.0)])
    assert not holds and why.startswith("the choice moved: cpu=1")
    runs = [{"run_id": "x", "summary": {"tuning": {"replicas": 2, "best": {"cpu": 1, "memory": 1, "concurrency": 1}}}},
            {"run_id": "y", "summary": {"tuning": {"replicas": 1, "best": {"cpu": 0.5, "memory": 768 * mi,
                                                                            "concurrency": 1}}}}]
    assert prior_choice(runs, 1) == (chosen, "y", "")
    assert prior_choice(runs[:1], 1)[0] is None


def _run_ctx(warm: bool = True, store: object = None, cpu: float = 0.5):
    """What the flow hands `prior_from_history`: the run's config, pod size and history store."""
    from types import SimpleNamespace

    from nightcap.config import validate
    from nightcap.platforms.base import PodSpec

    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 250},
                       "search": {"warm_start": warm}})
    return SimpleNamespace(config=config, run_id="tonight", store=store,
                           spec=PodSpec(cpu=cpu, memory=256 << 20, concurrency=4))


class _Store:
    """comparable_runs as the history store answers it: the newest completed comparable nights first."""

    def __init__(self, runs: list[dict]) -> None:
        self.runs, self.asked = runs, []

    def comparable_runs(self, config_hash: str, last_n: int = 7, exclude_run_id: str | None = None) -> list[dict]:
        self.asked.append((config_hash, exclude_run_id))
        return self.runs


def test_the_flow_starts_from_the_newest_comparable_night_on_the_same_pod_and_can_be_turned_off() -> None:
    def warm_prior(ctx, stage):  # as tasks.measure.warm_prior calls it
        return prior_from_history(ctx.store, ctx.config, ctx.spec, ctx.run_id, stage)

    _, block = night(16)
    assert block is not None
    stored = {"saturation": {"users": block.saturation_users, "rps": block.saturation_rps, "found": True},
              "levels": [{"users": lv.users, "rps": lv.rps, "good": lv.good} for lv in block.levels]}
    pod = {"cpu": 0.5, "memory": 256 << 20, "concurrency": 4, "replicas": 1}
    store = _Store([{"run_id": "n2", "summary": {"platform": {**pod, "cpu": 1.0}, "single_client": stored}},
                    {"run_id": "n1", "summary": {"platform": pod, "single_client": stored}}])
    ctx = _run_ctx(store=store)
    prior, why = warm_prior(ctx, "single_client")  # type: ignore[arg-type]
    assert prior is not None and prior.run_id == "n1" and not why  # n2 ran another pod size
    assert store.asked == [(ctx.config.config_hash(), "tonight")]
    # the off switch is not part of the comparison key: a night with it off compares with the others
    assert _run_ctx(warm=False).config.config_hash() == ctx.config.config_hash()
    assert warm_prior(_run_ctx(warm=False, store=store), "single_client") == (None, "search.warm_start is false")  # type: ignore[arg-type]
    assert warm_prior(_run_ctx(store=None), "single_client") == (None, "no history store")  # type: ignore[arg-type]
    prior, why = warm_prior(_run_ctx(store=store, cpu=2.0), "single_client")  # type: ignore[arg-type]
    assert prior is None and "on this pod configuration (2 of 2 ran another)" in why


def test_tune_starts_from_last_nights_choice_when_it_is_in_tonights_grid() -> None:
    from nightcap.config import validate
    from nightcap.search.warm_start_tune import tune_prior_from_history

    mi = 2**20
    grid = {"cpu": [0.5, 1], "memory": ["768Mi", "1Gi"], "concurrency": [1, 2, 4], "replicas": 1}
    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 250}, "tune": grid})
    best = {"cpu": 0.5, "memory": 768 * mi, "concurrency": 2}
    store = _Store([{"run_id": "n1", "summary": {"tuning": {"replicas": 1, "best": best}}}])
    chosen, near, from_run, why = tune_prior_from_history(store, config, "tonight")
    assert (chosen, from_run, why) == (Candidate(0.5, 768 * mi, 2), "n1", "")
    assert near[0] == chosen and len(near) == 5  # itself, cpu 1, memory 1Gi, concurrency 1 and 4
    store.runs[0]["summary"]["tuning"]["candidates_measured"] = 5  # verifying would cost what the planner did
    chosen, near, from_run, why = tune_prior_from_history(store, config, "tonight")
    assert chosen is None and "takes 5 candidates and its planner measured 5: the planner runs" in why
    store.runs[0]["summary"]["tuning"]["best"] = {**best, "cpu": 2.0}  # a grid that no longer holds it
    chosen, near, from_run, why = tune_prior_from_history(store, config, "tonight")
    assert chosen is None and from_run == "n1" and "not in tonight's tune grid" in why
    off = config.model_copy(update={"search": config.search.model_copy(update={"warm_start": False})})
    assert tune_prior_from_history(store, off, "tonight")[3] == "search.warm_start is false"


def test_the_tune_stage_measures_last_nights_choice_and_its_neighbours_first() -> None:
    """flows.tune.warm_tune with a measuring stub: accepted while the choice wins, the planner's turn when not."""
    from types import SimpleNamespace

    from flows.tune import warm_tune
    from nightcap.config import validate

    mi = 2**20
    grid = {"cpu": [0.5, 1, 2], "memory": ["768Mi"], "concurrency": [1, 2, 4, 8], "replicas": 1}
    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 250}, "tune": grid})
    chosen = {"cpu": 1.0, "memory": 768 * mi, "concurrency": 2}
    store = _Store([{"run_id": "n1", "summary": {"tuning": {"replicas": 1, "best": chosen, "candidates_measured": 7}}}])

    def night(rps_of) -> tuple:
        steps: list[str] = []
        ctx = SimpleNamespace(store=store, config=config, run_id="tonight",
                              stage_steps=lambda stage: [s for s in steps if s == stage])
        results: list = []

        def measure(c: Candidate, _of: str) -> None:
            steps.extend(["tune"] * 3)  # three windows per candidate
            results.append(evaluate(c, replicas=1, saturation_rps=rps_of(c), p95_ms=50.0, cpu_use_pct=80.0,
                                    memory_peak_pct=40.0, meets_slo=True))
        return warm_tune(ctx, measure, results), results  # type: ignore[arg-type]

    per_cpu = {0.5: 40.0, 1.0: 100.0, 2.0: 100.0}  # rps: 1 CPU has the best rps per core
    same = lambda c: per_cpu[c.cpu] * (1.0 if c.concurrency == 2 else 0.8)  # noqa: E731  (1 CPU x 2 still best)
    warm, results = night(same)
    assert warm.accepted and warm.from_run == "n1" and "still wins" in warm.reason, warm
    assert [r.candidate for r in results][0] == Candidate(1.0, 768 * mi, 2) and len(results) == 5
    assert warm.levels[0] == Candidate(1.0, 768 * mi, 2).label() and warm.windows == 15
    moved = lambda c: per_cpu[c.cpu] * (1.5 if c.concurrency == 4 else 1.0)  # noqa: E731  (concurrency 4 wins now)
    warm, _ = night(moved)
    assert not warm.accepted and warm.reason.startswith("the full planner ran: the choice moved"), warm
