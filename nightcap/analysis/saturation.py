"""Which measured steps count for capacity, shared by every frame-based analysis (USL, sizing).

The search's own rules (when two windows agree, where to operate) live in `nightcap/search/saturation.py`."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Iterable, Mapping, Protocol, Sequence

import pandas as pd

from nightcap.analysis.slo import Slo
from nightcap.steps import STEP_COLUMNS, StepRow


def _truthy(value: Any, default: bool = False) -> bool:
    """steps.csv read by pandas may hold bools, 'True'/'False' strings or NaN (= the field's default)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes") if value.strip() else default
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return bool(value)


def usable(step: StepRow | Mapping[str, Any] | pd.Series) -> bool:
    """A closed-loop step counts for capacity only when it is valid and the generator was not the bottleneck.

    A generator-bound step measures the generator, not the model, so using it would understate capacity;
    an open-loop step (a rate, not users) answers the SLO question, not the capacity one.
    """
    if isinstance(step, StepRow):
        return step.valid and not step.generator_bound and step.load != "open"
    return (_truthy(step.get("valid"), True) and not _truthy(step.get("generator_bound"), False)
            and step.get("load") != "open")


def within_slo_mask(steps: pd.DataFrame, slo: Slo) -> pd.Series:
    """Usable steps that meet the SLO (`Slo.met_frame`): the only ones a throughput figure, fit or line uses.

    A window of fast 503s has a high request rate and a low p95; counting it would make a server that sheds
    load look faster the more it fails.
    """
    if steps.empty:
        return pd.Series(dtype=bool)
    return usable_mask(steps) & slo.met_frame(steps)


def steps_frame(rows: Iterable[StepRow]) -> pd.DataFrame:
    """StepRows as a frame with the steps.csv columns (what the frame-based analysis functions take)."""
    return pd.DataFrame([asdict(r) for r in rows], columns=STEP_COLUMNS)


def usable_mask(steps: pd.DataFrame) -> pd.Series:
    """Row mask of `usable` closed-loop steps (missing columns mean valid / not generator-bound / closed).

    Open-loop rows (load == "open") were measured at a rate, not at a user count: the analyses over users
    (SLO users, USL fits) never take them.
    """
    valid = steps["valid"].map(lambda v: _truthy(v, True)) if "valid" in steps else pd.Series(True, index=steps.index)
    bound = steps["generator_bound"].map(_truthy) if "generator_bound" in steps else pd.Series(False, index=steps.index)
    closed = steps["load"].fillna("closed") != "open" if "load" in steps else pd.Series(True, index=steps.index)
    return valid & ~bound & closed


class LevelLike(Protocol):
    users: int
    rps: float
    p95_ms: float | None
    good: bool


def p95_at_rate(levels: Sequence[LevelLike], rps: float | None) -> float | None:
    """p95 at a rate (the operating point's), interpolated along the rising part of a ramp's good levels.

    Not at the operating *users*: those are 70% of the saturation users, which on a throughput plateau
    land on any of the flat levels (8 or 12 users for the same 200 rps), so the p95 there jumped 2x from
    night to night and the regression check alarmed on noise. The rate is what the operating point is.
    Past the last good level's rate, that level's p95.
    """
    good = sorted((lv for lv in levels if lv.good and lv.p95_ms is not None), key=lambda lv: lv.users)
    if rps is None or not good:
        return None
    before = None
    for lv in good:
        if lv.rps >= rps:
            if before is None or lv.rps <= before.rps:
                return lv.p95_ms
            share = (rps - before.rps) / (lv.rps - before.rps)
            return round(before.p95_ms + share * (lv.p95_ms - before.p95_ms), 3)  # type: ignore[operator]
        before = lv
    return good[-1].p95_ms
