"""report.md and the one-line answer: the summary rendered for people (plots are drawn in `plots.py`).

The Prefect markdown artifact is the same text with the plots embedded (`tasks/artifacts.py`).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from nightcap.analysis.figures import rate_text
from nightcap.analysis.operating_point import OperatingPointCheck
from nightcap.analysis.regression_result import RegressionResult
from nightcap.results.report_lines import (answer_verdicts, clause, confidence_line, sentence, verdict_lines,
                                          warning_line)
from nightcap.results.stages import AutoscaleResult, RampResult, SizingResult, StageResults, TuneResult


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
        return (f"**{target}**: no saturation point was found ({sat.get('stop_reason') or 'no stage measured it'})."
                + answer_verdicts(summary))
    plat = summary.get("platform", {})
    size = f"{sat.get('replicas') or plat.get('replicas', 1)} replica(s) of {_fmt(plat.get('cpu'), 2)} CPU"
    users = sat.get("users")
    sure = {"unstable": " (**unstable**: two measurements disagreed; this is the lower)",
            "confirmed": f" (on {sat.get('windows')} fresh windows)"}.get(sat.get("status") or "", "")
    # the knee's users; the figure's windows run on the plateau above it (capacity.per_pod.users) when it has one
    measured_at = ((summary.get("capacity") or {}).get("per_pod") or {}).get("users")
    where = f" (the knee; measured at {measured_at})" if measured_at and users and measured_at != users else ""
    line = (f"**{target}** saturates at **{_fmt(sat['rps'])} rps**{_pm(sat['rps'], sat.get('rps_ci'))}{sure} with "
            f"{users} concurrent user{'s' if users != 1 else ''}{where} on {size}; operate at {_fmt(op.get('rps'))} rps"
            f"{_pm(op.get('rps'), op.get('rps_ci'))} ({_share(op, sat)}%)")
    if op.get("load") == "open":  # measured at that rate, open loop
        line += (f", where open loop p95 is {_fmt(op.get('p95_ms'), 0)} ms: "
                 + ("the SLO holds" if op.get("meets_slo") else "the SLO does **not** hold"))
        if not op.get("meets_slo") and slo.get("rate_rps") is not None:
            line += f" (it holds up to {_fmt(slo['rate_rps'])} rps)"
    if slo.get("users") is not None:
        line += f"; {slo['users']} users fit within p95 ≤ {_fmt(slo.get('p95_ms'), 0)} ms"
    if not sat.get("found", True):
        line += f" (lower bound: {sat.get('stop_reason')})"
    if sat.get("inconclusive"):
        line += f"; {sat.get('stage')} was inconclusive, so these figures are not recorded for comparison"
    return line + "." + answer_verdicts(summary)


def _share(op: dict[str, Any], sat: dict[str, Any]) -> int:
    """The operating point as a share of saturation, as the two printed rates give it (the configured headroom
    when there is no rate: the check offered headroom x the figure as it stood then, which later windows move)."""
    if op.get("rps") and sat.get("rps"):
        return int(round(100 * op["rps"] / sat["rps"]))
    return int(round(100 * op.get("headroom", 0.7)))


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}s"


def tuning_line(t: TuneResult) -> str:
    note = "" if t.limits_enforced else " (limits NOT enforced on this machine: usage measured, not capped)"
    chose = f"tuning chose {t.reason}" if t.best is not None else f"tuning chose no pod size ({t.reason})"
    return f"{chose} — {t.candidates_measured} of {t.grid_size} grid candidates measured{note}"


def multi_client_line(multi: RampResult) -> str | None:
    """Several generators against one, from paired windows: the ratio with its interval, and what it means."""
    e = multi.ratio
    if e is None:
        return None
    ci = "" if e.low is None else f" (95% interval {e.low - 1:+.1%} to {e.high - 1:+.1%})"
    if multi.single_client_was_bottleneck:
        verdict = "the single client was the bottleneck: the pod's figure is the multi-client one"
    elif e.high is not None and e.high < 1.0:
        verdict = "fewer with more generators (they share the machine with the pods): see capacity.per_pod"
    else:
        verdict = "one client was enough"
    return (f"multi-client ({multi.workers} generators) vs single-client over {e.n} pairs of alternating windows: "
            f"{e.mean - 1:+.1%}{ci}; {verdict}")


def operating_line(r: RampResult) -> str | None:
    """Where this ramp's operating point's latency was measured, and whether the SLO held there (or how far back)."""
    check = r.operating_check
    if check is None:
        rate = r.search.operating_rps
        if rate is None:
            return None
        return (f"operating point {rate_text(rate)} rps not verified open loop (load.verify_s 0): its p95 "
                f"{_fmt(r.operating_p95_ms, 0)} ms is interpolated along the {r.stage} closed-loop ramp at that rate")
    return check_line(check, r.stage, r.replicas)


def check_line(check: OperatingPointCheck, stage: str, replicas: int) -> str:
    """One open-loop check of the operating rate: what it offered, the latency and losses, whether the SLO held."""
    v = check.verified
    ci = f" (95% interval {v.p95_ci[0]:.0f}-{v.p95_ci[1]:.0f})" if v.p95_ci else ""
    # the planned rate is the one the answer, sizing and autoscale give; what arrived differs by the arrivals' noise
    line = (f"operating point verified open loop: {rate_text(v.rate_rps)} rps planned ({rate_text(v.offered_rps)} "
            f"arrived) for {v.windows} window(s) "
            f"on {replicas} pod(s) ({stage}): p50 {_fmt(v.p50_ms, 0)} / p95 {_fmt(v.p95_ms, 0)}{ci} / p99 "
            f"{_fmt(v.p99_ms, 0)} ms from the planned send times, {100 * v.error_rate:.1f}% of {v.planned} arrivals "
            f"failed or dropped ({v.dropped} dropped)")
    if v.meets_slo:
        return line + ": meets the SLO"
    line += f": misses the SLO ({v.why})"
    low, high = check.slo_rate_interval_rps
    if check.slo_rate_rps is None:
        return line + f"; no rate down to {rate_text(high)} rps met it in {len(check.backoff)} back-off step(s)"
    return line + (f"; backing off by bisection, the SLO holds at {rate_text(check.slo_rate_rps)} rps "
                   f"(the highest rate in [{rate_text(low)}, {rate_text(high)}) rps measured to meet it)")


def run_check_line(r: StageResults) -> str | None:
    """The run's operating check, whichever stage made it last (a later stage checks again when the figure moved
    by more than RECHECK after the first check): the one the answer, sizing and autoscale use."""
    fig = r.figure()
    if r.operating is None or fig is None:
        ramp = r.headline_ramp()
        return ramp and operating_line(ramp)
    return check_line(r.operating, r.operating_stage or "?", fig.key.replicas)


def superseded_line(r: RampResult, run: StageResults) -> str | None:
    """A ramp's own check that the run's later check replaced: say so beside it, so two p95s do not read as one."""
    if r.operating_check is None or run.operating is None or r.operating_check is run.operating:
        return None
    return (f"the figure moved after this check: {run.operating_stage or 'a later stage'} checked "
            f"{rate_text(run.operating.verified.rate_rps)} rps again, the rate the answer, sizing and autoscale use")


def sizing_line(s: SizingResult, slo_p95_ms: float) -> str | None:
    if not s.rows:
        return None
    parts = []
    for r in s.rows:
        cost = f", ${r.cost_per_hour:.2f}/h" if r.cost_per_hour is not None else ""
        parts.append(f"{r.target}: {r.pods} pod{'s' if r.pods != 1 else ''} of {s.cpu_per_pod:g} CPU = {r.cores:g} "
                     f"core{'s' if r.cores != 1 else ''} on {r.nodes} {r.node_type} node{'s' if r.nodes != 1 else ''}"
                     f"{cost} (binding: {r.binding_constraint})")
    pod = s.pod
    rate = f" at {rate_text(pod.rate_rps)} rps per pod ({pod.rate_from})" if pod else ""
    return f"sizing with p95 ≤ {slo_p95_ms:g} ms{rate}: " + "; ".join(parts)


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


SLO_WORDS = "the SLO (p95 and errors)"  # a sample is judged on both (autoscale_metrics.breaches), never p95 alone


def _recovery_words(a: AutoscaleResult) -> str:
    t, exp = a.timings, a.expected
    assert t is not None
    if t.time_to_recover_slo_s == 0:
        return f"{SLO_WORDS} held through the overload"
    if t.time_to_recover_slo_s is not None:
        expected = exp.recover_in_overload_s if exp else None
        note = f" (expected {expected:.0f}s)" if expected is not None else ""
        return f"{SLO_WORDS} met again {t.time_to_recover_slo_s:.0f}s after the step{note}"
    if t.recovered_after_step_down_s is not None:
        note = f" (expected {exp.drain_recovery_s:.0f}s)" if exp and exp.drain_recovery_s is not None else ""
        return f"{SLO_WORDS} met again {t.recovered_after_step_down_s:.0f}s after the step back down{note}"
    return f"{SLO_WORDS} never met again"


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
    return (f"phase {p['name']}: {offered:.1f} rps offered open loop ({round(p['load'], 2):g}× one pod), "
            f"{p['served_rps']:.1f} rps served; {lost}{worst}")


def warm_start_line(r: StageResults) -> str | None:
    """Which searches started from last night's answer, and what that saved or why it did not."""
    parts = []
    for name, result in (("tune", r.tune), ("single-client", r.single_client), ("multi-client", r.multi_client)):
        warm = result.warm_start if result else None
        if warm is None or not warm.from_run:
            continue
        verdict = "accepted" if warm.accepted else "refused"
        what = (f"{warm.windows} window(s) at {', '.join(str(x) for x in warm.levels)}" if warm.levels
                else "nothing measured for it")
        parts.append(f"{name} {verdict} (run {warm.from_run}, {what}): {warm.reason}")
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
    lines = {
        "operating_line": run_check_line(r),
        "tuning_line": r.tune and tuning_line(r.tune),
        "multi_client_line": r.multi_client and multi_client_line(r.multi_client),
        "sizing_line": r.sizing and sizing_line(r.sizing, slo_p95_ms),
        "autoscale_line": r.autoscale and autoscale_line(r.autoscale),
        "regression_line": r.regression and r.regression.result and regression_line(r.regression.result),
        "warm_start_line": warm_start_line(r),
        "canary_line": canary_line(r),
    }
    return {k: v for k, v in lines.items() if v}


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


