"""USL fit: linear scaling gives σ≈κ≈0, a shared lock gives κ>0 and a retrograde point, few points give no fit,
and a fit that does not explain the data (r², parameter intervals) is "no fit" with nothing extrapolated."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightcap.analysis.usl import MAX_SHIFT, MIN_R2, fit_usl, predict, usl


def reference_linear(replicas: int, slots: int = 4, service_ms: float = 20.0) -> float:
    """The reference target without CPU limits scales exactly: slots × 1000 / service_ms per replica."""
    return replicas * slots * 1000.0 / service_ms


def test_linear_scaling_gives_zero_contention_and_coherency() -> None:
    n = [1, 2, 3, 4, 6, 8]
    fit = fit_usl(n, [reference_linear(k) for k in n])
    assert fit.ok
    assert fit.lam == pytest.approx(200.0, rel=1e-6)
    assert fit.sigma == pytest.approx(0.0, abs=1e-6)
    assert fit.kappa == pytest.approx(0.0, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.predicted_peak_n is None and fit.retrograde_from_n is None and fit.peak_throughput is None
    value, low, high = predict(fit, 16)
    assert value == pytest.approx(3200.0, rel=1e-6) and low <= value <= high


def test_retrograde_curve_reports_kappa_and_the_point_where_throughput_falls() -> None:
    # a shared lock: coherency κ = 0.02, contention σ = 0.05 → N* = sqrt(0.95 / 0.02) ≈ 6.9
    n = np.arange(1, 13)
    rng = np.random.default_rng(7)
    x = usl(n, 100.0, 0.05, 0.02) * (1 + rng.normal(0, 0.01, n.size))
    fit = fit_usl(n, x)
    assert fit.ok and fit.kappa is not None and fit.kappa > 0.01
    assert fit.predicted_peak_n == pytest.approx(math.sqrt(0.95 / 0.02), rel=0.15)
    assert fit.retrograde_from_n in (7, 8)
    true_x = usl(np.arange(1, 20), 100.0, 0.05, 0.02)
    first_drop = int(np.argmax(np.diff(true_x) < 0)) + 2  # N whose throughput is below N−1's
    assert abs(fit.retrograde_from_n - first_drop) <= 1
    assert fit.kappa_err is not None and fit.kappa_err < fit.kappa
    assert fit.r2 > 0.98


def test_noisy_fit_band_covers_truth_and_widens_when_extrapolating() -> None:
    n = np.repeat(np.arange(1, 7), 3)
    rng = np.random.default_rng(3)
    x = usl(n, 50.0, 0.1, 0.005) * (1 + rng.normal(0, 0.02, n.size))
    fit = fit_usl(n, x)
    assert fit.n_points == 18
    v4, lo4, hi4 = predict(fit, 4)
    v30, lo30, hi30 = predict(fit, 30)
    assert lo4 <= usl(4, 50.0, 0.1, 0.005) <= hi4
    assert (hi30 - lo30) / v30 > (hi4 - lo4) / v4  # the farther out, the less we know


@pytest.mark.parametrize("n,x", [([], []), ([1], [100.0]), ([1, 2], [100.0, 190.0]), ([2, 2, 2], [1.0, 2.0, 3.0])])
def test_too_few_points_give_no_fit_and_a_reason(n: list[int], x: list[float]) -> None:
    fit = fit_usl(n, x)
    assert not fit.ok and fit.sigma is None and fit.kappa is None
    assert fit.reason.startswith("no fit: ") and "the USL needs 3" in fit.reason
    assert not fit.reason.endswith(".")  # one clause: the report appends its own hint and punctuation
    assert fit.to_dict()["ok"] is False
    with pytest.raises(ValueError, match="no USL fit"):
        predict(fit, 3)


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        fit_usl([1, 2, 3], [1.0, 2.0])


def test_to_dict_is_json_ready() -> None:
    import json

    fit = fit_usl([1, 2, 3, 4], [100, 180, 240, 280])
    data = json.loads(json.dumps(fit.to_dict()))
    assert set(data) >= {"sigma", "kappa", "r2", "predicted_peak_n", "retrograde_from_n", "ok"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.floats(0.1, 1000),
    increments=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=9),
)
def test_monotonic_throughput_gives_a_sane_fit(first: float, increments: list[float]) -> None:
    x = np.cumsum([first] + [first * inc for inc in increments])  # strictly increasing
    n = np.arange(1, x.size + 1)
    fit = fit_usl(n, x)
    assert fit.lam is not None  # always fitted; reported only when it explains the data
    assert 0.0 <= fit.sigma <= 1.0 and fit.kappa >= 0.0 and fit.lam > 0
    assert fit.r2 <= 1.0 + 1e-9 and fit.rmse >= 0
    if not fit.ok:  # rejected: its numbers stay for diagnosis, nothing is extrapolated from them
        assert fit.reason.startswith("no fit: ") and fit.predicted_peak_n is None and fit.retrograde_from_n is None
        with pytest.raises(ValueError, match="no USL fit"):
            predict(fit, float(n.max() + 1))
        return
    assert fit.r2 >= MIN_R2
    if fit.predicted_peak_n is not None:
        # a curve still rising at every measured point does not peak early, nor low
        assert fit.predicted_peak_n >= 0.5 * n.max()
        assert fit.peak_throughput >= 0.5 * x.max()
        assert fit.retrograde_from_n >= fit.predicted_peak_n
    for k in n:
        value, low, high = predict(fit, float(k))
        assert math.isfinite(value) and value >= 0 and low <= value <= high


def test_fit_from_steps_uses_the_best_level_within_the_slo_per_replica_count() -> None:
    from nightcap.analysis.saturation import steps_frame
    from nightcap.analysis.usl import fit_usl_steps
    from nightcap.analysis.slo import Slo
    from nightcap.steps import StepRow

    def row(replicas: int, users: int, rps: float, **extra) -> StepRow:
        return StepRow(stage="scaling", step=len(rows), replicas=replicas, cpu=1.0, memory=None, concurrency=4,
                       users=users, rps=rps, p95_ms=extra.pop("p95_ms", 50.0), **extra)

    rows: list[StepRow] = []
    for replicas in (1, 2, 3, 4):
        for users, share in ((4, 0.5), (8, 1.0)):  # a ramp: only its top counts
            rows.append(row(replicas, users * replicas, 200.0 * replicas * share * 0.98))
            rows.append(row(replicas, users * replicas, 200.0 * replicas * share * 1.02))  # two windows: averaged
    rows.append(row(4, 64, 5000.0, generator_bound=True))  # never used
    rows.append(row(4, 96, 5000.0, error_rate=0.9, p95_ms=5.0))  # fast 503s: never used
    rows.append(row(4, 128, 900.0, p95_ms=2000.0))  # over the SLO: never used
    fit = fit_usl_steps(steps_frame(rows), Slo(p95_ms=1000, max_error_rate=0.01))
    assert fit.ok and fit.lam == pytest.approx(200.0, rel=1e-6) and fit.kappa == pytest.approx(0.0, abs=1e-9)
    assert fit.n_points == 4


def test_a_fit_that_explains_nothing_is_no_fit_and_extrapolates_nothing() -> None:
    """Issue 23: "σ=0.937, κ=0.0000, r²=0.072" was reported as a fit. Throughput that is noise around one level
    is explained by no USL curve: no fit, the reason in one clause, no peak, no prediction."""
    rng = np.random.default_rng(1)
    n = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32])
    fit = fit_usl(n, 120 + rng.normal(0, 6, n.size))
    assert not fit.ok and fit.r2 is not None and fit.r2 < MIN_R2
    assert fit.reason.startswith(f"no fit: r² {fit.r2:.2f} is below {MIN_R2:g}")
    assert fit.predicted_peak_n is None and fit.retrograde_from_n is None and fit.peak_throughput is None
    assert fit.to_dict()["ok"] is False and fit.to_dict()["sigma"] == fit.sigma  # kept for diagnosis
    with pytest.raises(ValueError, match="no USL fit"):
        predict(fit, 64)


def test_a_linear_target_at_one_to_three_replicas_still_gets_its_fit() -> None:
    """Three replica counts cannot pin three parameters, but a linear target needs only two: κ's interval
    includes 0, so Amdahl's law (κ = 0) is fitted, with σ ≈ 0 known to within the accepted interval."""
    for measured in ([200.0, 400.0, 600.0], [200.0, 396.0, 606.0], [198.0, 404.0, 597.0]):
        fit = fit_usl([1, 2, 3], measured)
        assert fit.ok, fit.reason
        assert fit.model == "amdahl" and fit.kappa == 0.0 and fit.kappa_err is None
        assert fit.sigma == pytest.approx(0.0, abs=0.01) and fit.r2 > 0.99
        assert fit.predicted_peak_n is None  # no retrograde without κ
        value, low, high = predict(fit, 6)
        assert value == pytest.approx(1200.0, rel=0.03) and low <= value <= high


