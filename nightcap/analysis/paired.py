"""Figures from windows measured in pairs: scaling efficiency (N pods against one) and the multi-client gain
(several generators against one). Each pair's windows are neighbours in time, so drift cancels in their ratio."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
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


def pair_order(pairs: int) -> list[tuple[int, int]]:
    """The order of `pairs` pairs of windows as runs of (side, windows): A B, B A, A B, ... measured as A, BB, AA,
    ..., B. Each pair's windows are neighbours and the order alternates, so a steady drift favours neither side;
    the two windows of one side that meet between pairs run back to back, so that side is switched to and warmed
    up once for both."""
    sides = [s for i in range(pairs) for s in ((0, 1) if i % 2 == 0 else (1, 0))]
    return [(side, len(list(run))) for side, run in groupby(sides)]


def n_pod_users(one_pod_users: int, n: int, max_users: int) -> int:
    """The users N pods are measured at beside one pod: as many per pod as one pod's figure had (capped at
    `max_users`).

    One pod's figure is measured on its plateau (past its knee), so N pods at N times its users sit on theirs when
    the service scales, and past a shared knee when it does not, where closed-loop goodput no longer moves with
    users. A search at N pods chose nothing else: its knee mattered only above N × the figure's users, and on noise
    it sat far below (make run's 2 pods: a plateau at 3 users, 1.5 per pod beside one pod at 4, efficiency 0.85
    for pods that took 244 rps at 5), so the pairs start at once.
    """
    return min(n * one_pod_users, max_users)


def under_knee_note(users: int, n: int, knee_one: int | None) -> str:
    """Why an efficiency is only a lower bound: search.max_users left N pods fewer users each than one pod's knee."""
    if knee_one and users < n * knee_one:
        return (f"; search.max_users left the {n} pods {users / n:.1f} users each, under one pod's knee of {knee_one}: "
                "the efficiency is a lower bound (raise search.max_users)")
    return ""


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
