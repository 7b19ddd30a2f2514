"""report.md and the one-line answer: the summary rendered for people (plots are drawn in `plots.py`).

The Prefect markdown artifact is the same text with the plots embedded (`tasks/artifacts.py`).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from nightcap.analysis.regression_result import RegressionResult
from nightcap.results.stages import AutoscaleResult, RampResult, ScalingResult, SizingResult, StageResults, TuneResult


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def _pm(rate: Any, ci: Any) -> str:
    """" ± 4%": the 95% half-width of a rate as a share of it (nothing when it was not measured in sub-windows)."""
    if not rate or not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" ± {100 * (ci[1] - ci[0]) / 2 / rate:.0f}%"


def answer_line(summary: dict[str, Any]) -> str:
    """The answer in one line: it leads report.md and the Prefect markdown artifact."""
    sat = summary.get("saturation") or {}
    slo = summary.get("slo_capacity") or {}
    op = summary.get("operating_point") or {}
    target = summary.get("target", {}).get("name", "the target")
    if sat.get("rps") is None:
        return f"**{target}**: no saturation point was found ({sat.get('stop_reason') or 'no stage measured it'})."
    plat = summary.get("platform", {})
    size = f"{sat.get('replicas') or plat.get('replicas', 1)} replica(s) of {_fmt(plat.get('cpu'), 2)} CPU"
    users = sat.get("users")
    line = (f"**{target}** saturates at **{_fmt(sat['rps'])} rps**{_pm(sat['rps'], sat.get('rps_ci'))} with {users} "
            f"concurrent user{'s' if users != 1 else ''} on {size}; operate at {_fmt(op.get('rps'))} rps"
            f"{_pm(op.get('rps'), op.get('rps_ci'))} ({int(round(100 * op.get('headroom', 0.7)))}%)")
    if op.get("load") == "open":  # measured at that rate, open loop
        line += (f", where open loop p95 is {_fmt(op.get('p95_ms'), 0)} ms: "
                 + ("the SLO holds" if op.get("meets_slo") else "the SLO does **not** hold"))
        if not op.get("meets_slo") and slo.get("rate_rps") is not None:
            line += f" (it holds up to {_fmt(slo['rate_rps'])} rps)"
    if slo.get("users") is not None:
        line += f"; {slo['users']} users fit under p95 < {_fmt(slo.get('p95_ms'), 0)} ms"
    if not sat.get("found", True):
        line += f" (lower bound: {sat.get('stop_reason')})"
    return line + "."


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}s"


def tuning_line(t: TuneResult) -> str:
    note = "" if t.limits_enforced else " (limits NOT enforced on this machine: usage measured, not capped)"
    return f"tuning chose {t.reason} — {t.candidates_measured} of {t.grid_size} grid candidates measured{note}"


def multi_client_line(multi: RampResult) -> str | None:
    single, rps = multi.vs_single_rps, multi.search.saturation_rps
    if not (single and rps):
        return None
    single, rps = round(single, 2), round(rps, 2)
    return (f"multi-client ({multi.workers} generators) saturation {rps:.1f} rps vs single-client {single:.1f} rps "
            f"({rps / single - 1:+.0%})" + ("; the single client was the bottleneck"
                                            if multi.single_client_was_bottleneck else "; one client was enough"))


def operating_line(r: RampResult) -> str | None:
    """Where the operating point's latency was measured, and whether the SLO held there (or how far back)."""
    rate, check = r.search.operating_rps, r.operating_check
    if rate is None:
        return None
    if check is None:
        return (f"operating point {rate:.1f} rps not verified open loop (load.verify_s 0): its p95 "
                f"{_fmt(r.operating_p95_ms, 0)} ms is interpolated along the {r.stage} closed-loop ramp at that rate")
    v = check.verified
    line = (f"operating point verified open loop: {v.offered_rps:.1f} rps offered for one window on {r.replicas} "
            f"pod(s) ({r.stage}): p50 {_fmt(v.p50_ms, 0)} / p95 {_fmt(v.p95_ms, 0)} / p99 {_fmt(v.p99_ms, 0)} ms "
            f"from the planned send times, {100 * v.error_rate:.1f}% errors, {v.dropped} dropped")
    if v.meets_slo:
        return line + ": meets the SLO"
    line += f": misses the SLO ({v.why})"
    low, high = check.slo_rate_interval_rps
    if check.slo_rate_rps is None:
        return line + f"; no rate down to {high:.1f} rps met it in {len(check.backoff)} back-off window(s)"
    return line + (f"; backing off by bisection, the SLO holds at {check.slo_rate_rps:.1f} rps "
                   f"(the highest rate in [{low:.1f}, {high:.1f}) rps measured to meet it)")


