"""Figures from windows measured in pairs: scaling efficiency (N pods against one) and the multi-client gain
(several generators against one). Each pair's windows are neighbours in time, so drift cancels in their ratio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from nightcap.analysis.confidence import Estimate, paired_ratio
from nightcap.analysis.pod_capacity import Check, FigureWindow, PodFigure, compare_configs, estimate_of


@dataclass(frozen=True)
class Efficiency:
    """N pods against one from their paired windows: each side's goodput, and N pods / (N × one pod)."""

    one_pod: Estimate
    n_pods: Estimate
    ratio: Estimate
    pairs: int

    @property
    def ci(self) -> list[float] | None:
        r = self.ratio
        return None if r.low is None or r.high is None else [round(r.low, 4), round(r.high, 4)]


def scaling_efficiency(one_pod: Sequence[FigureWindow], n_pods: Sequence[FigureWindow], n: int) -> Efficiency:
    return Efficiency(estimate_of(one_pod), estimate_of(n_pods),
                      paired_ratio([w.estimate for w in one_pod], [w.estimate for w in n_pods], scale=n), len(n_pods))


def multi_client_gain(figure: PodFigure, stage: str, workers: int, one: Sequence[Any],
                      several: Sequence[Any]) -> Check:
    """Windows of the figure's generator count (`one`) paired with `workers` generators' (`several`), rows of
    steps.csv: the ratio says whether one client was the bottleneck (`compare_configs` settles the figure)."""
    return compare_configs(figure, [FigureWindow.of(r, stage, "pair", figure.workers) for r in one],
                           [FigureWindow.of(r, stage, "pair", workers) for r in several])


def good_rps(rows: Sequence[Any]) -> float | None:
    """Mean goodput of the valid windows no generator limited (None when there are none)."""
    good = [r for r in rows if r.valid and not r.generator_bound]
    return sum(r.rps for r in good) / len(good) if good else None
