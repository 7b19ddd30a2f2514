"""The night at a glance, where people already look in the Prefect UI: the run's name and its answer artifact.

`night_name` names a flow run by target and night ("wine-mlflow 2026-12-03"), so the runs list reads as a
calendar of nights. `answer_markdown` is the run's first artifact (created as `pending_markdown` when the run
opens, written when it ends): one pod's figure with its interval, the operating rate and whether the SLO was
verified there, how sure the figure is, and tonight's verdict against earlier nights. All read plain data
(summary.json), so they are tested in milliseconds; `tasks/artifacts.py` publishes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from nightcap.analysis.regression_result import IMPROVED, INSUFFICIENT, OK, REGRESSED, format_signed_pct

NO_EARLIER_NIGHT = "no earlier night to compare"
QUOTED_FIGURE = "saturation_rps"  # the figure an "ok" verdict quotes: the capacity the pod figure comes from
CAUSES = {"model": "the model moved; the platform canary held", "platform": "the platform moved",
          "platform and model": "the platform and the model moved"}


def night_name(target: str, started: datetime) -> str:
    """The flow run's name: the target and the date the run started, in the caller's time zone."""
    return f"{target} {started.date().isoformat()}"


def _n(value: float) -> str:
    return f"{value:,.1f}"


def _pm(value: float | None, ci: Any) -> str:
    """"±3%": a 95% interval's half-width as a share of the figure ("" without an interval)."""
    if not value or not ci or ci[0] is None or ci[1] is None:
        return ""
    return f"±{100 * (ci[1] - ci[0]) / 2 / value:.0f}%"


def pod_figure(summary: Mapping[str, Any]) -> tuple[float, list[float] | None, int] | None:
    """One pod's rps, its 95% interval and the pods it was measured on: `capacity.per_pod` (confirmed, or the
    lower of two when unstable), else the saturation figure shared over its pods; None without a figure."""
    sat = summary.get("saturation") or {}
    if sat.get("rps") is None:
        return None
    per_pod = (summary.get("capacity") or {}).get("per_pod")
    if per_pod:
        return per_pod["rps"], per_pod.get("ci"), per_pod.get("replicas") or 1
    pods = sat.get("replicas") or (summary.get("platform") or {}).get("replicas") or 1
    ci = sat.get("rps_ci")
    return sat["rps"] / pods, ([c / pods for c in ci] if ci and None not in ci else None), pods


def pod_words(summary: Mapping[str, Any]) -> str:
    """"1.00 CPU, concurrency 4": the pod shape the figure was measured on."""
    pod = ((summary.get("capacity") or {}).get("per_pod") or {}).get("pod") or summary.get("platform") or {}
    cpu = pod.get("cpu")
    shape = f"{cpu:.2f} CPU" if isinstance(cpu, (int, float)) else "unlimited CPU"
    if pod.get("concurrency") is not None:
        shape += f", concurrency {pod['concurrency']}"
    return shape


def headline_lines(summary: Mapping[str, Any]) -> list[str]:
    """One pod's figure with its interval, then the operating rate and whether the SLO holds there."""
    figure = pod_figure(summary)
    if figure is None:
        sat = summary.get("saturation") or {}
        why = summary.get("failure") or (f"no saturation point was found "
                                         f"({sat.get('stop_reason') or 'no stage measured it'})")
        return [f"**No answer tonight**: {why}"]
    rps, ci, pods = figure
    interval = f" (95% interval {ci[0]:.1f}–{ci[1]:.1f}, {_pm(rps, ci)})" if ci else " (no interval)"
    on = f", measured on {pods} pods" if pods != 1 else ""
    return [f"**One pod ({pod_words(summary)}): {_n(rps)} rps**{interval}{on}.", operating_words(summary)]


def operating_words(summary: Mapping[str, Any]) -> str:
    """The rate to plan on, and whether an open-loop check at that rate met the SLO."""
    op = summary.get("operating_point") or {}
    slo = summary.get("slo_capacity") or {}
    rule = f"p95 ≤ {slo['p95_ms']:g} ms" if slo.get("p95_ms") is not None else "the SLO"
    if op.get("rps") is None:
        return "**No operating rate**: no saturation point to back off from."
    pods = (summary.get("saturation") or {}).get("replicas") or 1
    where = f"{round(100 * (op.get('headroom') or 0.7))}% of saturation on {pods} pod{'s' if pods != 1 else ''}"
    if op.get("load") != "open":
        p95 = f"; its p95 {op['p95_ms']:.0f} ms is interpolated from the ramp" if op.get("p95_ms") is not None else ""
        return f"**Operate at {_n(op['rps'])} rps** ({where}): **not verified** at that rate (no open-loop check){p95}."
    p95 = f"open-loop p95 {op['p95_ms']:.0f} ms" if op.get("p95_ms") is not None else "open loop"
    if op.get("meets_slo"):
        return f"**Operate at {_n(op['rps'])} rps** ({where}): verified within the SLO ({p95}, {rule})."
    if slo.get("rate_rps") is not None:
        return (f"**Operate at {_n(slo['rate_rps'])} rps**: the highest rate verified within the SLO ({rule}); "
                f"at {_n(op['rps'])} rps ({where}) the SLO did not hold ({p95}).")
    return (f"**No rate verified within the SLO** ({rule}): at {_n(op['rps'])} rps ({where}) it did not hold ({p95}) "
            "and no lower rate met it.")


