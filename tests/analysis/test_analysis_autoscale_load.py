"""The autoscale stage's load plan: default phases long enough for the controller, each phase's offered and served
rate in the summary, and a clear error for phases the timings could not tell apart."""

from __future__ import annotations

import pytest

from nightcap.analysis.autoscale_load import default_phases, node_pool_note, phase_rows
from nightcap.analysis.autoscale_metrics import AutoscaleSample
from nightcap.config import AutoscaleConfig, AutoscalePhase, ConfigError, validate


def test_default_phases_hold_long_enough_for_the_controller_to_act() -> None:
    a = AutoscaleConfig(sync_period_s=15, readiness_delay_s=30, stabilization_s=300, overload=3.0)
    base, over, down = default_phases(a, headroom=0.7)
    assert [p.name for p in (base, over, down)] == ["baseline", "overload", "recovery"]
    assert (base.load, over.load, down.load) == (0.7, 3.0, 0.7)
    assert base.duration_s == 45  # three sync periods
    assert over.duration_s == 120  # max(8 sync periods, readiness delay + 4 sync periods)
    assert down.duration_s == 360  # stabilization + 4 sync periods
    quick = default_phases(AutoscaleConfig(sync_period_s=1, readiness_delay_s=10, stabilization_s=5), 0.5)
    assert quick[1].duration_s == 14 and quick[2].duration_s == 9


def _sample(t: float, phase: str, covered: float, planned: int, ok: int, dropped: int, failures: int = 0,
            abandoned: int = 0, unsettled: int = 0) -> AutoscaleSample:
    return AutoscaleSample(t=t, phase=phase, rps=ok / covered, p50_ms=10.0, p95_ms=20.0,
                           error_rate=(dropped + failures + abandoned) / planned, current=1, desired=1, ready=1,
                           pending=0, offered_rps=planned / covered, planned=planned, dropped=dropped,
                           failures=failures, ok=ok, covered_s=covered, abandoned=abandoned, unsettled=unsettled)


def test_phase_rows_put_each_phases_offered_and_served_rate_beside_its_plan() -> None:
    """By arrival: a phase's rates are its own arrivals (and those answered) per second it planned them over."""
    phases = [AutoscalePhase(name="baseline", load=0.7, duration_s=4), AutoscalePhase(name="overload", load=3, duration_s=8),
              AutoscalePhase(name="recovery", load=0.7, duration_s=8)]
    samples = [_sample(1, "baseline", 2.0, 140, 140, 0), _sample(3, "overload", 2.0, 600, 240, 240, 120),
               _sample(5, "overload", 2.5, 750, 500, 60, 10, 5, 3)]  # the budget ended the night before the recovery
    base, over, recovery = phase_rows(phases, samples, {"baseline": 0.0, "overload": 2.1})
    assert over["started_s"] == 2.1 and recovery["started_s"] is None
    assert base == {"name": "baseline", "load": 0.7, "duration_s": 4, "started_s": 0.0, "offered_rps": 70, "served_rps": 70,
                    "planned": 140, "dropped": 0, "failures": 0, "error_rate": 0.0, "worst_p95_ms": 20.0,
                    "samples": 1, "ok": 140, "abandoned": 0, "unsettled": 0}
    assert (over["offered_rps"], over["served_rps"]) == (1350 / 4.5, 740 / 4.5)
    assert (over["dropped"], over["failures"], over["abandoned"], over["unsettled"]) == (300, 130, 5, 3)
    assert over["error_rate"] == pytest.approx(435 / 1350)
    assert recovery == {"name": "recovery", "load": 0.7, "duration_s": 8, "started_s": None}  # never run: no figures


def test_phases_with_the_same_name_are_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="autoscale.phases"):
        validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 500},
                  "autoscale": {"phases": [{"name": "up", "load": 3, "duration_s": 5},
                                           {"name": "up", "load": 1, "duration_s": 5}]}})


def test_node_pool_note_says_what_was_done_with_the_nodes() -> None:
    assert node_pool_note("local", {"min": 1, "max": 5}, True).endswith("not available on the local platform")
    assert node_pool_note("kubernetes", {"min": 2, "max": 5}, True) == "node-pool autoscaling on (2-5 nodes)"
    assert "platform.gke is not set" in node_pool_note("kubernetes", {"max": 5}, False)
    assert node_pool_note("kubernetes", None, True) == "node-pool autoscaling not requested (autoscale.nodes)"


