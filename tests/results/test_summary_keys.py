"""summary.json's key set is held by a golden file, so a renamed or dropped key fails here.

`tests/golden/summary_keys.json` lists every key path summary.json can have (`a.b`, `a[].b` inside lists,
`stages.<stage>.status` for every stage).
This test builds summaries from typed stage results of every kind (all stages measured; and the sparse
cases: nothing found, no sizing targets, no history) and compares their keys with the file, both ways.
Real runs are checked too: `test_stages.py` and `make run` summaries must stay inside the set.

New keys are additions: regenerate the file, and check a real run against it, with

    .venv/bin/python tests/results/test_summary_keys.py [reports/<run>/summary.json ...]

A key that disappears or changes its name is a contract change: the README's "Outputs (contracts)" keys
must keep their meaning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nightcap.analysis.autoscale_load import phase_rows
from nightcap.analysis.autoscale_metrics import AutoscaleSample, summarize_autoscale
from nightcap.analysis.canary import CanaryFigure, CanarySettings
from nightcap.analysis.regression import check_regression
from nightcap.analysis.confidence import Estimate
from nightcap.analysis.operating_point import OperatingPointCheck, RateWindow, check_operating_point
from nightcap.analysis.pod_capacity import Check, FigureWindow, PodFigure, PodKey
from nightcap.analysis.slo import Slo
from nightcap.analysis.sizing import SizingInputs, size_rows, validate_against_scaling
from nightcap.analysis.tune_pairs import settle_cpu
from nightcap.analysis.tuning import Candidate, evaluate
from nightcap.analysis.usl import fit_usl
from nightcap.config import AutoscalePhase, validate
from nightcap.platforms.base import PodSpec
from nightcap.results.stages import (
    AutoscaleResult,
    CanaryResult,
    RampResult,
    RegressionOutcome,
    ScalingResult,
    ScalingRow,
    SizingResult,
    StageResults,
    TuneResult,
)
from nightcap.search.confirm import Confirmation
from nightcap.results.report import per_pod_line
from nightcap.results.summary import build_summary
from nightcap.search.levels import Level, SearchResult
from nightcap.search.warm_start import WarmStart, disabled

GOLDEN = Path(__file__).parents[1] / "golden" / "summary_keys.json"
MI = 1 << 20
CANARY = CanarySettings(work_kb=2048, cpu=0.5, slots=2, users=4)
STAGES = ["tune", "single_client", "multi_client", "scaling", "sizing", "autoscale", "regression"]
# report rows repeat other blocks' keys; a target's version fields depend on its kind
# and platform.cpu_pinning describes the machine's CPUs (nightcap.platforms.cpu_pinning): neither is a contract
OPAQUE = ("sections[].rows", "target.version", "platform.cpu_pinning")
BY_NAME = {"stages": "<stage>"}  # dicts keyed by a name: every entry has the same keys


def key_paths(value: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if prefix in OPAQUE:
        return paths
    if isinstance(value, dict):
        for key, item in value.items():
            key = BY_NAME.get(prefix, key)
            path = f"{prefix}.{key}" if prefix else str(key)
            paths |= {path} | key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths |= key_paths(item, prefix + "[]")
    return paths


def _search(rps: float | None, users: int | None) -> SearchResult:
    levels = [Level(1, 50.0, 20.0, 0.0, 2, True, True, False), Level(2, 95.0, 24.0, 0.0, 2, True, True, False),
              Level(4, 99.0, 80.0, 0.0, 1, True, False, False, "p95 80 ms over the SLO 50 ms")]
    if rps is None:
        return SearchResult(None, None, None, None, None, None, levels=levels[2:], found=False,
                            stop_reason="p95 80 ms over the SLO 50 ms at 1 users", windows=1)
    return SearchResult(users, rps, 1, rps * 0.7, 2, 95.0, levels=levels, stop_reason="flat", windows=5,
                        saturation_halfwidth=2.0, operating_halfwidth=1.4, slo_halfwidth=2.5)


SLO50 = Slo(p95_ms=50.0, max_error_rate=0.01)
KEY = PodKey(0.5, 512 * MI, 2, 1)


def _check(rate: float, met: bool) -> OperatingPointCheck:
    """An operating-point check: met at once, or missed and backed off to half the rate."""
    def measure(r: float) -> RateWindow:
        ok = met or r <= rate / 2
        p95 = 20 if ok else 90
        return RateWindow(r, r, r, r, 10.0, float(p95), 30.0, 12.0, int(r * 6), int(r * 6), 0, 0, 0, "ok",
                          ok_ms={10: int(r * 3), p95: int(r * 3)})
    return check_operating_point(measure, rate, SLO50, backoff_windows=2)


def _figure(rates: list[float], stage: str = "single_client", users: int = 2, key: PodKey = KEY) -> PodFigure:
    return PodFigure(key, users, stage, 1, [FigureWindow(stage, "confirm", 1, users, r, 2.0, 10) for r in rates], 2.0)


def _confirmation(rates: list[float], users: int = 2) -> Confirmation:
    from nightcap.search.confirm import summarize_windows
    from nightcap.search.levels import Point

    return summarize_windows(users, [Point(users, r, 24.0, 0.0, rps_halfwidth=2.0, batches=10) for r in rates],
                             Slo(50.0, 0.01))


def _ctx(results: StageResults, stages: dict[str, dict[str, Any]], **info: Any) -> SimpleNamespace:
    config = validate({"target": {"name": "golden", "kind": "reference"}, "slo": {"p95_ms": 50}, "stages": STAGES,
                       "sizing": {"users": [100], "rps": [500]}})
    platform = SimpleNamespace(limits_enforced=True, limits_note="cgroup v1 limits enforced")
    return SimpleNamespace(config=config, spec=PodSpec(cpu=0.5, memory=512 * MI, concurrency=2), platform=platform,
                           results=results, stages=stages, warnings=["a warning"], run_plots=["trend.png"],
                           info={"run_id": "r1", "target": {"name": "golden", "kind": "reference", "version": "v",
                                                                 "payload": {"source": "its input example",
                                                                             "synthetic": False}},
                                 "config_hash": "abc", "deploy_s": 1.0, "smoke": {"status": 200, "elapsed_ms": 3.0},
                                 "status": "completed", **info})


def full_summary() -> dict[str, Any]:
    """Every stage measured something; a history to compare with; the node pool changed during autoscaling."""
    candidates = [evaluate(Candidate(cpu, 512 * MI, 2), replicas=2, saturation_rps=100.0 * cpu, p95_ms=20.0,
                           cpu_use_pct=90.0, memory_peak_pct=40.0, oom_kills=0, restarts=0, meets_slo=True)
                  for cpu in (0.5, 1.0)]
    figure = _figure([98.0, 99.0, 100.0])
    single = RampResult("single_client", 1, 1, _search(95.0, 2), 22.0, 0, plot="single_client.png",
                        warm_start=WarmStart("n0", True, [2, 1, 4], 4, "run n0's knee at 2 users holds"),
                        operating_check=_check(66.5, met=True), confirmation=_confirmation([98.0, 99.0, 100.0]))
    ratio = Estimate(1.01, 0.02, 3, 2.0)
    multi_check = Check("multi_client", 2, Estimate(100.0, 2.0, 3, 2.0), "unstable", "3 pair(s) differ", ratio)
    figure.checks.append(multi_check)
    figure.other, figure.other_stage = Estimate(97.0, 2.0, 3, 2.0), "multi_client"
    multi = RampResult("multi_client", 2, 1, _search(99.0, 2), 21.0, 0, plot="multi_client.png",
                       operating_check=_check(69.3 * 97 / 99, met=False), check=multi_check, ratio=ratio,
                       warm_start=WarmStart("n0", False, [2], 1, "fell back to the full search: the knee moved"))
    fit = fit_usl([1, 2, 3, 4], [95, 180, 260, 330])
    rows = [ScalingRow(n, 95.0 * n, 2, 95.0, 1.0, 4, "flat", 2.0, 3, [0.97, 1.03], 3) for n in (1, 2)]
    by_cores = [{"replicas": 1, "cpu": 0.5, "cores": 0.5, "slo_users": 4, "slo_rps": 95.0, "p95_ms": 30.0,
                 "error_rate": 0.0, "users_per_pod": 4.0, "steps": 5, "slo_exceeded": True}]
    per_pod = StageResults(pods={KEY: figure}, run_pod=KEY, single_client=single).per_pod()
    assert per_pod is not None
    cfg = _ctx(StageResults(), {}).config
    pod = SizingInputs(saturation_rps=95.0, headroom=0.7, mean_latency_s=0.02, slo_rate_rps=60.0, in_flight_held=4.0,
                       verified_rate_rps=60.0)
    sizing_rows = size_rows(cfg.sizing, pod, cpu_per_pod=0.5)
    samples = [AutoscaleSample(t=float(t), phase="overload" if t else "baseline", rps=90.0, p50_ms=10.0,
                               p95_ms=40.0 + 10 * (t == 2), error_rate=0.0, current=1 + (t > 2), desired=2,
                               ready=1 + (t > 3), pending=0, nodes=1 + (t > 3), offered_rps=90.0 if t else 21.0,
                               planned=180 if t else 42) for t in range(6)]
    # eight earlier nights, newest first, steady around 100 rps, then tonight 30% lower: an alarm with where the
    # change began (and a platform canary measured every night: its check and the normalised figures); one night
    # whose headline stage was inconclusive is left out of the baseline
    baseline = [{"run_id": f"n{i}", "started_at": f"2024-01-{20 - i:02d}T02:00:00",
                 "saturation_rps": 100.0 + i % 3, "rps_per_core": 100.0 + i % 3,
                 "p95_at_operating_ms": 20.0, "slo_users": 4, "canary_rps_per_core": 500.0 + i,
                 "summary": {"saturation": {"stage": "single_client", "rps": 100.0 + i % 3, "rps_ci": [98.0, 103.0]},
                             "stages": {"single_client": {"status": "inconclusive" if i == 5 else "completed"}}}}
                for i in range(8)]
    regression = check_regression({"run_id": "r1", "saturation_rps": 70.0, "rps_per_core": 70.0,
                                   "p95_at_operating_ms": 21.0, "slo_users": 4, "canary_rps_per_core": 503.0,
                                   "intervals": {"saturation_rps": [68.0, 72.0]}},
                                  baseline)
    block = regression.to_dict()
    assert block["change_points"] and block["platform"] and block["new_level"] and block["excluded"], \
        "the fixture must show every key"
    results = StageResults(
        pods={KEY: figure, PodKey(0.5, 512 * MI, 2, 2): _figure([180.0, 182.0, 181.0], "tune", 4)}, run_pod=KEY,
        operating=multi.operating_check, operating_stage="multi_client",
        tune=TuneResult(candidates, 2, 12, 2, ["memory settled at 512Mi"], "cpu=0.5", True, candidates[0],
                        _search(50.0, 1), 0.7, plot="tuning_heatmap.png", confirmation=_confirmation([181.0] * 3, 4),
                        cpu_pairs=settle_cpu(candidates[0].candidate, Candidate(1.0, candidates[0].candidate.memory,
                                                                                candidates[0].candidate.concurrency),
                                             [Estimate(50.0, 2.0, 9, 8.0)] * 3, [Estimate(99.0, 3.0, 9, 8.0)] * 3)),
        single_client=single, multi_client=multi,
        scaling=ScalingResult(rows, fit, fit, 4, by_cores, plots=["scaling_usl.png", "p95_by_cores.png"]),
        sizing=SizingResult(sizing_rows, per_pod, 0.02, 0.7, 2.0, 0.5, pod=pod, latency_from="mean latency open loop",
                            validation=validate_against_scaling(pod, {1: 95.0, 2: 190.0})),
        autoscale=AutoscaleResult(summarize_autoscale(samples, Slo.of(cfg.slo), 1.0, 4.0),
                                  phase_rows([AutoscalePhase(name="baseline", load=0.7, duration_s=1.0),
                                              AutoscalePhase(name="overload", load=3.0, duration_s=5.0)], samples),
                                  per_pod,
                                  {"target_cpu_pct": 80, "min": 1, "max": 4, "sync_period_s": 1, "stabilization_s": 3},
                                  "node-pool autoscaling on (1-3 nodes)", 2.0, samples, plot="autoscale_timeline.png"),
        regression=RegressionOutcome(regression, baseline_runs=4, nights=9),
        canary=CanaryResult(CANARY, CanaryFigure(503.0, 6.0, 3, 0.0), 9.5, "",
                            [{"rps": 251.5, "rps_halfwidth": 3.0, "p95_ms": 20.0, "error_rate": 0.0, "valid": True}]))
    results.tune.warm_start = disabled("no comparable night chose a pod size on 2 pod(s)")  # type: ignore[union-attr]
    stages = {s: {"status": "completed", "duration_s": 1.0, "steps": 3} for s in STAGES}
    return build_summary(_ctx(results, stages))  # type: ignore[arg-type]


def sparse_summary() -> dict[str, Any]:
    """Nothing found, no sizing targets, no history store, a failed stage and a run that stopped on an error."""
    results = StageResults(
        tune=TuneResult([], 0, 12, 2, [], "no candidate met the SLO", False, None, None, 0.7),
        single_client=RampResult("single_client", 1, 1, _search(None, None), None, 1),
        sizing=SizingResult([], None, None, 0.7, 2.0, 1.0, note="no sizing.users or sizing.rps targets configured"),
        regression=RegressionOutcome(None, note="no history store"),
        canary=CanaryResult(CANARY, note="not measured: canary.enabled is false"))
    stages = {"tune": {"status": "failed", "error": "no candidate met the SLO", "duration_s": 1.0, "steps": 2},
              "single_client": {"status": "inconclusive", "reason": "no load level met the SLO", "duration_s": 1.0,
                                "steps": 1}}
    return build_summary(_ctx(results, stages, error="boom", failure="no saturation point was measured: boom"))  # type: ignore[arg-type]


def verified_summary() -> dict[str, Any]:
    """make run's shape: tune confirmed the pod, single_client verified it on its own windows."""
    check = Check("single_client", 1, Estimate(95.0, 2.0, 2, 2.0), "agrees", "2 window(s) agree with tune's figure")
    single = RampResult("single_client", 1, 1, _search(95.0, 2), 22.0, 0, check=check)
    results = StageResults(pods={KEY: _figure([94.0, 95.0, 96.0], "tune")}, run_pod=KEY, single_client=single)
    return build_summary(_ctx(results, {"tune": {"status": "completed"}, "single_client": {"status": "completed"}}))  # type: ignore[arg-type]