def per_pod_line(per_pod: dict[str, Any] | None) -> str | None:
    """capacity.per_pod in words: the one figure, how it was measured, what each later stage found."""
    if not per_pod:
        return None
    ci = per_pod.get("ci")
    interval = f" (95% interval {ci[0]:.1f}-{ci[1]:.1f})" if ci else ""
    pod = per_pod.get("pod") or {}
    shape = f"{_fmt(pod.get('cpu'), 2)} CPU, concurrency {pod.get('concurrency')}"
    knee = per_pod.get("knee_users")
    knee_note = f" (the knee is at {knee})" if knee and knee != per_pod["users"] else ""
    own = per_pod.get("confirm_windows") or per_pod["windows"]
    line = (f"one pod ({shape}): {per_pod['rps']:.1f} rps{interval}, measured at {per_pod['users']} user(s) on "
            f"{per_pod['replicas']} pod(s){knee_note}, confirmed by {per_pod['stage']} on {own} fresh window(s) of "
            f"{per_pod['window_s']:g} s")
    joined = [s for s in per_pod.get("measured_by") or [] if s != per_pod["stage"]]
    if per_pod["windows"] > own and joined:
        line += (f", then joined by the {per_pod['windows'] - own} window(s) of {', '.join(joined)} that agreed with "
                 f"it ({per_pod['windows']} in all; the interval over their sequence holds the drift between stages)")
    checks = [f"{c['stage']} {c['outcome']}" for c in per_pod.get("checks") or []]
    if checks:
        line += "; verified by " + ", ".join(checks)
    u = per_pod.get("unstable")
    if u:
        line = (f"one pod is **unstable**: {per_pod['stage']} confirmed {u['figure_rps']:.1f} rps, {u['stage']} "
                f"measured {u['rps']:.1f} rps after interleaved windows; every plan uses the lower, "
                f"{u['planning_rps']:.1f} rps ({per_pod['replicas']} pod(s))")
    return line + ". Every per-pod figure in this report is this one."


