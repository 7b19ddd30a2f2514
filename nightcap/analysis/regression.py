"""Did tonight get worse than the recent past, by more than the noise of the recent past?

Tonight's headline figures are compared with the median of the last N comparable completed runs.
Capacity measurements are noisy, so a fixed threshold alone would alarm on bad nights that are
only noise; a noise band alone would alarm on tiny but very steady shifts. A figure therefore
regresses only when its change is worse than both the relative `threshold` and `noise_k` times the
scaled median absolute deviation (MAD, robust to one odd night) of the nights around their level.

Beside it, change points (change_points.py) over the whole series say when the level moved: the
baseline is then the nights since the move, a move found for the first time tonight is reported once,
and a drift too slow for the median shows up once it adds up.

When the night measured the platform canary (canary.py), the canary is judged the same way first: steady,
a change in the model's figures is the model's; moved, the platform moved, and only the throughput figures
normalised by the canary can make a model regression (the raw changes are the platform's).

Pure: no Prefect, no database; the caller hands in plain dicts.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Any, Mapping, Sequence

from nightcap.analysis.canary import FIGURE as CANARY, NORMALISED, normalise
from nightcap.analysis.change_points import MAX_PVALUE, ChangePoint, find_change_points, finite, levels
from nightcap.analysis.figures import Figure
from nightcap.analysis.regression_result import (
    MAD_SCALE,
    OK,
    REGRESSED,
    IMPROVED,
    NOT_ENOUGH,
    NOT_MEASURED,
    INSUFFICIENT,
    PLATFORM,
    CANARY_THRESHOLD,
    NORMALISED_SUFFIX,
    FIGURES,
    FigureCheck,
    RegressionResult,
    Night,
    _pct,
    _signed_pct,
)

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

    The median is that of the last `last_n` nights of the current level: all nights when no change point
    split the series, else the nights since the latest one (the nights before measured something else).
    The noise band is k x scaled MAD of every night around the median of its own level, over the whole
    series: a level change does not change how noisy the measurement is, and thirty nights know the noise
    better than the three since a change (whose spread can be nil by chance, and then every night alarms).
    """
    start = inside[-1].index if inside else 0
    used = [i for i in range(start, len(values)) if values[i] is not None]
    if last_n:
        used = used[-last_n:]
    level = [values[i] for i in used]
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


