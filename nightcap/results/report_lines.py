"""report.md's sentences that frame the answer: how sure it is, the stage verdicts, fits, checks and warnings.

One function per line, each taking plain data (summary.json dicts or typed results) and returning one sentence
without Markdown structure around it, so a line can be replaced on its own and tested against sample summaries
(`tests/results/test_report_lines.py`). The stages' own lines (tuning, operating point, autoscaling, ...) are in
`report.py`; the sections that place them are in `report_sections.py`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from nightcap.analysis.sizing import ValidationRow
from nightcap.analysis.usl import UslFit
from nightcap.results.verdicts import FAILED, INCONCLUSIVE

# where a warning's detail is: the report section of the first stage it names (summary.json names them so)
_STAGE_WORDS = {"tune": ("tune", "tuning"), "single_client": ("single_client", "single-client"),
                "multi_client": ("multi_client", "multi-client"), "scaling": ("scaling",),
                "autoscale": ("autoscale", "autoscaling", "hpa"), "sizing": ("sizing",),
                "regression": ("regression", "history", "trend", "baseline")}


def sentence(text: str) -> str:
    """A clause as a sentence: capital first letter, exactly one full stop (templates end without one)."""
    text = " ".join(text.split())
    if not text:
        return text
    first = text.split(" ", 1)[0].rstrip(".,;:!?")
    if not any(c in first for c in "_.=`"):  # an identifier (saturation_rps, cpu=0.5) keeps its case
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def clause(text: str) -> str:
    """A clause after a label ("**Inconclusive**: ..."): its own case, exactly one full stop."""
    text = " ".join(text.split())
    return text if not text or text[-1] in ".!?" else text + "."


def confidence_line(summary: Mapping[str, Any]) -> str:
    """How sure the answer is, in one line under it: its interval and the fresh windows behind it, lower bound,
    what later stages found when they met the pod, and what the run could not control."""
    sat = summary.get("saturation") or {}
    if sat.get("rps") is None:
        return "How sure: there is no figure to be sure of."
    parts = []
    ci = sat.get("rps_ci")
    if ci and ci[0] is not None and ci[1] is not None:
        windows = f", from {sat['windows']} fresh windows" if sat.get("windows") else ""
        parts.append(f"the saturation figure's 95% interval is {ci[0]:.1f}-{ci[1]:.1f} rps{windows}")
    else:
        parts.append("the saturation figure has no interval (its level was not measured in sub-windows)")
    if not sat.get("found", True):
        parts.append("it is a lower bound: the search stopped before the knee")
    if sat.get("inconclusive"):
        parts.append(f"{sat.get('stage')} was inconclusive, so tonight's figures are not recorded for comparison")
    per_pod = (summary.get("capacity") or {}).get("per_pod") or {}
    checks = per_pod.get("checks") or []
    if per_pod.get("status") == "unstable":
        parts.append("two measurements of the pod disagreed after interleaved windows: **unstable**, planned on the "
                     "lower")
    elif checks:
        parts.append(f"{len(checks)} later stage(s) met the pod and found it as confirmed "
                     f"({', '.join(c['stage'] + ' ' + c['outcome'] for c in checks)})")
    if (summary.get("operating_point") or {}).get("load") == "closed" and sat.get("stage") != "tune":
        parts.append("the operating point's latency was interpolated, not measured at its rate")
    if not (summary.get("platform") or {}).get("limits_enforced", True):
        parts.append("CPU and memory limits were not enforced")
    if ((summary.get("target") or {}).get("payload") or {}).get("synthetic"):
        parts.append("the request bodies were synthetic")
    return "How sure: " + "; ".join(parts) + "."


def verdict_lines(stages: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per stage that did not answer: inconclusive with its reason, or failed with its error."""
    lines = []
    for name, info in stages.items():
        status = (info or {}).get("status")
        if status == INCONCLUSIVE:
            lines.append(f"**Inconclusive**: {name}: " + clause(str(info.get("reason") or "no reason recorded")))
        elif status == FAILED:
            lines.append(f"**Failed**: {name}: " + clause(str(info.get("error") or "no error recorded")))
    return lines


def answer_verdicts(summary: Mapping[str, Any]) -> str:
    """What the one-line answer adds about stages that did not answer ("" when every stage did)."""
    stages = summary.get("stages") or {}
    unanswered = [n for n, i in stages.items() if (i or {}).get("status") == INCONCLUSIVE]
    failed = [n for n, i in stages.items() if (i or {}).get("status") == FAILED]
    text = ""
    if unanswered:
        text += f" Inconclusive: {', '.join(unanswered)}."
    if failed:
        text += f" Failed: {', '.join(failed)}."
    return text