def built_keys() -> set[str]:
    return key_paths(full_summary()) | key_paths(sparse_summary()) | key_paths(verified_summary())


def test_summary_keys_match_the_golden_file() -> None:
    golden = set(json.loads(GOLDEN.read_text()))
    built = built_keys()
    assert not golden - built, f"keys renamed or dropped (a contract change; see the module docstring): {sorted(golden - built)}"
    assert not built - golden, (f"new keys {sorted(built - golden)}: regenerate the golden file with "
                                "`.venv/bin/python tests/results/test_summary_keys.py`")


def test_contract_keys_of_the_readme_are_in_the_golden_file() -> None:
    golden = set(json.loads(GOLDEN.read_text()))
    contract = {"saturation.rps", "saturation.users", "operating_point.rps", "slo_capacity.users", "slo_capacity.rps",
                "platform.limits_enforced", "tuning.best.cpu", "tuning.best.memory", "tuning.best.concurrency",
                "tuning.candidates_measured", "tuning.grid_size", "tuning.candidates", "single_client", "multi_client",
                "scaling.rows", "scaling.usl", "slo_capacity.by_cores", "sizing.rows[].target", "sizing.rows[].pods",
                "sizing.rows[].cores", "sizing.rows[].nodes", "sizing.rows[].cost_per_hour",
                "sizing.rows[].binding_constraint", "autoscale.peak_replicas", "autoscale.time_to_scale_up_s",
                "autoscale.time_to_ready_s", "autoscale.time_to_recover_slo_s", "autoscale.slo_breach_s",
                "autoscale.peak_pending", "autoscale.scale_down_s", "autoscale.samples", "regression.verdict"}
    contract |= {"stages.<stage>.status"}
    assert contract <= golden, sorted(contract - golden)


