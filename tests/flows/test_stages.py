"""The stages end to end on reference targets whose right answer is known from their formula.

Each test runs the real parent flow in-process (real replicas, proxy, Locust processes, Prefect artifacts)
with short windows, and checks the answer against `reference_capacity` / the known curve.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nightcap.platforms.cgroups import detect
from queue_sim import mdc_p95_quantile_ms
from test_summary_keys import real_run_keys_outside_golden

pytestmark = pytest.mark.slow  # the tests that assert measured figures are also `quiet`

LIMITS = detect().enforced


def run_flow(tmp_path: Path, cfg: dict[str, Any]) -> tuple[Any, dict[str, Any], list[dict[str, str]]]:
    from flows.capacity_check import capacity_check

    cfg.setdefault("store", {"url": f"sqlite:///{tmp_path}/history.db"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    state = capacity_check(config=str(path), overrides=[], out=str(out), return_state=True)
    summary = json.loads((out / "summary.json").read_text())
    assert real_run_keys_outside_golden(summary) == []  # summary.json stays inside tests/golden/summary_keys.json
    import csv

    with (out / "steps.csv").open() as handle:
        steps = list(csv.DictReader(handle))
    return state, summary, steps


def base(**target: Any) -> dict[str, Any]:
    return {
        "target": {"name": "ref-test", "kind": "reference", "slots": 4, "service_ms": 20, "queue": 64, **target},
        "platform": {"kind": "local", "replicas": 1, "cpu": None},
        "load": {"workers": 2, "warmup_s": 0.5, "window_s": 1.5, "verify_s": 0},  # test 1 verifies
        "search": {"max_users": 16, "max_windows": 2, "refine_steps": 2},
        "slo": {"p95_ms": 500, "max_error_rate": 0.01},
    }


def within(value: float, truth: float, tolerance: float) -> bool:
    return abs(value - truth) <= tolerance * truth


@pytest.mark.quiet
def test_ramps_scaling_and_sizing_match_the_formula(prefect_api, tmp_path, monkeypatch):
    """4 slots x 40 ms = 100 rps per replica: saturation within ±10% at 1, 2 and 3 replicas, USL linear.

    100 rather than 200 rps per replica: at 600 rps the proxy and two Locust workers on this 2-core machine took
    a share of the CPU the three replicas' timing depends on (efficiency 0.947 in one clean-clone run).
    """
    monkeypatch.chdir(tmp_path)
    cfg = base(service_ms=40)
    cfg["stages"] = ["single_client", "multi_client", "scaling", "sizing"]
    cfg["scaling"] = {"max_replicas": 3}
    cfg["sizing"] = {"users": [50], "rps": [500], "node_allocatable_cpu": 4, "price_per_core_hour": 0.05,
                     "think_time_s": 1.0}
    cfg["load"]["verify_s"] = 3.0
    state, summary, steps = run_flow(tmp_path, cfg)
    assert state.is_completed(), state.message

    assert within(summary["single_client"]["saturation"]["rps"], 100, 0.10)
    assert within(summary["saturation"]["rps"], 100, 0.10)
    # the operating point is the rate the open-loop check offered: 0.7 x the figure as it stood then, which later
    # stages' agreeing windows move by at most 5% before a new check is due
    op = summary["operating_point"]
    assert op["rps"] == pytest.approx(op["verification"][0]["rate_rps"], abs=0.01)
    assert op["rps"] == pytest.approx(0.7 * summary["saturation"]["rps"], rel=0.051)
    rows = {r["replicas"]: r for r in summary["scaling"]["rows"]}
    for n in (1, 2, 3):
        assert within(rows[n]["saturation_rps"], 100 * n, 0.10), rows[n]
    # A target that scales linearly: efficiency within 5% of 1, from 3 pairs of alternating windows. N pods are
    # measured on their plateau, not at their knee: behind the per-connection proxy the knee sat 3-6% under their
    # most (0.945 at 2 pods, 0.947 at 3 in two clean-clone runs when the knee was measured; 1.014 and 0.992 on the
    # plateau). A scaling defect (one pod's worth lost: 0.5 at 2 pods) fails by far.
    for n in (2, 3):
        low, high = rows[n]["efficiency_ci"]
        assert abs(rows[n]["efficiency"] - 1) <= 0.05 and low <= rows[n]["efficiency"] <= high, rows[n]
        assert rows[n]["pairs"] == 3
        # the efficiency's denominator is reported (the mean of the pairs' ratios is close to N pods / (N x it))
        assert within(rows[n]["paired_one_pod_rps"], 100, 0.10), rows[n]
    # one pod, one number: every per-pod figure is capacity.per_pod's
    per_pod = summary["capacity"]["per_pod"]
    assert per_pod["confirm_windows"] >= 3 and per_pod["stage"] == "single_client"
    assert per_pod["measured_by"] == ["single_client", "multi_client", "scaling"]  # every agreeing window joined
    assert per_pod["windows"] > per_pod["confirm_windows"]
    assert rows[1]["saturation_rps"] == pytest.approx(per_pod["rps"], abs=0.01)
    assert summary["saturation"]["rps"] == summary["multi_client"]["saturation"]["rps"] == pytest.approx(per_pod["rps"], abs=0.01)
    assert [c["stage"] for c in per_pod["checks"]][:1] == ["multi_client"]

    usl = summary["scaling"]["usl"]
    assert usl["ok"]
    assert usl["sigma"] < 0.05 and usl["kappa"] < 0.01
    assert usl["predicted_peak_replicas"] is None or usl["predicted_peak_replicas"] > 10

    # The operating point was offered open loop at 70% of saturation (70 rps against 100): the SLO holds, and
    # the p95 is the open-loop one at that rate (about the 40 ms service time plus a little queueing).
    op = summary["operating_point"]
    assert op["load"] == "open" and op["meets_slo"] and op["dropped"] == 0 and op["error_rate"] <= 0.01
    # Poisson arrivals: the offered count over 2 windows of verify_s (3 s) at ~70 rps is ~420 +- 20 (4.9%); within
    # 4 standard deviations (a clean-clone run offered 61.7 against 69.7 planned: -2.4 sd)
    arrivals = op["rps"] * op["windows"] * cfg["load"]["verify_s"]
    assert within(op["offered_rps"], op["rps"], 4 / math.sqrt(arrivals)), op
    # The p95's truth is an M/D/4 queue's (Poisson arrivals, 40 ms held per slot): over two 3-s windows at 70
    # rps it reads 73 ms at the median and 120 ms at the 99th percentile (a clean-clone run read 110 ms against
    # a fixed bound of 100). Bounded by the simulated 99.9th percentile, plus 15 ms for the proxy and HTTP.
    bound = mdc_p95_quantile_ms(op["rps"], 4, 40, window_s=cfg["load"]["verify_s"], windows=op["windows"],
                                quantile=0.999)
    assert 40 <= op["p50_ms"] <= op["p95_ms"] <= bound + 15, (bound, op)
    assert summary["slo_capacity"]["rate_rps"] == op["rps"] and summary["slo_capacity"]["rate_rps_interval"][1] is None
    assert "operating point verified open loop" in summary["operating_line"]
    assert op["windows"] == 2 and op["p95_ci"][0] <= op["p95_ms"] <= op["p95_ci"][1] and op["arrivals"] == "poisson"
    if per_pod["status"] == "confirmed":  # checked once, at the figure's rate: no back-off, no second check
        assert [s["load"] for s in steps].count("open") == 2

    # Sizing from the measured per-pod rate (issue 13's reference case): 70% of ~100 rps = ~70 rps per pod,
    # 500 rps -> 8 pods (+-1); 50 users thinking 1 s each send ~48 rps -> 1 pod.
    inputs = summary["sizing"]["inputs"]
    by_target = {r["target"]: r for r in summary["sizing"]["rows"]}
    rps_row, users_row = by_target["500 rps"], by_target["50 users"]
    # planned on the rate the open-loop check passed at (op.rps, one replica here), never above 70% of the figure:
    # later stages' windows may have moved the figure by up to 5% after the check (69.56 against 0.7 x 99.73 in a
    # clean-clone run); summary.json rounds op.rps to 2 decimals (69.71 for 69.7107)
    assert op["verification"][0]["meets_slo"]
    assert inputs["per_pod_rate_rps"] == pytest.approx(min(op["rps"], 0.7 * inputs["per_pod_rps"]), abs=0.006)
    assert rps_row["pods"] == math.ceil(500 / inputs["per_pod_rate_rps"] - 1e-9) and 7 <= rps_row["pods"] <= 9
    assert users_row["pods"] == 1 and within(users_row["rps"], 50 / (1 + inputs["latency_s"]), 0.001)
    assert 0.038 <= inputs["latency_s"] <= 0.07 and "open loop" in inputs["latency_from"]
    assert rps_row["binding_constraint"] == "per-pod rate" and rps_row["nodes"] >= math.ceil(rps_row["cores"] / 4)
    validation = {v["replicas"]: v for v in summary["sizing"]["validation"]}
    assert set(validation) == {1, 2, 3} and all(abs(v["error"]) < 0.15 for v in validation.values()), validation

    # Two generators against one in alternating windows at the knee: no bottleneck, the ratio near 1.
    vs = summary["multi_client"]["vs_single_client"]
    assert vs["pairs"] == 3 and abs(vs["ratio"] - 1) <= 0.05 and summary["multi_client"]["single_client_was_bottleneck"] is False

    assert all(s["generator_bound"] == "False" for s in steps)
    assert summary["stages"]["scaling"]["status"] == "completed"
    assert (tmp_path / "out" / "p95_by_cores.png").exists()
    assert summary["slo_capacity"]["by_cores"]


@pytest.mark.quiet
def test_retrograde_target_gives_positive_kappa(prefect_api, tmp_path, monkeypatch):
    """A shared lock whose cost grows with concurrency: throughput falls past a peak, USL κ > 0."""
    monkeypatch.chdir(tmp_path)
    cfg = base(slots=16, service_ms=10, coherency_ms=3)
    cfg["stages"] = ["scaling"]
    cfg["scaling"] = {"max_replicas": 1}
    cfg["search"] = {"max_users": 32, "max_windows": 1, "refine_steps": 2}
    cfg["slo"] = {"p95_ms": 2000, "max_error_rate": 0.01}
    state, summary, _ = run_flow(tmp_path, cfg)
    assert state.is_completed(), state.message
    fit = summary["scaling"]["usl_users_one_pod"]
    assert fit["ok"], fit
    assert fit["kappa"] > 0.001
    assert fit["predicted_peak_n"] is not None and fit["predicted_peak_n"] < 16
    assert fit["retrograde_from_n"] is not None
    # the one-pod figure scaling confirmed is the run's answer when no ramp ran (not "no stage measured it")
    assert summary["saturation"]["stage"] == "scaling" and summary["saturation"]["rps"], summary["saturation"]


def test_starved_generator_is_flagged_and_never_the_answer(prefect_api, tmp_path, monkeypatch):
    """A generator capped at 5% of a core cannot load a 3200 rps target: steps are generator-bound."""
    if not LIMITS:
        pytest.skip("cgroups not writable here: cannot starve the generator")
    monkeypatch.chdir(tmp_path)
    cfg = base(slots=64, service_ms=5)
    cfg["load"].update(worker_cpu=0.05)
    cfg["stages"] = ["single_client"]
    state, summary, steps = run_flow(tmp_path, cfg)
    bound = [s for s in steps if s["generator_bound"] == "True"]
    assert bound, "no step was flagged although the generator was capped"
    sat = summary["single_client"]["saturation"]
    assert not sat["found"]
    assert "generator" in sat["stop_reason"]
    bound_users = {int(s["users"]) for s in bound}
    if sat["users"] is not None:
        assert sat["users"] not in bound_users


@pytest.mark.skipif(not LIMITS, reason="cgroups not writable: CPU limits cannot be enforced here")
@pytest.mark.quiet
def test_tune_picks_best_rps_per_core_and_names_the_limit(prefect_api, tmp_path, monkeypatch):
    """capacity = min(concurrency x 1000 / (service+cpu), cpu x 1000 / cpu_ms); 64Mi is below the working set."""
    monkeypatch.chdir(tmp_path)
    cfg = base(service_ms=10, cpu_ms=2, memory_mb=80)
    cfg["platform"] = {"kind": "local", "replicas": 1, "cpu": 0.5, "memory": "256Mi"}
    cfg["tune"] = {"cpu": [0.25, 0.5], "memory": ["64Mi", "256Mi"], "concurrency": [1, 2, 4], "replicas": 1}
    cfg["search"] = {"max_users": 16, "max_windows": 1, "refine_steps": 1}
    cfg["stages"] = ["tune"]
    state, summary, steps = run_flow(tmp_path, cfg)
    tuning = summary["tuning"]
    assert tuning["candidates_measured"] < tuning["grid_size"] == 12
    best = tuning["best"]
    assert best["memory"] == 256 * 2**20
    assert best["cpu"] == 0.25  # 500 rps per core at cpu 0.25 and at cpu 0.5: the smaller pod wins the tie
    assert best["concurrency"] >= 2
    # the two CPU sizes of the chosen memory and concurrency, in alternating windows (the larger pod's CPU set in
    # place): at concurrency 2 the 0.5-CPU pod is held by its slots (2 x 1000 / 12 ms = 167 rps, 333 per core)
    # and the 0.25-CPU pod by its CPU (125 rps, 500 per core): the truth is 1.5
    pairs = tuning["cpu_pairs"]
    assert pairs["chosen"].startswith("cpu=0.25") and pairs["larger"].startswith("cpu=0.5"), pairs
    # the ratio within 10% of the truth; not "inside its interval" nor a width bound: one run of a 95% interval on
    # 3 pairs (t on 2 df) misses or runs wide often enough to fail CI by chance (a clean clone read 1.37-1.68)
    low, high = pairs["per_core_ratio_ci"]
    assert abs(pairs["per_core_ratio"] - 1.5) <= 0.15 and low < pairs["per_core_ratio"] < high, pairs
    paired = [r for r in steps if r["purpose"] == "pair"]
    assert {r["cpu"] for r in paired} == {"0.25", "0.5"} and len(paired) == 2 * pairs["pairs"]
    rows = tuning["candidates"]
    oom = [r for r in rows if r["memory"] == 64 * 2**20]
    assert oom and all(r["oom_kills"] > 0 and "memory too small" in r["verdict"] for r in oom)
    conc_limited = [r for r in rows if r["memory"] == 256 * 2**20 and r["concurrency"] == 1]
    assert conc_limited and all("concurrency is the limit" in r["verdict"] for r in conc_limited)
    cpu_bound = [r for r in rows if r["memory"] == 256 * 2**20 and r["cpu"] == 0.25 and r["concurrency"] >= 2]
    assert cpu_bound and all("CPU-bound" in r["verdict"] for r in cpu_bound)
    assert (tmp_path / "out" / "tuning_heatmap.png").exists()
    # a run of the tune stage alone answers with the tuned pod's saturation point, measured on tune.replicas pods
    assert summary["saturation"]["stage"] == "tune" and summary["saturation"]["replicas"] == 1
    assert summary["saturation"]["rps"] == pytest.approx(best["saturation_rps"], abs=0.01)
    assert state.is_completed(), state.message


@pytest.mark.skipif(not LIMITS, reason="cgroups not writable: the HPA needs CPU limits to compute utilization")
@pytest.mark.quiet
def test_autoscaler_scales_out_and_recovers_the_slo(prefect_api, tmp_path, monkeypatch):
    """One pod of 0.25 CPU serves 25 rps; 3x that is offered open loop; the HPA must add pods until p95 recovers
    and the new pods serve what is offered (each arrival on its own connection reaches them). The first pod
    queues 16 beyond its 8 slots and answers 503 past that: the overload's failures are part of the result, and
    its backlog (at most 24 requests, about 2 s at the 10 rps it has spare among 4 pods) drains soon after."""
    monkeypatch.chdir(tmp_path)
    cfg = base(slots=8, service_ms=1, cpu_ms=10, queue=16)
    cfg["platform"] = {"kind": "local", "replicas": 1, "cpu": 0.25, "memory": "256Mi", "allocatable_cpu": 1.5}
    cfg["slo"] = {"p95_ms": 300, "max_error_rate": 0.05}
    cfg["search"] = {"max_users": 8, "max_windows": 1, "refine_steps": 1, "slo_capacity": False}
    cfg["autoscale"] = {"min_replicas": 1, "max_replicas": 6, "overload": 3, "sync_period_s": 1,
                        "stabilization_s": 3, "readiness_delay_s": 0.5, "sample_s": 1,
                        "phases": [{"name": "baseline", "load": 0.7, "duration_s": 2},
                                   {"name": "overload", "load": 3, "duration_s": 12},
                                   {"name": "recovery", "load": 0.7, "duration_s": 3}]}
    cfg["load"]["arrivals"] = "constant"  # offered rates are checked to 5%: a Poisson count over 2 s varies by ~17%
    cfg["stages"] = ["single_client", "autoscale"]
    state, summary, _ = run_flow(tmp_path, cfg)
    assert state.is_completed(), state.message
    a = summary["autoscale"]
    assert a["peak_replicas"] >= 3
    assert a["time_to_scale_up_s"] is not None and a["time_to_scale_up_s"] < 8
    assert a["time_to_recover_slo_s"] is not None
    samples = a["samples"]
    overload = [s for s in samples if s["phase"] == "overload"]
    assert max(s["desired"] for s in overload) >= 3
    # consistent with the samples: the first scale-up decision is the first sample with desired > initial
    first_up = next(s for s in samples if s["desired"] > a["initial_replicas"])
    step_t = a["phases"][1]["started_s"]  # the overload's rate was set then; its first sample comes 1 s later
    assert step_t < next(s["t"] for s in samples if s["phase"] == "overload")
    assert a["time_to_scale_up_s"] == pytest.approx(first_up["t"] - step_t, abs=1e-6)
    assert a["nodes"].startswith("node-pool autoscaling: not available")
    assert (tmp_path / "out" / "autoscale_timeline.png").exists()
    # open loop: the overload offers 3x one pod's rate whether or not the pods keep up, and says what was lost
    sat = a["one_pod_saturation_rps"]
    base_phase, over_phase, _ = a["phases"]
    assert base_phase["offered_rps"] == pytest.approx(0.7 * sat, rel=0.05)
    assert over_phase["offered_rps"] == pytest.approx(3 * sat, rel=0.05)
    assert over_phase["planned"] >= 0.9 * 3 * sat * 10  # arrivals kept their plan over most of the 12 s
    assert over_phase["served_rps"] < over_phase["offered_rps"]  # one pod could not take it at first
    assert over_phase["failures"] > 0 and over_phase["error_rate"] > 0  # its 503s, counted against the arrivals
    assert all(s["offered_rps"] is not None for s in samples)
    # the new pods took the load: the last overload samples serve what was offered, within the SLO
    late = overload[-3:]
    assert all(s["rps"] >= 0.9 * s["offered_rps"] for s in late), late
    report = (tmp_path / "out" / "report.md").read_text()
    assert "phase overload:" in report and "offered open loop" in report
    # by arrival (issue 23 item 4): every phase and sample counts its own arrivals, all of them came back
    for row in a["phases"] + samples:
        assert 0.0 <= row["error_rate"] <= 1.0 and row["served_rps" if "served_rps" in row else "rps"] <= \
            row["offered_rps"] + 1e-6, row
        assert row["unsettled"] == 0, row
    # sized to the platform (item 1): the pods the HPA may add fit the CPUs reserved for replicas, and it says so
    fit = a["fit"]
    assert a["hpa"]["max"] == fit["max_replicas"] and fit["max_replicas"] * 0.25 <= fit["replica_cpus"] + 1e-9
    assert fit["change"] == "none" or fit["reason"].startswith("autoscale.max_replicas 6 lowered to")
    assert a["expected"]["start_s"] is not None and a["expected"]["start_s"] > 0  # measured when it was deployed
    assert a["inconclusive"] is None and "autoscaling inconclusive" not in report


@pytest.mark.skipif(not LIMITS, reason="cgroups not writable: the HPA needs CPU limits to compute utilization")
def test_added_pods_that_cannot_start_leave_the_autoscaler_inconclusive(prefect_api, tmp_path, monkeypatch):
    """Issue 23: a run whose added pods cannot start must not end "completed" with "ready after never". Only one
    replica of this server can hold its lock: the HPA asks for more, they crash on start, the stage says why, and
    keeps its samples and timeline."""
    monkeypatch.chdir(tmp_path)
    cfg = base()
    cfg["target"] = {"name": "one-only", "kind": "command", "path": "/invocations", "ready_path": "/ping",
                     "command": ["flock", "-n", str(tmp_path / "one.lock"), sys.executable, "-m",
                                 "nightcap.targets.reference_server", "--port", "{port}", "--slots", "8",
                                 "--service-ms", "1", "--cpu-ms", "10", "--queue", "16"]}
    cfg["platform"] = {"kind": "local", "replicas": 1, "cpu": 0.25, "memory": "256Mi", "concurrency": 8}
    cfg["search"] = {"max_users": 2, "max_windows": 1, "refine_steps": 0, "slo_capacity": False}
    cfg["load"]["window_s"] = 1.0
    cfg["autoscale"] = {"min_replicas": 1, "max_replicas": 3, "sync_period_s": 1, "stabilization_s": 2,
                        "readiness_delay_s": 0.5, "sample_s": 1,
                        "phases": [{"name": "baseline", "load": 0.7, "duration_s": 1},
                                   {"name": "overload", "load": 3, "duration_s": 5},
                                   {"name": "recovery", "load": 0.7, "duration_s": 1}]}
    cfg["stages"] = ["single_client", "autoscale"]
    _, summary, _ = run_flow(tmp_path, cfg)
    a = summary["autoscale"]
    assert a["inconclusive"] == (f"the added pods never became ready within the 7s of the experiment (1 of the "
                                 f"{a['peak_desired']} asked for were ready at most)"), a["inconclusive"]
    assert a["peak_desired"] >= 2 and a["peak_ready"] == 1 and a["time_to_ready_s"] is None
    assert len(a["samples"]) >= 6 and (tmp_path / "out" / "autoscale_timeline.png").exists()
    assert "autoscaling inconclusive: the added pods never became ready" in (tmp_path / "out" / "report.md").read_text()