def validation_line(v: ValidationRow) -> str:
    """The sizing model against the scaling stage at N pods; the share is the measurement's distance from the
    prediction, signed as the words say (issue 23: "predicted 284, measured 226 (+26%)" had it backwards)."""
    pods = f"{v.replicas} pod{'s' if v.replicas != 1 else ''}"
    head = f"{pods}: predicted {v.predicted_saturation_rps:.0f} rps, measured {v.measured_saturation_rps:.0f} rps"
    if not v.predicted_saturation_rps:
        return head
    off = v.measured_saturation_rps / v.predicted_saturation_rps - 1
    if abs(off) < 0.005:
        return head + " (as predicted)"
    text = f"{abs(off):.0%} {'below' if off < 0 else 'above'} the prediction"
    if v.paired_one_pod_rps and v.efficiency is not None:
        # the prediction's pod figure came from other windows; the pairs say whether the pods or the pod's rate moved
        ci = f", 95% interval {v.efficiency_ci[0]:.0%}-{v.efficiency_ci[1]:.0%}" if v.efficiency_ci else ""
        text += (f"; one pod read {v.paired_one_pod_rps:.0f} rps in the windows paired with these, against which "
                 f"{pods} scale at {v.efficiency:.0%}{ci}")
    return head + f" ({text})"


def _pm(err: float | None) -> str:
    return f" ± {1.96 * err:.3f}" if err is not None and math.isfinite(err) else ""


def usl_line(fit: UslFit, over: str, unit: str, more: str) -> str:
    """The USL fit over `over` ("replicas", "users on one pod"): its parameters, or "no fit" and why.

    `unit` names N in the peak clause ("pods", "users"); `more` says what to measure when there were too few
    counts. Peaks and retrograde points come only from an accepted fit (`fit.ok`)."""
    if not fit.ok:
        hint = f"; {more}" if fit.lam is None and "distinct count" in fit.reason else ""
        return f"USL over {over}: {fit.reason or 'no fit'}{hint}"
    text = (f"USL over {over}: σ={fit.sigma:.3f}{_pm(fit.sigma_err)}, κ={fit.kappa:.4f}"
            + (f"{_pm(fit.kappa_err)}" if fit.model == "usl" else " (fixed: the data show no coherency cost)")
            + f", r²={fit.r2:.3f}")
    if fit.predicted_peak_n:
        text += (f"; throughput peaks at {fit.predicted_peak_n:.1f} {unit} and falls from "
                 f"{fit.retrograde_from_n} {unit}")
    else:
        text += "; no retrograde predicted"
    return text + (f" ({fit.reason})" if fit.reason else "")


def scaling_rows_line(rows: Iterable[Any]) -> str:
    """Saturation per pod count, with efficiency against N × one pod; a count where no level met the SLO says so
    instead of printing 0 rps."""
    parts = []
    for r in rows:
        pods = f"{r.replicas} pod{'s' if r.replicas != 1 else ''}"
        ci = getattr(r, "efficiency_ci", None)
        if not r.saturation_rps:
            parts.append(f"{pods}: no level met the SLO")
        elif r.replicas == 1 or r.efficiency is None:
            parts.append(f"{pods} {r.saturation_rps:.0f} rps")
        else:
            interval = f", 95% interval {ci[0]:.0%}-{ci[1]:.0%}" if ci else ""
            one = getattr(r, "paired_one_pod_rps", None)
            # the denominator is the one pod of the paired windows, which can differ from the figure printed for
            # 1 pod (an unstable pod): name it, so the percentage can be checked against the numbers beside it
            base = f"{r.replicas} × one pod" if not one else f"{r.replicas} × {one:.0f} rps, one pod in the same pairs"
            parts.append(f"{pods} {r.saturation_rps:.0f} rps ({r.efficiency:.0%} of {base}{interval}, "
                         f"{getattr(r, 'pairs', 0)} pairs of windows alternating one pod and {r.replicas})")
    return "saturation by pod count: " + ", ".join(parts) if parts else "no pod count was measured"


def warning_line(text: str, titles: Mapping[str, str]) -> str:
    """A warning on one line, pointing at the section with the detail (`titles`: stage -> section title)."""
    text = " ".join(str(text).split())
    low = text.lower()
    if "capacity.per_pod" in low:
        return sentence(text) + " Detail: `capacity.per_pod` in summary.json."
    for stage, words in _STAGE_WORDS.items():
        if stage in titles and any(w in low for w in words):
            return sentence(text) + f" Detail: section \"{titles[stage]}\"."
    return sentence(text)
