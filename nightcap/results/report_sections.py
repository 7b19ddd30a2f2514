"""report.md's sections, one per stage that has a result, in the recipe's order: each with its text, table and
plots (summary.json `sections[]`: `stage`, `title`, `text`, `rows`, `columns`, `plots`).

Recipe order (ARCHITECTURE.md): fine-tune the pod, single-client ramp, multi-client ramp, scale by hand, then
autoscale, size, and compare with earlier nights. `report.write_markdown` puts the answer above them and the
warnings below them.
"""

from __future__ import annotations

from typing import Any

from nightcap.results.report import (autoscale_line, canary_line, multi_client_line, operating_line, run_check_line,
                                     sizing_line, superseded_line, tuning_line)
from nightcap.results.report_lines import (scaling_rows_line, sentence, usl_line, validation_line)
from nightcap.results.stages import RampResult, ScalingResult, SizingResult, StageResults

TUNING_COLUMNS = ["cpu", "memory_label", "concurrency", "chosen_on_rps", "chosen_on_rps_per_core", "saturation_rps",
                  "rps_per_core", "p95_ms", "cpu_use_pct", "memory_peak_pct", "oom_kills", "meets_slo", "verdict"]
LEVEL_COLUMNS = ["users", "rps", "rps_halfwidth", "p95_ms", "error_rate", "windows", "good", "why_bad"]
PHASE_COLUMNS = ["name", "load", "duration_s", "offered_rps", "served_rps", "planned", "dropped", "failures",
                 "error_rate", "worst_p95_ms"]
SIZING_COLUMNS = ["target", "rps", "pods", "cores", "nodes", "cost_per_hour", "in_flight", "binding_constraint"]
SCALING_COLUMNS = ["replicas", "saturation_users", "saturation_rps", "rps_per_pod", "efficiency", "efficiency_ci",
                   "pairs"]
TITLES = {"tune": "Fine-tuning (pod size)", "single_client": "Single-client ramp", "multi_client": "Multi-client ramp",
          "scaling": "Scaling (throughput per pod)", "autoscale": "Autoscaling", "sizing": "Sizing",
          "regression": "Change since the baseline"}


def _text(*lines: str | None) -> str:
    return " ".join(sentence(line) for line in lines if line)


def ramp_line(r: RampResult) -> str:
    """What a ramp measured itself: the knee it confirmed on fresh windows, what its windows found when it met an
    already confirmed pod, or its search's point (and why there is no confirmed one)."""
    s = r.search
    pods = f"{r.replicas} pod{'s' if r.replicas != 1 else ''}"
    c = r.confirmation
    if c is not None and c.good:
        e = c.estimate
        half = f" ± {e.half_width:.1f}" if e.half_width is not None else ""
        where = "there" if c.users == s.saturation_users else f"on its plateau at {c.users} users"
        return (f"the search chose the knee at {s.saturation_users} users on {s.windows} window(s); "
                f"{len(c.windows)} fresh window(s) {where} measured {e.mean:.1f}{half} rps on {pods}: the confirmation "
                "capacity.per_pod starts from (later stages' windows that agree join it)")
    if r.check is not None:
        e = r.check.estimate
        return (f"met the pod's confirmed figure: {e.n} window(s) at {s.saturation_users} users measured "
                f"{e.mean:.1f} rps on {pods} ({r.check.outcome}: {r.check.note})")
    if not s.saturation_rps:
        return f"no saturation point on {pods}: {s.stop_reason or 'no load level met the SLO'}"
    half = f" ± {s.saturation_halfwidth:.1f}" if s.saturation_halfwidth is not None else ""
    line = (f"saturation {s.saturation_rps:.1f}{half} rps at {s.saturation_users} concurrent "
            f"user{'s' if s.saturation_users != 1 else ''} on {pods}, over {s.windows} window(s)")
    return line + ("" if s.found else f", a lower bound ({s.stop_reason})")


def scaling_text(s: ScalingResult) -> str:
    """The rows in words, then the USL over replicas and over users on one pod: parameters, or "no fit" and why."""
    return _text(scaling_rows_line(s.rows),
                 usl_line(s.usl, "replicas", "pods", "measure more replica counts (scaling.max_replicas)"),
                 usl_line(s.usl_users_one_pod, "users on one pod", "users",
                          "measure more user levels (search.max_users)"))


