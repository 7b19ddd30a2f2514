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


@dataclass
class RegressionResult:
    verdict: str  # ok, regressed, insufficient history
    message: str
    baseline_run_ids: list[str]
    figures: list[FigureCheck] = field(default_factory=list)
    threshold: float = 0.10
    noise_k: float = 3.0
    min_runs: int = 2

    @property
    def regressed(self) -> bool:
        return self.verdict == REGRESSED

    def to_dict(self) -> dict[str, Any]:
        """The `regression` block of summary.json (strict JSON: no NaN or infinity)."""
        data = asdict(self)
        for row in data["figures"]:
            for key in ("tonight", "baseline_median", "change_pct", "noise_pct"):
                value = row[key]
                row[key] = None if value is None or not math.isfinite(value) else round(value, 6)
        data["regressed"] = self.regressed
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


def check_figure(
    figure: Figure,
    tonight: Any,
    baseline: Sequence[Any],
    *,
    threshold: float,
    noise_k: float,
    min_runs: int,
) -> FigureCheck:
    """Verdict on one figure; worse must exceed both the threshold and the noise band to regress."""
    value = finite(tonight)
    history = [v for v in (finite(b) for b in baseline) if v is not None]
    check = FigureCheck(figure.name, figure.unit, value, None, None, None, len(history), OK)
    if value is None:
        check.verdict = NOT_MEASURED
        check.message = f"{figure.name} was not measured tonight"
        return check
    if len(history) < min_runs:
        check.verdict = NOT_ENOUGH
        check.message = f"{figure.name}: {len(history)} earlier value(s), need {min_runs}"
        return check
    median, band = noise_band(history, noise_k)
    check.baseline_median = median
    if median == 0:
        change = 0.0 if value == 0 else math.copysign(math.inf, value)
        noise = 0.0 if band == 0 else math.inf
    else:
        change = (value - median) / abs(median) * 100
        noise = max(band, figure.resolution) / abs(median) * 100
    check.change_pct, check.noise_pct = change, noise
    worse = -change if figure.higher_is_better else change
    limit = max(threshold * 100, noise)
    if worse > limit:
        check.verdict = REGRESSED
    elif -worse > limit:
        check.verdict = IMPROVED
    direction = "rose" if change > 0 else "fell" if change < 0 else "held"
    check.message = (
        f"{figure.name} {direction} {_pct(change)} ({median:.1f} → {value:.1f} {figure.unit})"
    )
    if check.verdict == REGRESSED:
        check.message += f", beyond the {threshold * 100:g}% threshold and the noise band (±{noise:.1f}%)"
    elif check.verdict == IMPROVED:
        check.message += f", an improvement beyond the noise band (±{noise:.1f}%)"
    else:
        check.message += f", within the {threshold * 100:g}% threshold or the noise band (±{noise:.1f}%)"
    return check


def check_regression(
    tonight: Mapping[str, Any],
    baseline_runs: Sequence[Mapping[str, Any]],
    *,
    threshold: float = 0.10,
    noise_k: float = 3.0,
    min_runs: int = 2,
    figures: Sequence[Figure] = FIGURES,
) -> RegressionResult:
    """Compare tonight's headline figures with the baseline runs (dicts with `run_id` and the figures).

    Fewer than `min_runs` baseline runs gives "insufficient history", which is never a failure:
    the first nights of a new target or config simply build the baseline.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"regression threshold must be a fraction between 0 and 1, got {threshold}")
    if noise_k < 0 or min_runs < 1:
        raise ValueError("regression noise_k must be >= 0 and min_runs >= 1")
    run_ids = [str(run.get("run_id", "?")) for run in baseline_runs]
    common = dict(baseline_run_ids=run_ids, threshold=threshold, noise_k=noise_k, min_runs=min_runs)
    checks = [
        check_figure(
            fig,
            tonight.get(fig.name),
            [run.get(fig.name) for run in baseline_runs],
            threshold=threshold,
            noise_k=noise_k,
            min_runs=min_runs,
        )
        for fig in figures
    ]
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
    message = f"no regression against the median of {len(baseline_runs)} comparable run(s)"
    if improved:
        message += "; " + "; ".join(improved)
    return RegressionResult(OK, message, figures=checks, **common)