def test_only_the_tune_stage_reports_the_tuned_pods_confirmed_figure() -> None:
    """A run with only `tune`: its confirmed figure (on tune.replicas pods) is the answer."""
    candidate = evaluate(Candidate(0.5, 512 * MI, 2), replicas=2, saturation_rps=52.0, p95_ms=12.0, cpu_use_pct=90.0,
                         memory_peak_pct=40.0, oom_kills=0, restarts=0, meets_slo=True)
    tune_key = PodKey(0.5, 512 * MI, 2, 2)
    results = StageResults(tune=TuneResult([candidate], 1, 12, 2, [], "cpu=0.5", True, candidate, _search(52.0, 1), 0.7),
                           pods={tune_key: _figure([49.0, 50.0, 51.0], "tune", 1, tune_key)}, run_pod=KEY)
    summary = build_summary(_ctx(results, {"tune": {"status": "completed"}}))  # type: ignore[arg-type]
    sat = summary["saturation"]
    assert (sat["rps"], sat["users"], sat["stage"], sat["replicas"], sat["windows"]) == (50.0, 1, "tune", 2, 3)
    assert summary["operating_point"]["rps"] == 35.0 and summary["operating_point"]["p95_ms"] == 12.0
    assert summary["slo_capacity"]["users"] is None  # a tuning search never looks for the SLO's limit
    assert summary["rps_per_core"] == 50.0  # 50 rps on 2 pods of 0.5 CPU
    row = summary["tuning"]["candidates"][0]  # what the choice compared: its search's 52 rps on 2 pods of 0.5 CPU
    assert (row["chosen_on_rps"], row["chosen_on_rps_per_core"]) == (52.0, 52.0)
    assert summary["capacity"]["per_pod"]["rps"] == 25.0  # per pod
    # the interval from the spread between the 3 windows: t(2) x 1 / sqrt(3) = ±2.48 (over each window's ±2)
    assert summary["answer"].startswith("golden saturates at 50.0 rps ± 5% (on 3 fresh windows) with 1 concurrent "
                                        "user on 2 replica(s) of 0.50 CPU; operate at 35.0 rps ± 5% (70%)")


