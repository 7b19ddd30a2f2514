"""Did tonight get worse than the recent past, by more than the noise of the recent past?

Tonight's headline figures are compared with the median of the last N comparable completed runs.
Capacity measurements are noisy, so a fixed threshold alone would alarm on bad nights that are
only noise; a noise band alone would alarm on tiny but very steady shifts. A figure therefore
regresses only when its change is worse than both the relative `threshold` and `noise_k` times the
scaled median absolute deviation (MAD, robust to one odd night) of the baseline runs.

Pure: no Prefect, no database; the caller hands in plain dicts.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from nightcap.analysis.change_points import MAX_PVALUE, ChangePoint, find_change_points, levels
from nightcap.analysis.figures import COMPARED_FIGURES, Figure

MAD_SCALE = 1.4826  # makes the MAD estimate a standard deviation for normally distributed noise

OK = "ok"
REGRESSED = "regressed"
IMPROVED = "improved"
NOT_ENOUGH = "not enough history"
NOT_MEASURED = "not measured"
INSUFFICIENT = "insufficient history"


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
        for c in self.figures:
            point = c.change_point
            level = ""
            if point:
                when = "tonight" if point["tonight"] else f"night {point['night']} of {point['nights']}" + (
                    f" ({point['started_at'][:10]})" if point.get("started_at") else "")
                level = (f"{when}: {point['mean_before']:.1f} → {point['mean_after']:.1f} "
                         f"({_signed_pct(point['change_pct'])}, p={point['pvalue']:.2g})")
            rows.append({"figure": c.figure, "tonight": c.tonight, "baseline": c.baseline_median,
                         "change %": c.change_pct, "noise ±%": c.noise_pct, "verdict": c.verdict,
                         "baseline nights": c.baseline, "level change": level})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The `regression` block of summary.json (strict JSON: no NaN or infinity)."""
        data = asdict(self)
        for row in data["figures"]:
            for key in ("tonight", "baseline_median", "change_pct", "noise_pct"):
                row[key] = _rounded(row[key])
            if row["change_point"]:
                row["change_point"] = _json_point(row["change_point"])
        data["change_points"] = [_json_point(p) for p in self.change_points]
        data["regressed"] = self.regressed
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
        rows = (summary.get("regression") or {}).get("figures") or [] if isinstance(summary, Mapping) else []
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