def sizing_line(s: SizingResult, slo_p95_ms: float) -> str | None:
    if not s.rows:
        return None
    parts = []
    for r in s.rows:
        cost = f", ${r.cost_per_hour:.2f}/h" if r.cost_per_hour is not None else ""
        parts.append(f"{r.target}: {r.pods} pod{'s' if r.pods != 1 else ''} of {s.cpu_per_pod:g} CPU = {r.cores:g} "
                     f"core{'s' if r.cores != 1 else ''} on {r.nodes} node(s){cost} (binding: {r.binding_constraint})")
    pod = s.pod
    rate = f" at {pod.rate_rps:.1f} rps per pod ({pod.rate_from})" if pod else ""
    return f"sizing with p95 under {slo_p95_ms:g} ms{rate}: " + "; ".join(parts)


def sizing_text(s: SizingResult, slo_p95_ms: float) -> str:
    """The sizing section: the line, then each row's arithmetic in words, then the model against scaling."""
    lines = [sizing_line(s, slo_p95_ms) or "", ""]
    if s.latency_from:
        lines.append(f"Latency used: {1000 * (s.latency_s or 0):.1f} ms, {s.latency_from}.\n")
    lines += [f"- **{r.target}**: {r.reason}" for r in s.rows]
    if s.validation:
        lines.append("")
        lines.append("Checked against the scaling stage (the model scales one pod's saturation linearly): " + "; ".join(
            f"{v.replicas} pod(s) predicted {v.predicted_saturation_rps:.0f} rps, measured "
            f"{v.measured_saturation_rps:.0f} rps ({v.error:+.0%})" for v in s.validation) + ".")
    return "\n".join(lines)


def autoscale_line(a: AutoscaleResult) -> str:
    """The autoscaling answer (or why there is none), the pod shape it used, then one line per phase."""
    head = f"autoscaling inconclusive: {a.inconclusive}" if a.inconclusive else "autoscaling"
    shape = _shape_words(a)
    t = a.timings
    if t is None:
        body = f"{head}; {shape}" if shape else head
    else:
        exp = a.expected
        ready = (f"added pods ready {_s(t.time_to_ready_s)} after the step" if t.time_to_ready_s is not None
                 else "added pods never all ready")
        if exp is not None and exp.pods[-1] > exp.pods[0]:
            ready += f" (expected {exp.ready_s:.0f}s)"
        body = (f"{head}: {t.initial_replicas}→{t.peak_replicas} replicas{f' on {shape}' if shape else ''}, first "
                f"scale-up {_s(t.time_to_scale_up_s)} after the step, {ready}, {_recovery_words(a)}; "
                f"{t.slo_breach_s:.0f}s over the SLO; peak Pending {t.peak_pending}; {a.nodes_note}")
    return body + "".join(f"\n  {phase_line(p)}" for p in a.phases if p.get("samples"))


def _shape_words(a: AutoscaleResult) -> str:
    """"pods of 0.5 CPU, concurrency 1 (55.0 rps each)", and why when the platform changed the pod or the bounds."""
    fit = a.fit
    if fit is None:
        return ""
    why = f"; {fit.reason}" if fit.reason else ""
    return f"pods of {fit.shape.label()} ({fit.shape.rps:.1f} rps each{why})"


def _recovery_words(a: AutoscaleResult) -> str:
    t, exp = a.timings, a.expected
    assert t is not None
    if t.time_to_recover_slo_s == 0:
        return "p95 stayed under the SLO through the overload"
    if t.time_to_recover_slo_s is not None:
        expected = exp.recover_in_overload_s if exp else None
        note = f" (expected {expected:.0f}s)" if expected is not None else ""
        return f"p95 back under the SLO {t.time_to_recover_slo_s:.0f}s after the step{note}"
    if t.recovered_after_step_down_s is not None:
        note = f" (expected {exp.drain_recovery_s:.0f}s)" if exp and exp.drain_recovery_s is not None else ""
        return f"p95 back under the SLO {t.recovered_after_step_down_s:.0f}s after the step back down{note}"
    return "p95 never back under the SLO"


