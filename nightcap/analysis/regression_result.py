"""What a regression check answers: a verdict per figure (FigureCheck), the night's result, and the labels.

Kept apart from the check itself (regression.py) so readers of the result (summary, store, report) need not
read the statistics. Pure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from nightcap.analysis.change_points import MAX_PVALUE
from nightcap.analysis.figures import COMPARED_FIGURES

MAD_SCALE = 1.4826  # makes the MAD estimate a standard deviation for normally distributed noise

OK = "ok"
REGRESSED = "regressed"
IMPROVED = "improved"
NOT_ENOUGH = "not enough history"
NOT_MEASURED = "not measured"
INSUFFICIENT = "insufficient history"
PLATFORM = "platform changed"  # the figure moved with the platform canary, not beyond it
CANARY_THRESHOLD = 0.05  # the canary moved when it changed beyond this and beyond its own noise
NORMALISED_SUFFIX = "_normalised"  # saturation_rps_normalised: x baseline canary / tonight's canary


FIGURES = COMPARED_FIGURES  # the figures a night is judged on (nightcap.analysis.figures)


@dataclass
class FigureCheck:
    figure: str
    unit: str
    tonight: float | None
    baseline_median: float | None
    change_pct: float | None  # signed: (tonight - median) / median
    noise_pct: float | None  # half-width of the noise band, k x scaled MAD / median
    baseline_runs: int
    verdict: str  # ok, regressed, improved, not enough history, not measured
    message: str = ""
    baseline: str = ""  # which nights the median came from: the last N, or those since a change point
    change_point: dict[str, Any] | None = None  # the latest level change in the series, tonight included


@dataclass
class RegressionResult:
    verdict: str  # ok, regressed, insufficient history
    message: str
    baseline_run_ids: list[str]
    figures: list[FigureCheck] = field(default_factory=list)
    threshold: float = 0.10
    noise_k: float = 3.0
    min_runs: int = 2
    max_pvalue: float = MAX_PVALUE
    nights_analysed: int = 0
    # the platform canary tonight against its earlier nights (None: not measured tonight)
    platform: FigureCheck | None = None
    # what moved: "model" (canary steady), "platform" (the model held once normalised), "platform and model",
    # "unknown" (a regression without a canary to tell), or None (nothing moved)
    cause: str | None = None
    normalised: list[FigureCheck] = field(default_factory=list)  # throughput figures x baseline / tonight's canary

    @property
    def platform_moved(self) -> bool:
        return self.platform is not None and self.platform.verdict in (REGRESSED, IMPROVED)

    @property
    def regressed(self) -> bool:
        return self.verdict == REGRESSED

    @property
    def change_points(self) -> list[dict[str, Any]]:
        """The latest change point of every figure that has one (what events and the trend table show)."""
        return [dict(c.change_point, figure=c.figure, unit=c.unit) for c in self.figures if c.change_point]

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per figure for report.md and the summary artifact: the verdict and the latest level change."""
        rows = []
        normalised = {c.figure.removesuffix(NORMALISED_SUFFIX): c for c in self.normalised}
        for c in self.figures:
            point = c.change_point
            level = ""
            if point:
                when = "tonight" if point["tonight"] else f"night {point['night']} of {point['nights']}" + (
                    f" ({point['started_at'][:10]})" if point.get("started_at") else "")
                level = (f"{when}: {point['mean_before']:.1f} → {point['mean_after']:.1f} "
                         f"({_signed_pct(point['change_pct'])}, p={point['pvalue']:.2g})")
            row = {"figure": c.figure, "tonight": c.tonight, "baseline": c.baseline_median,
                   "change %": c.change_pct, "noise ±%": c.noise_pct, "verdict": c.verdict,
                   "baseline nights": c.baseline, "level change": level}
            if self.platform is not None:
                n = normalised.get(c.figure)
                row["normalised by canary"] = n.tonight if n else None
                row["normalised change %"] = n.change_pct if n else None
            rows.append(row)
        if self.platform is not None:
            p = self.platform
            rows.append({"figure": f"{p.figure} (platform)", "tonight": p.tonight, "baseline": p.baseline_median,
                         "change %": p.change_pct, "noise ±%": p.noise_pct, "verdict": p.verdict,
                         "baseline nights": p.baseline, "level change": ""})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The `regression` block of summary.json (strict JSON: no NaN or infinity)."""
        data = asdict(self)
        rows = data["figures"] + data["normalised"] + ([data["platform"]] if data["platform"] else [])
        for row in rows:
            for key in ("tonight", "baseline_median", "change_pct", "noise_pct"):
                row[key] = _rounded(row[key])
            if row["change_point"]:
                row["change_point"] = _json_point(row["change_point"])
        data["change_points"] = [_json_point(p) for p in self.change_points]
        data["regressed"] = self.regressed
        data["platform_moved"] = self.platform_moved
        return data


@dataclass(frozen=True)
class Night:
    """An earlier night as the check needs it: which run, when, and what that night's own check said."""

    run_id: str
    started_at: str | None = None
    verdicts: Mapping[str, str] = field(default_factory=dict)  # figure -> ok / regressed / improved / ...

    @classmethod
    def of(cls, run: Mapping[str, Any]) -> "Night":
        started = run.get("started_at")
        summary = run.get("summary") or {}
        block = (summary.get("regression") or {}) if isinstance(summary, Mapping) else {}
        rows = [*(block.get("figures") or []), *(block.get("normalised") or [])] if isinstance(block, Mapping) else []
        verdicts = {str(r.get("figure")): str(r.get("verdict")) for r in rows if isinstance(r, Mapping)}
        return cls(str(run.get("run_id", "?")),
                   started.isoformat() if hasattr(started, "isoformat") else (str(started) if started else None),
                   verdicts)


def _rounded(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _json_point(point: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(point)
    for key in ("mean_before", "mean_after", "change_pct"):
        data[key] = _rounded(data.get(key))
    pvalue = data.get("pvalue")
    data["pvalue"] = None if pvalue is None or not math.isfinite(pvalue) else float(f"{pvalue:.3g}")
    return data


def _pct(value: float) -> str:
    value = abs(value)
    if math.isinf(value):
        return "∞%"
    return f"{value:.0f}%" if value >= 10 else f"{value:.1f}%"


def _signed_pct(value: float) -> str:
    return ("+" if value > 0 else "−" if value < 0 else "") + _pct(value)
