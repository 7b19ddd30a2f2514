"""The autoscale stage sized to its platform: which pod shape and how many pods fit the CPUs reserved for replicas,
how the HPA will step under the overload, and the backlog arithmetic the phases are planned on (issue 23 item 1)."""

from __future__ import annotations

import pytest

from nightcap.analysis.autoscale_load import default_phases
from nightcap.analysis.autoscale_plan import Shape, expect, fit_to_platform, hpa_steps, pods_that_fit
from nightcap.config import AutoscaleConfig

MI = 1 << 20
TUNED_1CPU = Shape(1.0, 1024 * MI, 1, 120.0, "single_client / 1 pod(s)")
GRID = [Shape(0.5, 1024 * MI, 1, 55.0, "tune, on 1 pod(s)"), Shape(0.5, 768 * MI, 2, 50.0, "tune, on 1 pod(s)"),
        Shape(1.0, 1024 * MI, 1, 118.0, "tune, on 1 pod(s)")]


def test_the_tuned_pod_is_used_when_max_replicas_of_it_fit() -> None:
    fit = fit_to_platform(Shape(0.25, 256 * MI, 4, 31.0, "x"), GRID, replica_cpus=1.0, min_replicas=1,
                          max_replicas=4, overload=3.0, headroom=0.7)
    assert (fit.change, fit.max_replicas, fit.overload, fit.reason, fit.no_room) == ("none", 4, 3.0, "", None)
    on_a_cluster = fit_to_platform(TUNED_1CPU, GRID, None, 1, 12, 3.0, 0.7)  # nodes are the cluster's business
    assert on_a_cluster.shape == TUNED_1CPU and on_a_cluster.max_replicas == 12


def test_fewer_replicas_when_the_tuned_pod_still_leaves_room_to_add_one() -> None:
    """2 pods of 0.5 CPU fit in 1 CPU: the max drops to 2, and the overload to what 2 pods take at 70%."""
    fit = fit_to_platform(Shape(0.5, 1024 * MI, 1, 55.0, "single_client / 1 pod(s)"), GRID, 1.0, 1, 4, 3.0, 0.7)
    assert (fit.change, fit.max_replicas, fit.overload) == ("fewer replicas", 2, 1.4)
    assert fit.reason == ("autoscale.max_replicas 4 lowered to 2: 2 pods of 0.5 CPU fit in the 1 CPU(s) reserved for "
                          "replicas; the overload is 1.4x one pod (not 3x), what 2 pods take at the 70% operating point")


def test_a_smaller_measured_shape_when_the_tuned_pod_fits_only_once() -> None:
    """The make-run default of issue 23: a 1-CPU tuned pod on 2 cores (1 CPU for replicas) could never be joined
    by a second; the largest grid shape that fits twice is used, at its own measured rate (best rps per core)."""
    fit = fit_to_platform(TUNED_1CPU, GRID, 1.0, 1, 4, 3.0, 0.7)
    assert fit.change == "smaller pod" and fit.shape == GRID[0] and fit.max_replicas == 2 and fit.overload == 1.4
    assert fit.reason.startswith("the tuned pod (1 CPU) fits 1 time(s) in the 1 CPU(s) reserved for replicas, leaving "
                                 "no room to add one: the stage uses the tune grid's 0.5 CPU, concurrency 1 pod (55.0 "
                                 "rps, tune, on 1 pod(s)), 2 of which fit")
    row = fit.to_dict()
    assert row["one_pod_rps"] == 55.0 and row["change"] == "smaller pod" and set(row) == set(fit.keys())


def test_no_room_says_what_to_change() -> None:
    fit = fit_to_platform(TUNED_1CPU, [GRID[2]], 1.0, 1, 4, 3.0, 0.7)
    assert fit.no_room is not None and "tune.cpu" in fit.no_room and "autoscale.min_replicas" in fit.no_room
    assert pods_that_fit(0.25, 1.0, 12) == 4 and pods_that_fit(0.3, 0.9, 12) == 3 and pods_that_fit(None, 1.0, 5) == 5


@pytest.mark.parametrize("load,start,top,expected", [
    (3.0, 1, 4, [1, 2, 3, 4]),  # CPU capped at the limit: at most x1.25 a step at an 80% target
    (3.0, 1, 12, [1, 2, 3, 4]),  # 3 pods' load on 4 pods is 75%: within the tolerance of 80%
    (1.4, 1, 2, [1, 2]),
    (0.7, 1, 4, [1]),  # no overload, no step
    (6.0, 1, 3, [1, 2, 3]),  # the max stops it
])
def test_hpa_steps(load: float, start: int, top: int, expected: list[int]) -> None:
    assert hpa_steps(load, start, top, 80, 0.1).pods == expected


def test_the_backlog_arithmetic_of_the_cpu_bound_reference_case() -> None:
    """0.25 CPU, 8 ms CPU a request (31 rps a pod), 4 slots + 64 queued; 3x offered; sync 2 s, readiness 2 s,
    a 0.5 s start: three steps of 4.75 s; the first pod's queue is full (68) long before; with 4 pods it gets 23.25
    rps and serves 31, so it drains in 68 / 7.75 = 8.8 s, within the overload, which lasts for it."""
    e = expect(31.0, 3.0, 0.7, min_replicas=1, max_replicas=4, target_pct=80, tolerance=0.1, sync_s=2,
               readiness_s=2, sample_s=2, start_s=0.5, backlog_bound=68, stabilization_s=10)
    assert e.pods == [1, 2, 3, 4] and e.step_s == 4.75 and e.ready_s == 14.25 and e.backlog == 68
    assert e.drain_overload_s == pytest.approx(68 / (31 - 93 / 4), abs=0.01)
    assert e.recover_in_overload_s == pytest.approx(14.25 + 8.77, abs=0.01)
    assert e.overload_s == pytest.approx(14.25 + 8.77 + 6, abs=0.1) and e.recovery_s == 18  # stabilization + 4 syncs
    assert e.drain_recovery_s == 0.0