def test_a_curve_the_data_cannot_pin_down_is_no_fit() -> None:
    """Three noisy points the curve passes near (r² above MIN_R2), but with one degree of freedom left the
    parameters' joint 95% intervals move it at N=3 by more than MAX_SHIFT of the largest throughput: no fit."""
    fit = fit_usl([1, 2, 3], [100.0, 133.0, 233.0])
    assert fit.r2 >= MIN_R2 and not fit.ok
    assert fit.reason.startswith("no fit: the parameters' 95% intervals move the fitted throughput at N=3 by ±")
    assert f"(at most ±{MAX_SHIFT:.0%} accepted)" in fit.reason
    assert fit.retrograde_from_n is None and fit.predicted_peak_n is None


def test_a_fall_past_a_peak_is_a_fit_with_its_retrograde_point() -> None:
    """A lock whose cost grows with concurrency (tests/flows/test_stages.py's retrograde target, one measured run):
    the curve is small past its peak, but known within a few percent of the peak; κ > 0 and the fall is
    predicted where it was measured."""
    fit = fit_usl([1, 2, 3, 4, 8, 16, 32], [90.4, 134.4, 147.1, 106.5, 47.2, 25.3, 16.6])
    assert fit.ok, fit.reason
    assert fit.kappa > 0 and fit.predicted_peak_n is not None and 2 <= fit.predicted_peak_n <= 4
    assert fit.retrograde_from_n is not None and fit.retrograde_from_n <= 8
