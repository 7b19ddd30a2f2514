"""What a regression check answers: a verdict per figure (FigureCheck), the night's result, and the labels.

Kept apart from the check itself (regression.py) so readers of the result (summary, store, report) need not
read the statistics. Pure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

OK = "ok"
REGRESSED = "regressed"
IMPROVED = "improved"
NOT_ENOUGH = "not enough history"
NOT_MEASURED = "not measured"
INSUFFICIENT = "insufficient history"
NOT_JUDGED = "not judged"  # tonight's headline stage was inconclusive or failed: its figures are not compared
PLATFORM = "platform changed"  # the figure moved with the platform canary, not beyond it
CANARY_THRESHOLD = 0.05  # the canary moved when it changed beyond this and beyond its own noise
NORMALISED_SUFFIX = "_normalised"  # saturation_rps_normalised: x baseline canary / tonight's canary
FALSE_ALARM_RATE = 0.005  # per night, over every figure and look together: one false alarm in 200 nights
MIN_NIGHTS = 5  # comparable nights before a figure can alarm
LAST_N = 20  # baseline nights at most (the newest before the window)
WINDOW_NIGHTS = 3  # the alarm also looks at the mean of the last 2..WINDOW_NIGHTS nights


@dataclass
class FigureCheck:
    figure: str
    unit: str
    tonight: float | None
    baseline_median: float | None  # median of the baseline nights
    change_pct: float | None  # signed: the window's mean against the baseline's mean (geometric means)
    noise_pct: float | None  # the change the history's noise allows at the night's per-look false-alarm rate
    baseline_runs: int
    verdict: str  # ok, regressed, improved, not enough history, not measured, platform changed
    message: str = ""
    baseline: str = ""  # which nights the baseline is: "the 14 nights before tonight", "... since night 9"
    # where the change the alarm found began: the window's first night (None: no change found tonight)
    change_point: dict[str, Any] | None = None
    baseline_mean: float | None = None  # geometric mean of the baseline nights: what change_pct is against
    window_nights: int | None = None  # the look shown: the mean of tonight and the nights before it (1: tonight
    # alone; None: no look was made, the figure has too little history or was not measured)
    window_mean: float | None = None  # that window's geometric mean
    pvalue: float | None = None  # the look's one-sided p-value x the night's looks (Bonferroni), capped at 1
    interval_pct: float | None = None  # the window's own 95% half-width, % (None: not measured, not required)
    outliers: list[str] = field(default_factory=list)  # baseline nights left out as outliers (run ids)


@dataclass
class RegressionResult:
    verdict: str  # ok, regressed, insufficient history, platform changed, not judged
    message: str
    baseline_run_ids: list[str]
    figures: list[FigureCheck] = field(default_factory=list)
    threshold: float = 0.10
    min_runs: int = MIN_NIGHTS
    nights_analysed: int = 0
    # the platform canary tonight against its earlier nights (None: not measured tonight)
    platform: FigureCheck | None = None
    # what moved: "model" (canary steady), "platform" (the model held once normalised), "platform and model",
    # "unknown" (a regression without a canary to tell), or None (nothing moved)
    cause: str | None = None
    normalised: list[FigureCheck] = field(default_factory=list)  # throughput figures x baseline / tonight's canary
    false_alarm_rate: float = FALSE_ALARM_RATE  # per night, over all figures and looks
    looks: int = 0  # distinct tests tonight's one decision was made over (figures x windows)
    window_nights: int = WINDOW_NIGHTS
    last_n: int = LAST_N
    # the first night of the level change tonight found: later nights' baselines start there
    new_level: dict[str, Any] | None = None
    excluded: list[dict[str, str]] = field(default_factory=list)  # earlier nights that are no baseline, and why
    notes: list[str] = field(default_factory=list)  # e.g. a reported change that did not persist (its nights left out)

    @property
    def platform_moved(self) -> bool:
        return self.platform is not None and self.platform.verdict in (REGRESSED, IMPROVED)

    @property
    def regressed(self) -> bool:
        return self.verdict == REGRESSED

    @property
    def change_points(self) -> list[dict[str, Any]]:
        """Where each figure that changed tonight began changing (what events and the trend table show)."""
        return [dict(c.change_point, figure=c.figure, unit=c.unit) for c in self.figures if c.change_point]

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per figure for report.md and the summary artifact: the verdict and the look behind it."""
        rows = []
        normalised = {c.figure.removesuffix(NORMALISED_SUFFIX): c for c in self.normalised}
        for c in self.figures:
            row = _row(c)
            if self.platform is not None:
                n = normalised.get(c.figure)
                row["normalised by canary"] = n.tonight if n else None
                row["normalised change %"] = n.change_pct if n else None
            rows.append(row)
        if self.platform is not None:
            rows.append(_row(self.platform, f"{self.platform.figure} (platform)"))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The `regression` block of summary.json (strict JSON: no NaN or infinity)."""
        data = asdict(self)
        rows = data["figures"] + data["normalised"] + ([data["platform"]] if data["platform"] else [])
        for row in rows:
            for key in ("tonight", "baseline_median", "baseline_mean", "window_mean", "change_pct", "noise_pct",
                        "interval_pct"):
                row[key] = _rounded(row[key])
            row["pvalue"] = _significant(row["pvalue"])
            if row["change_point"]:
                row["change_point"] = _json_point(row["change_point"])
        data["change_points"] = [_json_point(p) for p in self.change_points]
        data["regressed"] = self.regressed
        data["platform_moved"] = self.platform_moved
        return data


def _row(c: FigureCheck, name: str | None = None) -> dict[str, Any]:
    # "nights averaged": the look the change is of (1: tonight alone; k: the mean of tonight and the k - 1 nights
    # before it, shown beside tonight's own value), not the nights of history the message counts
    return {"figure": name or c.figure, "tonight": c.tonight, "baseline": c.baseline_mean,
            "nights averaged": c.window_nights, "their mean": c.window_mean, "change %": c.change_pct,
            "noise ±%": c.noise_pct, "own ±%": c.interval_pct, "p (all looks)": c.pvalue, "verdict": c.verdict,
            "baseline nights": c.baseline}


def _rounded(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _significant(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{value:.3g}")


def _json_point(point: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(point)
    for key in ("mean_before", "mean_after", "change_pct"):
        data[key] = _rounded(data.get(key))
    data["pvalue"] = _significant(data.get("pvalue"))
    return data


def format_pct(value: float) -> str:
    """A change's size in the report's words: 12%, 4.5%, ∞% (the sign is `format_signed_pct`'s)."""
    value = abs(value)
    if math.isinf(value):
        return "∞%"
    return f"{value:.0f}%" if value >= 10 else f"{value:.1f}%"


def format_signed_pct(value: float) -> str:
    return ("+" if value > 0 else "−" if value < 0 else "") + format_pct(value)