def test_the_baseline_stays_under_the_hpa_target_for_a_pod_as_slow_as_its_interval_allows() -> None:
    """make run, 20:33: one 0.5-CPU pod at 95.0 rps (67.4-122.6); 0.7 x 95 = 66.5 rps is 99% of a 67.4-rps pod,
    over the 80% target, and the HPA scaled 1 -> 2 before the step. The baseline goes to 0.8 x 67.4 / 95."""
    from nightcap.analysis.autoscale_load import baseline_load

    load, why = baseline_load(0.7, 80, 95.0, 67.4)
    assert load == pytest.approx(0.8 * 67.4 / 95.0) and load * 95.0 <= 0.8 * 67.4 + 1e-9
    assert why.startswith("baseline at 0.57 x one pod's figure, not the operating point's 0.70: at the lower end")
    assert baseline_load(0.7, 80, 200.0, 190.0) == (0.7, "")  # a tight interval: the operating point is safe
    assert baseline_load(0.7, 80, 95.0, None) == (0.7, "")  # nothing known of the spread


def test_the_baseline_is_planned_on_what_open_loop_arrivals_cost_the_pod() -> None:
    """make run, 21:43: the 0.5-CPU pod's figure was 99.0 rps (73.9-124.1), so the interval bound allowed 59.7 rps;
    but its open-loop windows (the operating-point check) cost it up to 1.87% of its limit per rps: at 54.4 rps
    it already used 87.5%, next to the HPA's 88% trigger, and the HPA scaled 1 -> 2 during the baseline."""
    from types import SimpleNamespace

    from nightcap.analysis.autoscale_load import baseline_load, open_loop_cpu_cost

    def row(rps: float, cpu: float, load: str = "open", replicas: int = 1, valid: bool = True) -> SimpleNamespace:
        return SimpleNamespace(rps=rps, replica_cpu_pct=[cpu], load=load, replicas=replicas, valid=valid)

    rows = [row(71.53, 97.3), row(65.16, 98.0), row(27.92, 46.0), row(32.43, 60.6), row(49.19, 67.3), row(54.38, 87.5),
            row(99.0, 100.0, load="closed"), row(60.0, 200.0, replicas=2), row(10.0, 90.0, valid=False)]
    cost = open_loop_cpu_cost(rows)
    assert cost == pytest.approx(0.606 / 32.43)  # the most expensive open-loop window on one pod
    load, why = baseline_load(0.7, 80, 99.0, 73.9, cost, tolerance=0.1)
    assert load * 99.0 == pytest.approx(0.56 / cost) and 29 < load * 99.0 < 31  # CPU at 56% there
    # well under where the HPA scales (88%): a CPU per request half as high again as measured stays under it (at
    # 64% a pod 37% costlier than its costliest open-loop window crossed it, make run 12-05 15:49)
    assert load * 99.0 * cost * 1.5 < 0.8 * (1 + 0.1)
    assert "open loop the pod used up to 1.87% of its CPU limit per rps" in why and "at 30.0 rps" in why
    assert open_loop_cpu_cost([row(99.0, 100.0, load="closed")]) is None
    assert baseline_load(0.7, 80, 99.0, None, 0.002)[0] == 0.7  # cheap arrivals: the operating point holds


def test_the_baseline_stays_under_the_rate_the_open_loop_check_held_the_slo_at() -> None:
    """make run 12-05 05:51: the SLO held open loop only up to 57.2 of 106.6 rps; a baseline at the operating point
    (0.7 x 106.6 = 74.6 rps) would have started over the SLO, with nothing for "back under the SLO" to return to."""
    from nightcap.analysis.autoscale_load import baseline_load

    load, why = baseline_load(0.7, 80, 106.6, 93.7, held=57.2 / 106.6)
    assert load == pytest.approx(57.2 / 106.6)
    assert why == ("baseline at 0.54 x one pod's figure, not the operating point's 0.70: the open-loop check held the "
                   "SLO only up to 57.2 rps, and a baseline above it would start over the SLO")
    assert baseline_load(0.7, 80, 106.6, 100.0, held=0.75) == (0.7, "")  # it held beyond the operating point
    assert baseline_load(0.7, 80, 106.6, 100.0, held=None) == (0.7, "")
    lower, _ = baseline_load(0.7, 80, 100.0, 40.0, held=0.6)  # the pod's slow end binds first
    assert lower == pytest.approx(0.8 * 40.0 / 100.0)
