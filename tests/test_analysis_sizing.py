"""Sizing: Little's law with headroom, cross-checked against measured per-pod capacity; SLO capacity per core count."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nightcap.analysis.saturation import steps_frame
from nightcap.analysis.sizing import (
    LATENCY,
    Capacity,
    PerPod,
    max_replicas,
    per_pod_capacity,
    SLO_USERS,
    THROUGHPUT,
    size_for_rps,
    size_for_users,
    size_rows,
    slo_capacity_by_cores,
)
from nightcap.config import SizingConfig, SloConfig
from nightcap.results.steps import StepRow, write_steps_csv


def test_rps_row_equals_the_hand_computation() -> None:
    # 500 rps × 0.2 s = 100 in flight; / 4 per pod / 0.7 = 35.7 → 36 pods of 2 CPU = 72 cores; 2 pods per 4-core node
    row = size_for_rps(500, 0.2, 4, cpu_per_pod=2.0, node_allocatable_cpu=4.0, price_per_core_hour=0.05)
    assert (row.pods, row.cores, row.nodes) == (36, 72.0, 18)
    assert row.cost_per_hour == pytest.approx(3.6)
    assert row.binding_constraint == LATENCY and row.in_flight == pytest.approx(100.0)
    assert row.target == "500 rps" and row.pods_per_node == 2


def test_linear_reference_target_matches_the_analytic_answer() -> None:
    """Reference target, 1 CPU pods, 4 slots of 20 ms: 200 rps per pod, latency 20 ms, no think time.

    120 users keep 120 requests in flight → ceil(120 / 4 / 0.7) = 43 pods, and 6000 rps / (200 × 0.7)
    is the same 43: for a server that scales linearly Little's law and measured throughput agree.
    """
    per_pod_rps = 4 * 1000 / 20.0
    row = size_for_users(120, 0.020, 4, cpu_per_pod=1.0, node_allocatable_cpu=4.0, per_pod_rps=per_pod_rps)
    assert row.rps == pytest.approx(6000.0)
    assert (row.pods, row.cores, row.nodes) == (43, 43.0, 11)
    assert row.binding_constraint == f"{LATENCY} and {THROUGHPUT}"
    assert row.cost_per_hour is None


def test_issue_example_slo_users_bind() -> None:
    # 120 users thinking 0.9 s between 0.1 s requests = 120 rps, 12 in flight → 5 pods by Little's law,
    # but each pod kept only 20 users under the SLO → 6 pods of 2 CPU = 12 cores on 2 nodes of 8.
    row = size_for_users(120, 0.1, 4, cpu_per_pod=2.0, node_allocatable_cpu=8.0, think_time_s=0.9,
                         per_pod_rps=100.0, per_pod_slo_users=20)
    assert row.pods_by_latency == 5 and row.pods_by_throughput == 2 and row.pods_by_slo_users == 6
    assert (row.pods, row.cores, row.nodes) == (6, 12.0, 2)
    assert row.binding_constraint == SLO_USERS


def test_throughput_binds_when_the_pod_cannot_sustain_its_concurrency() -> None:
    row = size_for_rps(100, 0.05, 8, cpu_per_pod=1.0, node_allocatable_cpu=4.0, per_pod_rps=20.0)
    assert row.pods_by_latency == 1 and row.pods_by_throughput == 8 and row.pods == 8
    assert row.binding_constraint == THROUGHPUT


def test_float_dust_does_not_add_a_pod() -> None:
    assert size_for_rps(70, 0.1, 1, cpu_per_pod=1.0, node_allocatable_cpu=2.0).pods == 10


def test_pods_must_fit_on_nodes_not_only_cores() -> None:
    # 5 pods of 1.5 CPU = 7.5 cores fit 2 nodes of 4 by cores, but only 2 pods fit a node → 3 nodes
    row = size_for_rps(10, 1.0, 2, cpu_per_pod=1.5, node_allocatable_cpu=4.0, headroom=1.0)
    assert row.pods == 5 and row.cores == 7.5 and row.pods_per_node == 2 and row.nodes == 3


def test_a_pod_larger_than_a_node_is_an_error_that_says_what_to_change() -> None:
    with pytest.raises(ValueError, match="node_allocatable_cpu"):
        size_for_rps(10, 1.0, 2, cpu_per_pod=4.0, node_allocatable_cpu=2.0)
    with pytest.raises(ValueError, match="no step met the SLO"):
        size_for_users(10, 1.0, 2, cpu_per_pod=1.0, node_allocatable_cpu=2.0, per_pod_slo_users=0)


def test_size_rows_from_config() -> None:
    cfg = SizingConfig(users=[10, 100], rps=[50], node_allocatable_cpu="4", price_per_core_hour=0.04)
    rows = size_rows(cfg, latency_s=0.5, per_pod_concurrency=2, cpu_per_pod=1.0, per_pod_rps=10.0)
    assert [r.target for r in rows] == ["10 users", "100 users", "50 rps"]
    assert all(r.cost_per_hour == pytest.approx(r.cores * 0.04) for r in rows)
    assert set(rows[0].to_dict()) >= {"target", "pods", "cores", "nodes", "cost_per_hour", "binding_constraint"}


sizes = dict(
    latency=st.floats(0.001, 10), conc=st.integers(1, 64), cpu=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
    per_pod_rps=st.none() | st.floats(0.5, 5000), slo_users=st.none() | st.floats(0.5, 500),
)


@given(a=st.integers(1, 100_000), b=st.integers(1, 100_000), **sizes)
def test_sizing_is_monotonic_in_users(a: int, b: int, latency: float, conc: int, cpu: float,
                                      per_pod_rps: float | None, slo_users: float | None) -> None:
    lo, hi = sorted((a, b))
    kw = dict(cpu_per_pod=cpu, node_allocatable_cpu=8.0, per_pod_rps=per_pod_rps, per_pod_slo_users=slo_users)
    small, large = size_for_users(lo, latency, conc, **kw), size_for_users(hi, latency, conc, **kw)
    assert (small.pods, small.cores, small.nodes) <= (large.pods, large.cores, large.nodes)
    assert small.pods <= large.pods and small.nodes <= large.nodes
    assert large.nodes * large.pods_per_node >= large.pods >= 1


@given(a=st.floats(0.01, 1e6), b=st.floats(0.01, 1e6), **sizes)
def test_sizing_is_monotonic_in_rps(a: float, b: float, latency: float, conc: int, cpu: float,
                                    per_pod_rps: float | None, slo_users: float | None) -> None:
    lo, hi = sorted((a, b))
    kw = dict(cpu_per_pod=cpu, node_allocatable_cpu=8.0, per_pod_rps=per_pod_rps, per_pod_slo_users=slo_users)
    small, large = size_for_rps(lo, latency, conc, **kw), size_for_rps(hi, latency, conc, **kw)
    assert small.pods <= large.pods and small.cores <= large.cores and small.nodes <= large.nodes
    assert large.pods == max(p for p in (large.pods_by_latency, large.pods_by_throughput, large.pods_by_slo_users) if p)


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
    by = slo_capacity_by_cores(steps_frame(_steps()), SloConfig(p95_ms=1000, max_error_rate=0.01))
    assert by["replicas"].tolist() == [1, 2, 3]
    assert by["cores"].tolist() == [1.0, 2.0, 3.0]
    assert by["slo_users"].tolist() == [16, 32, 0]
    assert by["slo_rps"].tolist() == [160.0, 320.0, 0.0]
    assert by["users_per_pod"].tolist() == [16.0, 16.0, 0.0]


def test_slo_capacity_reads_steps_csv_as_pandas_does(tmp_path: Path) -> None:
    path = tmp_path / "steps.csv"
    write_steps_csv(path, _steps())
    by = slo_capacity_by_cores(pd.read_csv(path), SloConfig(p95_ms=1000))
    assert by["slo_users"].tolist() == [16, 32, 0]


def test_slo_capacity_of_nothing_is_an_empty_frame() -> None:
    assert slo_capacity_by_cores(pd.DataFrame(), SloConfig(p95_ms=1000)).empty


def test_max_replicas_is_bounded_by_allocatable_cores() -> None:
    assert max_replicas(8, 0.5, 2.0) == 4
    assert max_replicas(3, 0.5, 2.0) == 3  # what was asked for, when it fits
    assert max_replicas(8, 1.0, 0.6) == 1  # at least one pod
    assert max_replicas(8, 0.3, 0.9) == 3  # 0.9 / 0.3 is 2.9999…: not rounded down to 2
    assert max_replicas(8, None, 2.0) == 8 and max_replicas(8, 0.5, None) == 8  # unknown: unbounded


def test_per_pod_capacity_prefers_one_measured_pod_then_divides_the_ramp() -> None:
    one = Capacity(rps=120.0, users=6, slo_users=9)
    ramp = Capacity(rps=250.0, users=13, slo_users=20, replicas=2)
    assert per_pod_capacity(one, ramp, "single_client") == PerPod(120.0, 6, 9.0, "scaling at 1 pod(s)")
    assert per_pod_capacity(None, ramp, "single_client") == PerPod(125.0, 6, 10.0, "single_client / 2 pod(s)")
    assert per_pod_capacity(Capacity(None, None), ramp, "multi_client").source == "multi_client / 2 pod(s)"
    assert per_pod_capacity(None, Capacity(30.0, 1, None, replicas=4)).users == 1  # never 0 users
    assert per_pod_capacity(None, Capacity(None, None)) is None and per_pod_capacity(None, None) is None
