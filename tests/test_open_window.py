"""Open-loop window arithmetic: rates per worker over their covered time, and which side a bad window blames."""

from __future__ import annotations

from types import SimpleNamespace

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