def finite(value: Any) -> float | None:
    """A finite float, or None for None, booleans, non-numbers, NaN and infinity."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _pct(value: float) -> str:
    value = abs(value)
    if math.isinf(value):
        return "∞%"
    return f"{value:.0f}%" if value >= 10 else f"{value:.1f}%"


def noise_band(values: Sequence[float], noise_k: float) -> tuple[float, float]:
    """Median of the baseline and k x scaled MAD around it (absolute, in the figure's unit)."""
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    return median, noise_k * MAD_SCALE * mad


def _worse_pct(figure: Figure, change_pct: float) -> float:
    """A signed change as "how much worse": positive is worse, whichever way the figure is better."""
    return -change_pct if figure.higher_is_better else change_pct


def _baseline(
    values: list[float | None], inside: list[ChangePoint], *, noise_k: float, min_runs: int, last_n: int | None
) -> tuple[list[int], float, float] | str:
    """Which earlier nights tonight is compared with, their median and noise band; or why there are none.

    With no change point, the last `last_n` nights. After a change point, only the nights since it (the
    current level): the nights before it measured something else. When fewer than `min_runs` nights have
    passed since, the median is theirs and the noise band is the spread of every night around its own
    level, since a change of level does not change how noisy the measurement is.
    """
    start = inside[-1].index if inside else 0
    used = [i for i in range(start, len(values)) if values[i] is not None]
    if last_n:
        used = used[-last_n:]
    level = [values[i] for i in used]
    if not inside or len(level) >= min_runs:
        median, band = noise_band(level, noise_k)  # type: ignore[arg-type]
        return used, median, band
    residuals = []
    for stretch in levels(len(values), inside):
        own = [values[i] for i in stretch if values[i] is not None]
        if len(own) >= 2:
            middle = statistics.median(own)  # type: ignore[type-var]
            residuals += [abs(v - middle) for v in own]  # type: ignore[operator]
    if not level or len(residuals) < min_runs:
        return f"{len(level)} night(s) since the change point, and too few nights to know the noise"
    return used, statistics.median(level), noise_k * MAD_SCALE * statistics.median(residuals)  # type: ignore[type-var]


def _describe_night(index: int, nights: Sequence[Night], tonight_id: str | None) -> dict[str, Any]:
    if index < len(nights):
        return {"run_id": nights[index].run_id, "started_at": nights[index].started_at, "tonight": False}
    return {"run_id": tonight_id, "started_at": None, "tonight": True}


def _is_known(point: ChangePoint, earlier: list[ChangePoint], nights: Sequence[Night], figure: Figure) -> bool:
    """Was this change already there last night (within a night of here, same direction), or already
    reported by a night's own check since it began (found by the median check before it was a level)?"""
    sign = math.copysign(1, point.mean_after - point.mean_before)
    for old in earlier:
        if abs(old.index - point.index) <= 1 and math.copysign(1, old.mean_after - old.mean_before) == sign:
            return True
    wanted = IMPROVED if (sign > 0) == figure.higher_is_better else REGRESSED
    return any(n.verdicts.get(figure.name) == wanted for n in nights[max(0, point.index - 1):])


def check_figure(
    figure: Figure,
    tonight: Any,
    history: Sequence[Any],
    *,
    threshold: float,
    noise_k: float,
    min_runs: int,
    last_n: int | None = None,
    max_pvalue: float = MAX_PVALUE,
    nights: Sequence[Night] = (),
    tonight_id: str | None = None,
) -> tuple[FigureCheck, list[int]]:
    """Verdict on one figure (`history` oldest first), and the indices of the nights it was compared with.

    Either of two checks regresses the figure:
    - the median check: worse than the baseline's median by more than the threshold and the noise band
      (the baseline is the nights since the latest level change, when there is one);
    - the change-point check: the latest change of level in the series (tonight included) is worse than
      the threshold, tonight is still at the worse level, and the change was not known before tonight.
    So a step is reported on the night it is first seen, once, and a drift once it adds up.
    """
    value = finite(tonight)
    values = [finite(v) for v in history]
    present = [v for v in values if v is not None]
    check = FigureCheck(figure.name, figure.unit, value, None, None, None, len(present), OK)
    if value is None:
        check.verdict = NOT_MEASURED
        check.message = f"{figure.name} was not measured tonight"
        return check, []
    if len(present) < min_runs:
        check.verdict = NOT_ENOUGH
        check.message = f"{figure.name}: {len(present)} earlier value(s), need {min_runs}"
        return check, []
    n = len(values)
    points = find_change_points([*values, value], max_pvalue=max_pvalue, min_change=threshold)
    inside = [p for p in points if p.index < n]
    latest = points[-1] if points else None
    point_text = ""
    if latest is not None:
        last_night = find_change_points(values, max_pvalue=max_pvalue, min_change=threshold)
        new = latest.index == n or not _is_known(latest, last_night, nights, figure)
        where = _describe_night(latest.index, nights, tonight_id)
        check.change_point = dict(night=latest.index + 1, nights=n + 1, **where, mean_before=latest.mean_before,
                                  mean_after=latest.mean_after, change_pct=latest.change_pct, pvalue=latest.pvalue,
                                  new=new)
        when = "tonight" if where["tonight"] else (
            f"night {latest.index + 1} of {n + 1}" + (f" ({where['started_at'][:10]}, run {where['run_id']})"
                                                     if where.get("started_at") else ""))
        point_text = (f"; level change {when}: {latest.mean_before:.1f} → {latest.mean_after:.1f} {figure.unit} "
                      f"({_signed_pct(latest.change_pct)}, p={latest.pvalue:.2g}"
                      + (", first seen tonight)" if new and not where["tonight"] else ")"))
    found = _baseline(values, inside, noise_k=noise_k, min_runs=min_runs, last_n=last_n)
    if isinstance(found, str):
        check.verdict = NOT_ENOUGH
        check.message = f"{figure.name}: {found}{point_text}"
        return check, []
    used, median, band = found
    check.baseline_runs = len(used)
    check.baseline = (f"{len(used)} night(s) since the level change at night {inside[-1].index + 1}" if inside
                      else f"the last {len(used)} night(s)")
    check.baseline_median = median
    if median == 0:
        change = 0.0 if value == 0 else math.copysign(math.inf, value)
        noise = 0.0 if band == 0 else math.inf
    else:
        change = (value - median) / abs(median) * 100
        noise = max(band, figure.resolution) / abs(median) * 100
    check.change_pct, check.noise_pct = change, noise
    worse = _worse_pct(figure, change)
    limit = max(threshold * 100, noise)
    if worse > limit:
        check.verdict = REGRESSED
    elif -worse > limit:
        check.verdict = IMPROVED
    shifted = ""
    if latest is not None and check.change_point and check.change_point["new"] and latest.mean_before != 0:
        level_worse = _worse_pct(figure, latest.change_pct)
        tonight_worse = _worse_pct(figure, (value - latest.mean_before) / abs(latest.mean_before) * 100)
        bar = max(threshold * 100, figure.resolution / abs(latest.mean_before) * 100)
        if level_worse > bar and tonight_worse > bar and check.verdict != REGRESSED:
            check.verdict, shifted = REGRESSED, "regressed"
        elif -level_worse > bar and -tonight_worse > bar and check.verdict == OK:
            check.verdict, shifted = IMPROVED, "improved"
    direction = "rose" if change > 0 else "fell" if change < 0 else "held"
    check.message = (
        f"{figure.name} {direction} {_pct(change)} ({median:.1f} → {value:.1f} {figure.unit})"
    )
    if shifted:
        check.message = (f"{figure.name} changed level {_signed_pct(latest.change_pct)} "  # type: ignore[union-attr]
                         f"({latest.mean_before:.1f} → {latest.mean_after:.1f} {figure.unit}), "  # type: ignore[union-attr]
                         f"beyond the {threshold * 100:g}% threshold; tonight {value:.1f} {figure.unit}"
                         f"{point_text}")
        return check, used
    if check.verdict == REGRESSED:
        check.message += f", beyond the {threshold * 100:g}% threshold and the noise band (±{noise:.1f}%)"
    elif check.verdict == IMPROVED:
        check.message += f", an improvement beyond the noise band (±{noise:.1f}%)"
    else:
        check.message += f", within the {threshold * 100:g}% threshold or the noise band (±{noise:.1f}%)"
    if inside:
        check.message += f" against the {check.baseline}"
    check.message += point_text
    return check, used


def _signed_pct(value: float) -> str:
    return ("+" if value > 0 else "−" if value < 0 else "") + _pct(value)


def check_regression(
    tonight: Mapping[str, Any],
    baseline_runs: Sequence[Mapping[str, Any]],
    *,
    threshold: float = 0.10,
    noise_k: float = 3.0,
    min_runs: int = 2,
    last_n: int | None = None,
    max_pvalue: float = MAX_PVALUE,
    figures: Sequence[Figure] = FIGURES,
) -> RegressionResult:
    """Compare tonight's headline figures with earlier comparable runs, newest first.

    `baseline_runs` are dicts with `run_id`, the figures, and optionally `started_at` and `summary` (that
    night's own verdicts, so a change already reported is not reported again). The median check uses the
    newest `last_n` of them (all when None) or those since a change point; the change-point analysis uses
    all of them. Fewer than `min_runs` gives "insufficient history", which is never a failure: the first
    nights of a new target or config simply build the baseline.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"regression threshold must be a fraction between 0 and 1, got {threshold}")
    if noise_k < 0 or min_runs < 1:
        raise ValueError("regression noise_k must be >= 0 and min_runs >= 1")
    oldest_first = list(reversed(baseline_runs))
    nights = [Night.of(run) for run in oldest_first]
    tonight_id = str(tonight["run_id"]) if tonight.get("run_id") else None
    checks, used = [], set()
    for fig in figures:
        check, indices = check_figure(
            fig,
            tonight.get(fig.name),
            [run.get(fig.name) for run in oldest_first],
            threshold=threshold,
            noise_k=noise_k,
            min_runs=min_runs,
            last_n=last_n,
            max_pvalue=max_pvalue,
            nights=nights,
            tonight_id=tonight_id,
        )
        checks.append(check)
        used.update(indices)
    if not used:
        used = set(range(len(nights))[-last_n:] if last_n else range(len(nights)))
    run_ids = [nights[i].run_id for i in sorted(used, reverse=True)]
    common = dict(baseline_run_ids=run_ids, threshold=threshold, noise_k=noise_k, min_runs=min_runs,
                  max_pvalue=max_pvalue, nights_analysed=len(nights) + 1)
    if len(baseline_runs) < min_runs:
        return RegressionResult(
            INSUFFICIENT,
            f"insufficient history: {len(baseline_runs)} comparable completed run(s), need {min_runs}; "
            "tonight's figures start the baseline",
            figures=checks,
            **common,
        )
    compared = [c for c in checks if c.verdict in (OK, REGRESSED, IMPROVED)]
    if not compared:
        return RegressionResult(
            INSUFFICIENT,
            "insufficient history: no headline figure was measured both tonight and in "
            f"{min_runs} earlier run(s)",
            figures=checks,
            **common,
        )
    regressed = [c for c in checks if c.verdict == REGRESSED]
    if regressed:
        return RegressionResult(REGRESSED, "; ".join(c.message for c in regressed), figures=checks, **common)
    improved = [c.message for c in checks if c.verdict == IMPROVED]
    message = f"no regression against the median of {len(run_ids)} comparable run(s)"
    if improved:
        message += "; " + "; ".join(improved)
    return RegressionResult(OK, message, figures=checks, **common)
