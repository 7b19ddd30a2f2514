"""Sizing from measured per-pod rates (pods = ceil(target / per-pod rate), users -> rate through think time
and mean latency, Little's law binding only beyond what a pod held), its check against scaling, and SLO
capacity per core count."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nightcap.analysis.saturation import steps_frame
from nightcap.analysis.sizing import (
    CONCURRENCY,
    RATE,
    SizingInputs,
    max_replicas,
    size_for_rps,
    size_for_users,
    size_rows,
    slo_capacity_by_cores,
    validate_against_scaling,
)
from nightcap.analysis.slo import Slo
from nightcap.config import SizingConfig
from nightcap.steps import StepRow, write_steps_csv

# The reference target of issue 13: 4 slots x 20 ms with a large queue = 200 rps per pod, SLO met at 70%
# load (140 rps), where an M/D/4 queue adds ~2 ms to the 20 ms service (mean 22 ms), and a pod held 12
# users within the SLO in the closed-loop ramp.
REFERENCE = SizingInputs(saturation_rps=200.0, headroom=0.7, mean_latency_s=0.022, in_flight_held=12)
NODE = dict(cpu_per_pod=1.0, node_allocatable_cpu=4.0)


def test_reference_target_1000_rps_is_8_pods() -> None:
    row = size_for_rps(1000, REFERENCE, **NODE, price_per_core_hour=0.05)
    assert REFERENCE.rate_rps == pytest.approx(140)
    assert row.pods == 8 and row.pods_by_rate == 8  # 1000 / 140 = 7.14
    assert row.binding_constraint == RATE
    assert row.in_flight == pytest.approx(22) and row.in_flight_per_pod == pytest.approx(2.75)
    assert row.pods_by_concurrency == 2  # 22 in flight / 12 held: far from binding
    assert row.cores == 8 and row.nodes == 2 and row.cost_per_hour == pytest.approx(0.4)
    assert "1000 rps / 140.0 rps per pod (70% of the 200.0 rps one pod saturates at) = 7.14 -> 8 pod(s)" in row.reason
    assert "concurrency does not bind" in row.reason


def test_reference_target_50_users_with_1s_think_time_is_1_pod() -> None:
    row = size_for_users(50, REFERENCE, think_time_s=1.0, **NODE)
    assert row.rps == pytest.approx(50 / 1.022)
    assert row.pods == 1 and row.binding_constraint == RATE
    assert row.in_flight == pytest.approx(50 / 1.022 * 0.022)
    assert row.reason.startswith("50 users x 1 request per (1 s think + 22 ms mean latency) = 48.9 rps; 48.9 rps")


def test_the_slo_rate_caps_the_per_pod_rate_when_the_slo_held_only_below_the_headroom() -> None:
    pod = SizingInputs(saturation_rps=200.0, headroom=0.7, mean_latency_s=0.05, slo_rate_rps=100.0)
    row = size_for_rps(1000, pod, **NODE)
    assert pod.rate_rps == 100 and row.pods == 10
    assert "the SLO held up to 100.0 rps, below 70% of saturation" in row.reason
    assert row.pods_by_concurrency is None and "concurrency was not checked" in row.reason
    higher = SizingInputs(saturation_rps=200.0, headroom=0.7, mean_latency_s=0.05, slo_rate_rps=180.0)
    assert higher.rate_rps == pytest.approx(140)  # a rate above the headroom is not planned on


def test_littles_law_binds_only_beyond_what_a_pod_held() -> None:
    # 1 s mean latency: 140 rps per pod means 140 in flight per pod, but a pod held only 50 within the SLO
    pod = SizingInputs(saturation_rps=200.0, headroom=0.7, mean_latency_s=1.0, in_flight_held=50)
    row = size_for_rps(1000, pod, **NODE)
    assert row.pods_by_rate == 8 and row.pods_by_concurrency == 20 and row.pods == 20
    assert row.binding_constraint == CONCURRENCY
    assert "more than the 50 a pod held within the SLO: 1000 / 50 -> 20 pods (concurrency binds)" in row.reason


def test_users_without_think_time_are_all_in_flight() -> None:
    row = size_for_users(100, REFERENCE, think_time_s=0.0, **NODE)
    assert row.in_flight == pytest.approx(100)
    assert row.rps == pytest.approx(100 / 0.022)


def test_nodes_from_pods_per_node_and_cores() -> None:
    row = size_for_rps(1000, REFERENCE, cpu_per_pod=1.5, node_allocatable_cpu=4.0)
    assert row.pods_per_node == 2 and row.nodes == 4 and row.cores == pytest.approx(12)


def test_bad_inputs_name_what_to_change() -> None:
    with pytest.raises(ValueError, match="does not fit on a custom node"):
        size_for_rps(10, REFERENCE, cpu_per_pod=4.0, node_allocatable_cpu=2.0)
    with pytest.raises(ValueError, match="no rate met the SLO"):
        SizingInputs(saturation_rps=100, headroom=0.7, mean_latency_s=0.01, slo_rate_rps=0)
    with pytest.raises(ValueError, match="mean latency"):
        SizingInputs(saturation_rps=100, headroom=0.7, mean_latency_s=0)
    with pytest.raises(ValueError, match="rps must be > 0"):
        size_for_rps(0, REFERENCE, **NODE)


def test_size_rows_from_config() -> None:
    cfg = SizingConfig(users=[50, 120], rps=[1000], node_allocatable_cpu=4.0, think_time_s=1.0)
    rows = size_rows(cfg, REFERENCE, cpu_per_pod=1.0)
    assert [r.target for r in rows] == ["50 users", "120 users", "1000 rps"]
    assert [r.pods for r in rows] == [1, 1, 8]
    assert set(rows[0].to_dict()) >= {"target", "pods", "cores", "nodes", "cost_per_hour", "binding_constraint",
                                      "reason", "in_flight", "pods_by_rate", "per_pod_rate_rps"}


def test_validation_puts_the_model_beside_what_scaling_measured() -> None:
    rows = validate_against_scaling(REFERENCE, {1: 196.0, 2: 380.0, 3: 0.0})
    assert [r.replicas for r in rows] == [1, 2]  # a pod count without a measurement is skipped
    assert rows[1].predicted_saturation_rps == 400 and rows[1].measured_saturation_rps == 380
    assert rows[1].error == pytest.approx(400 / 380 - 1)
    assert rows[1].predicted_rate_rps == pytest.approx(280)


pods = dict(
    sat=st.floats(0.5, 5000), headroom=st.floats(0.1, 1.0), latency=st.floats(0.001, 10),
    slo_rate=st.none() | st.floats(0.1, 5000), held=st.none() | st.floats(0.5, 500),
    cpu=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
)


def _pod(sat: float, headroom: float, latency: float, slo_rate: float | None, held: float | None) -> SizingInputs:
    return SizingInputs(saturation_rps=sat, headroom=headroom, mean_latency_s=latency, slo_rate_rps=slo_rate,
                  in_flight_held=held)


@given(a=st.integers(1, 100_000), b=st.integers(1, 100_000), think=st.floats(0, 10), **pods)
def test_sizing_is_monotonic_in_users(a: int, b: int, think: float, sat: float, headroom: float, latency: float,
                                      slo_rate: float | None, held: float | None, cpu: float) -> None:
    lo, hi = sorted((a, b))
    pod = _pod(sat, headroom, latency, slo_rate, held)
    kw = dict(think_time_s=think, cpu_per_pod=cpu, node_allocatable_cpu=8.0)
    small, large = size_for_users(lo, pod, **kw), size_for_users(hi, pod, **kw)
    assert (small.pods, small.cores, small.nodes) <= (large.pods, large.cores, large.nodes)
    assert large.nodes * large.pods_per_node >= large.pods >= 1


@given(a=st.floats(0.01, 1e6), b=st.floats(0.01, 1e6), **pods)
def test_sizing_is_monotonic_in_rps_and_each_pod_stays_within_its_measured_rate(
        a: float, b: float, sat: float, headroom: float, latency: float, slo_rate: float | None,
        held: float | None, cpu: float) -> None:
    lo, hi = sorted((a, b))
    pod = _pod(sat, headroom, latency, slo_rate, held)
    small, large = (size_for_rps(x, pod, cpu_per_pod=cpu, node_allocatable_cpu=8.0) for x in (lo, hi))
    assert small.pods <= large.pods and small.cores <= large.cores and small.nodes <= large.nodes
    assert large.pods == max(large.pods_by_rate, large.pods_by_concurrency or 0)
    assert hi / large.pods <= pod.rate_rps * (1 + 1e-9)  # no pod planned beyond its sustainable rate
    if held is not None:
        assert hi * latency / large.pods <= held * (1 + 1e-9)  # nor beyond the concurrency it held
    assert math.isclose(large.in_flight, hi * latency)


def _step(replicas: int, users: int, p95: float | None, err: float = 0.0, **kw: object) -> StepRow:
    return StepRow(stage="scaling", step=users, replicas=replicas, cpu=1.0, memory=None, concurrency=4,
                   users=users, rps=users * 10.0, p95_ms=p95, error_rate=err, **kw)  # type: ignore[arg-type]


def _steps() -> list[StepRow]:
    return [
        _step(1, 8, 300), _step(1, 16, 700), _step(1, 32, 1500),
        _step(1, 64, 200, generator_bound=True),  # looks great, but measured the generator
        _step(2, 16, 300), _step(2, 32, 800), _step(2, 48, 900, err=0.05),  # errors over the max
        _step(2, 64, 100, valid=False),  # a killed worker: never counted
        _step(3, 8, None),  # no latency measured: does not pass
    ]


def test_slo_capacity_by_cores_ignores_generator_bound_and_invalid_steps() -> None:
    by = slo_capacity_by_cores(steps_frame(_steps()), Slo(p95_ms=1000, max_error_rate=0.01))
    assert by["replicas"].tolist() == [1, 2, 3]
    assert by["cores"].tolist() == [1.0, 2.0, 3.0]
    assert by["slo_users"].tolist() == [16, 32, 0]
    assert by["slo_rps"].tolist() == [160.0, 320.0, 0.0]
    assert by["users_per_pod"].tolist() == [16.0, 16.0, 0.0]
    assert by["slo_exceeded"].tolist() == [True, True, True]  # 32 users, 48 users (errors), 8 users (no p95) failed


def test_slo_capacity_by_cores_judges_a_level_as_the_search_does() -> None:
    """make run's headline said 20 users fit (the search judged each level on its last window: 340 then 220 ms)
    while the by-cores table, which asked every window, said 8 (16 users: 300 then 190 ms). Both now judge a level
    on the median p95 and mean error rate of its windows (`slo.level_of`): the table's users are the search's, and a
    layout never pushed past the SLO says its users are a lower bound (slo_exceeded false)."""
    from nightcap.search.levels import Point, SearchParams, measure_level

    windows = {8: [100.0], 16: [300.0, 190.0], 20: [340.0, 220.0], 24: [460.0]}
    steps = [_step(1, u, p95) for u, p95s in windows.items() for p95 in p95s] + [_step(2, 4, 30), _step(2, 5, 39)]
    slo = Slo(p95_ms=250)
    by = slo_capacity_by_cores(steps_frame(steps), slo).set_index("replicas")
    assert by.loc[1, "slo_users"] == 16 and by.loc[1, "p95_ms"] == 245 and bool(by.loc[1, "slo_exceeded"])
    assert by.loc[2, "slo_users"] == 5 and not bool(by.loc[2, "slo_exceeded"])
    for users, p95s in windows.items():  # the search's level verdict on the same windows
        given = iter(Point(users, users * 10.0, p95, 0.0) for p95 in p95s)
        level = measure_level(lambda u: next(given), users, slo, SearchParams(max_windows=len(p95s)))
        assert level.good == (users <= 16), (users, level)


def test_slo_capacity_reads_steps_csv_as_pandas_does(tmp_path: Path) -> None:
    path = tmp_path / "steps.csv"
    write_steps_csv(path, _steps())
    by = slo_capacity_by_cores(pd.read_csv(path), Slo(p95_ms=1000))
    assert by["slo_users"].tolist() == [16, 32, 0]


def test_slo_capacity_of_nothing_is_an_empty_frame() -> None:
    assert slo_capacity_by_cores(pd.DataFrame(), Slo(p95_ms=1000)).empty


def test_max_replicas_is_bounded_by_allocatable_cores() -> None:
    assert max_replicas(8, 0.5, 2.0) == 4
    assert max_replicas(3, 0.5, 2.0) == 3  # what was asked for, when it fits
    assert max_replicas(8, 1.0, 0.6) == 1  # at least one pod
    assert max_replicas(8, 0.3, 0.9) == 3  # 0.9 / 0.3 is 2.9999…: not rounded down to 2
    assert max_replicas(8, None, 2.0) == 8 and max_replicas(8, 0.5, None) == 8  # unknown: unbounded
