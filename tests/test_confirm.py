"""The knee the search chose, measured again on fresh windows: the figure a stage reports."""

from __future__ import annotations

import numpy as np

from nightcap.confirm import ConfirmParams, confirm_knee, measure_fresh
from nightcap.analysis.slo import Slo
from nightcap.search import Point, SearchParams, extend_to_slo, find_saturation

SLO = Slo(p95_ms=100.0, max_error_rate=0.01)


def noisy_plateau(truth: float = 200.0, knee: int = 4, noise: float = 0.04, seed: int = 0,
                  p95_at: float | None = None):
    """Goodput rises linearly to `truth` at `knee` users, flat after; every window ± `noise` (sd), with its own
    batch-means half-width; p95 grows with queueing past the knee (over the SLO past 12 users)."""
    rng = np.random.default_rng(seed)
    calls: list[int] = []

    def measure(users: int) -> Point:
        calls.append(users)
        mean = truth * min(users, knee) / knee
        rps = mean * (1 + rng.normal(0, noise))
        p95 = p95_at if p95_at is not None else 20.0 * max(1, users / knee)
        return Point(users, rps, p95, 0.0 if users <= 16 else 0.3, rps_halfwidth=2 * noise * rps / 3, batches=10)

    measure.calls = calls  # type: ignore[attr-defined]
    return measure


def test_fresh_windows_remove_the_bias_of_choosing_the_best_level():
    """The search picks among noisy levels on the plateau; its figure is biased up, the fresh windows are not."""
    picked, confirmed, inside = [], [], 0
    for seed in range(300):
        measure = noisy_plateau(seed=seed, noise=0.05)
        result = find_saturation(measure, SLO, SearchParams(max_users=32, max_windows=1, slo_capacity=False))
        c = confirm_knee(measure, result, SLO, ConfirmParams(min_windows=3, max_windows=6, precision=0.05))
        assert c is not None and c.good and len(c.windows) >= 3
        picked.append(result.saturation_rps / 200 - 1)
        confirmed.append(c.rps / 200 - 1)
        inside += c.estimate.low <= 200 <= c.estimate.high
    assert np.mean(picked) > 0.01  # best of noisy levels: biased upwards
    assert abs(np.mean(confirmed)) < 0.006
    assert inside / 300 >= 0.93


def test_windows_are_added_until_the_interval_is_within_precision():
    measure = noisy_plateau(noise=0.0)
    c = measure_fresh(measure, 4, SLO, ConfirmParams(min_windows=3, max_windows=6, precision=0.05))
    assert len(c.windows) == 3  # exact windows: precise at once
    noisy = noisy_plateau(noise=0.15, seed=2)
    c = measure_fresh(noisy, 4, SLO, ConfirmParams(min_windows=3, max_windows=6, precision=0.02))
    assert len(c.windows) == 6 and c.estimate.relative > 0.02  # the bound, and the interval it reached


def test_a_knee_that_fails_its_fresh_windows_falls_back_to_the_good_level_below():
    def edge(users: int) -> Point:  # 8 users sat on the SLO's edge in the search, over it on fresh windows
        return Point(users, 25.0 * min(users, 8), 50.0 if users < 8 else 130.0, 0.0, rps_halfwidth=1.0, batches=10)

    from nightcap.search import Level, SearchResult
    levels = [Level(4, 100.0, 50.0, 0.0, 1, True, True, False), Level(8, 200.0, 95.0, 0.0, 1, True, True, False)]
    result = SearchResult(8, 200.0, 5, 140.0, 8, 200.0, levels=levels)
    c = confirm_knee(edge, result, SLO, ConfirmParams())
    assert c is not None and c.good and c.users == 4 and c.fell_back_from == 8


def test_extending_a_known_knee_walks_to_the_slo_capacity_without_searching_the_knee():
    measure = noisy_plateau(noise=0.0)
    windows = [measure(4) for _ in range(3)]
    measure.calls.clear()  # type: ignore[attr-defined]
    result = extend_to_slo(measure, SLO, SearchParams(max_users=64), 4, windows, "verified")
    assert result.saturation_users == 4 and result.slo_users is not None and 16 <= result.slo_users < 20
    assert min(measure.calls) > 4  # type: ignore[attr-defined]
