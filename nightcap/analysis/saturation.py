"""Small rules on measured steps that every stage shares: which steps count, when two agree, where to operate."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

from nightcap.steps import STEP_COLUMNS, StepRow


@dataclass(frozen=True)
class OperatingPoint:
    """Where to run in production: a fraction (headroom) of the saturation point."""

    rps: float
    users: int
    headroom: float


def operating_point(sat_rps: float, sat_users: int, headroom: float = 0.7) -> OperatingPoint:
    """Scale the saturation point by `headroom` (0.7 in the recipe) so bursts do not tip it over.

    Users are rounded down (never above the fraction asked for), but stay ≥ 1 when the saturation
    point had any users, so a tiny saturation point still yields a usable operating point.
    """
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    if sat_rps < 0 or sat_users < 0:
        raise ValueError(f"saturation must not be negative (rps={sat_rps}, users={sat_users})")
    users = math.floor(sat_users * headroom + 1e-9)
    if sat_users > 0:
        users = max(1, users)
    return OperatingPoint(rps=sat_rps * headroom, users=users, headroom=headroom)


def is_stable(a: float, b: float, within: float = 0.10) -> bool:
    """Two measurements agree when they differ by at most `within` of the larger one (0 and 0 agree)."""
    if within < 0:
        raise ValueError(f"within must be ≥ 0, got {within}")
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    scale = max(abs(a), abs(b))
    return scale == 0 or abs(a - b) <= within * scale + 1e-12


def _truthy(value: Any, default: bool = False) -> bool:
    """steps.csv read by pandas may hold bools, 'True'/'False' strings or NaN (= the field's default)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes") if value.strip() else default
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return bool(value)


def usable(step: StepRow | Mapping[str, Any] | pd.Series) -> bool:
    """A step counts for capacity only when it is valid and the load generator was not the bottleneck.

    A generator-bound step measures the generator, not the model, so using it would understate capacity.
    """
    if isinstance(step, StepRow):
        return step.valid and not step.generator_bound
    return _truthy(step.get("valid"), True) and not _truthy(step.get("generator_bound"), False)


def within_slo_mask(steps: pd.DataFrame, p95_ms: float, max_error_rate: float) -> pd.Series:
    """Usable steps that met the SLO and the error limit: the only ones a throughput figure, fit or line uses.

    A window of fast 503s has a high request rate and a low p95; counting it would make a server that sheds
    load look faster the more it fails.
    """
    if steps.empty:
        return pd.Series(dtype=bool)
    p95 = pd.to_numeric(steps["p95_ms"], errors="coerce")
    errors = pd.to_numeric(steps["error_rate"], errors="coerce").fillna(1.0)
    return usable_mask(steps) & (p95 <= p95_ms) & (errors <= max_error_rate)


def steps_frame(rows: Iterable[StepRow]) -> pd.DataFrame:
    """StepRows as a frame with the steps.csv columns (what the frame-based analysis functions take)."""
    return pd.DataFrame([asdict(r) for r in rows], columns=STEP_COLUMNS)


def usable_mask(steps: pd.DataFrame) -> pd.Series:
    """Row mask of `usable` steps in a frame (missing columns mean valid / not generator-bound)."""
    valid = steps["valid"].map(lambda v: _truthy(v, True)) if "valid" in steps else pd.Series(True, index=steps.index)
    bound = steps["generator_bound"].map(_truthy) if "generator_bound" in steps else pd.Series(False, index=steps.index)
    return valid & ~bound
