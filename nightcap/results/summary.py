"""summary.json, built from the stages' typed results: the only place its keys are written.

The keys the README lists under "Outputs (contracts)" keep their meaning; `tests/golden/summary_keys.json`
holds the whole key set, so a renamed key fails `tests/results/test_summary_keys.py` (new keys are additions:
regenerate the file with `.venv/bin/python tests/results/test_summary_keys.py`). The headline (saturation, operating
point, SLO capacity) comes from `StageResults.headline()`; report.md renders this summary (`report.py`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nightcap.analysis.autoscale_metrics import AutoscaleSummary
from nightcap.analysis.autoscale_plan import AutoscaleFit, Expectation
from nightcap.analysis.figures import HEADLINE_NAMES
from nightcap.analysis.operating_point import OperatingPointCheck
from nightcap.results import report, report_sections
from nightcap.results.capacity import capacity_block
from nightcap.results.stages import (
    AutoscaleResult,
    CanaryResult,
    RampResult,
    RegressionOutcome,
    ScalingResult,
    SizingResult,
    StageResults,
    TuneResult,
)
from nightcap.results.verdicts import INCONCLUSIVE, run_verdict

if TYPE_CHECKING:
    from nightcap.analysis.usl import UslFit
    from nightcap.config import Config


class PodShape(Protocol):
    cpu: float | None
    memory: int | None
    concurrency: int


class RunRecord(Protocol):
    """What the summary reads from a run: `nightcap.run.context.RunContext` provides it (results sit below run,
    so they name what they read instead of importing it). `platform` is read with getattr: None before deploy."""

    config: "Config"
    spec: PodShape | None
    platform: object | None
    results: StageResults
    stages: dict[str, dict[str, Any]]
    info: dict[str, Any]
    run_plots: list[str]
    warnings: list[str]
    out: Path


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _ci(rps: float | None, half: float | None) -> list[float | None] | None:
    """[low, high] of a rate's 95% interval (None when it was not measured in sub-windows)."""
    if rps is None or half is None:
        return None
    return [_r(max(rps - half, 0.0)), _r(rps + half)]


