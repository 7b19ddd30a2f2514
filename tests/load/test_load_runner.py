"""The step runner's open-loop sample (reset, wait, read) and a window's error rate, without Locust: a fake master."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nightcap.config import validate
from nightcap.load.driver import LoadError, Window, summarize
from nightcap.load.runner import BudgetExceeded, StepRunner


class FakeMaster:
    def __init__(self, raw: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple] = []
        self.raw = raw

    def swarm_rate(self, rate_rps: float, workers: int, host: str, **options: Any) -> None:
        self.calls.append(("swarm_rate", rate_rps, workers, host))

    def reset(self) -> None:
        self.calls.append(("reset",))

    def window(self) -> dict[str, Any]:
        self.calls.append(("window",))
        if self.raw is None:
            raise httpx.ConnectError("gone")
        return self.raw

    def open_window(self) -> dict[str, Any]:
        self.calls.append(("open_window",))
        return OPEN


class FakeGenerator:
    workers = 2

    def __init__(self, client: FakeMaster) -> None:
        self.client = client


class FakePlatform:
    service_url = "http://127.0.0.1:9"
    replicas = 1


RAW = {"user_count": 8, "workers": {"a": {"requests": 100, "failures": 5, "covered_s": 2.0},
                                    "b": {"requests": 60, "failures": 3, "covered_s": 1.5}},
       "total": {"num_requests": 160, "response_time_percentile_0.5": 20, "response_time_percentile_0.9": 35,
                 "response_time_percentile_0.95": 42, "response_time_percentile_0.99": 80}}


# two workers' open-loop counters over the same interval: 2 of 300 arrivals dropped, 4 of 296 answers failed
OPEN = {"workers": {"a": {"planned": 200, "sent": 199, "late": 0, "dropped": 1, "completed": 198, "ok": 195,
                          "latency_ms_sum": 198 * 30.0, "late_ms_max": 0.0, "in_flight_max": 9, "covered_s": 2.0},
                    "b": {"planned": 100, "sent": 99, "late": 0, "dropped": 1, "completed": 98, "ok": 97,
                          "latency_ms_sum": 98 * 30.0, "late_ms_max": 0.0, "in_flight_max": 7, "covered_s": 1.0}}}


def _runner(master: FakeMaster, deadline: float | None = None) -> StepRunner:
    config = validate({"target": {"name": "t", "kind": "reference"}, "slo": {"p95_ms": 500}})
    return StepRunner(config, FakePlatform(), FakeGenerator(master), "autoscale", lambda row: None,  # type: ignore[arg-type]
                      deadline=deadline)


def test_a_sample_resets_waits_and_reads_the_open_loop_schedule() -> None:
    master = FakeMaster(RAW)
    runner = _runner(master)
    runner.set_rate(250.0)
    w = runner.read_open_window(0.01, 250.0)
    assert master.calls == [("swarm_rate", 250.0, 2, "http://127.0.0.1:9"), ("reset",), ("window",), ("open_window",)]
    assert w.offered_rps == pytest.approx(200 / 2.0 + 100 / 1.0) and w.goodput_rps == pytest.approx(195 / 2.0 + 97)
    assert (w.planned, w.dropped, w.failures) == (300, 2, 4) and w.p95_ms == 42.0
    assert w.mean_ms == pytest.approx(30.0)


def test_a_master_that_stops_answering_is_a_load_error() -> None:
    with pytest.raises(LoadError, match="stopped answering"):
        _runner(FakeMaster(None)).read_open_window(0.0, 10.0)


def test_the_budget_refuses_a_sample_that_would_run_past_it() -> None:
    import time

    runner = _runner(FakeMaster(RAW), deadline=time.monotonic() + 1.0)
    runner.check_budget(0.5)
    with pytest.raises(BudgetExceeded, match="load.max_duration_s"):
        runner.check_budget(5.0)


def test_error_rate_of_a_window() -> None:
    def window(requests: int, failures: int) -> Window:
        return Window(requests, failures, 0.0, None, None, None, None, 0, 1, [])
    assert window(200, 10).error_rate == 0.05
    assert window(0, 3).error_rate == 1.0  # only failures came back
    assert window(0, 0).error_rate == 0.0
    assert summarize({}).error_rate == 0.0


def test_a_perfectly_regular_window_still_has_the_half_width_of_one_request() -> None:
    """search_accuracy's CPU-limited case: CFS throttling lets exactly 10 requests through every 0.2 s, so the
    batch means agree exactly (half-width 0), yet the window's count (149 over 1.5 s) is one request off the
    truth (100 rps). The interval must not be narrower than a count can resolve: 1 request per worker."""
    worker = {"requests": 149, "failures": 0, "covered_s": 1.5, "bin_s": 0.1, "since": 0.0, "last": 1.5,
              "bins": [[i, 10, 0] for i in range(15)]}
    w = summarize({"workers": {"a": worker}})
    assert w.goodput_rps == 149 / 1.5 and w.batches >= 2
    assert w.goodput_halfwidth == 1 / 1.5  # the batch means alone say 0
    assert w.goodput_rps - w.goodput_halfwidth <= 100.0 <= w.goodput_rps + w.goodput_halfwidth
    two = summarize({"workers": {"a": worker, "b": dict(worker)}})
    assert two.goodput_halfwidth == 2 / 1.5


def test_many_clockwork_users_widen_the_count_floor_by_their_phases() -> None:
    """bench/coverage's 2-replica case: 16 users on 2 x 4 slots x 20 ms, every window catching the same phases,
    3 windows at 399.1 rps with the one-request floor (± 0.7) left 400 outside in 5 of 20 runs. Each user's count
    is off by less than one request by its phase: 1.96 × sqrt(16 / 6) = 3.2 requests per 1.5 s window."""
    import math

    worker = {"requests": 599, "failures": 0, "covered_s": 1.5, "bin_s": 0.1, "since": 0.0, "last": 1.5,
              "bins": [[i, 40, 0] for i in range(15)]}
    w = summarize({"workers": {"a": worker}, "user_count": 16})
    assert w.goodput_halfwidth == pytest.approx(1.96 * math.sqrt(16 / 6) / 1.5)
    assert w.goodput_rps - w.goodput_halfwidth <= 400.0 <= w.goodput_rps + w.goodput_halfwidth
    two = summarize({"workers": {"a": worker, "b": dict(worker)}, "user_count": 16})  # 8 users on each
    assert two.goodput_halfwidth == pytest.approx(1.96 * math.sqrt(2 * 8 / 6 / 1.5 ** 2))
    one_user = summarize({"workers": {"a": worker}, "user_count": 1})  # one stream: the one-request floor
    assert one_user.goodput_halfwidth == 1 / 1.5
