"""What an earlier night contributes to the alarm: whether it may be a baseline, its figures' own intervals,
and where the last level change it reported began.

Read from the night's stored summary (the history store keeps it with the run), so the alarm needs no other
table. Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nightcap.analysis.canary import FIGURE as CANARY
from nightcap.analysis.change_points import finite

# a night whose headline stage ended so never enters a baseline: its figures are not a measurement of the level
UNUSABLE_STATUSES = ("inconclusive", "failed")
# summary.json's interval of each compared figure: [low, high] (rps per core is saturation / the run's cores)
INTERVAL_OF = {"saturation_rps": ("saturation", "rps_ci"), "rps_per_core": ("saturation", "rps_ci"),
               CANARY: ("canary", "rps_ci")}


@dataclass(frozen=True)
class Night:
    """An earlier night as the check needs it: which run, when, what its own check said, and why it is not
    a baseline (empty: it is one)."""

    run_id: str
    started_at: str | None = None
    verdicts: Mapping[str, str] = field(default_factory=dict)  # figure -> ok / regressed / improved / ...
    # what its own alarm found: the run the new level started at, the figure, its level before and after
    new_level: Mapping[str, Any] | None = None
    unusable: str = ""
    intervals: Mapping[str, float] = field(default_factory=dict)  # figure -> 95% half-width, log units

    @classmethod
    def of(cls, run: Mapping[str, Any]) -> "Night":
        started = run.get("started_at")
        summary = run.get("summary") or {}
        summary = summary if isinstance(summary, Mapping) else {}
        block = summary.get("regression") or {}
        block = block if isinstance(block, Mapping) else {}
        rows = [*(block.get("figures") or []), *(block.get("normalised") or [])]
        verdicts = {str(r.get("figure")): str(r.get("verdict")) for r in rows if isinstance(r, Mapping)}
        new_level = block.get("new_level")
        return cls(str(run.get("run_id", "?")),
                   started.isoformat() if hasattr(started, "isoformat") else (str(started) if started else None),
                   verdicts, new_level if isinstance(new_level, Mapping) and new_level.get("run_id") else None,
                   unusable_because(summary), interval_halfwidths(summary, run))

    def label(self, index: int) -> str:
        """"night 9 (2026-11-09, run r9)": how messages name it."""
        return f"night {index + 1}" + (f" ({self.started_at[:10]}, run {self.run_id})" if self.started_at else "")


def unusable_because(summary: Mapping[str, Any]) -> str:
    """Why a night is no baseline ("" when it is one): its headline stage ended inconclusive or failed."""
    saturation = summary.get("saturation")
    stage = saturation.get("stage") if isinstance(saturation, Mapping) else None
    stages = summary.get("stages")
    info = stages.get(stage) if stage and isinstance(stages, Mapping) else None
    status = info.get("status") if isinstance(info, Mapping) else None
    if status in UNUSABLE_STATUSES:
        return f"its headline stage {stage} was {status}"
    return ""


def halfwidth(value: Any, interval: Any) -> float | None:
    """A figure's 95% interval [low, high] as a half-width in log units (None: unknown). An interval that
    reaches zero is infinitely wide in ratio terms: no change is beyond it."""
    value = finite(value)
    if value is None or value <= 0 or not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return None
    low, high = finite(interval[0]), finite(interval[1])
    if low is None or high is None or high < low or high <= 0:
        return None
    if low <= 0:
        return math.inf
    return (math.log(high) - math.log(low)) / 2


def interval_halfwidths(summary: Mapping[str, Any], figures: Mapping[str, Any]) -> dict[str, float]:
    """The compared figures' own intervals in a summary (log half-widths), for the figures it has one for."""
    out: dict[str, float] = {}
    for name, (block, key) in INTERVAL_OF.items():
        part = summary.get(block)
        if not isinstance(part, Mapping):
            continue
        anchor = part.get("rps") if block == "saturation" else part.get("rps_per_core")
        hw = halfwidth(anchor, part.get(key))
        if hw is not None and figures.get(name) is not None:
            out[name] = hw
    return out


