"""Did tonight get worse than the recent past, by more than the recent past's noise? One decision per night.

Each compared figure is looked at over the last 1, 2 and 3 nights (tonight alone, and the mean of tonight and
the nights before it) against the comparable nights before those: a prediction interval on Student's t with
the baseline's degrees of freedom (alarm.py). Every look at every figure shares the night's one false-alarm
rate (`false_alarm_rate`, per night, over all of them: weighted Bonferroni). A figure regresses when a look is beyond
that noise, at least `threshold` in size, beyond the window's own measured interval (when it has one), and
larger than the measurement resolves. No figure alarms before `min_runs` comparable nights.

A night that found a change stores where it began (`new_level` in the summary). If the nights after it stay
nearer the new level, later nights compare with the nights since it began: a step is reported once, and the
alarm is quiet until the new level has `min_runs` nights. If they return to the old level, it was a one-off:
its nights leave every baseline and the old one continues (regression_nights.plan).
Nights whose headline stage was inconclusive or failed are never a baseline.

The platform canary (canary.py) is judged the same way first: steady, a change in the model's figures is the
model's; moved, only the throughput figures normalised by the canary can make a model regression (the raw
changes are the platform's).

Pure: no Prefect, no database; the caller hands in plain dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import median
from typing import Any, Mapping, Sequence

from nightcap.analysis import alarm
from nightcap.analysis.canary import FIGURE as CANARY, NORMALISED, normalise
from nightcap.analysis.change_points import finite
from nightcap.analysis.figures import COMPARED_FIGURES, Figure
from nightcap.analysis.regression_nights import Night, Plan, UNUSABLE_STATUSES, plan, tonight_halfwidths
from nightcap.analysis.regression_result import (
    CANARY_THRESHOLD, FALSE_ALARM_RATE, IMPROVED, INSUFFICIENT, LAST_N, MIN_NIGHTS, NORMALISED_SUFFIX,
    NOT_ENOUGH, NOT_JUDGED, NOT_MEASURED, OK, PLATFORM, REGRESSED, WINDOW_NIGHTS, FigureCheck, RegressionResult,
    format_pct, format_signed_pct,
)

__all__ = ["check_regression", "version_change"]


@dataclass(frozen=True)
class Rules:
    """The alarm's settings (RegressionConfig): one object, so every figure is judged by the same rules."""

    threshold: float = 0.10
    false_alarm_rate: float = FALSE_ALARM_RATE
    min_runs: int = MIN_NIGHTS
    last_n: int = LAST_N
    window_nights: int = WINDOW_NIGHTS

    def validate(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"regression.threshold must be a fraction between 0 and 1, got {self.threshold}")
        if not 0 < self.false_alarm_rate < 1:
            raise ValueError("regression.false_alarm_rate must be a probability per night between 0 and 1 "
                             f"(0.01: one false alarm in 100 nights), got {self.false_alarm_rate}")
        if self.min_runs < 2 or self.last_n < self.min_runs or self.window_nights < 1:
            raise ValueError("regression.min_runs must be >= 2 (one night has no noise to measure), "
                             "regression.last_n >= min_runs and regression.window_nights >= 1; got "
                             f"{self.min_runs}, {self.last_n}, {self.window_nights}")


@dataclass
class Subject:
    """One figure's series (earlier nights oldest first, tonight last) and its looks."""

    figure: Figure
    values: list[float | None]
    halfwidths: list[float | None]
    first: int  # the first night that may be a baseline
    looks: list[alarm.Look]

    @classmethod
    def of(cls, figure: Figure, values: list[float | None], halfwidths: list[float | None], first: int,
           rules: Rules) -> "Subject":
        logs = alarm.logs(values)
        looks = [lk for k in range(1, rules.window_nights + 1)
                 if (lk := alarm.look(logs, k, first=first, last_n=rules.last_n, halfwidths=halfwidths,
                                      min_nights=rules.min_runs, resolution=figure.resolution)) is not None]
        return cls(figure, values, halfwidths, first, looks)

    @property
    def worse(self) -> int:
        return -1 if self.figure.higher_is_better else 1


def family(subjects: Sequence[Subject]) -> tuple[int, float]:
    """Looks tonight's one decision is made over, and their total weight (alarm.weight); a figure that is the
    same test as another counts once."""
    size, total, seen = 0, 0.0, []
    for s in subjects:
        logs = alarm.logs(s.values)
        if s.looks and not any(alarm.same_test(logs, other) for other in seen):
            size += len(s.looks)
            total += sum(alarm.weight(lk.k) for lk in s.looks)
        seen.append(logs)
    return size, total


