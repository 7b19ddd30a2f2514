"""The headline figures of a run: one list, used by the summary, the history store, the regression check
and the trend plot, so a figure is named (and judged) the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """A headline figure, which way is better, and whether the nightly regression check compares it."""

    name: str
    unit: str
    higher_is_better: bool = True
    # The smallest change the measurement resolves, in the figure's unit: Locust records latencies in
    # whole milliseconds and nights with identical p95 have no spread, so without it 22 -> 24.5 ms alarmed.
    resolution: float = 0.0
    compared: bool = True  # checked for regressions and drawn in the trend plot
    label: str = ""


HEADLINE_FIGURES: tuple[Figure, ...] = (
    Figure("saturation_rps", "rps", label="saturation (rps)"),
    Figure("saturation_users", "users", compared=False),
    Figure("operating_rps", "rps", compared=False),
    Figure("rps_per_core", "rps/core", label="rps per core"),
    Figure("p95_at_operating_ms", "ms", higher_is_better=False, resolution=5.0,
           label="p95 at operating point (ms, lower is better)"),
    Figure("slo_users", "users", resolution=2.0, label="users within the SLO"),
    Figure("slo_rps", "rps", compared=False),
)
HEADLINE_NAMES: tuple[str, ...] = tuple(f.name for f in HEADLINE_FIGURES)
COMPARED_FIGURES: tuple[Figure, ...] = tuple(f for f in HEADLINE_FIGURES if f.compared)


def rate_text(rps: float) -> str:
    """A rate as summary.json rounds it (2 decimals), then to 0.1: the same number reads the same in every line
    (64.9469 printed directly to 0.1 reads 64.9 where the summary's 64.95 reads 65.0)."""
    return f"{round(rps, 2):.1f}"