def test_every_per_pod_figure_is_capacity_per_pod() -> None:
    """One pod, one number: the headline, both ramps' blocks, sizing and autoscale use capacity.per_pod's
    planning figure (here unstable: the lower of the two), and report.md says so once."""
    full = full_summary()
    per_pod = full["capacity"]["per_pod"]
    assert per_pod["status"] == "unstable" and per_pod["rps"] == 97.0 and per_pod["measured_rps"] == 99.0
    for block in (full, full["single_client"], full["multi_client"]):
        assert block["saturation"]["rps"] == 97.0 and block["saturation"]["status"] == "unstable"
    assert full["sizing"]["inputs"]["per_pod_rps"] == 97.0 and full["autoscale"]["one_pod_saturation_rps"] == 97.0
    assert full["saturation"]["stage"] == "single_client"
    assert full["multi_client"]["vs_single_client"]["ratio"] == 1.01 and full["multi_client"]["vs_single_client"]["pairs"] == 3
    assert any("one pod measured differently" in w for w in full["warnings"])
    line = per_pod_line(per_pod)
    assert line is not None and "**unstable**" in line and "97.0 rps" in line and "99.0 rps" in line
    assert per_pod_line(None) is None
    assert "unstable" in full["answer"]
    assert build_summary(_ctx(StageResults(), {}))["capacity"] == {"per_pod": None, "pods": []}  # type: ignore[arg-type]
    assert sparse_summary()["saturation"] == {"rps": None, "users": None, "found": False, "replicas": None,
                                              "stop_reason": "p95 80 ms over the SLO 50 ms at 1 users",
                                              "rps_ci": None, "stage": None, "inconclusive": None}