def operating_check_fields(check: OperatingPointCheck | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """operating_point's open-loop keys and slo_capacity's rate keys from the verification (None: not run).

    load "open": p50/p95/p99, errors and dropped arrivals were measured in an open-loop window at the operating
    rate; "closed": not verified, p95_ms is interpolated along the closed-loop ramp at that rate.
    """
    if check is None:
        return ({"load": "closed", "p50_ms": None, "p99_ms": None, "error_rate": None, "dropped": None,
                 "meets_slo": None, "verification": []},
                {"rate_rps": None, "rate_rps_interval": None})
    v = check.verified
    op = {"load": "open", "p50_ms": v.p50_ms, "p95_ms": v.p95_ms, "p99_ms": v.p99_ms, "mean_ms": _r(v.mean_ms),
          "p95_ci": list(v.p95_ci) if v.p95_ci else None, "windows": v.windows, "planned": v.planned,
          "failures": v.failures,
          "error_rate": v.error_rate, "dropped": v.dropped, "late": v.late, "offered_rps": _r(v.offered_rps),
          "goodput_rps": _r(v.goodput_rps), "meets_slo": v.meets_slo, "why": v.why,
          "verification": [w.to_dict() for w in check.windows]}
    low, high = check.slo_rate_interval_rps
    return op, {"rate_rps": _r(check.slo_rate_rps), "rate_rps_interval": [_r(low), _r(high)]}


def headline(ctx: RunRecord) -> dict[str, Any]:
    """saturation, operating_point, slo_capacity, platform and rps_per_core: the answer and where it was measured."""
    cfg, spec, platform = ctx.config, ctx.spec, ctx.platform
    stage, sat = ctx.results.headline(cfg.search.headroom)
    saturation: dict[str, Any] = {"rps": None, "users": None, "found": False, "stop_reason": "no stage measured it",
                                  "rps_ci": None, "replicas": None, "stage": stage, "inconclusive": None}
    operating: dict[str, Any] = {"rps": None, "users": None, "headroom": cfg.search.headroom, "rps_ci": None,
                                 "p95_ms": None, **operating_check_fields(None)[0]}
    slo: dict[str, Any] = {"users": None, "rps": None, "rps_ci": None}
    ramp = ctx.results.multi_client or ctx.results.single_client
    if sat is None and ramp is not None:
        saturation["stop_reason"] = ramp.search.stop_reason or "no level met the SLO"
    if sat is not None:
        saturation.update(rps=_r(sat.rps), users=sat.users, found=sat.found, stop_reason=sat.stop_reason,
                          rps_ci=_ci(sat.rps, sat.rps_halfwidth), replicas=sat.replicas, status=sat.status,
                          windows=sat.windows)
        verdict = ctx.stages.get(stage or "", {})
        if verdict.get("status") == INCONCLUSIVE:  # shown beside the answer, and never recorded or compared
            saturation["inconclusive"] = verdict.get("reason")
        operating.update(rps=_r(sat.operating_rps), users=sat.operating_users,
                         rps_ci=_ci(sat.operating_rps, sat.operating_halfwidth), p95_ms=sat.operating_p95_ms)
        op_open, slo_rate = operating_check_fields(sat.operating_check)
        operating.update(op_open)
        if sat.operating_check is not None:
            operating["arrivals"] = cfg.load.arrivals  # poisson: independent callers; constant: evenly spaced
        slo.update(slo_rate)
        # the ramp that walked past the knee (tuning searches stop at the knee: their SLO capacity is None), also
        # when the pod's figure was confirmed by tune
        slo.update(users=sat.slo_users, rps=_r(sat.slo_rps), rps_ci=_ci(sat.slo_rps, sat.slo_halfwidth))
    slo.update(p95_ms=cfg.slo.p95_ms, max_error_rate=cfg.slo.max_error_rate,
               by_cores=ctx.results.scaling.by_cores if ctx.results.scaling else [])
    plat = {
        "kind": cfg.platform.kind,
        "replicas": cfg.platform.replicas,
        "cpu": spec.cpu if spec else cfg.platform.cpu,
        "memory": spec.memory if spec else cfg.platform.memory,
        "concurrency": spec.concurrency if spec else cfg.platform.concurrency,
        "limits_enforced": bool(getattr(platform, "limits_enforced", False)),
        "limits_note": getattr(platform, "limits_note", "not deployed"),
        "cpu_pinning": getattr(platform, "cpu_pinning", None) or {
            "method": "none", "mode": "off",
            "note": "only the local platform pins CPUs" if platform is not None else "not deployed"},
    }
    cores = (sat.replicas if sat else cfg.platform.replicas) * (plat["cpu"] or 1.0)
    return {"saturation": saturation, "operating_point": operating, "slo_capacity": slo, "platform": plat,
            "rps_per_core": saturation["rps"] / cores if saturation["rps"] else None}


def headline_figures(head: dict[str, Any]) -> dict[str, Any]:
    """The figures stored per run and compared night after night (names: `nightcap.analysis.figures`).

    From an inconclusive stage they are all None: the history, the trend and the regression check ignore them
    (summary.json keeps them, beside `saturation.inconclusive`).
    """
    sat, op, slo = head["saturation"], head["operating_point"], head["slo_capacity"]
    if sat.get("inconclusive"):
        return dict.fromkeys(HEADLINE_NAMES)
    figures = {"saturation_rps": sat["rps"], "saturation_users": sat["users"], "operating_rps": op["rps"],
               "rps_per_core": head["rps_per_core"], "p95_at_operating_ms": op["p95_ms"],
               "slo_users": slo["users"], "slo_rps": slo["rps"]}
    assert tuple(figures) == HEADLINE_NAMES, "a headline figure is missing here: see nightcap.analysis.figures"
    return figures


def tuning_block(t: TuneResult, figure_rps: float | None) -> dict[str, Any]:
    """The candidates as they were compared (their searches' figures: `chosen_on_rps`), and the chosen one with
    its figure as the run ends (`figure_rps`: tune's confirmation and every later window that joined it), which is
    the one reported wherever the pod appears; `confirmation` keeps what tune's own fresh windows measured."""
    best = t.best
    rows = t.candidate_rows(figure_rps)
    best_rps = figure_rps if figure_rps is not None else (best.saturation_rps if best else None)
    return {
        "candidates": rows,
        "candidates_measured": t.candidates_measured,
        "grid_size": t.grid_size,
        "replicas": t.replicas,
        "planner_notes": list(t.planner_notes),
        "reason": t.reason,
        "limits_enforced": t.limits_enforced,
        "best": None if best is None else {
            "cpu": best.candidate.cpu, "memory": best.candidate.memory,
            "memory_label": best.to_dict()["memory_label"], "concurrency": best.candidate.concurrency,
            "rps_per_core": None if best_rps is None else round(best_rps / ((best.candidate.cpu or 1.0) * t.replicas), 2),
            "saturation_rps": None if best_rps is None else round(best_rps, 2),
            "chosen_on_rps": best.saturation_rps, "confirmed": figure_rps is not None},
        "warm_start": t.warm_start.to_dict() if t.warm_start else None,
        "confirmation": confirmation_block(t.confirmation),
        "cpu_pairs": t.cpu_pairs.to_dict() if t.cpu_pairs else None,
    }


def ramp_block(r: RampResult, headroom: float, run: dict[str, Any]) -> dict[str, Any]:
    """A ramp's block: the run's saturation and operating point (`run`: capacity.per_pod's, the same figure in
    every block), then what this stage measured itself: its search levels, its fresh windows and their verdict."""
    s = r.search
    block: dict[str, Any] = {
        "saturation": dict(run["saturation"]),
        "operating_point": dict(run["operating_point"]),
        "slo_capacity": {"users": s.slo_users, "rps": _r(s.slo_rps), "rps_ci": _ci(s.slo_rps, s.slo_halfwidth),
                         "rate_rps": run["slo_capacity"].get("rate_rps"),
                         "rate_rps_interval": run["slo_capacity"].get("rate_rps_interval")},
        "search": {"users": s.saturation_users, "rps": _r(s.saturation_rps), "found": s.found,
                   "stop_reason": s.stop_reason, "rps_ci": _ci(s.saturation_rps, s.saturation_halfwidth),
                   "note": "the level the search chose the knee on (its windows choose; fresh windows report)"},
        "levels": [asdict(lv) for lv in s.levels],
        "windows": s.windows,
        "workers": r.workers,
        "generator_bound_steps": r.generator_bound_steps,
        "warm_start": r.warm_start.to_dict() if r.warm_start else None,
        "confirmation": confirmation_block(r.confirmation),
        "verification": r.check.to_dict() if r.check else None,
        "operating_check_here": r.operating_check is not None,
    }
    if r.ratio is not None:
        e = r.ratio
        block["vs_single_client"] = {"ratio": round(e.mean, 4), "change": round(e.mean - 1, 4),
                                     "ci": None if e.low is None else [round(e.low, 4), round(e.high, 4)],
                                     "pairs": e.n, "workers": r.workers}
        block["single_client_was_bottleneck"] = r.single_client_was_bottleneck
    return block


def confirmation_block(c: Any) -> dict[str, Any] | None:
    """A stage's fresh windows at the knee the search chose (None: this stage confirmed nothing)."""
    if c is None:
        return None
    e = c.estimate
    return {"users": c.users, "rps": _r(e.mean), "rps_ci": None if e.low is None else [_r(e.low), _r(e.high)],
            "windows": len(c.windows), "p95_ms": c.p95_ms, "error_rate": round(c.error_rate, 5), "good": c.good,
            "why_bad": c.why_bad, "fell_back_from": c.fell_back_from}


def usl_block(fit: "UslFit", measured_to: int) -> dict[str, Any]:
    from nightcap.analysis.usl import predict

    out = fit.to_dict()
    out["predicted_peak_replicas"] = fit.predicted_peak_n
    if fit.ok and measured_to:
        out["extrapolation"] = [{"n": n, "rps": v, "low": lo, "high": hi}
                                for n in (measured_to * 2, measured_to * 4) for v, lo, hi in [predict(fit, n)]]
    return out


def scaling_block(s: ScalingResult) -> dict[str, Any]:
    return {"rows": [asdict(row) for row in s.rows],
            "usl": usl_block(s.usl, max((row.replicas for row in s.rows), default=0)),
            "usl_users_one_pod": usl_block(s.usl_users_one_pod, s.one_pod_max_users)}


def sizing_block(s: SizingResult) -> dict[str, Any]:
    if s.note:
        return {"rows": [], "note": s.note}
    p, pod = s.per_pod, s.pod
    return {"rows": [row.to_dict() for row in s.rows],
            "inputs": {"per_pod_rps": p.rps if p else None, "per_pod_slo_users": p.slo_users if p else None,
                       "per_pod_from": p.source if p else None,
                       "latency_s": s.latency_s, "latency_from": s.latency_from,
                       "per_pod_rate_rps": pod.rate_rps if pod else None,
                       "per_pod_rate_from": pod.rate_from if pod else None,
                       "per_pod_slo_rate_rps": pod.slo_rate_rps if pod else None},
            "validation": [v.to_dict() for v in s.validation],
            "headroom": s.headroom, "node_allocatable_cpu": s.node_allocatable_cpu}


def autoscale_block(a: AutoscaleResult) -> dict[str, Any]:
    """Timings (None when no sample was taken), the phases by arrival, the pod shape the stage used (`fit`: the
    tuned one, or why not), the backlog arithmetic it planned with (`expected`), why it could not answer."""
    timings = a.timings.to_dict() if a.timings else {f.name: None for f in fields(AutoscaleSummary)}
    fit = a.fit.to_dict() if a.fit else None
    same_pod = fit is None or fit["change"] != "smaller pod"
    return {**timings, "phases": a.phases, "one_pod_saturation_users": a.per_pod.users if same_pod else None,
            "one_pod_saturation_rps": fit["one_pod_rps"] if fit else a.per_pod.rps, "hpa": a.hpa,
            "nodes": a.nodes_note, "load_spreading": load_spreading(a.connections, a.reconnect_s),
            "fit": fit or dict.fromkeys(AutoscaleFit.keys()),
            "expected": a.expected.to_dict() if a.expected else dict.fromkeys(Expectation.keys()),
            "inconclusive": a.inconclusive, "samples": [asdict(s) for s in a.samples]}


def load_spreading(connections: str, reconnect_s: float) -> str:
    """How the generator reaches pods that appear during the stage (a per-connection balancer pins a connection)."""
    if connections == "per-request":
        return ("every arrival opened its own connection (autoscale.connections: per-request), so the "
                "per-connection balancer in front of the replicas (a Kubernetes Service, or nightcap's local proxy) "
                "spread arrivals over the ready pods as it would independent callers', whatever each pod held")
    if not reconnect_s:  # keep-alive: configured, or forced by a port-forward (see flows/autoscale.py)
        return ("load.reconnect_s is 0: the generator keeps its connections, so the per-connection balancer in "
                "front of the replicas sends new pods only the connections opened after they were ready")
    return (f"the open-loop generator re-opens each connection it uses about every {reconnect_s:g}s "
            "(Connection: close), so the per-connection balancer in front of the replicas (a Kubernetes Service, "
            "or nightcap's local proxy) spreads load onto new pods")


def regression_block(o: RegressionOutcome) -> dict[str, Any]:
    if o.result is None:
        return {"verdict": "insufficient history", "message": o.note}
    return {**o.result.to_dict(), "version_change": o.version_change}


def canary_block(c: CanaryResult, regression: RegressionOutcome | None) -> dict[str, Any]:
    """Tonight's canary (rps per core of its pod, with its interval) and its change against the baseline nights
    (`change`: None until the regression check compared it)."""
    f = c.figure
    check = regression.result.platform if regression and regression.result else None
    change = None
    if check is not None:
        change = {"baseline_rps_per_core": _r(check.baseline_mean), "change_pct": check.change_pct,
                  "noise_pct": check.noise_pct, "baseline_runs": check.baseline_runs, "verdict": check.verdict}
    return {"rps_per_core": _r(f.rps_per_core) if f else None, "rps_ci": f.ci if f else None,
            "windows": f.windows if f else 0, "error_rate": f.error_rate if f else None,
            "settings": c.settings.to_dict(), "duration_s": c.duration_s, "note": c.note, "change": change}


def stage_blocks(results: StageResults, headroom: float, run: dict[str, Any]) -> dict[str, Any]:
    """One block per stage that has a result, under the stage's summary key (`run`: the headline blocks)."""
    out: dict[str, Any] = {}
    if results.tune:
        out["tuning"] = tuning_block(results.tune, results.tuned_rps())
    for ramp in (results.single_client, results.multi_client):
        if ramp:
            out[ramp.stage] = ramp_block(ramp, headroom, run)
    if results.scaling:
        out["scaling"] = scaling_block(results.scaling)
    if results.sizing:
        out["sizing"] = sizing_block(results.sizing)
    if results.autoscale:
        out["autoscale"] = autoscale_block(results.autoscale)
    if results.regression:
        out["regression"] = regression_block(results.regression)
    if results.canary:
        out["canary"] = canary_block(results.canary, results.regression)
    return out


def plots(results: StageResults) -> list[str]:
    """The PNGs the stages drew, in stage order."""
    r = results
    names = [r.tune and r.tune.plot, r.single_client and r.single_client.plot, r.multi_client and r.multi_client.plot,
             *(r.scaling.plots if r.scaling else []), r.autoscale and r.autoscale.plot]
    return [n for n in names if n]


def build_summary(ctx: RunRecord) -> dict[str, Any]:
    """The whole summary.json of the run so far (written after every stage and at the end)."""
    res, cfg = ctx.results, ctx.config
    summary: dict[str, Any] = {**ctx.info, "stages": ctx.stages}
    run = headline(ctx)
    summary.update(run)
    summary.update(stage_blocks(res, cfg.search.headroom, run))
    summary.update(report.stage_lines(res, cfg.slo.p95_ms))
    summary["plots"] = plots(res) + list(ctx.run_plots)
    if res.autoscale and res.autoscale.plot:
        summary["lead_plot"] = res.autoscale.plot
    summary["sections"] = report_sections.sections(res, cfg.slo.p95_ms)
    summary["capacity"], pooled_warnings = capacity_block(ctx.results)
    summary["warnings"] = list(ctx.warnings) + pooled_warnings
    summary["verdict"] = run_verdict(summary.get("status"), ctx.stages)  # None until the run has ended
    summary["answer"] = report.answer_line(summary).replace("**", "")
    return summary


def write_summary(ctx: RunRecord) -> dict[str, Any]:
    """Build summary.json and write it atomically; returns what was written."""
    summary = build_summary(ctx)
    path = ctx.out / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=_jsonable))
    tmp.replace(path)
    return summary


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value != value:
        return None
    return str(value)