def judge(s: Subject, nights: Sequence[Night], looks: tuple[int, float], rules: Rules, *,
          threshold: float | None = None,
          tonight_id: str | None = None) -> FigureCheck:
    """The verdict on one figure, the look behind it, and a sentence a platform engineer can check."""
    fig, value = s.figure, s.values[-1]
    check = FigureCheck(fig.name, fig.unit, value, None, None, None, 0, OK)
    if value is None:
        check.verdict, check.message = NOT_MEASURED, f"{fig.name} was not measured tonight"
        return check
    since = f" since the level change reported on {nights[s.first].label(s.first)}" if s.first else ""
    if not s.looks:
        have = sum(v is not None for v in s.values[s.first:-1])
        check.verdict = NOT_ENOUGH
        check.message = f"{fig.name}: {have} comparable night(s){since}, need {rules.min_runs}"
        return check
    alpha, bar = rules.false_alarm_rate, rules.threshold if threshold is None else threshold
    _, total = looks
    kw = dict(family_weight=total, alpha=alpha, threshold=bar, resolution=fig.resolution)
    worse, better = (alarm.find(s.looks, sign, **kw) for sign in (s.worse, -s.worse))
    assert worse is not None and better is not None
    if worse.changed:
        check.verdict, found = REGRESSED, worse
    elif better.changed:
        check.verdict, found = IMPROVED, better
    else:  # nothing changed: say how tonight alone compares, the plainest reading
        sign = s.worse if s.looks[0].change * s.worse >= 0 else -s.worse
        found = alarm.find(s.looks[:1], sign, **kw)  # type: ignore[assignment]
        assert found is not None
    lk = found.look
    side = -1 if lk.change < 0 else 1  # bands and intervals as a share of the level, on the side it moved to
    band = abs(alarm.pct(side * lk.band(alpha * alarm.weight(lk.k) / total))) if total else math.inf
    base = [s.values[i] for i in lk.baseline]
    check.baseline_median, check.baseline_mean = median(base), lk.level  # type: ignore[type-var]
    check.window_nights, check.window_mean, check.change_pct = lk.k, lk.window_level, lk.change_pct
    check.noise_pct, check.pvalue, check.baseline_runs = band, found.adjusted, len(lk.baseline)
    check.interval_pct = None if lk.interval is None else abs(alarm.pct(side * lk.interval))
    check.outliers = [nights[i].run_id for i in lk.dropped]
    before = "tonight" if lk.k == 1 else f"the last {lk.k} nights"
    check.baseline = f"the {len(lk.baseline)} night(s) before {before}{since}" + (
        f", {len(lk.dropped)} outlier night(s) left out" if lk.dropped else "")
    check.message = _sentence(check, found, bar)
    if check.verdict in (REGRESSED, IMPROVED):
        start = lk.start
        where = (nights[start].run_id, nights[start].started_at) if start < len(nights) else (tonight_id, None)
        check.change_point = {"night": start + 1, "nights": len(s.values), "run_id": where[0],
                              "started_at": where[1], "tonight": start == len(nights), "mean_before": lk.level,
                              "mean_after": lk.window_level, "change_pct": lk.change_pct, "pvalue": found.adjusted,
                              "new": True}
    return check


def _sentence(c: FigureCheck, found: alarm.Finding, bar: float) -> str:
    lk = found.look
    change = c.change_pct or 0.0
    direction = "rose" if change >= 0.05 else "fell" if change <= -0.05 else "held"
    over = "" if lk.k == 1 else f" over the last {lk.k} nights"
    said = (f"{c.figure} {direction}{'' if direction == 'held' else ' ' + format_pct(change)}{over} "
            f"({lk.level:.1f} → {lk.window_level:.1f} {c.unit}" + (", their mean)" if lk.k > 1 else ")"))
    noise = f"the ±{c.noise_pct:.1f}% noise band of {len(lk.baseline)} comparable night(s)"
    p = f"p={found.adjusted:.2g}"
    if c.verdict in (REGRESSED, IMPROVED):
        text = f"{said}, beyond {noise}" + (f" and its own ±{c.interval_pct:.1f}% interval ({p})"
                                             if lk.interval is not None else f" ({p}; its own interval unknown)")
        return text if c.verdict == REGRESSED else text + ", an improvement"
    if not found.significant:
        return f"{said}, within {noise} ({p})"
    if not found.beyond_threshold:
        return f"{said}: beyond {noise} ({p}) but under the {bar * 100:g}% worth an alarm"
    if found.beyond_interval is False:
        return f"{said}: beyond {noise} ({p}) but within its own ±{c.interval_pct:.1f}% interval"
    return f"{said}: within what {c.figure} resolves"