def sure_words(summary: Mapping[str, Any]) -> str:
    """How sure: confirmed on fresh windows or unstable, the interval's width, and what weakens the figure."""
    sat = summary.get("saturation") or {}
    figure = pod_figure(summary)
    if figure is None:
        return "**How sure**: there is no figure to be sure of."
    per_pod = (summary.get("capacity") or {}).get("per_pod") or {}
    status = per_pod.get("status") or sat.get("status")
    windows = per_pod.get("windows") or sat.get("windows")
    if status == "confirmed":
        parts = [f"**confirmed** on {windows} fresh window(s)" if windows else "**confirmed**"]
    elif status == "unstable":
        parts = ["**unstable**: two measurements of the pod disagreed; the figure is the lower"]
    else:
        parts = ["**not confirmed** on fresh windows"]
    width = _pm(figure[0], figure[1])
    parts.append(f"its 95% interval is {width} of the figure" if width else "it has no interval")
    if not sat.get("found", True):
        parts.append("a lower bound (the search stopped before the knee)")
    if sat.get("inconclusive"):
        parts.append(f"{sat.get('stage')} was inconclusive, so tonight is not recorded for comparison")
    if not (summary.get("platform") or {}).get("limits_enforced", True):
        parts.append("CPU and memory limits were not enforced")
    if ((summary.get("target") or {}).get("payload") or {}).get("synthetic"):
        parts.append("the request bodies were synthetic")
    return "**How sure**: " + "; ".join(parts) + "."


def _change(figure: Mapping[str, Any]) -> str:
    """"saturation_rps −50% (198.9 → 99.9 rps)": a figure against its baseline nights."""
    unit = f" {figure['unit']}" if figure.get("unit") else ""
    now = figure.get("window_mean") if figure.get("window_mean") is not None else figure.get("tonight")
    base = figure.get("baseline_mean")
    if figure.get("change_pct") is None or base is None or now is None:
        return f"{figure.get('figure')}: {figure.get('verdict')}"
    return f"{figure['figure']} {format_signed_pct(figure['change_pct'])} ({_n(base)} → {_n(now)}{unit})"


def verdict_words(summary: Mapping[str, Any]) -> str:
    """Tonight against earlier nights: the regression check's one verdict, and the figures that moved."""
    label = "**Against earlier nights**"
    reg = summary.get("regression")
    if not reg:
        return f"{label}: not checked tonight (`regression` is not in the config's `stages`)."
    verdict = reg.get("verdict") or "unknown"
    if verdict == INSUFFICIENT:
        if reg.get("nights_analysed") == 1:
            return f"{label}: {NO_EARLIER_NIGHT}; tonight starts the history."
        return f"{label}: not judged yet; {reg.get('message') or verdict}."
    head = f"{label}: **{verdict}** against {len(reg.get('baseline_run_ids') or [])} earlier night(s)"
    figures = reg.get("figures") or []
    moved = [f for f in figures if f.get("verdict") in (REGRESSED, IMPROVED)]
    if moved:
        cause = CAUSES.get(reg.get("cause") or "")
        return head + ": " + "; ".join(_change(f) for f in moved) + (f" ({cause})" if cause else "") + "."
    quoted = next((f for f in figures if f.get("figure") == QUOTED_FIGURE), None)
    if verdict == OK and quoted is not None:
        return head + f": {_change(quoted)}, within the noise."
    return head + f": {reg.get('message') or verdict}."


def answer_markdown(summary: Mapping[str, Any], details: str = "the summary artifact and report.md") -> str:
    """The answer artifact: a heading with the target and how the run ended, then the three answers."""
    target = (summary.get("target") or {}).get("name") or "the target"
    ended = summary.get("verdict") or summary.get("status") or "running"
    if (summary.get("regression") or {}).get("verdict") == REGRESSED:  # as `nightcap history` says it
        ended += f", {REGRESSED}"
    answers = [*headline_lines(summary), sure_words(summary), verdict_words(summary)]
    lines = [f"### {target}: {ended}", "", *(f"- {answer}" for answer in answers), ""]
    unanswered = [n for n, s in (summary.get("stages") or {}).items()
                  if (s or {}).get("status") in ("failed", "inconclusive", "cancelled")]
    if unanswered:
        lines += [f"Stages that did not answer: {', '.join(unanswered)}.", ""]
    lines.append(f"Run {summary.get('run_id')}; every stage, table and plot: {details}.")
    return "\n".join(lines)


def pending_markdown(target: str, run_id: str, stages: list[str]) -> str:
    """The answer artifact while the run measures: created first, so it is the run's first artifact, and
    overwritten with `answer_markdown` when the run ends."""
    return "\n".join([
        f"### {target}: running", "",
        f"Run {run_id} is measuring ({', '.join(stages) or 'deploy only'}); its answer replaces this text when it "
        "ends.",
        "The previous version of this artifact is the last night's answer. If this still says running after the run "
        "ended, the run was killed before its report (`nightcap cleanup` stops what it left).",
    ])


def answer_description(summary: Mapping[str, Any]) -> str:
    """The artifact's one-line description (the Artifacts page lists it): figure, rate, verdict; ≤ 250 chars."""
    target = (summary.get("target") or {}).get("name") or "the target"
    figure = pod_figure(summary)
    if figure is None:
        return f"{target}: no answer tonight"[:250]
    rps, ci, _ = figure
    width = _pm(rps, ci)
    text = f"{target}: {_n(rps)} rps per pod{' ' + width if width else ''}"
    op = summary.get("operating_point") or {}
    if op.get("rps") is not None:
        text += f", operate at {_n(op['rps'])} rps"
    reg = summary.get("regression") or {}
    if reg.get("verdict"):
        text += f"; {NO_EARLIER_NIGHT if reg.get('nights_analysed') == 1 else reg['verdict']}"
    return text[:250]
