"""The autoscaling lines of report.md against their numbers: an answer, an inconclusive stage, a stage that did not
run, and the per-phase lines (by arrival: what a phase's own arrivals became)."""

from __future__ import annotations

from nightcap.analysis.autoscale_load import phase_rows
from nightcap.analysis.autoscale_metrics import AutoscaleSample, inconclusive_reason, summarize_autoscale
from nightcap.analysis.autoscale_plan import Shape, expect, fit_to_platform
from nightcap.analysis.sizing import PerPod
from nightcap.analysis.slo import Slo
from nightcap.config import AutoscalePhase
from nightcap.results.report import autoscale_line, phase_line
from nightcap.results.stages import AutoscaleResult

SLO = Slo(p95_ms=500, max_error_rate=0.01)
PHASES = [AutoscalePhase(name="baseline", load=0.7, duration_s=4), AutoscalePhase(name="overload", load=1.4,
                                                                                   duration_s=8),
          AutoscalePhase(name="recovery", load=0.7, duration_s=6)]
NOTE = "node-pool autoscaling: not available on the local platform"


def sample(t: float, phase: str, current: int, desired: int, ready: int, p95: float, planned: int = 40,
           ok: int = 40, failures: int = 0) -> AutoscaleSample:
    return AutoscaleSample(t=t, phase=phase, rps=ok / 2, p50_ms=p95 / 2, p95_ms=p95,
                           error_rate=(planned - ok) / planned, current=current, desired=desired, ready=ready,
                           pending=0, offered_rps=planned / 2, planned=planned, ok=ok, failures=failures,
                           covered_s=2.0)


def result(samples: list[AutoscaleSample], why: str | None = None) -> AutoscaleResult:
    tuned = Shape(1.0, 2**30, 1, 120.0, "single_client / 1 pod(s)")
    fit = fit_to_platform(tuned, [Shape(0.5, 2**30, 1, 55.0, "tune, on 1 pod(s)")], 1.0, 1, 4, 3.0, 0.7)
    expected = expect(55.0, fit.overload, 0.7, min_replicas=1, max_replicas=2, target_pct=80, tolerance=0.1,
                      sync_s=2, readiness_s=2, sample_s=2, start_s=1.0, backlog_bound=2000, stabilization_s=8)
    timings = summarize_autoscale(samples, SLO, 4.0, 12.0) if samples else None
    return AutoscaleResult(timings, phase_rows(PHASES, samples), PerPod(120.0, 8, None, "single_client / 1 pod(s)"),
                           {}, NOTE, 0.0, samples, fit=fit, expected=expected,
                           inconclusive=why or inconclusive_reason(timings, 18))


RECOVERED = [sample(2, "baseline", 1, 1, 1, 40), sample(4, "overload", 1, 2, 1, 900, ok=30, failures=10),
             sample(6, "overload", 2, 2, 1, 1200, ok=35, failures=5), sample(8, "overload", 2, 2, 2, 700),
             sample(10, "overload", 2, 2, 2, 600), sample(12, "recovery", 2, 2, 2, 700),
             sample(14, "recovery", 2, 2, 2, 90), sample(16, "recovery", 2, 1, 1, 60)]


def test_an_answer_says_the_pod_shape_when_pods_were_ready_and_when_p95_came_back() -> None:
    r = result(RECOVERED)
    assert r.inconclusive is None
    head, *phases = autoscale_line(r).split("\n")
    assert head == (
        "autoscaling: 1→2 replicas on pods of 0.5 CPU, concurrency 1 (55.0 rps each; the tuned pod (1 CPU) fits 1 "
        "time(s) in the 1 CPU(s) reserved for replicas, leaving no room to add one: the stage uses the tune grid's 0.5 "
        "CPU, concurrency 1 pod (55.0 rps, tune, on 1 pod(s)), 2 of which fit; the overload is 1.4x one pod (not 3x), "
        "what 2 pods take at the 70% operating point), first scale-up 0s after the step, added pods ready 4s after "
        "the step (expected 6s), the SLO (p95 and errors) met again 2s after the step back down (expected 0s); 10s "
        f"over the SLO; peak Pending 0; {NOTE}")
    assert phases[1] == ("  phase overload: 20.0 rps offered open loop (1.4× one pod), 18.1 rps served; 0 dropped and "
                         "15 failed of its 160 arrivals (9.4%), worst p95 1200 ms")


def test_an_inconclusive_stage_says_why_first() -> None:
    never = [sample(2, "baseline", 1, 1, 1, 40), sample(4, "overload", 2, 2, 1, 900), sample(6, "overload", 2, 2, 1, 900)]
    line = autoscale_line(result(never))
    assert line.startswith("autoscaling inconclusive: the added pods never became ready within the 18s of the "
                           "experiment (1 of the 2 asked for were ready at most): 1→2 replicas on pods of 0.5 CPU")
    assert "added pods never all ready" in line and "ready after never" not in line
    assert "the SLO (p95 and errors) never met again" in line
    stopped = autoscale_line(result([], "it did not run: no pod shape with a measured rate leaves room"))
    assert stopped.startswith("autoscaling inconclusive: it did not run: no pod shape with a measured rate leaves "
                              "room; pods of 0.5 CPU, concurrency 1 (55.0 rps each;")
    assert "\n" not in stopped  # no phase ran: no phase lines


def test_phase_lines_name_abandoned_and_unsettled_arrivals_only_when_there_are_some() -> None:
    row = {"name": "overload", "load": 3.0, "offered_rps": 90.0, "served_rps": 60.0, "planned": 900, "dropped": 100,
           "failures": 150, "abandoned": 20, "unsettled": 5, "error_rate": 270 / 900, "worst_p95_ms": 2300.0}
    assert phase_line(row) == ("phase overload: 90.0 rps offered open loop (3× one pod), 60.0 rps served; 100 dropped "
                               "and 150 failed, 20 abandoned of its 900 arrivals (30.0%), 5 never came back, worst "
                               "p95 2300 ms")
    assert phase_line({"name": "idle", "offered_rps": None, "served_rps": 0.0}) == \
        "phase idle: nothing offered, 0.0 rps served"