def _rate(alpha: float) -> str:
    return f"1 false alarm in {1 / alpha:.0f} nights" if abs(1 / alpha - round(1 / alpha)) < 1e-6 \
        else f"a false-alarm rate of {alpha:g} per night"


def check_regression(
    tonight: Mapping[str, Any],
    baseline_runs: Sequence[Mapping[str, Any]],
    *,
    threshold: float = 0.10,
    false_alarm_rate: float = FALSE_ALARM_RATE,
    min_runs: int = MIN_NIGHTS,
    last_n: int = LAST_N,
    window_nights: int = WINDOW_NIGHTS,
    figures: Sequence[Figure] = COMPARED_FIGURES,
    canary_threshold: float = CANARY_THRESHOLD,
    tonight_status: str | None = None,
) -> RegressionResult:
    """Tonight's figures against earlier comparable runs (`baseline_runs` newest first): one decision.

    Runs are dicts with `run_id`, the figures, and optionally `started_at` and `summary` (that night's stored
    summary: its headline stage's status, its figures' intervals, its own verdict). Tonight may carry
    `intervals: {figure: [low, high]}` and `canary_rps_per_core`; `tonight_status` is the status of tonight's
    headline stage (inconclusive or failed: not judged). Too little history is "insufficient history", never
    a failure: the first nights of a new target or config build the baseline.
    """
    rules = Rules(threshold, false_alarm_rate, min_runs, last_n, window_nights)
    rules.validate()
    oldest_first = list(reversed(baseline_runs))
    every = [Night.of(run) for run in oldest_first]
    runs = [run for run, n in zip(oldest_first, every) if not n.unusable]
    nights = [n for n in every if not n.unusable]
    common: dict[str, Any] = dict(
        threshold=threshold, min_runs=min_runs, false_alarm_rate=false_alarm_rate, window_nights=window_nights,
        last_n=last_n, nights_analysed=len(nights) + 1,
        excluded=[{"run_id": n.run_id, "why": n.unusable} for n in every if n.unusable])
    if tonight_status in UNUSABLE_STATUSES:
        return RegressionResult(NOT_JUDGED, f"not judged: tonight's headline stage was {tonight_status}, so its "
                                "figures are no measurement of the level (and tonight is no baseline later)", [],
                                **common)
    tonight_id = str(tonight["run_id"]) if tonight.get("run_id") else None
    levels, raw, canary = _subjects(tonight, runs, nights, figures, rules)
    platform = None if canary is None else judge(canary, nights, family([canary]), rules,
                                                 threshold=canary_threshold, tonight_id=tonight_id)
    normal = _normalised(raw, canary, rules)
    moved = platform is not None and platform.verdict in (REGRESSED, IMPROVED)
    looks = family(normal if moved else raw)
    checks = [judge(s, nights, family(raw) if moved else looks, rules, tonight_id=tonight_id) for s in raw]
    normalised = [judge(s, nights, family(normal), rules, tonight_id=tonight_id) for s in normal]
    used = {i for s in [*raw, *normal] for lk in s.looks for i in lk.baseline}
    common.update(looks=looks[0], platform=platform, normalised=normalised,
                  baseline_run_ids=[nights[i].run_id for i in sorted(used, reverse=True)])
    common.update(new_level=_new_level(normalised if moved else checks) or (_new_level([platform]) if moved else None),
                  notes=[note for i, note in levels.notes if i >= len(nights) - rules.last_n])
    first = levels.first
    result = _decide(checks, platform, normalised, moved, looks[0], rules, common,
                     since=f" since the level change reported on {nights[first].label(first)}" if first else "",
                     nights_since=len(nights) - first)
    recent = [note for i, note in levels.notes if i >= len(nights) - rules.window_nights]  # news, not history
    if recent:
        result.message += "; " + "; ".join(recent)
    return result


def _subjects(tonight: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], nights: Sequence[Night],
              figures: Sequence[Figure], rules: Rules) -> tuple[Plan, list[Subject], Subject | None]:
    """Where the current level starts (`plan`), and each figure as judged from there: its series (the usable
    nights oldest first, then tonight) and their intervals; the canary's too when tonight measured it."""
    own = tonight_halfwidths(tonight)

    def values(name: str) -> list[float | None]:
        return [finite(r.get(name)) for r in runs] + [finite(tonight.get(name))]

    levels = plan(nights, values)

    def subject(fig: Figure, where: Plan) -> Subject:
        series = [None if i in where.left_out else v for i, v in enumerate(values(fig.name))]
        widths = [n.intervals.get(fig.name) for n in nights] + [own.get(fig.name)]
        return Subject.of(fig, series, widths, where.first, rules)

    raw = [subject(fig, levels) for fig in figures]
    canary = subject(Figure(CANARY, "rps/core"), levels) if finite(tonight.get(CANARY)) is not None else None
    return levels, raw, canary