def write_markdown(summary: dict[str, Any], out: Path, plots: list[Path], embed: bool = False) -> str:
    """report.md: the answer and how sure it is, the stages that did not answer, then one section per stage in
    recipe order (text, table, plots), and the warnings and disagreements last, one line each."""
    lines = [answer_line(summary), "", confidence_line(summary), ""]
    if summary.get("failure"):  # why there is no answer comes before anything else
        lines = [f"**Run failed**: {summary['failure']}", ""] + lines
    if verdicts := verdict_lines(summary.get("stages") or {}):  # the stages that did not answer, next
        lines += [f"{v}  " for v in verdicts] + [""]
    if per_pod := per_pod_line((summary.get("capacity") or {}).get("per_pod")):
        lines += [per_pod, ""]
    payload = (summary.get("target") or {}).get("payload") or {}
    if payload.get("synthetic"):
        lines += [f"Requests: {payload.get('source')} (**synthetic values**).", ""]
    lines += ["## Stages\n", table([{"stage": k, "status": v.get("status"), "duration_s": v.get("duration_s"),
                                          "steps": v.get("steps"), "note": v.get("reason") or v.get("error") or ""}
                                         for k, v in (summary.get("stages") or {}).items()],
                                        ["stage", "status", "duration_s", "steps", "note"])]
    if payload.get("source") and not payload.get("synthetic"):
        lines.append(f"Requests: {payload['source']}.\n")
    if summary.get("warm_start_line"):
        lines.append(sentence(summary["warm_start_line"]) + "\n")
    files = {p.name: p for p in plots}
    placed = {name for section in summary.get("sections", []) for name in section.get("plots") or []}
    leftover = [p.name for p in plots if p.name not in placed]  # the trend: with the comparison, or on its own
    sections = [dict(s) for s in summary.get("sections", [])]
    into = next((s for s in sections if s.get("stage") == "regression"), None)
    if leftover and into is None:
        sections.append(into := {"stage": None, "title": "Trend", "text": "", "rows": []})
    if into is not None:
        into["plots"] = list(into.get("plots") or []) + leftover
    seen: set[str] = set()
    for section in sections:
        first = section.get("stage") not in seen  # a stage's verdict heads its first section only
        seen.add(section.get("stage") or "")
        lines += _section_lines(section, (summary.get("stages") or {}) if first else {}, files, embed)
    lines += _warning_lines(summary, {s["stage"]: s["title"] for s in sections if s.get("stage")})
    text = "\n".join(lines)
    if not embed:
        (out / "report.md").write_text(text)
    return text