def figure_intervals(head: Mapping[str, Any]) -> dict[str, list[float]]:
    """Tonight's figures' own 95% intervals from the headline block (saturation.rps_ci, operating_point.p95_ci),
    by figure name: a change must also leave tonight's own interval, or one short window's p95 tail alarms."""
    op = head.get("operating_point")
    p95_ci = op.get("p95_ci") if isinstance(op, Mapping) else None
    p95 = {"p95_at_operating_ms": list(p95_ci)} if isinstance(p95_ci, (list, tuple)) and len(p95_ci) == 2 \
        and all(finite(v) is not None for v in p95_ci) else {}
    saturation = head.get("saturation")
    ci = saturation.get("rps_ci") if isinstance(saturation, Mapping) else None
    rps, per_core = finite(saturation.get("rps")) if isinstance(saturation, Mapping) else None, \
        finite(head.get("rps_per_core"))
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not rps:
        return p95
    out = {"saturation_rps": list(ci), **p95}
    if per_core:  # the same pod's figure / its cores: the same relative interval
        out["rps_per_core"] = [v * per_core / rps for v in ci]
    return out


def tonight_halfwidths(tonight: Mapping[str, Any]) -> dict[str, float]:
    """Tonight's intervals, handed in as `intervals: {figure: [low, high]}` beside the figures."""
    given = tonight.get("intervals") or {}
    out = {}
    for name, interval in (given.items() if isinstance(given, Mapping) else []):
        hw = halfwidth(tonight.get(name), interval)
        if hw is not None:
            out[str(name)] = hw
    return out


@dataclass(frozen=True)
class Plan:
    """Which earlier nights may be a baseline, after the level changes earlier nights reported."""

    first: int = 0  # where the current level began (0: no reported change persisted)
    left_out: tuple[int, ...] = ()  # nights of a reported change that did not persist (a one-off)
    notes: tuple[tuple[int, str], ...] = ()  # (the alarm night's index, what became of its change)


def plan(nights: Sequence[Night], series: Callable[[str], Sequence[float | None]]) -> Plan:
    """Where the current level began, and which reported changes were one-offs.

    A night whose alarm found a change stored where it began and the levels before and after. The nights since
    (tonight included) then tell whether it persisted: their geometric mean nearer the level after means the
    level moved, and later nights compare with the nights since it began (the alarm is quiet until there are
    enough of them); nearer the level before, it was a one-off, and its nights leave every baseline instead
    of becoming the start of one. `series(figure)` gives a figure's values, earlier nights then tonight.
    """
    first, left_out, notes = 0, [], []
    alarms = [i for i, n in enumerate(nights) if n.new_level]
    for number, s in enumerate(alarms):
        level = nights[s].new_level or {}
        starts = [j for j in range(s + 1) if nights[j].run_id == level.get("run_id")]
        w = starts[-1] if starts else s
        end = alarms[number + 1] if number + 1 < len(alarms) else len(nights) + 1  # tonight is len(nights)
        values = series(str(level.get("figure"))) if level.get("figure") else []
        after = [v for v in values[s + 1:end] if v is not None and v > 0]
        before, moved = finite(level.get("level_before")), finite(level.get("level_after"))
        if after and before and moved and before > 0 and moved > 0:
            mean = sum(math.log(v) for v in after) / len(after)
            if abs(mean - math.log(before)) < abs(mean - math.log(moved)):
                left_out += range(w, s + 1)
                notes.append((s, f"the change reported on {nights[s].label(s)} did not persist: "
                                 f"{'its night' if w == s else f'its {s - w + 1} nights'} left out"))
                continue
        first = w
    return Plan(first, tuple(i for i in left_out if i >= first), tuple((i, n) for i, n in notes if i >= first))
