"""The HPA model against the cases in the Kubernetes documentation (algorithm details, behavior policies)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightcap.analysis.hpa import (
    HpaController,
    ScalingPolicy,
    ScalingRules,
    desired_replicas,
    replica_recommendation,
)
from nightcap.config import AutoscaleConfig


def test_ratio_doubles_and_halves() -> None:
    # docs: 200m against a 100m target doubles the replicas; 50m halves them
    assert desired_replicas(3, [200.0] * 3, [True] * 3, target_pct=100) == 6
    assert desired_replicas(4, [50.0] * 4, [True] * 4, target_pct=100) == 2
    assert desired_replicas(1, [90.0], [True], target_pct=80) == 2  # 1.125 → ceil


def test_tolerance_skips_small_changes() -> None:
    assert desired_replicas(10, [88.0] * 10, [True] * 10, target_pct=80) == 10  # ratio 1.10: within 0.1
    assert desired_replicas(10, [72.0] * 10, [True] * 10, target_pct=80) == 10  # ratio 0.90
    assert desired_replicas(10, [89.0] * 10, [True] * 10, target_pct=80) == 12  # ratio 1.1125
    assert desired_replicas(10, [89.0] * 10, [True] * 10, target_pct=80, tolerance=0.2) == 10


def test_missing_metrics_count_as_zero_on_scale_up() -> None:
    # three pods at 200% of a 100% target, one without metrics: base ratio 2 would give 8;
    # counting the missing pod at 0% gives 150% over 4 pods → 6
    rec = replica_recommendation(4, [200.0, 200.0, 200.0, None], [True] * 4, target_pct=100)
    assert rec.replicas == 6 and rec.utilization == pytest.approx(200.0) and rec.ratio == pytest.approx(1.5)


def test_missing_metrics_count_as_full_on_scale_down() -> None:
    # three pods at 40%, one missing: counted at 100%, the mean is 55% → 3 pods, not 2
    assert desired_replicas(4, [40.0, 40.0, 40.0, None], [True] * 4, target_pct=100) == 3
    # a target above 100% fills missing pods at the target itself: (300 + 200) / 4 / 200 → 3, not 2
    assert desired_replicas(4, [100.0, 100.0, 100.0, None], [True] * 4, target_pct=200) == 3


def test_missing_metrics_that_reverse_the_direction_mean_no_change() -> None:
    # one pod at 120% (scale up), one missing counted 0% → 60%: the direction flips, so nothing happens
    rec = replica_recommendation(2, [120.0, None], [True, True], target_pct=100)
    assert rec.replicas == 2 and "no change" in rec.reason


def test_not_ready_pods_count_as_zero_on_scale_up() -> None:
    # two ready pods at 200%, two starting: 0% for them brings the mean to 100% → within tolerance
    assert desired_replicas(4, [200.0, 200.0, 300.0, 300.0], [True, True, False, False], target_pct=100) == 4
    # two ready at 300%, one starting: (600 + 0) / 3 = 200% → 6
    assert desired_replicas(3, [300.0, 300.0, 10.0], [True, True, False], target_pct=100) == 6


def test_not_ready_pods_are_set_aside_on_scale_down() -> None:
    # two ready pods at 20%, two not ready: ratio 0.2 over the 2 ready pods → 1
    assert desired_replicas(4, [20.0, 20.0, 90.0, 90.0], [True, True, False, False], target_pct=100) == 1


def test_no_metrics_at_all_means_no_change() -> None:
    assert desired_replicas(3, [None, None, None], [True, True, True], target_pct=80) == 3
    hpa = HpaController(1, 10, 80)
    assert hpa.decide(0, 3, [None, 50.0], [True, False]) == 3
    assert "no ready pod has metrics" in hpa.last_reason


def test_scale_down_stabilization_uses_the_highest_recommendation_in_the_window() -> None:
    hpa = HpaController(1, 12, target_pct=50, stabilization_s=300, scale_up=ScalingRules(0, (ScalingPolicy("Percent", 1000, 15),)))
    assert hpa.decide(0, 2, [250.0] * 2, [True] * 2) == 10  # 2 × 5 = 10
    assert hpa.decide(15, 10, [10.0] * 10, [True] * 10) == 10  # metrics say 2, but 10 was recommended 15 s ago
    assert "stabilized" in hpa.last_reason
    assert hpa.decide(295, 10, [10.0] * 10, [True] * 10) == 10  # still inside the window
    assert hpa.decide(301, 10, [10.0] * 10, [True] * 10) == 2  # the 10 left the window


def test_no_scale_down_right_after_start() -> None:
    hpa = HpaController(1, 12, target_pct=80, stabilization_s=60)
    assert hpa.decide(0, 6, [10.0] * 6, [True] * 6) == 6  # the current count seeds the window
    assert hpa.decide(61, 6, [10.0] * 6, [True] * 6) == 1


def test_default_scale_up_policy_is_max_of_4_pods_and_100_percent_per_15s() -> None:
    hpa = HpaController(1, 100, target_pct=10, stabilization_s=0)
    assert hpa.decide(0, 1, [100.0], [True]) == 5  # wants 10: max(1 + 4, 1 × 2) = 5
    assert hpa.decide(5, 5, [100.0] * 5, [True] * 5) == 5  # same 15 s period, started at 1: no more
    assert hpa.decide(15, 5, [100.0] * 5, [True] * 5) == 10  # new period from 5: max(9, 10) = 10, wants 50
    assert hpa.decide(30, 10, [100.0] * 10, [True] * 10) == 20  # max(14, 20)
    assert hpa.decide(45, 20, [100.0] * 20, [True] * 20) == 40


def test_scale_down_policies_from_the_docs() -> None:
    # docs: Pods 4 / 60 s and Percent 10 / 60 s; from 80 replicas 8 go first, then 8 of 72 (7.2 rounded up),
    # and below 40 replicas the Pods policy allows more: 4 at a time
    policies = (ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60))
    hpa = HpaController(1, 100, target_pct=80, stabilization_s=0, scale_down_policies=policies)
    seen, current = [], 80
    for i in range(12):
        current = hpa.decide(60.0 * i, current, [8.0] * current, [True] * current)  # wants 10
        seen.append(current)
    assert seen == [72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16]
    assert all(a - b == 4 for a, b in zip(seen, seen[1:]) if a <= 40)


def test_min_and_max_are_enforced() -> None:
    hpa = HpaController(2, 5, target_pct=50, stabilization_s=0)
    assert hpa.decide(0, 4, [500.0] * 4, [True] * 4) == 5
    assert hpa.decide(100, 5, [1.0] * 5, [True] * 5) == 2
    assert hpa.decide(200, 9, [50.0] * 9, [True] * 9) == 5  # above max by hand: back to max
    assert hpa.decide(300, 1, [50.0], [True]) == 2  # below min by hand: up to min
    assert hpa.decide(400, 0, [], []) == 0  # 0 replicas: autoscaling is off, as in Kubernetes


def test_from_config() -> None:
    hpa = HpaController.from_config(AutoscaleConfig(stabilization_s=10, min_replicas=1, max_replicas=3))
    assert (hpa.min_replicas, hpa.max_replicas, hpa.target_pct, hpa.tolerance, hpa.stabilization_s) == (1, 3, 80.0, 0.1, 10)
    with pytest.raises(ValueError):
        HpaController(3, 2)
    with pytest.raises(ValueError, match="one of each per pod"):
        desired_replicas(2, [1.0], [True, True], 80)


pod = st.tuples(st.none() | st.floats(0, 1000), st.booleans())


@settings(max_examples=150, deadline=None)
@given(
    bounds=st.tuples(st.integers(1, 20), st.integers(0, 30)),
    start=st.integers(1, 60),
    syncs=st.lists(st.tuples(st.floats(0.1, 120), st.lists(pod, min_size=0, max_size=40)), min_size=1, max_size=15),
    target=st.floats(5, 200),
    stabilization=st.sampled_from([0.0, 15.0, 300.0]),
)
def test_hpa_never_leaves_min_max(bounds: tuple[int, int], start: int, syncs: list, target: float,
                                  stabilization: float) -> None:
    lo, extra = bounds
    hpa = HpaController(lo, lo + extra, target_pct=target, stabilization_s=stabilization)
    now, current = 0.0, start
    for dt, pods in syncs:
        now += dt
        current = hpa.decide(now, current, [u for u, _ in pods], [r for _, r in pods])
        assert lo <= current <= lo + extra
