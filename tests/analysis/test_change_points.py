"""Change points in nightly series: a step is found at the night it happened, noise is not a change."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nightcap.analysis.change_points import ChangePoint, find_change_points, levels


def nights(n: int = 14, *, drop_at: int | None = None, drop: float = 0.20, noise: float = 0.05,
           seed: int = 0, level: float = 200.0) -> list[float]:
    """`n` nights of a figure around `level` with relative noise; from night `drop_at` (1-based) it is lower."""
    rng = np.random.default_rng(seed)
    values = level * (1 + noise * rng.standard_normal(n))
    if drop_at is not None:
        values[drop_at - 1:] *= 1 - drop
    return [float(v) for v in values]


def test_a_twenty_percent_drop_at_night_nine_is_found_at_night_nine():
    series = nights(drop_at=9)
    (point,) = find_change_points(series)
    assert point.index + 1 == 9  # index 8 is the first night of the lower level
    assert point.mean_before == pytest.approx(np.mean(series[:8]))
    assert point.mean_after == pytest.approx(np.mean(series[8:]))
    assert -25 < point.change_pct < -15
    assert point.pvalue < 0.001


def test_fourteen_nights_of_noise_have_no_change_point():
    assert find_change_points(nights()) == []


def test_over_many_histories_steps_are_found_where_they_happened_and_noise_rarely_alarms():
    """The two cases above are single draws; these are the rates they come from (200 seeded series each)."""
    exact = sum(
        [p.index for p in find_change_points(nights(drop_at=9, seed=seed))] == [8] for seed in range(200)
    )
    false = sum(bool(find_change_points(nights(seed=1000 + seed))) for seed in range(200))
    assert exact >= 180, exact  # 190 of 200 here: a few draws put it a night off or miss it
    assert false <= 8, false  # 4 of 200 here (Otava's default p < 0.001)


def test_a_slow_drift_is_caught_once_it_adds_up():
    """1.5% a night: no two neighbouring nights differ beyond their noise, twenty nights lose 28%."""
    drift = [v * (1 - 0.015 * i) for i, v in enumerate(nights(20, noise=0.02, seed=3))]
    points = find_change_points(drift)
    assert points and all(p.change_pct < 0 for p in points)
    assert find_change_points(drift[:4]) == []  # four nights of it are not yet a change


def test_missing_nights_keep_their_place():
    series: list[float | None] = list(nights(drop_at=9))
    series[3] = None
    series[10] = math.nan
    (point,) = find_change_points(series)
    assert point.index == 8


def test_too_short_or_constant_series_have_no_change_point():
    assert find_change_points([]) == []
    assert find_change_points([200.0, 100.0]) == []
    assert find_change_points([200.0] * 14) == []
    (point,) = find_change_points([200.0] * 8 + [160.0] * 3)  # noiseless steps are still steps
    assert (point.index, point.mean_before, point.mean_after) == (8, 200.0, 160.0)


def test_bad_pvalue_is_refused():
    with pytest.raises(ValueError, match="max_pvalue"):
        find_change_points([1.0, 2.0, 3.0], max_pvalue=0)


def test_levels_cover_the_series_between_change_points():
    points = [ChangePoint(3, 1, 2, 0.0), ChangePoint(7, 2, 1, 0.0)]
    assert levels(10, points) == [range(0, 3), range(3, 7), range(7, 10)]
    assert levels(4, []) == [range(0, 4)]
    assert levels(0, []) == []
    assert ChangePoint(1, 200.0, 160.0, 0.0).change_pct == pytest.approx(-20.0)


def test_changes_smaller_than_min_change_are_dropped_though_significant():
    """Seen in tests/flows/test_regression_flow.py: a first night 6% under three that agree within 0.1%."""
    nights_rps = [199.68, 211.8, 211.71, 211.56]
    (point,) = find_change_points(nights_rps)
    assert point.index == 1 and point.pvalue < 0.001
    assert find_change_points(nights_rps, min_change=0.10) == []
    assert [p.index for p in find_change_points([*nights_rps, 107.8], min_change=0.10)] == [4]