def test_a_backlog_the_overload_cannot_drain_is_left_to_the_recovery() -> None:
    """The make-run default after the fit: 2 pods of 0.5 CPU (55 rps), 1.4x offered, a 10.6 s start. The second pod
    is ready after 19.9 s with 438 requests queued at the first; at 77 rps two pods drain them at 16.5 rps (27 s),
    so the overload ends when the pod is ready and the recovery (38.5 rps) drains the rest: 9.5 s."""
    e = expect(55.0, 1.4, 0.7, min_replicas=1, max_replicas=2, target_pct=80, tolerance=0.1, sync_s=2,
               readiness_s=2, sample_s=2, start_s=10.6, backlog_bound=2000, stabilization_s=8)
    assert e.pods == [1, 2] and e.ready_s == pytest.approx(19.9) and e.backlog == pytest.approx(437.8)
    assert e.drain_overload_s == pytest.approx(26.53, abs=0.01) and e.recover_in_overload_s is None
    assert e.overload_s == pytest.approx(25.9)
    left = 437.8 - 6 * (55 - 77 / 2)
    assert e.drain_recovery_s == pytest.approx(left / (55 - 38.5 / 2), abs=0.01)
    assert e.recovery_s == 16  # the stabilization + 4 syncs is longer than the drain plus 3 samples
    never = expect(55.0, 3.0, 0.7, min_replicas=1, max_replicas=2, target_pct=80, tolerance=0.1, sync_s=2,
                   readiness_s=2, sample_s=2, start_s=1.0, backlog_bound=500, stabilization_s=8)
    assert never.drain_overload_s is None and never.backlog == 500  # 2 pods cannot take 3 pods' load


def test_default_phases_follow_the_arithmetic_when_there_is_one() -> None:
    a = AutoscaleConfig(sync_period_s=2, readiness_delay_s=2, stabilization_s=10, overload=3.0, sample_s=2)
    e = expect(31.0, 3.0, 0.7, min_replicas=1, max_replicas=4, target_pct=80, tolerance=0.1, sync_s=2,
               readiness_s=2, sample_s=2, start_s=0.5, backlog_bound=68, stabilization_s=10)
    base, over, down = default_phases(a, 0.7, 3.0, e)
    assert (base.duration_s, over.duration_s, down.duration_s) == (6, e.overload_s, e.recovery_s)
    capped = default_phases(a, 0.7, 1.4, e)
    assert capped[1].load == 1.4 and capped[0].load == capped[2].load == 0.7


def test_configured_phases_are_offered_as_written_and_the_fit_says_so() -> None:
    """autoscale.phases given: the overload is theirs, never lowered (the log once said "2.8x, not 3x" and then
    offered 3x)."""
    tuned = Shape(0.25, None, 8, 25.0, "single_client")
    fit = fit_to_platform(tuned, [], 1.0, 1, 6, 3.0, 0.7, phases_given=True)
    assert fit.max_replicas == 4 and fit.overload == 3.0 and "overload" not in fit.reason
    capped = fit_to_platform(tuned, [], 1.0, 1, 6, 3.0, 0.7)
    assert capped.overload == 2.8 and "the overload is 2.8x one pod (not 3x)" in capped.reason


def test_the_overload_is_capped_at_the_rate_the_open_loop_check_held_the_slo_at() -> None:
    """make run 12-05 05:51: the operating-point check backed off to 57.2 of the figure's 106.6 rps (0.54); capped
    at 2 x 0.7 = 1.4x one pod, the overload put 75 rps on each of 2 pods, a rate the check had already seen miss the
    SLO, and "25 s over the SLO" was the plan's doing, not the HPA's."""
    tuned = Shape(0.5, 768 * MI, 1, 106.6, "capacity.per_pod")
    held = 57.2 / 106.6
    fit = fit_to_platform(tuned, GRID, 1.0, 1, 4, 3.0, 0.7, held=held)
    assert (fit.change, fit.max_replicas, fit.overload) == ("fewer replicas", 2, 1.07)
    assert fit.held == pytest.approx(held)
    assert fit.reason.endswith("the overload is 1.07x one pod (not 3x), what 2 pods take at 54% of one pod's "
                               "figure, the rate its open-loop check held the SLO at")
    at_headroom = fit_to_platform(tuned, GRID, 1.0, 1, 4, 3.0, 0.7, held=0.72)  # the check held the operating point
    assert at_headroom.overload == 1.4 and at_headroom.held is None
    assert fit_to_platform(tuned, [], 1.0, 1, 4, 3.0, 0.7, phases_given=True, held=held).overload == 3.0
    on_a_cluster = fit_to_platform(tuned, GRID, None, 1, 12, 3.0, 0.7, held=held)  # nothing to cap; baseline bound
    assert on_a_cluster.overload == 3.0 and on_a_cluster.held == pytest.approx(held)
    smaller = fit_to_platform(TUNED_1CPU, GRID, 1.0, 1, 4, 3.0, 0.7, held=held)  # a grid shape: never checked
    assert smaller.change == "smaller pod" and smaller.overload == 1.4 and smaller.held is None