def phase_line(p: dict) -> str:
    """One phase's arrivals as offered (open loop) against served, with what callers lost: dropped or failed ones
    (each counted in the phase that planned it, whenever it failed)."""
    offered = p.get("offered_rps")
    if offered is None:
        return f"phase {p['name']}: nothing offered, {p['served_rps']:.1f} rps served"
    lost = f"{p['dropped']} dropped and {p['failures']} failed"
    if p.get("abandoned"):
        lost += f", {p['abandoned']} abandoned"
    lost += f" of its {p['planned']} arrivals ({100 * p['error_rate']:.1f}%)"
    if p.get("unsettled"):
        lost += f", {p['unsettled']} never came back"
    worst = f", worst p95 {p['worst_p95_ms']:.0f} ms" if p.get("worst_p95_ms") is not None else ""
    return (f"phase {p['name']}: {offered:.1f} rps offered open loop ({p['load']:g}× one pod), "
            f"{p['served_rps']:.1f} rps served; {lost}{worst}")


def warm_start_line(r: StageResults) -> str | None:
    """Which searches started from last night's answer, and what that saved or why it did not."""
    parts = []
    for name, result in (("tune", r.tune), ("single-client", r.single_client), ("multi-client", r.multi_client)):
        warm = result.warm_start if result else None
        if warm is None or not warm.from_run:
            continue
        verdict = "accepted" if warm.accepted else "refused"
        parts.append(f"{name} {verdict} (run {warm.from_run}, {warm.windows} window(s) at {warm.levels}): "
                     f"{warm.reason}")
    return "warm start: " + "; ".join(parts) if parts else None


def canary_line(r: StageResults) -> str | None:
    c = r.canary
    if c is None:
        return None
    if c.figure is None:
        return f"platform canary {c.note}"
    f = c.figure
    text = f"platform canary {f.rps_per_core:.1f} rps per core"
    if f.ci:
        text += f" ({f.ci[0]:.1f}–{f.ci[1]:.1f})"
    check = r.regression.result.platform if r.regression and r.regression.result else None
    if check is not None and check.change_pct is not None:
        text += f", {check.change_pct:+.1f}% vs its baseline {check.baseline_mean:.1f} ({check.verdict})"
    return text + f" in {c.duration_s:g} s"


def regression_line(result: RegressionResult) -> str:
    """The alarm's one decision (its message says at what false-alarm rate, over how many looks)."""
    text = f"regression alarm against {len(result.baseline_run_ids)} earlier night(s)"
    if result.excluded:
        text += f" ({len(result.excluded)} inconclusive or failed night(s) left out)"
    return text + f": {result.message}"


def stage_lines(r: StageResults, slo_p95_ms: float) -> dict[str, str]:
    """One sentence per stage that has something to say (summary.json `<stage>_line`, report.md's bullets)."""
    ramp = r.headline_ramp()
    lines = {
        "operating_line": ramp and operating_line(ramp),
        "tuning_line": r.tune and tuning_line(r.tune),
        "multi_client_line": r.multi_client and multi_client_line(r.multi_client),
        "sizing_line": r.sizing and sizing_line(r.sizing, slo_p95_ms),
        "autoscale_line": r.autoscale and autoscale_line(r.autoscale),
        "regression_line": r.regression and r.regression.result and regression_line(r.regression.result),
        "warm_start_line": warm_start_line(r),
        "canary_line": canary_line(r),
    }
    return {k: v for k, v in lines.items() if v}


TUNING_COLUMNS = ["cpu", "memory_label", "concurrency", "saturation_rps", "rps_per_core", "p95_ms", "cpu_use_pct",
                  "memory_peak_pct", "oom_kills", "meets_slo", "verdict"]


def scaling_text(s: ScalingResult) -> str:
    text = ", ".join(f"{r.replicas} pod(s) {r.saturation_rps:.0f} rps ({100 * (r.efficiency or 0):.0f}%)"
                     for r in s.rows)
    fit, fit_users = s.usl, s.usl_users_one_pod
    if fit.ok:
        text += (f". USL fit: σ={fit.sigma:.3f}, κ={fit.kappa:.4f}, r²={fit.r2:.3f}; "
                 + (f"peak at {fit.predicted_peak_n:.1f} pods, retrograde from {fit.retrograde_from_n}"
                    if fit.predicted_peak_n else "no retrograde scaling predicted"))
    else:
        text += f". USL over replicas: {fit.reason}"
    if fit_users.ok:
        text += (f". USL over users on one pod: σ={fit_users.sigma:.3f}, κ={fit_users.kappa:.4f}, r²={fit_users.r2:.3f}"
                 + (f", throughput peaks at {fit_users.predicted_peak_n:.1f} users and falls from "
                    f"{fit_users.retrograde_from_n}" if fit_users.predicted_peak_n else ", no retrograde predicted"))
    return text