def _section_lines(section: dict[str, Any], stages: dict[str, Any], files: dict[str, Path], embed: bool) -> list[str]:
    lines = [f"## {section['title']}\n"]
    info = stages.get(section.get("stage") or "") or {}
    reason = clause(str(info.get("reason") or "no reason recorded"))
    if info.get("status") == "inconclusive":
        lines.append(f"**Inconclusive**: {reason}\n")
    if section.get("text") and not (info.get("status") == "inconclusive"
                                    and section["text"].lower() == reason.lower()):  # said just above
        lines.append(section["text"] + "\n")
    if section.get("rows"):
        lines.append(table(section["rows"], section.get("columns")))
    for name in section.get("plots") or []:
        if name in files:
            lines.append(f"![{files[name].stem}]({embed_png(files[name]) if embed else name})\n")
    return lines


def _warning_lines(summary: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """The last section: disagreements between stages and every warning, one line each."""
    found = []
    plat = summary.get("platform", {})
    if not plat.get("limits_enforced", True):
        found.append(sentence(f"CPU and memory limits were **not enforced**: {plat.get('limits_note')}"))
    found += [warning_line(w, titles) for w in summary.get("warnings", [])
              if not (w == plat.get("limits_note") and not plat.get("limits_enforced", True))]
    return ["## Warnings and disagreements\n", *[f"- {w}" for w in found], ""] if found else []