def _new_level(judged: Sequence[FigureCheck | None]) -> dict[str, Any] | None:
    """Where tonight's change began, by the figure with the most evidence (ties: the first, saturation); the
    model's change, else the platform's: after either, the nights since it are the new baseline of every figure."""
    changed = [c for c in judged if c is not None and c.verdict in (REGRESSED, IMPROVED)]
    if not changed:
        return None
    located = min(changed, key=lambda c: float(f"{c.pvalue or 1.0:.6g}"))
    point = located.change_point or {}
    return {"run_id": point.get("run_id"), "started_at": point.get("started_at"), "night": point.get("night"),
            "figure": located.figure, "level_before": point.get("mean_before"), "level_after": point.get("mean_after")}


def _decide(checks: list[FigureCheck], platform: FigureCheck | None, normalised: list[FigureCheck], moved: bool,
            size: int, rules: Rules, common: dict[str, Any], *, since: str, nights_since: int) -> RegressionResult:
    """The night's one verdict from its figures' verdicts, and whose change it was."""
    if not size:
        need = f"need {rules.min_runs} before any figure can alarm"
        if nights_since >= rules.min_runs:  # the nights are there, their figures were blanked (`meanings`)
            need = (f"but no figure was measured as tonight's on {rules.min_runs} of them (another method or pod: a "
                    "new baseline starts)")
        return RegressionResult(
            INSUFFICIENT, f"insufficient history: {nights_since} comparable completed night(s){since}, {need}; "
            "tonight's figures build the baseline", figures=checks, **common)
    if moved:
        assert platform is not None
        return _platform_moved(checks, platform, normalised, common)
    steady = ""
    if platform is not None and platform.verdict == OK:
        steady = f"; the platform canary held ({platform.message}): the model moved"
    rate = f" (one decision at {_rate(rules.false_alarm_rate)} over {size} look(s))"
    regressed = [c for c in checks if c.verdict == REGRESSED]
    if regressed:
        return RegressionResult(REGRESSED, "; ".join(c.message for c in regressed) + rate + steady, figures=checks,
                                cause="model" if steady else "unknown", **common)
    improved = [c.message for c in checks if c.verdict == IMPROVED]
    message = "no regression" + rate
    if improved:
        message += "; " + "; ".join(improved) + steady
    return RegressionResult(OK, message, figures=checks, cause="model" if improved and steady else None, **common)


def _normalised(raw: Sequence[Subject], canary: Subject | None, rules: Rules) -> list[Subject]:
    """The throughput figures as the baseline nights' platform would have measured them: each night's figure
    x the baseline canary / that night's canary (its interval widened by the canary's)."""
    if canary is None or not canary.looks:
        return []
    reference = canary.looks[0].level
    out = []
    for s in raw:
        if s.figure.name not in NORMALISED:
            continue
        values = [normalise(v, c, reference) for v, c in zip(s.values, canary.values)]
        widths = [None if a is None or b is None else math.hypot(a, b) for a, b in zip(s.halfwidths, canary.halfwidths)]
        out.append(Subject.of(replace(s.figure, name=s.figure.name + NORMALISED_SUFFIX), values, widths, s.first,
                              rules))
    return out


def _platform_moved(checks: list[FigureCheck], platform: FigureCheck, normalised: list[FigureCheck],
                    common: dict[str, Any]) -> RegressionResult:
    """The canary moved: raw changes are the platform's; a normalised throughput figure that still regressed is
    the model's too."""
    direction = "slower" if platform.verdict == REGRESSED else "faster"
    said = f"the platform moved ({direction}): {platform.message}"
    model = [c for c in normalised if c.verdict == REGRESSED]
    for c in checks:
        if c.verdict in (REGRESSED, IMPROVED):
            c.verdict, c.change_point = PLATFORM, None
            c.message += f" — with the platform ({direction}), not beyond it"
    if model:
        return RegressionResult(REGRESSED, "; ".join(c.message for c in model) + f"; beyond the platform: {said}",
                                figures=checks, cause="platform and model", **common)
    held = ", ".join(f"{c.figure} {c.tonight:.1f}" + (f" ({format_signed_pct(c.change_pct)})" if c.change_pct is not None
                                                      else "") for c in normalised if c.tonight is not None)
    changed = [c for c in checks if c.verdict == PLATFORM]
    if not changed:
        return RegressionResult(OK, f"no regression; {said}", figures=checks, cause="platform", **common)
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