def sections(r: StageResults, slo_p95_ms: float) -> list[dict[str, Any]]:
    """report.md's sections after the answer: sizing first (what to buy), then tuning, scaling, regression."""
    out: list[dict[str, Any]] = []
    if r.sizing and not r.sizing.note:
        out.append({"title": "Sizing", "text": sizing_text(r.sizing, slo_p95_ms),
                    "rows": [row.to_dict() for row in r.sizing.rows],
                    "columns": ["target", "rps", "pods", "cores", "nodes", "cost_per_hour", "in_flight",
                                "binding_constraint"]})
    if r.tune:
        out.append({"title": "Fine-tuning (pod size)", "text": tuning_line(r.tune),
                    "rows": [c.to_dict() for c in r.tune.candidates], "columns": TUNING_COLUMNS})
    if r.scaling:
        out.append({"title": "Scaling (throughput per pod)", "text": scaling_text(r.scaling),
                    "rows": [row.__dict__ for row in r.scaling.rows],
                    "columns": ["replicas", "saturation_rps", "rps_per_pod", "efficiency", "slo_users"]})
        out.append({"title": "Capacity under the SLO by core count", "rows": r.scaling.by_cores})
    if r.regression and r.regression.result:
        result = r.regression.result
        out.append({"title": "Change since the baseline", "text": result.message, "rows": result.table_rows()})
    return out


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "_none_\n"
    columns = columns or list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_fmt(row.get(c), 2) for c in columns) + " |")
    return "\n".join(out) + "\n"


def embed_png(path: Path) -> str:
    """A data URI, so the plot renders in the Prefect UI without a public URL."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def pooled_line(per_pod: dict[str, Any] | None) -> str | None:
    """capacity.per_pod in words, when more than one stage measured the pod (one stage is the headline already)."""
    if not per_pod or len(per_pod.get("stages") or []) < 2:
        return None
    ci = per_pod.get("ci")
    interval = f" (95% interval {ci[0]:.1f}-{ci[1]:.1f})" if ci else ""
    return (f"one pod, pooled over {', '.join(per_pod['stages'])}: {per_pod['rps']:.1f} rps at saturation{interval}"
            + (f"; {len(per_pod['disagree'])} pair(s) of stages disagree (see the warnings)" if per_pod.get("disagree")
               else ""))


def write_markdown(summary: dict[str, Any], out: Path, plots: list[Path], embed: bool = False) -> str:
    """report.md: the answer first, then each stage's table and plot."""
    lines = [answer_line(summary), ""]
    if summary.get("failure"):  # why there is no answer comes before anything else
        lines = [f"**Run failed**: {summary['failure']}", ""] + lines
    payload = (summary.get("target") or {}).get("payload") or {}
    if payload.get("source"):
        lines.append(f"- requests: {payload['source']}" + (" (**synthetic values**)" if payload.get("synthetic") else ""))
    for key in ("operating_line", "autoscale_line", "sizing_line", "tuning_line", "regression_line", "canary_line",
                "multi_client_line", "warm_start_line"):
        if summary.get(key):
            lines.append(f"- {summary[key]}")
    if pooled := pooled_line((summary.get("capacity") or {}).get("per_pod")):
        lines.append(f"- {pooled}")
    plat = summary.get("platform", {})
    if not plat.get("limits_enforced", True):
        lines.append(f"- CPU and memory limits were **not enforced**: {plat.get('limits_note')}")
    for warning in summary.get("warnings", []):
        lines.append(f"- warning: {warning}")
    lines.append("")
    stages = summary.get("stages", {})
    lines.append("## Stages\n")
    lines.append(table([{"stage": k, **{kk: vv for kk, vv in v.items() if kk in ("status", "duration_s", "steps", "error")}}
                        for k, v in stages.items()], ["stage", "status", "duration_s", "steps", "error"]))
    for section in summary.get("sections", []):
        lines.append(f"## {section['title']}\n")
        if section.get("text"):
            lines.append(section["text"] + "\n")
        if section.get("rows"):
            lines.append(table(section["rows"], section.get("columns")))
    for plot in plots:
        src = embed_png(plot) if embed else plot.name
        lines.append(f"![{plot.stem}]({src})\n")
    text = "\n".join(lines)
    if not embed:
        (out / "report.md").write_text(text)
    return text