def sizing_text(s: SizingResult, slo_p95_ms: float) -> str:
    """The sizing line, the latency it used, each row's arithmetic, then the model against the scaling stage."""
    if s.note:
        return sentence(s.note)
    lines = [_text(sizing_line(s, slo_p95_ms)), ""]
    if s.latency_from:
        lines += [_text(f"latency used: {1000 * (s.latency_s or 0):.1f} ms, {s.latency_from}"), ""]
    lines += [f"- **{r.target}**: {sentence(r.reason)}" for r in s.rows]
    if s.validation:
        lines += ["", _text("checked against the scaling stage (the model scales one pod's saturation linearly): "
                            + "; ".join(validation_line(v) for v in s.validation))]
    return "\n".join(lines).strip()


def _section(stage: str, text: str, rows: list[dict[str, Any]] | None = None, columns: list[str] | None = None,
             plots: list[str | None] | None = None, title: str | None = None) -> dict[str, Any]:
    return {"stage": stage, "title": title or TITLES[stage], "text": text, "rows": rows or [],
            "columns": columns, "plots": [p for p in plots or [] if p]}


def _ramp(r: RampResult, run: StageResults) -> dict[str, Any]:
    lines = [ramp_line(r), multi_client_line(r) if r.stage == "multi_client" else None, operating_line(r),
             superseded_line(r, run)]
    return _section(r.stage, _text(*lines), [lv.__dict__ for lv in r.search.levels], LEVEL_COLUMNS, [r.plot])


def _scaling(s: ScalingResult, run: StageResults) -> list[dict[str, Any]]:
    """The rows, the USL fits, and the run's operating check when the figure moved here and scaling made it."""
    by_cores = [p for p in s.plots if "p95_by_cores" in p]
    text = _text(scaling_text(s), run_check_line(run) if run.operating_stage == "scaling" else None)
    out = [_section("scaling", text, [row.__dict__ for row in s.rows], SCALING_COLUMNS,
                    [p for p in s.plots if p not in by_cores])]
    if s.by_cores or by_cores:
        out.append(_section("scaling", by_cores_text(s.by_cores), s.by_cores, None, by_cores,
                            title="Capacity under the SLO by core count"))
    return out


def by_cores_text(rows: list[dict[str, Any]]) -> str:
    """What slo_users means, and which layouts were never pushed past the SLO (their users are a floor)."""
    text = ("slo_users: the most users whose level met the SLO (its windows' median p95 and mean error rate, as the "
            "search judges a level).")
    floors = [f"{r['replicas']} pod(s)" for r in rows if r.get("slo_users") and not r.get("slo_exceeded", True)]
    if floors:
        text += (f" At {', '.join(floors)} no level failed the SLO: at least "
                 "that many users, not the capacity.")
    return text


def sections(r: StageResults, slo_p95_ms: float) -> list[dict[str, Any]]:
    """One section per stage with a result, in recipe order (a stage that failed before its result has none:
    the Stages table says why)."""
    out: list[dict[str, Any]] = []
    if r.tune:
        note = ("candidates are compared on their searches (chosen_on_rps, chosen_on_rps_per_core); the chosen one's "
                "figure is measured again on fresh windows (saturation_rps, rps_per_core)") if r.tune.confirmation else None
        out.append(_section("tune", _text(tuning_line(r.tune), note), r.tune.candidate_rows(r.tuned_rps()),
                            TUNING_COLUMNS, [r.tune.plot]))
    out += [_ramp(ramp, r) for ramp in (r.single_client, r.multi_client) if ramp]
    if r.scaling:
        out += _scaling(r.scaling, r)
    if r.autoscale:
        out.append(_section("autoscale", autoscale_line(r.autoscale), r.autoscale.phases, PHASE_COLUMNS,
                            [r.autoscale.plot]))
    if r.sizing:
        out.append(_section("sizing", sizing_text(r.sizing, slo_p95_ms), [row.to_dict() for row in r.sizing.rows],
                            SIZING_COLUMNS))
    if r.regression:
        result = r.regression.result
        text = _text(result.message if result else f"nothing compared: {r.regression.note}", canary_line(r))
        out.append(_section("regression", text, result.table_rows() if result else []))
    return out
