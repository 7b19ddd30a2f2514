"""Confidence intervals by batch means, windows combined, and measurements of one pod pooled."""

from __future__ import annotations

import numpy as np
import pytest

from nightcap.analysis.confidence import Estimate, batch_means, combine_windows, pool, t_quantile


def _coverage(make_series, truth: float, runs: int = 400, min_batch: int = 2) -> float:
    inside = 0
    for seed in range(runs):
        est, _ = batch_means(make_series(np.random.default_rng(seed)), min_batch=min_batch)
        assert est.half_width is not None
        inside += est.low <= truth <= est.high
    return inside / runs


def test_independent_sub_windows_cover_the_true_rate_about_95_percent_of_the_time():
    coverage = _coverage(lambda rng: 200 + rng.normal(0, 20, 20), truth=200)
    assert 0.91 <= coverage <= 0.99


def test_correlated_sub_windows_get_longer_batches_and_keep_most_of_the_coverage():
    def ar1(rng, phi=0.8, n=64):
        x = np.zeros(n)
        for i in range(1, n):
            x[i] = phi * x[i - 1] + rng.normal(0, 10)
        return 300 + x

    _, size = batch_means(ar1(np.random.default_rng(3)), min_batch=1)
    assert size >= 2  # neighbouring 100 ms bins are alike: batches were merged
    naive_inside = 0
    for seed in range(300):  # what the batches protect against: one bin = one sample
        x = ar1(np.random.default_rng(seed))
        half = t_quantile(len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        naive_inside += abs(x.mean() - 300) <= half
    coverage = _coverage(ar1, truth=300, runs=300, min_batch=1)
    assert coverage >= 0.80 and coverage > naive_inside / 300 + 0.1


def test_one_batch_has_no_half_width_and_an_empty_series_no_mean():
    assert batch_means([100.0], min_batch=2)[0].half_width is None
    assert batch_means([], min_batch=2)[0] == Estimate(0.0, None, 0)


def test_windows_combine_to_a_narrower_interval_but_never_narrower_than_their_spread():
    a = Estimate(100.0, 4.0, 10, 9.0)
    b = Estimate(100.0, 4.0, 10, 9.0)
    both = combine_windows([a, b])
    assert both.mean == 100 and both.half_width < 4.0 and both.n == 20
    apart = combine_windows([Estimate(100.0, 1.0, 10, 9.0), Estimate(110.0, 1.0, 10, 9.0)])
    assert apart.mean == 105 and apart.half_width >= 5.0  # sub-windows cannot see a drift between windows


def test_windows_without_sub_windows_count_as_one_sample_each():
    assert combine_windows([Estimate(50.0, None, 1)]).half_width is None
    exact = combine_windows([Estimate(50.0, None, 1), Estimate(50.0, None, 1)])
    assert exact.half_width == 0.0
    noisy = combine_windows([Estimate(48.0, None, 1), Estimate(52.0, None, 1)])
    assert noisy.half_width == pytest.approx(t_quantile(1) * np.std([48, 52], ddof=1) / np.sqrt(2))


def test_agreeing_measurements_pool_to_a_tighter_interval():
    pooled = pool([Estimate(140.0, 4.0, 8, 7.0), Estimate(142.0, 4.0, 8, 7.0), Estimate(139.0, 5.0, 8, 7.0)])
    assert not pooled.disagreements
    assert 139 < pooled.estimate.mean < 142 and pooled.estimate.half_width < 4.0
    assert pooled.heterogeneity_p > 0.1


def test_disagreeing_measurements_are_named_and_the_interval_widens_to_cover_them():
    pooled = pool([Estimate(140.0, 4.0, 8, 7.0), Estimate(170.0, 4.0, 8, 7.0), Estimate(141.0, 4.0, 8, 7.0)])
    assert (0, 1) in pooled.disagreements and (1, 2) in pooled.disagreements and (0, 2) not in pooled.disagreements
    assert pooled.heterogeneity_p < 0.01
    assert pooled.estimate.low <= 141 and pooled.estimate.high >= 160  # not a fixed-effect ±2


def test_pooling_without_intervals_falls_back_to_the_spread_of_the_values():
    pooled = pool([Estimate(100.0, None, 1), Estimate(110.0, None, 1)])
    assert pooled.estimate.mean == 105 and pooled.estimate.half_width >= 5
    assert pool([Estimate(100.0, 3.0, 5, 4.0)]).estimate == Estimate(100.0, 3.0, 5, 4.0)