def test_the_operating_point_is_reported_where_it_was_measured() -> None:
    """The run's operating rate (70% of the planning figure) missed the SLO open loop and backed off."""
    full = full_summary()
    op, slo = full["operating_point"], full["slo_capacity"]
    assert op["load"] == "open" and op["meets_slo"] is False and op["p95_ms"] == 90.0
    assert op["windows"] == 2 and op["p95_ci"][0] <= 90.0 <= op["p95_ci"][1] and op["arrivals"] == "poisson"
    assert [round(w["rate_rps"], 2) for w in op["verification"]] == [67.9, 33.95, 50.92]  # bisection on [0, 67.9]
    assert slo["rate_rps"] == 33.95 and slo["rate_rps_interval"] == [33.95, 50.92]
    assert full["operating_line"].endswith("the SLO holds at 34.0 rps (the highest rate in [34.0, 50.9) rps "
                                           "measured to meet it)")
    assert "operate at 67.9 rps" in full["answer"] and "(it holds up to 34.0 rps)" in full["answer"]
    assert full["sizing"]["inputs"]["per_pod_rate_rps"] == 60.0
    assert full["sizing_line"].startswith("sizing with p95 ≤ 50 ms at 60.0 rps per pod (verified open loop")
    unverified = sparse_summary()["single_client"]["operating_point"]
    assert unverified["load"] == "closed" and unverified["meets_slo"] is None


