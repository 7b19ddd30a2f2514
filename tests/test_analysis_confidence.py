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


# --- one pod, one capacity ---------------------------------------------------------------------

from nightcap.analysis.capacity import Measurement, pool_pod  # noqa: E402


def test_stages_that_agree_pool_into_one_per_pod_figure_without_warnings():
    cap = pool_pod([Measurement("single_client", 140.0, 5.0, 12, 2, 1), Measurement("multi_client", 143.0, 5.0, 12, 2, 1),
                    Measurement("scaling", 141.0, 6.0, 8, 2, 1)])
    assert 140 <= cap.rps <= 143 and cap.high - cap.low < 10
    assert not cap.warnings()
    assert cap.to_dict()["stages"] == ["single_client", "multi_client", "scaling"]


def test_stages_that_disagree_are_named_with_their_figures():
    # the field report's run: tune 173.7, single_client 135.7, multi_client 141.8, scaling 169.2 on one pod
    cap = pool_pod([Measurement("tune", 173.7, 6.0, 8, 1, 1), Measurement("single_client", 135.7, 5.0, 12, 1, 1),
                    Measurement("multi_client", 141.8, 5.0, 12, 2, 1), Measurement("scaling", 169.2, 7.0, 8, 1, 1)])
    lines = cap.warnings()
    assert any("tune 173.7 rps" in w and "single_client 135.7 rps" in w for w in lines)
    assert not any("single_client" in w and "multi_client" in w for w in lines)  # these two agree
    assert cap.low <= 140 and cap.high >= 165  # the interval says how little one night can tell


def test_per_pod_figures_divide_by_the_replicas_measured_together():
    cap = pool_pod([Measurement("single_client", 400.0, 8.0, 10, 8, 2), Measurement("multi_client", 404.0, 8.0, 10, 8, 2)])
    assert cap.replicas == 2 and 199 <= cap.rps <= 203
    with pytest.raises(ValueError, match="one replica count"):
        pool_pod([Measurement("single_client", 400.0, 8.0, 10, 8, 2), Measurement("scaling", 200.0, 8.0, 10, 4, 1)])
    assert pool_pod([]) is None
