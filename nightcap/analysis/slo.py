"""What "meets the SLO" means, decided here and nowhere else.

The rule: a window meets the SLO when its p95 is at most `p95_ms` AND its error rate is at most
`max_error_rate`. Both limits are inclusive: p95 == SLO meets it, error rate == the max meets it. A window
with no p95 (no successful response) does not meet it; in a frame, a missing error rate counts as all
errors. Printed, the rule reads "p95 ≤ 250 ms" (the report's SLO-capacity and sizing lines, the plots' SLO line).

Why one place: the search, the saturation mask, the plots and the autoscale timings used to pass a window at
exactly the SLO while sizing and the operating-point check failed it, so one window was capacity in one
figure and a miss in the next. Why inclusive: `slo.p95_ms` and `slo.max_error_rate` are ceilings in the
config ("p95 within 250 ms"), read the same way for both limits.

A level measured in several windows is judged once, on `level_of` its windows: the median of their p95 and the
mean of their error rates. Not on its last window (a second window at 220 ms passed a level whose first read
340 ms, so make run's headline said 20 users fit while its by-cores table, which asked every window, said 8), and
not on every window (one stall of a few hundred ms would fail a level whose other windows read 50 ms).

The forms: `met` (one window), `p95_met` / `errors_met` (one limit, for reasons in words), `met_many`
(arrays or columns), `met_frame` (a steps frame), `met_steps` (a list of step rows or levels), and `scaled`
(the same rule on a line k times as far: the search's one-window shortcuts ask "well within?" or "far over?").
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from nightcap.config_sections import SloConfig


class Judged(Protocol):
    """What the rule reads from a window, a level or a step row."""

    p95_ms: float | None
    error_rate: float


def level_of(p95s: Iterable[float | None], error_rates: Iterable[float]) -> tuple[float | None, float]:
    """A level's windows as the SLO judges them: (the median of their p95, None when no window has one; the mean
    of their error rates, 1.0 when there is none)."""
    known = [float(v) for v in p95s if v is not None and np.isfinite(float(v))]
    errors = [float(e) for e in error_rates]
    return (statistics.median(known) if known else None), (statistics.fmean(errors) if errors else 1.0)


@dataclass(frozen=True)
class Slo:
    """The latency and error limits a window is judged against (inclusive: see the module docstring)."""

    p95_ms: float
    max_error_rate: float = 0.01

    @classmethod
    def of(cls, config: "SloConfig") -> "Slo":
        """From the config's `slo:` section."""
        return cls(float(config.p95_ms), float(config.max_error_rate))

    def p95_met(self, p95_ms: float | None) -> bool:
        """p95 at most the SLO; no p95 (nothing succeeded) does not meet it."""
        return p95_ms is not None and p95_ms <= self.p95_ms

    def errors_met(self, error_rate: float) -> bool:
        return error_rate <= self.max_error_rate

    def met(self, p95_ms: float | None, error_rate: float) -> bool:
        return self.p95_met(p95_ms) and self.errors_met(error_rate)

    def misses(self, p95_ms: float | None, error_rate: float) -> list[str]:
        """The limits a window misses, in words, errors first ("error rate 1.1% over 1.0%", "p95 400 ms over the
        SLO 250 ms"); a missing p95 is not named here (the caller says "no successful request" its own way)."""
        words = [] if self.errors_met(error_rate) else [f"error rate {error_rate:.1%} over {self.max_error_rate:.1%}"]
        if p95_ms is not None and not self.p95_met(p95_ms):
            words.append(f"p95 {p95_ms:.0f} ms over the SLO {self.p95_ms:.0f} ms")
        return words

    def met_many(self, p95_ms: Any, error_rate: Any) -> np.ndarray:
        """The rule over arrays (or columns): a missing or non-numeric p95 fails, a missing error rate fails."""
        p95 = pd.to_numeric(pd.Series(np.asarray(p95_ms, dtype=object)), errors="coerce").to_numpy(dtype=float)
        errors = pd.to_numeric(pd.Series(np.asarray(error_rate, dtype=object)), errors="coerce")
        errors = errors.fillna(1.0).to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            return (p95 <= self.p95_ms) & (errors <= self.max_error_rate)

    def met_frame(self, frame: pd.DataFrame) -> pd.Series:
        """The rule per row of a frame with `p95_ms` and `error_rate` columns (steps.csv), on its index."""
        if frame.empty:
            return pd.Series(dtype=bool, index=frame.index)
        return pd.Series(self.met_many(frame["p95_ms"], frame["error_rate"]), index=frame.index)

    def met_steps(self, steps: Iterable[Judged]) -> list[bool]:
        """The rule per step row, level or sample, in order."""
        return [self.met(s.p95_ms, s.error_rate) for s in steps]

    def scaled(self, factor: float, error_floor: float = 0.0) -> "Slo":
        """The same rule with both limits `factor` times as far (the error limit at least `error_floor`):
        0.8 asks "well within the SLO?", 1.5 "far over it?"."""
        return Slo(self.p95_ms * factor, max(error_floor, self.max_error_rate * factor))