def real_run_keys_outside_golden(summary: dict[str, Any]) -> list[str]:
    """For tests of real runs: the keys a real summary.json has that the golden file does not."""
    return sorted(key_paths(summary) - set(json.loads(GOLDEN.read_text())))


if __name__ == "__main__":
    keys = built_keys()
    for path in sys.argv[1:]:
        outside = key_paths(json.loads(Path(path).read_text())) - keys
        if outside:
            sys.exit(f"{path} has keys the typed results here never build: {sorted(outside)}; "
                     "add the case to full_summary/sparse_summary in tests/results/test_summary_keys.py")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(sorted(keys), indent=1) + "\n")
    print(f"{GOLDEN}: {len(keys)} key paths" + (f"; {len(sys.argv) - 1} real summary checked" if sys.argv[1:] else ""))


def test_a_figure_tune_confirmed_still_reports_the_slo_capacity_single_client_walked_to() -> None:
    """make run: tune confirms the pod, single_client verifies it and walks past the knee to 31 users."""
    single = RampResult("single_client", 1, 1, SearchResult(2, 95.0, 1, 66.5, 31, 120.0, levels=[], slo_halfwidth=5.0),
                        22.0, 0)
    results = StageResults(pods={KEY: _figure([94.0, 95.0, 96.0], "tune")}, run_pod=KEY, single_client=single)
    summary = build_summary(_ctx(results, {"tune": {"status": "completed"}, "single_client": {"status": "completed"}}))  # type: ignore[arg-type]
    assert summary["saturation"]["stage"] == "tune" and summary["slo_capacity"]["users"] == 31
    assert summary["slo_capacity"]["rps"] == 120.0
