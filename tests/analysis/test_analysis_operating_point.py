"""The operating point is verified at a rate; a miss backs off by bisection to the highest rate meeting the SLO."""

from __future__ import annotations

import pytest

from nightcap.analysis.operating_point import RateWindow, check_operating_point, judge, rate_check
from nightcap.analysis.slo import Slo

SLO = Slo(p95_ms=100, max_error_rate=0.01)


def window(rate: float, p95: float | None, error_rate: float = 0.0, verdict: str = "ok", dropped: int = 0,
           hist: dict[int, int] | None = None, valid: bool = True, note: str = "") -> RateWindow:
    planned = int(rate * 6)
    failures = round(planned * error_rate)
    return RateWindow(rate, rate, rate, rate * (1 - error_rate), p95 and p95 / 2, p95, p95 and p95 * 1.2,
                      p95 and p95 / 2, planned, planned - dropped, failures, 0, dropped, verdict, valid, note, hist)


def test_judge_names_every_reason() -> None:
    assert judge(SLO, p95_ms=99, error_rate=0.01, verdict="ok") == (True, "")
    ok, why = judge(SLO, p95_ms=101, error_rate=0.02, verdict="target-overloaded")
    assert not ok and why == "p95 101 ms > SLO 100 ms; failed or dropped 2.0% > 1%; target-overloaded"
    assert judge(SLO, p95_ms=None, error_rate=0.0, verdict="ok") == (False, "no response completed")
    assert judge(SLO, p95_ms=10, error_rate=0.0, verdict="generator-bound")[0] is False


def test_a_met_operating_point_is_judged_on_its_windows_together() -> None:
    rates: list[float] = []

    def measure(rate: float) -> RateWindow:
        rates.append(rate)
        return window(rate, 50)

    check = check_operating_point(measure, 140.0, SLO)
    assert rates == [140.0, 140.0] and check.verified.windows == 2
    assert check.verified.meets_slo and check.slo_rate_rps == 140.0
    assert check.slo_rate_interval_rps == (140.0, None)
    assert check.at(140.0) is check.verified


def test_a_miss_bisects_to_the_highest_rate_that_meets_the_slo() -> None:
    # p95 reaches the SLO at 100 rps (p95 == SLO meets it): the truth lies in the interval after 3 windows
    rates: list[float] = []

    def measure(rate: float) -> RateWindow:
        rates.append(rate)
        return window(rate, 40 + 60 * rate / 100)

    check = check_operating_point(measure, 160.0, SLO, backoff_windows=3, windows=1)
    assert rates == [160.0, 80.0, 120.0, 100.0]
    assert not check.verified.meets_slo
    assert check.slo_rate_rps == 100.0 and check.slo_rate_interval_rps == (100.0, 120.0)
    assert check.at(80.0).meets_slo and check.at(100.0).meets_slo and len(check.windows) == 4


def test_when_nothing_meets_the_slo_there_is_no_slo_rate() -> None:
    check = check_operating_point(lambda r: window(r, 400), 100.0, SLO, backoff_windows=2)
    assert check.slo_rate_rps is None and check.slo_rate_interval_rps == (0.0, 25.0)


def test_a_dropped_or_late_window_fails_even_with_a_good_p95() -> None:
    check = check_operating_point(
        lambda r: window(r, 20, verdict="target-overloaded" if r > 60 else "ok"), 100.0, SLO, backoff_windows=2)
    assert check.slo_rate_rps == 50.0 and "target-overloaded" in check.verified.why


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="operating rate"):
        check_operating_point(lambda r: window(r, 1), 0.0, SLO)


def test_rate_check_pools_histograms_and_never_passes_an_invalid_window() -> None:
    fast = window(140.0, 30.0, hist={20: 900, 30: 90, 200: 10})
    slow = window(140.0, 40.0, hist={20: 850, 40: 110, 300: 40})
    check = rate_check(140.0, [fast, slow], SLO)
    assert check.windows == 2 and check.planned == 1680
    assert check.p95_ms == 40.0  # the 95th of the 2000 merged responses, not a mean of the windows' p95s
    assert check.p95_ci[0] <= 30.0 and check.p95_ci[1] >= 40.0  # never narrower than the windows' own p95s
    assert check.meets_slo and check.mean_ms == pytest.approx((15.0 + 20.0) / 2)
    dead = rate_check(140.0, [fast, window(140.0, 30.0, valid=False, note="a load generator worker died")], SLO)
    assert not dead.meets_slo and dead.why == "a load generator worker died"


def test_dropped_arrivals_count_as_errors_callers_did_not_get_served() -> None:
    # 0.5% failed plus 1% dropped: each within the limit alone, 1.5% of the planned arrivals together
    w = window(100.0, 30.0, error_rate=0.005, dropped=6)
    check = rate_check(100.0, [w, w], SLO)
    assert check.error_rate == pytest.approx((3 + 6) / 600) and not check.meets_slo
    assert "failed or dropped 1.5%" in check.why


def test_the_sizing_window_is_the_verified_one_or_the_slo_rates() -> None:
    met = check_operating_point(lambda r: window(r, 50), 140.0, SLO)
    assert met.met and met.sizing_window is met.verified
    missed = check_operating_point(lambda r: window(r, 50 if r <= 80 else 400), 160.0, SLO, backoff_windows=3)
    assert not missed.met and missed.slo_rate_rps == 80.0 and missed.sizing_window.rate_rps == 80.0
    none = check_operating_point(lambda r: window(r, 400), 160.0, SLO, backoff_windows=1)
    assert none.slo_rate_rps is None and none.sizing_window is None


def test_sizing_takes_the_mean_latency_of_the_planned_rate_and_the_slo_rate_only_after_a_miss() -> None:
    from nightcap.analysis.operating_point import sizing_latency

    met = check_operating_point(lambda r: window(r, 50), 140.0, SLO)
    got = sizing_latency(met, 1, "multi_client", 30.0)
    assert got.mean_latency_s == 0.025 and got.slo_rate_per_pod_rps is None  # window(): mean = p95 / 2
    assert got.source == "mean latency open loop at 140.0 rps on 1 pod(s) (multi_client)"
    missed = check_operating_point(lambda r: window(r, 40 if r <= 80 else 400), 160.0, SLO, backoff_windows=3)
    got = sizing_latency(missed, 2, "single_client", 30.0)
    assert got.slo_rate_per_pod_rps == 40.0 and got.mean_latency_s == 0.02  # 80 rps on 2 pods; the 80 rps window
    unverified = sizing_latency(None, 1, "single_client", 30.0)
    assert unverified.mean_latency_s == 0.03 and "not verified open loop" in unverified.source
