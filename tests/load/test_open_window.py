"""Open-loop window arithmetic: rates per worker over their covered time, and which side a bad window blames."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from nightcap.load.open_loop import summarize_open


def raw(**workers: dict) -> dict:
    base = {"planned": 0, "sent": 0, "late": 0, "dropped": 0, "completed": 0, "ok": 0, "latency_ms_sum": 0.0,
            "late_ms_max": 0.0, "in_flight_max": 0, "covered_s": 2.0}
    return {"workers": {k: {**base, **v} for k, v in workers.items()}}


def test_rates_are_summed_per_worker_over_the_time_each_covered() -> None:
    w = summarize_open(raw(a={"planned": 200, "sent": 200, "completed": 198, "ok": 190, "latency_ms_sum": 3960.0},
                           b={"planned": 150, "sent": 150, "completed": 150, "ok": 150, "latency_ms_sum": 3000.0,
                              "covered_s": 1.5}), 200.0,
                       SimpleNamespace(p50_ms=19.0, p90_ms=21.0, p95_ms=22.0, p99_ms=30.0, errors=[]))
    assert w.offered_rps == pytest.approx(100 + 100)
    assert w.achieved_rps == pytest.approx(99 + 100)
    assert w.goodput_rps == pytest.approx(95 + 100)
    assert w.mean_ms == pytest.approx(6960 / 348)
    assert w.failures == 8 and w.error_rate == pytest.approx(8 / 348)
    assert w.p95_ms == 22.0 and w.workers == 2


def test_a_worker_without_covered_time_adds_counts_but_no_rate() -> None:
    w = summarize_open(raw(a={"planned": 10, "completed": 10, "ok": 10, "covered_s": 0.0}), 5.0)
    assert w.offered_rps == 0 and w.planned == 10 and w.p95_ms is None


@pytest.mark.parametrize("late,dropped,cpu,verdict", [
    (1, 0, 99.0, "ok"),  # 1% is tolerated
    (3, 0, 95.0, "generator-bound"),
    (0, 3, 40.0, "target-overloaded"),
    (2, 2, 89.9, "target-overloaded"),
])
def test_more_than_one_percent_late_or_dropped_blames_the_generator_only_when_its_cpu_is_pegged(
        late: int, dropped: int, cpu: float, verdict: str) -> None:
    w = summarize_open(raw(a={"planned": 100, "sent": 100 - dropped, "late": late, "dropped": dropped,
                              "completed": 100 - dropped, "ok": 100 - dropped, "late_ms_max": 12.0}), 50.0)
    assert w.verdict(cpu) == verdict
    text = w.explain(cpu)
    assert (text == "") == (verdict == "ok")
    if verdict != "ok":
        assert text.startswith(verdict) and f"{late} late" in text and f"{dropped} dropped" in text


def test_percentiles_are_of_the_windows_own_successful_arrivals_when_the_ledger_sends_them() -> None:
    """By arrival: the workers' histograms of the window's successful arrivals win over the closed-loop window's
    percentiles (those count completions in the interval, whatever window planned them)."""
    w = summarize_open(raw(a={"planned": 10, "sent": 10, "completed": 10, "ok": 9, "ok_ms": [[20, 8], [900, 1]]},
                           b={"planned": 30, "sent": 30, "completed": 30, "ok": 30, "ok_ms": [[21, 30]]}), 10.0,
                       SimpleNamespace(p50_ms=5000.0, p90_ms=5000.0, p95_ms=5000.0, p99_ms=5000.0, errors=[]))
    assert (w.p50_ms, w.p95_ms, w.p99_ms) == (21.0, 21.0, 900.0)
    empty = summarize_open(raw(a={"planned": 5, "sent": 5, "completed": 5, "ok": 0, "ok_ms": []}), 10.0,
                           SimpleNamespace(p50_ms=3.0, p90_ms=3.0, p95_ms=3.0, p99_ms=3.0, errors=[]))
    assert empty.p95_ms is None  # only failures: no latency of successful arrivals to report


def test_a_ledger_window_says_which_epochs_it_spans_and_what_is_still_in_flight() -> None:
    body = {**raw(a={"planned": 40, "sent": 38, "dropped": 2, "completed": 30, "ok": 25, "abandoned": 3,
                     "unsettled": 5, "covered_s": 2.0},
                  b={"planned": 40, "sent": 40, "completed": 40, "ok": 40, "covered_s": 1.0}),
            "first": 7, "last": 9}
    w = summarize_open(body, 40.0)
    assert (w.first_epoch, w.last_epoch, w.unsettled, w.abandoned) == (7, 9, 5, 3)
    assert w.covered_s == pytest.approx(1.5)  # the workers' mean: goodput is about ok / covered_s
    # failed, dropped and abandoned arrivals of this window, per planned arrival; the 5 in flight not yet counted
    assert w.arrival_error_rate == pytest.approx((5 + 2 + 3) / 80)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500), st.integers(0, 500), st.integers(0, 500),
                          st.integers(0, 500), st.floats(0.1, 5.0)), min_size=1, max_size=4))
def test_by_arrival_no_window_fails_more_than_it_planned_or_serves_more_than_it_offered(workers: list) -> None:
    """Issue 23 item 4: each arrival is counted once, in its own window (dropped, or sent and then ok, failed,
    abandoned or still in flight), so the arrival error rate is at most 1 and goodput at most the offered rate."""
    rows = {}
    for i, (dropped, ok, failed, abandoned, unsettled, covered) in enumerate(workers):
        sent = ok + failed + abandoned + unsettled
        rows[f"w{i}"] = {"planned": dropped + sent, "sent": sent, "dropped": dropped, "completed": ok + failed,
                         "ok": ok, "abandoned": abandoned, "unsettled": unsettled, "covered_s": covered}
    w = summarize_open(raw(**rows), 100.0)
    assert 0.0 <= w.arrival_error_rate <= 1.0
    assert w.goodput_rps <= w.achieved_rps <= w.offered_rps + 1e-9


def test_late_sends_count_against_a_window_only_when_the_generator_was_pegged():
    """Late arrivals' latency already counts from their planned time; dropped ones were never served."""
    from nightcap.load.open_loop import OpenWindow

    def window(late: int, dropped: int) -> OpenWindow:
        return OpenWindow(rate_rps=100.0, offered_rps=100.0, achieved_rps=98.0, goodput_rps=98.0, planned=400,
                          sent=400 - dropped, completed=400 - dropped, ok=400 - dropped, late=late, dropped=dropped,
                          mean_ms=20.0, p50_ms=20.0, p90_ms=25.0, p95_ms=30.0, p99_ms=40.0, late_ms_max=12.0,
                          in_flight_max=3, workers=1)

    assert window(late=8, dropped=0).verdict(30.0) == "ok"  # 2% late, an idle generator
    assert window(late=8, dropped=0).verdict(95.0) == "generator-bound"
    assert window(late=0, dropped=8).verdict(30.0) == "target-overloaded"
    assert window(late=0, dropped=8).verdict(95.0) == "generator-bound"
    assert window(late=2, dropped=2).verdict(95.0) == "ok"  # 1% together: within the tolerance