def _already_reported(figure: Figure, value: float, verdict: str, values: list[float | None],
                      inside: list[ChangePoint], nights: Sequence[Night], *, threshold: float, noise_k: float,
                      min_runs: int, last_n: int | None) -> str:
    """Why tonight's `verdict` is old news, or "" when it is not.

    A step is seen by the median check the night it happens, but becomes a change point only once a few
    nights confirm it; until then every night would repeat the alarm. So a night whose own check already
    reported this verdict (after the latest change point) counts as the start of a provisional level, and
    tonight repeats the verdict only if it is also beyond the threshold and noise against that level.
    """
    since = inside[-1].index if inside else 0
    marked = [i for i in range(since, len(nights)) if nights[i].verdicts.get(figure.name) == verdict]
    if not marked:
        return ""
    start = marked[-1]
    found = _baseline(values, [*inside, ChangePoint(start, math.nan, math.nan, 0.0)], noise_k=noise_k,
                      min_runs=min_runs, last_n=last_n)
    if isinstance(found, str):
        return ""
    _used, median, band = found
    if median == 0:
        return ""
    worse = _worse_pct(figure, (value - median) / abs(median) * 100)
    limit = max(threshold * 100, max(band, figure.resolution) / abs(median) * 100)
    if (worse if verdict == REGRESSED else -worse) > limit:
        return ""
    night = nights[start]
    when = f"night {start + 1}" + (f" ({night.started_at[:10]}, run {night.run_id})" if night.started_at else "")
    return (f"already reported {verdict} on {when}; tonight is within the {threshold * 100:g}% threshold or the "
            f"noise band of the {len(values) - start} night(s) since (median {median:.1f} {figure.unit})")


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
    reported = ""
    if check.verdict in (REGRESSED, IMPROVED):
        reported = _already_reported(figure, value, check.verdict, values, inside, nights, threshold=threshold,
                                     noise_k=noise_k, min_runs=min_runs, last_n=last_n)
        if reported:
            check.verdict = OK
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
    elif reported:
        check.message += f", {reported}"
    else:
        check.message += f", within the {threshold * 100:g}% threshold or the noise band (±{noise:.1f}%)"
    if inside:
        check.message += f" against the {check.baseline}"
    check.message += point_text
    return check, used


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
    canary_threshold: float = CANARY_THRESHOLD,
) -> RegressionResult:
    """Compare tonight's headline figures with earlier comparable runs, newest first.

    `baseline_runs` are dicts with `run_id`, the figures, and optionally `started_at` and `summary` (that
    night's own verdicts, so a change already reported is not reported again). The median check uses the
    newest `last_n` of them (all when None) or those since a change point; the change-point analysis uses
    all of them. Fewer than `min_runs` gives "insufficient history", which is never a failure: the first
    nights of a new target or config simply build the baseline.

    With `canary_rps_per_core` tonight (and in the runs that measured it with the same settings), the canary
    decides whose change it is: see `_platform_moved`; its threshold is `canary_threshold`.
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
    platform, normalised = _canary_checks(tonight, oldest_first, figures, canary_threshold=canary_threshold,
                                          threshold=threshold, noise_k=noise_k, min_runs=min_runs, last_n=last_n, max_pvalue=max_pvalue,
                                          nights=nights, tonight_id=tonight_id)
    common.update(platform=platform, normalised=normalised)
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
    moved = platform is not None and platform.verdict in (REGRESSED, IMPROVED)
    if moved:
        assert platform is not None
        return _platform_moved(checks, platform, normalised, run_ids, common)
    steady = ""
    if platform is not None and platform.verdict == OK:
        steady = f"; the platform canary held ({platform.message}): the model moved"
    regressed = [c for c in checks if c.verdict == REGRESSED]
    if regressed:
        cause = "model" if steady else "unknown"
        return RegressionResult(REGRESSED, "; ".join(c.message for c in regressed) + steady, figures=checks,
                                cause=cause, **common)
    improved = [c.message for c in checks if c.verdict == IMPROVED]
    message = f"no regression against the median of {len(run_ids)} comparable run(s)"
    if improved:
        message += "; " + "; ".join(improved) + steady
    return RegressionResult(OK, message, figures=checks, cause="model" if improved and steady else None, **common)


def _canary_checks(tonight: Mapping[str, Any], oldest_first: Sequence[Mapping[str, Any]], figures: Sequence[Figure],
                   *, canary_threshold: float, threshold: float, noise_k: float, min_runs: int, last_n: int | None,
                   max_pvalue: float, nights: Sequence[Night], tonight_id: str | None
                   ) -> tuple[FigureCheck | None, list[FigureCheck]]:
    """The canary tonight against its earlier nights, and the throughput figures normalised by it (each night's
    figure x the baseline canary / that night's canary). (None, []) when the canary was not measured tonight."""
    canary_tonight = finite(tonight.get(CANARY))
    if canary_tonight is None:
        return None, []
    canaries = [finite(run.get(CANARY)) for run in oldest_first]
    kw = dict(noise_k=noise_k, min_runs=min_runs, last_n=last_n, max_pvalue=max_pvalue, tonight_id=tonight_id)
    platform, _ = check_figure(Figure(CANARY, "rps/core"), canary_tonight, canaries, threshold=canary_threshold,
                               **kw)
    reference = platform.baseline_median
    normalised = []
    for fig in figures:
        if fig.name not in NORMALISED or not reference:
            continue
        series = [normalise(finite(run.get(fig.name)), c, reference) for run, c in zip(oldest_first, canaries)]
        check, _ = check_figure(replace(fig, name=fig.name + NORMALISED_SUFFIX),
                                normalise(finite(tonight.get(fig.name)), canary_tonight, reference), series,
                                threshold=threshold, nights=nights, **kw)
        normalised.append(check)
    return platform, normalised


def _platform_moved(checks: list[FigureCheck], platform: FigureCheck, normalised: list[FigureCheck],
                    run_ids: list[str], common: dict[str, Any]) -> RegressionResult:
    """The canary moved: raw changes are the platform's; a normalised throughput figure that still regressed is
    the model's too."""
    direction = "slower" if platform.verdict == REGRESSED else "faster"
    said = f"the platform moved ({direction}): {platform.message}"
    model = [c for c in normalised if c.verdict == REGRESSED]
    for c in checks:
        if c.verdict in (REGRESSED, IMPROVED):
            c.verdict = PLATFORM
            c.message += f" — with the platform ({direction}), not beyond it"
    if model:
        return RegressionResult(REGRESSED, "; ".join(c.message for c in model) + f"; beyond the platform: {said}",
                                figures=checks, cause="platform and model", **common)
    held = ", ".join(f"{c.figure} {c.tonight:.1f}" + (f" ({_signed_pct(c.change_pct)})" if c.change_pct is not None
                                                      else "") for c in normalised if c.tonight is not None)
    changed = [c for c in checks if c.verdict == PLATFORM]
    if not changed:
        return RegressionResult(OK, f"no regression against the median of {len(run_ids)} comparable run(s); {said}",
                                figures=checks, cause="platform", **common)
    return RegressionResult(PLATFORM, f"{said}; normalised by the canary the model held"
                            + (f" ({held})" if held else "") + "; " + "; ".join(c.message for c in changed),
                            figures=checks, cause="platform", **common)


def version_change(tonight: str | None, baseline_versions: Sequence[str | None]) -> str | None:
    """`wine v3 replaced wine v2` when tonight served another model than the last comparable night, else None.

    The model version is not part of the comparison key (a new model is exactly what a nightly check should
    judge), so a change is named beside the verdict: the drop, and which version brought it.
    """
    previous = next((v for v in baseline_versions if v), None)
    if not tonight or not previous or tonight == previous:
        return None
    return f"{tonight} replaced {previous}"
